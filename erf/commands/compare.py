"""``erf compare``: TRF and ERF of two or more models side by side, paired on the same images."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from erf.commands._base import add_model_options, command, print_json, print_notes
from erf.commands.tables import print_table as print_aligned
from erf.errors import InputError
from erf.precision import MEASURE_PRECISION_HELP, MEASURE_PRECISIONS


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_figures(result: Any, out: Path) -> dict[str, Any]:
    """Write ``heatmaps_<layer>.png``, ``radial_profiles_<layer>.png`` and ``radius_vs_depth.png`` into ``out``.

    Returns:
        ``{"heatmaps": {layer: file}, "radial_profiles": {layer: file}, "radius_vs_depth": file}``.
    """
    from erf.files.atomic import save_figure
    from erf.plotting import compare_heatmaps, compare_radial_profiles, erf_vs_depth

    labels = [m.label for m in result.models]
    accuracy = {m.label: m.accuracy for m in result.models if m.accuracy is not None}
    figures: dict[str, Any] = {"heatmaps": {}, "radial_profiles": {}}
    for lc in result.layers:
        heat, radial = f"heatmaps_{_safe(lc.name)}.png", f"radial_profiles_{_safe(lc.name)}.png"
        save_figure(compare_heatmaps(lc.erfs, labels, accuracy), out / heat)
        save_figure(compare_radial_profiles(lc.erfs, labels, accuracy), out / radial)
        figures["heatmaps"][lc.name] = heat
        figures["radial_profiles"][lc.name] = radial
    series = {m.label: [lc.erfs[k] for lc in result.layers] for k, m in enumerate(result.models)}
    save_figure(erf_vs_depth(series, accuracy), out / "radius_vs_depth.png")
    figures["radius_vs_depth"] = "radius_vs_depth.png"
    return figures


def _ci(value: float, ci: tuple[float, float] | None, sign: bool = False) -> str:
    f = "+.1f" if sign else ".1f"
    if ci is None:
        return f"{value:{f}}"
    return f"{value:{f}} [{ci[0]:{f}},{ci[1]:{f}}]"


def format_p(p: float | None) -> str:
    """A p-value for tables: 3 significant digits, ``<1e-4`` below that (a rank test's p is never exactly 0)."""
    if p is None:
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def print_table(result: Any) -> None:
    """Aligned table of a :class:`~erf.comparison.Comparison` (fits 80 columns)."""
    ref = result.models[0]
    unit = "image" if result.pairing == "image" else "group"
    print(f"{result.images} images paired per {unit}, input {result.input_size[0]}x{result.input_size[1]}; "
          f"differences vs A")
    for m in result.models:
        acc = f"acc {m.accuracy:.3f} ({m.accuracy_source})" if m.accuracy is not None else "acc n/a"
        state = {True: "", False: ", untrained", None: ", weights from file (training not recorded)"}[m.trained]
        print(f"  {m.letter} = {m.label} ({acc}{state})")
    rows = []
    for lc in result.layers:
        for k, (m, e) in enumerate(zip(result.models, lc.erfs)):
            trf = "global" if e.trf.is_global else str(e.trf.size[0])
            r50, r95 = e.metrics.radius[0.5], e.metrics.radius[0.95]
            row = [lc.name if k == 0 else "", m.letter, trf, f"{r50:.1f}", _ci(r95, e.ci.get("radius.95"))]
            if k > 0:
                d = result.difference(lc.name, "radius.95", m.label)
                row += [_ci(d.estimate, d.ci, sign=True), format_p(d.p_value) + ("*" if d.significant else "")]
            rows.append(row)
    print_aligned(["layer", "m", "TRF", "r50", "r95 px [95% CI]", "dr95 vs A [95% CI]", "p"], rows, "llrrrrl")
    print(f"radii in px; dr95 = r95 minus A's ({ref.label[:30]}), paired bootstrap CI;")
    print(f"p: Wilcoxon signed-rank test of the per-{unit} differences (* p < 0.05)")


COMPARE_FILES = ("compare.json", "heatmaps_*.png", "radial_profiles_*.png", "radius_vs_depth.png")
"""The files ``erf compare --out`` writes (an older set's files matching these are replaced with ``--force``)."""


def cmd_compare(args: argparse.Namespace) -> int:
    """``erf compare``: paired TRF/ERF comparison of two or more models; exit code."""

    from erf.checkpoints import load_checkpoint
    from erf.commands.measure import load_images, parse_size, preprocessing_of, probe_options, show_progress
    from erf.comparison import compare
    from erf.data import load_source
    from erf.files.atomic import write_json
    from erf.files.outputs import output_set
    from erf.runtime.devices import pick_device

    if len(args.checkpoints) < 2:
        raise InputError("erf compare needs two or more checkpoints (e.g. erf compare norm_8d.pt cbam_8d.pt)")
    if args.images is not None and args.images <= 0:
        raise InputError(f"--images {args.images}: must be positive")
    if args.layer and args.all_layers:
        raise InputError("--layer and --all-layers are exclusive")
    with output_set(args.out, force=args.force, patterns=COMPARE_FILES) as stage:
        loaded = []
        for spec in args.checkpoints:
            lm = load_checkpoint(spec, trust=args.trust, seed=args.seed)
            print_notes([f"{spec}: {n}" for n in lm.notes])
            loaded.append(lm)
        canvas = size = parse_size(args.input_size)
        prep = None
        if size is None:
            native = {lm.input_size for lm in loaded if lm.input_size}
            if len(native) > 1:
                sizes = ", ".join(f"{h}x{w}" for h, w in sorted(native))
                raise InputError(f"the models expect different input sizes ({sizes}): give one canvas for all "
                                 "with --input-size")
            size = native.pop() if native else None
            sized = [lm for lm in loaded if lm.input_size]
            preps = [preprocessing_of(lm, canvas) for lm in sized]
            prep = preps[0] if preps else None
            if any(p != prep for p in preps[1:]):
                print_notes([f"the models' own preprocessing differs; every model sees the images prepared as "
                             f"{sized[0].name}'s ({preps[0].origin}), so that they stay paired"])
        data, notes, record = load_images(args.data, args.images, size, prep, args.fill)
        print_notes(notes)
        evaluate_data = load_source(args.evaluate_data, "test") if args.evaluate_data else None
        options = probe_options(args.probe, {"mode": args.mode}, "--mode")
        device = str(pick_device(args.device))
        result = compare(loaded, data, args.layer, count=args.images, input_size=size, device=device,
                         seed=args.seed, bootstrap=args.bootstrap, probe=args.probe, probe_options=options,
                         fill=args.fill, batch_size=args.batch_size, all_layers=args.all_layers,
                         evaluate_data=evaluate_data, progress=show_progress(args), preprocessing=record,
                         precision=args.precision)
        print_notes(result.notes)
        if stage is not None:
            if not args.no_plots:
                result.figures = write_figures(result, stage.path)
            doc = result.to_json()
            write_json(stage.path / "compare.json", doc)
        else:
            doc = result.to_json()
    if args.json:
        print_json(doc)
    else:
        print_table(result)
        if stage is not None:
            print(f"wrote compare.json{'' if args.no_plots else ' and figures'} to {args.out}")
    return 0


def _args_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="two or more model specs; the first is the reference A (differences are X minus A)")
    p.add_argument("--layer", action="append",
                   help="layer name every model has (repeatable): stem, stage3, stage2.block1; "
                        "default: the shared stem/stageN layers")
    p.add_argument("--all-layers", action="store_true", help="every shared block instead of the stage-level layers")
    p.add_argument("--data", default="bundled", help="image source, the same images for every model (see below)")
    p.add_argument("--images", type=int, default=64,
                   help="use the first N images; up to 64 the test pairs single images, above it 64 groups")
    p.add_argument("--input-size", default=None,
                   help="paste the images at the centre of a canvas of this size (e.g. 96), so an ERF cut by the "
                        "image border shows whole (see erf measure); default: the models' own input size, smaller "
                        "images resized to it with the reference model's preprocessing")
    p.add_argument("--fill", default="zero", choices=["zero", "mean"], help="canvas fill (see erf measure)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (none is shown when stderr is not a terminal)")
    from erf.probes.registry import PROBES

    p.add_argument("--probe", default="gradient", choices=list(PROBES),
                   help="; ".join(f"{spec.name}: {spec.description}" for spec in PROBES.values()))
    p.add_argument("--mode", default="abs", choices=["abs", "relu"], help="gradient probe: |grad| or RepLKNet's ReLU")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward/backward pass")
    p.add_argument("--bootstrap", type=int, default=200, help="paired bootstrap resamples for CIs (0: none)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the bootstrap (and of the random init of registry names without weights)")
    p.add_argument("--evaluate-data", default=None,
                   help="evaluate test accuracy on this source (e.g. cifar10:DIR) instead of checkpoint metadata")
    p.add_argument("--out", default=None, help="folder for compare.json and the figures")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--json", action="store_true", help="print the compare.json document")
    p.add_argument("--precision", default="fp32", choices=list(MEASURE_PRECISIONS), help=MEASURE_PRECISION_HELP)
    add_model_options(p)


command("compare", "ERF of two or more models side by side: paired statistics, figures, JSON")(
    _args_compare)(cmd_compare)
