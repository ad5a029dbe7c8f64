"""``erf study``: hypothesis 2 (attention helps when the ERF is smaller than the objects).

Real data::

    erf study resnet20 resnet20_cbam twoconv twoconv_cbam --data bundled --objects estimate --out study/

Controlled experiment (issue #15: dilation twins, gating controls, positive control, pre-registered verdict)::

    erf study --controlled --budget cpu --data cifar10:PATH.npz --out study-controlled/

The library (:mod:`erf.study.real`, :mod:`erf.study.grid`) returns documents and figures; this command writes
them: ``study.json``, ``verdict.txt`` and figures; controlled also ``cells.json`` (after every cell, resumable)
and ``cells.md``. ``--interaction`` writes its report only once every planned cell is in (``--partial-report``
for an interim one); ``--operating-point`` prints rule 2 alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from erf.commands._base import add_model_options, command, print_json, print_notes
from erf.commands.measure import parse_size
from erf.errors import InputError


def _args(p: argparse.ArgumentParser) -> None:
    from erf.study.budgets import BUDGETS, INTERACTION_BUDGETS, Budget, InteractionBudget

    budgets: dict[str, Budget | InteractionBudget] = {**BUDGETS, **INTERACTION_BUDGETS}

    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="models to study (files or registry names); attention models are paired with their plain "
                        "twin by name (X_cbam / X_se with X)")
    p.add_argument("--data", default=None,
                   help="images for ERFs and evaluation (default: bundled); controlled: the object source "
                        "(default: ../shared/data/cifar10_prefix.npz when present, else bundled)")
    p.add_argument("--objects", default="estimate",
                   help="object sizes: 'estimate' (estimated on --data's images, reported as an estimate), "
                        "an `erf objects --json` file, or an annotation file/folder (COCO, VOC, YOLO, masks, CSV)")
    p.add_argument("--images", type=int, default=100, help="use the first N images of --data")
    p.add_argument("--accuracy", default="auto", choices=["auto", "metadata", "evaluate"],
                   help="accuracy for the gain: checkpoint metadata (best_test_accuracy), evaluated on --data, "
                        "or metadata when every checkpoint has it")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the ERF CIs")
    p.add_argument("--input-size", default=None,
                   help="real study: embed the images in an S or HxW canvas so ERFs larger than the image are not "
                        "clipped by its border (radii stay in image px)")
    p.add_argument("--seed", type=int, default=0, help="real study: seed of the bootstrap")
    p.add_argument("--controlled", action="store_true", help="run the controlled experiment instead")
    p.add_argument("--interaction", action="store_true",
                   help="run the second controlled grid (issue #24: object scale x ERF level, plain / CBAM / local "
                        "gate / spatial-only in every cell, judged by erf/study/interaction.py)")
    p.add_argument("--worker", default="0/1", metavar="I/N",
                   help="--interaction: run every N-th cell from the I-th (two single-thread workers: 0/2 and 1/2 "
                        "share --out/cells.json under a file lock)")
    p.add_argument("--partial-report", action="store_true",
                   help="--interaction: also write the report (study.json, verdict.txt, cells.md, interaction.png) "
                        "while planned cells are missing, an interim look at a pre-registered grid; without it a run "
                        "that leaves the grid unfinished writes only cells.json and prints how far it is")
    p.add_argument("--operating-point", action="store_true",
                   help="--interaction: print rule 2 alone (the stable-operating-point check, the one interim look "
                        "the grid's design allows, nothing about the gain) from --out/cells.json once its "
                        "operating-point cells are in; trains and writes nothing")
    p.add_argument("--budget", default=None, choices=list(BUDGETS) + list(INTERACTION_BUDGETS),
                   help="grid size (required with --controlled / --interaction): "
                        + "; ".join(f"{k}: {b.help}" for k, b in budgets.items()))
    p.add_argument("--seeds", type=int, default=None, help="controlled: seeds per cell (default: the budget's)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="controlled: object sides in px")
    p.add_argument("--epochs", type=int, default=None, help="controlled: training epochs (default: the budget's)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="controlled: start no new model after this many seconds (a cell may stop between its "
                        "models; they are kept and the same command resumes) and report the finished cells "
                        "(0: only regenerate the report and figures from --out/cells.json)")
    p.add_argument("--out", default=None, help="output folder (study.json, verdict.txt, figures)")
    p.add_argument("--force", action="store_true",
                   help="overwrite a non-empty --out (controlled: finished cells in --out/cells.json are reused)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the study.json document")
    add_model_options(p)


STUDY_FILES = ("study.json", "verdict.txt", "cells.json", "cells.md", "gain_vs_ratio.png", "erf_vs_objects_cdf.png",
               "erf_by_dilation.png", "positive_control.png", "gating_controls.png")
"""The files ``erf study --out`` writes (an older set's files matching these are replaced with ``--force``)."""


def cmd_study(args: argparse.Namespace) -> int:
    """``erf study``: hypothesis-2 study on real checkpoints or the controlled grid; exit code."""
    from erf.files.atomic import save_figures, write_json, write_text
    from erf.files.outputs import output_set
    from erf.runtime.devices import pick_device

    device = str(pick_device(args.device))
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    for flag in ("operating_point", "partial_report"):
        if getattr(args, flag) and not args.interaction:
            raise InputError(f"--{flag.replace('_', '-')} goes with --interaction (the grid's cells.json)")
    if args.interaction and args.operating_point:
        check = _operating_point(args)
        if args.json:
            print_json(check)
        else:
            print(check["text"])
        return 0
    if args.interaction:
        rep, written = _interaction(args, device, progress)
        if args.json:
            print_json(rep)
            return 0
        print_notes(rep["notes"])
        print(rep["verdict"]["text"])
        print(f"wrote {args.out}/" + ", ".join(written) if written else f"wrote nothing ({args.out}/cells.json "
              "unchanged)")
        return 0
    if args.controlled:
        if args.checkpoints:
            raise InputError("--controlled trains its own models: give no CKPT")
        if args.out is None:
            raise InputError("--controlled needs --out (results are written and resumed there)")
        from erf.study.budgets import BUDGETS

        if args.budget not in BUDGETS:
            raise InputError("--controlled needs --budget (" + "; ".join(f"{k}: {b.help}" for k, b in BUDGETS.items())
                             + ")")
        doc, table = _controlled(args, device, progress)
        if args.json:
            print_json(doc)
            return 0
        print_notes(doc["notes"])
        print(table, end="")
        print(doc["verdict"]["text"])
        print(f"wrote {args.out}/study.json, verdict.txt, cells.md, cells.json and figures")
        return 0
    else:
        from erf.data import load_source
        from erf.study.figures import real_study_figures
        from erf.study.real import load_objects, study_models

        if not args.checkpoints:
            raise InputError("give at least one CKPT (or --controlled)")
        with output_set(args.out, force=args.force, patterns=STUDY_FILES) as stage:
            data = load_source(args.data or "bundled", "test", count=args.images)
            objects = load_objects(args.objects, data)
            doc, models = study_models(args.checkpoints, data, objects, accuracy=args.accuracy,
                                       bootstrap=args.bootstrap, seed=args.seed, device=device, trust=args.trust,
                                       progress=progress, input_size=parse_size(args.input_size))
            if stage is not None:
                save_figures(real_study_figures(doc, models, objects), stage.path)
                write_text(stage.path / "verdict.txt", doc["verdict"]["text"] + "\n")
                write_json(stage.path / "study.json", doc)
    if args.json:
        print_json(doc)
        return 0
    print_notes(doc["notes"])
    _print_summary(doc)
    if args.out:
        print(f"wrote {args.out}/study.json, verdict.txt and figures")
    return 0


def _controlled(args: argparse.Namespace, device: str, progress: bool) -> tuple[dict, str]:
    """Run or resume the dilation grid of :mod:`erf.study.grid` into an output set (published after every cell,
    so a killed run keeps its finished cells); write the report; return it and its cell table."""
    from erf.files.atomic import save_figures, write_json, write_text
    from erf.files.outputs import OutputSet
    from erf.study.budgets import default_controlled_source
    from erf.study.grid import grid_report, run_grid
    from erf.study.grid_figures import cell_table, figures

    with OutputSet(args.out, force=args.force, patterns=STUDY_FILES, seed=("cells.json",)) as stage:
        cells_path = stage.path / "cells.json"
        previous = None
        if cells_path.exists():
            try:
                previous = json.loads(cells_path.read_text())
            except (OSError, json.JSONDecodeError):
                previous = None

        def on_cell(cells: dict) -> None:
            write_json(stage.path / "cells.json", cells)
            stage.publish()

        data = args.data or default_controlled_source()
        doc = run_grid(args.budget, data, device=device, seeds=args.seeds, sizes=args.sizes, epochs=args.epochs,
                       previous=previous, on_cell=on_cell, time_limit=args.time_limit, progress=progress)
        write_json(cells_path, doc)
        this = "erf " + shlex.join(sys.argv[1:])
        command, report_command = this, None
        earlier = Path(args.out) / "study.json"  # the published set (the staging folder holds only cells.json)
        if args.time_limit == 0 and earlier.is_file():
            try:  # only the report is regenerated: the cells were made by the earlier report's command
                command = json.loads(earlier.read_text()).get("command") or this
                report_command = this if command != this else None
            except (OSError, json.JSONDecodeError):
                pass
        report = grid_report(doc, command=command, report_command=report_command)
        table = cell_table(report)
        write_json(stage.path / "study.json", report)
        write_text(stage.path / "verdict.txt", report["verdict"]["text"] + "\n\nPre-registered rule: "
                   + report["rule"] + "\n")
        write_text(stage.path / "cells.md", table)
        save_figures(figures(report), stage.path, dpi=120)
    return report, table


def _operating_point(args: argparse.Namespace) -> dict:
    """``--interaction --operating-point``: rule 2 alone from ``--out/cells.json`` (trains and writes nothing)."""
    from erf.errors import StudyError
    from erf.study import h2grid

    if args.out is None:
        raise InputError("--operating-point needs --out (the grid's folder with cells.json)")
    cells_path = Path(args.out) / "cells.json"
    try:
        doc = json.loads(cells_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{cells_path}: no such file (run the grid first)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{cells_path}: not a readable cells document ({e})") from None
    if args.budget is not None and (doc.get("budget") or {}).get("name") != args.budget:
        raise InputError(f"{cells_path} holds budget {(doc.get('budget') or {}).get('name')!r}, not {args.budget!r}")
    try:
        return h2grid.operating_point(doc)
    except StudyError as e:
        raise InputError(f"{cells_path}: {e}") from None
    except (KeyError, TypeError) as e:
        raise InputError(f"{cells_path}: not a cells document of erf study --interaction ({e!r})") from None


def _interaction(args: argparse.Namespace, device: str, progress: bool) -> tuple[dict, list[str]]:
    """Run (or resume) this worker's share of the second grid into ``--out/cells.json`` (merged under a file lock
    after every finished or half-finished cell, so two workers and a killed run keep everything), then write the
    report from all the cells there once every planned cell is in (or with ``--partial-report``). Returns the report
    (or, with none written, ``{"notes", "progress", "verdict"}``) and the names of the files written."""
    import fcntl

    from erf.files.atomic import save_figures, write_json, write_text
    from erf.study import h2grid
    from erf.study.budgets import INTERACTION_BUDGETS, default_controlled_source

    if args.checkpoints:
        raise InputError("--interaction trains its own models: give no CKPT")
    if args.out is None:
        raise InputError("--interaction needs --out (cells are written and resumed there)")
    if args.budget not in INTERACTION_BUDGETS:
        raise InputError("--interaction needs --budget, one of: " + "; ".join(
            f"{k}: {b.help}" for k, b in INTERACTION_BUDGETS.items()))
    try:
        i, n = (int(v) for v in args.worker.split("/"))
    except ValueError:
        raise InputError(f"--worker {args.worker!r}: use I/N, e.g. 0/2") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells_path, lock_path = out / "cells.json", out / ".cells.lock"
    data = args.data or default_controlled_source()

    def read() -> dict:
        try:
            return json.loads(cells_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def locked(fn):
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return fn()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    empty = h2grid.header(args.budget, data)

    def current() -> dict:
        disk = read()
        return disk if disk.get("settings") == empty["settings"] and disk.get("data") == data else empty

    def on_cell(rec: dict) -> None:
        locked(lambda: write_json(cells_path, h2grid.merge(current(), rec)))

    disk = locked(read)
    if disk and (disk.get("settings") != empty["settings"] or disk.get("data") != data) and not args.force:
        raise InputError(f"{cells_path} holds cells of other settings or data (budget "
                         f"{(disk.get('budget') or {}).get('name')!r}); use another --out, or --force to start over")
    doc = h2grid.run(args.budget, data, device=device, previous=locked(current), on_cell=on_cell,
                     time_limit=args.time_limit, progress=progress, worker=(i, n))
    merged = locked(current)
    cells_written = args.time_limit != 0 or not cells_path.exists()  # --time-limit 0 trains nothing
    if not cells_path.exists():
        locked(lambda: write_json(cells_path, merged))
    cells = ["cells.json"] if cells_written else []
    this = "erf " + shlex.join(sys.argv[1:])
    earlier = out / "study.json"
    command, report_command = this, None
    if args.time_limit == 0 and earlier.is_file():
        try:
            command = json.loads(earlier.read_text()).get("command") or this
            report_command = this if command != this else None
        except (OSError, json.JSONDecodeError):
            pass
    del doc  # the report covers every worker's cells: the merged file
    state = h2grid.progress(merged)
    why = None
    if not any(c["kind"] == "main" for c in merged.get("cells", [])):
        why = "no main cell finished yet, so no report"
    elif not state["complete"] and not args.partial_report:
        why = ("no report until every planned cell is in (a pre-registered grid is not looked at on the way; "
               "--partial-report writes an interim one)")
    if why is not None:
        return {"notes": [f"{cells_path}: {h2grid.progress_text(merged)}; {why}"], "progress": state,
                "verdict": {"text": "No report yet (rerun the same command to go on)."}}, cells
    rep = h2grid.report(merged, command=command, report_command=report_command)
    write_json(out / "study.json", rep)
    write_text(out / "verdict.txt", rep["verdict"]["text"] + "\n\nPre-registered rule (erf/study/interaction.py): "
               + rep["rule"] + "\n")
    write_text(out / "cells.md", h2grid.table(rep))
    save_figures({"interaction.png": h2grid.figure(rep)}, out, dpi=120)
    return rep, [*cells, "study.json", "verdict.txt", "cells.md", "interaction.png"]


def _print_summary(doc: dict) -> None:
    print(f"conversion: {doc['conversion']}")
    if doc["mode"] == "real":
        print(f"{'model':<28}{'acc':>7}{'2r50 px [CI]':>20}{'2r95':>7}{'TRF':>7}{'<=2r50':>8}{'<=2r95':>8}"
              f"{'<=TRF':>7}")
        for m in doc["models"]:
            f = m["fractions"]["sqrt_area"]
            d = m["erf_diameter50"]
            acc = m["accuracy"]["value"] if m["accuracy"] else float("nan")
            trf = "global" if m["trf_side"] is None else str(m["trf_side"])
            print(f"{m['label'][:28]:<28}{acc:>7.3f}{d['value']:>8.1f} [{d['ci'][0]:.1f},{d['ci'][1]:.1f}]"
                  f"{m['erf_diameter95']['value']:>7.1f}{trf:>7}{f['below_erf50']['value']:>8.2f}"
                  f"{f['below_erf95']['value']:>8.2f}{f['below_trf']:>7.2f}")
    print(f"{'pair':<48}{'ratio':>7}{'gain pp [95% CI]':>22}")
    for r in doc["pairs"]:
        print(f"{r['label'][:48]:<48}{r['ratio']:>7.2f}{100 * r['gain']:>+8.1f} "
              f"[{100 * r['gain_ci'][0]:+.1f},{100 * r['gain_ci'][1]:+.1f}]")
    print(doc["verdict"]["text"])


command("study", "hypothesis 2: ERF vs object size and attention gain (real data or --controlled)")(_args)(cmd_study)
