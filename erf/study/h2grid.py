"""The second controlled hypothesis-2 grid (issue #24): object scale x ERF level x seeds, four arms per cell.

Judged by the rule of :mod:`erf.study.interaction` (committed before this module). Cells:

* ``main`` ``(scale k, level l, seed)``: the arms of :attr:`InteractionBudget.arms` (``plain`` and the gates
  ``cbam``, ``localgate``, ``cbam_spatial`` of ``patchnet_l{l}``, :class:`erf.models.dilated.PatchDilatedNet`)
  trained from the same seed on the same per-epoch canvases (:class:`erf.study.canvases.EpochCanvases`: the same
  CIFAR-10 object resampled to ``k * base`` px on a fixed ``canvas``), evaluated on the scale's fixed test
  canvases; every arm's object-centred ERF at ``stage3`` on the first ``erf_images`` of them; the objects'
  measured extent (:func:`object_extent`) at that scale.
* ``plateau`` ``(k, l, seed < plateau_seeds)``: the arms of the budget's rule (``Rule.plateau_arms``: plain and CBAM,
  or all three compared arms) trained for twice the epochs (rule 2).
* ``pc`` ``(D, seed)``: the positive control (:mod:`erf.study.positive_control`) with ``patchnet_l{pc_level}``.

Every model records its parameters, forward FLOPs, test accuracy (last epoch, evaluated in fp32), running train
accuracy of its last epoch, its seconds and the training precision that ran (:attr:`InteractionBudget.precision`).
:func:`plan` orders the cells seeds outermost (the plateau cells with seed 0, so a partial run learns early whether
the recipe converged); ``worker=(i, n)`` takes every n-th cell from the i-th, so two single-thread processes can
share one grid. :func:`run` hands every finished (or, at the time limit, half-finished) cell to ``on_cell``; the
command merges it into ``cells.json`` under a file lock.
:func:`report` turns the cells into the report (the rule's verdict, a row per cell with train and test accuracy
of every arm); :func:`figure` draws it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from erf.errors import InputError, StudyError
from erf.files.atomic import json_ready
from erf.study.budgets import INTERACTION_BUDGETS, InteractionBudget
from erf.study.interaction import RULES
from erf.study.object_centred import LEVELS, object_centred_erf

SCHEMA = "erf.study.interaction_grid/1"
LAYER = "stage3"
"""The layer whose ERF is the network's ERF (the last spatial layer, before global pooling)."""
ARM_SUFFIX = {"plain": "", "cbam": "_cbam", "localgate": "_localgate", "cbam_spatial": "_spatial", "se": "_se"}
"""Arm -> registry-name suffix of ``patchnet_l{level}``."""


def resolve(budget: InteractionBudget | str) -> InteractionBudget:
    """The budget of a registry key.

    Raises:
        InputError: an unknown key, or a scale whose objects do not fit the canvas.
    """
    if isinstance(budget, str):
        if budget not in INTERACTION_BUDGETS:
            raise InputError(f"{budget!r}: use {', '.join(INTERACTION_BUDGETS)}", param="budget")
        budget = INTERACTION_BUDGETS[budget]
    for k in budget.scales:
        if not 1 <= round(k * budget.base) <= budget.canvas:
            raise InputError(f"scale {k}: {round(k * budget.base)} px objects do not fit the {budget.canvas} px canvas",
                             param="budget")
    return budget


def cell_key(kind: str, **k: Any) -> str:
    """``main/k=0.5/l=1/seed=0``, ``plateau/k=0.5/l=1/seed=0``, ``pc/D=48/seed=0``."""
    if kind in ("main", "plateau"):
        return f"{kind}/k={k['scale']}/l={k['level']}/seed={k['seed']}"
    if kind == "pc":
        return f"pc/D={k['distance']}/seed={k['seed']}"
    raise ValueError(kind)


def plan(budget: InteractionBudget | str, worker: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """The cells of ``budget`` in run order (seeds outermost; plateau cells right after their seed's main cells),
    then every ``worker[1]``-th from the ``worker[0]``-th."""
    from erf.models.dilated import SCHEDULES

    b = resolve(budget)
    for lv in (*b.levels, b.pc_level):
        if lv not in SCHEDULES:
            raise InputError(f"budget {b.name}: ERF level {lv} is not registered ({sorted(SCHEDULES)})",
                             param="budget")
    if b.rule not in RULES:
        raise InputError(f"budget {b.name}: unknown rule {b.rule!r} (use {', '.join(RULES)})", param="budget")
    for a in (*b.arms, *RULES[b.rule].plateau_arms):
        if a not in ARM_SUFFIX:
            raise InputError(f"budget {b.name}: unknown arm {a!r}", param="budget")
    out: list[dict[str, Any]] = []
    for seed in range(b.seeds):
        for k in b.scales:
            for lv in b.levels:
                out.append({"kind": "main", "scale": k, "level": lv, "seed": seed})
        if seed < b.plateau_seeds:
            out.extend({"kind": "plateau", "scale": k, "level": lv, "seed": seed} for k in b.scales for lv in b.levels)
        out.extend({"kind": "pc", "distance": d, "seed": seed} for d in b.pc_distances)
    for c in out:
        c["key"] = cell_key(**c)
    i, n = worker
    if not 0 <= i < n:
        raise InputError(f"worker {i}/{n}: needs 0 <= i < n", param="worker")
    return out[i::n]


def object_extent(images: torch.Tensor, side: float) -> dict[str, float]:
    """The objects' extent ``{"d25", "d50", "d75", "d95"}`` (px) when resampled to ``side`` px.

    The border-contrast foreground masks (:func:`erf.objects.estimator.estimate_masks`; an image without a
    detected object counts as full frame) of the raw ``(N, 3, h, h)`` images are averaged, and ``2 r_q`` is the
    diameter of the disc around the frame's centre (the object-centred ERF's unit sits there) holding a
    fraction ``q`` of that mean mask (:func:`erf.metrics.mass_radii`, like the ERF's radii), scaled by
    ``side / h`` (resampling scales the extent).
    """
    from erf.metrics import mass_radii
    from erf.objects.estimator import estimate_masks

    u8 = (images.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    mean = estimate_masks(u8).mean(0).astype(np.float64)
    h = mean.shape[0]
    r = mass_radii(mean, LEVELS, ((h - 1) / 2, (h - 1) / 2))
    return {f"d{round(100 * q)}": float(2 * r[q] * side / h) for q in LEVELS}


class _Sources:
    """CIFAR-10 train/test objects, fixed test canvases per scale and objects' extents (cached)."""

    def __init__(self, data: str, budget: InteractionBudget, device: str) -> None:
        from erf.data import load_source

        self.train = load_source(data, "train", count=budget.train_images)
        self.test = load_source(data, "test", count=budget.test_images)
        if self.train.notes and any("test images only" in n for n in self.train.notes):
            raise StudyError(f"{data}: has no training split (use cifar10:PATH)", param="data")
        self.b, self.device = budget, device
        self._tests: dict[int, Any] = {}
        self._pc: dict[int, Any] = {}
        self._extent: dict[int, dict[str, float]] = {}

    def side(self, scale: float) -> int:
        return int(round(scale * self.b.base))

    def test_canvases(self, scale: float) -> Any:
        from erf.study.canvases import fixed_canvases

        s = self.side(scale)
        if s not in self._tests:
            self._tests[s] = fixed_canvases(self.test.images, self.test.labels, s, self.b.canvas, seed=0,
                                            device=self.device, description=self.test.description,
                                            classes=self.test.classes)
        return self._tests[s]

    def extent(self, scale: float) -> dict[str, float]:
        s = self.side(scale)
        if s not in self._extent:
            self._extent[s] = object_extent(self.test.images, s)
        return self._extent[s]

    def epochs(self, scale: float, seed: int) -> Any:
        from erf.study.canvases import EpochCanvases

        return EpochCanvases(self.train.images, self.train.labels, self.side(scale), self.b.canvas, seed, self.device,
                             self.train.description, self.train.classes)

    def pc_test(self, distance: int) -> Any:
        from erf.study.positive_control import fixed_marks

        if distance not in self._pc:
            self._pc[distance] = fixed_marks(self.b.pc_test_images, distance, self.b.canvas, seed=0,
                                             device=self.device)
        return self._pc[distance]


def _train(name: str, classes: int, b: InteractionBudget, train_data: Any, test_data: Any, seed: int, device: str,
           epochs: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    from erf.models import get_entry
    from erf.study.grid import _correct_string, model_facts
    from erf.training import Recipe, evaluate, train

    torch.manual_seed(seed)
    model = get_entry(name).build(num_classes=classes, width=b.width)
    facts = model_facts(model, b.canvas)
    recipe = Recipe(epochs=epochs, batch_size=b.batch_size, lr=b.lr, augment=False, seed=seed)
    t0 = time.perf_counter()
    summary = train(model, name, train_data, test_data, None, recipe, checkpoints="none", evaluate_every_epoch=False,
                    device=device, progress=False, precision=b.precision)
    seconds = time.perf_counter() - t0
    model = model.to(memory_format=torch.contiguous_format).eval()
    ev = evaluate(model, test_data, device=device)
    return model, {"name": name, **facts, "accuracy": float(ev.accuracy),
                   "train_accuracy": float(summary["last_train_accuracy"]), "epochs": int(epochs),
                   "seconds": seconds, "precision": summary["precision"], "correct": _correct_string(ev.correct)}


def run_cell(cell: dict[str, Any], b: InteractionBudget, src: _Sources, device: str = "cpu",
             stop: Callable[[], bool] | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and measure the models of one ``cell``; returns its record (``"incomplete": True`` when ``stop()``
    said so before a model: its finished models are kept, and ``resume`` with that record reuses them)."""
    t0 = time.perf_counter()
    out: dict[str, Any] = dict(cell)
    out["arms"] = dict((resume or {}).get("arms") or {})
    earlier = float((resume or {}).get("seconds", 0.0))
    arms: tuple[str, ...]
    if cell["kind"] == "pc":
        test, arms = src.pc_test(cell["distance"]), ("plain", "cbam")
        classes, level, epochs = 2, b.pc_level, b.pc_epochs
    else:
        test = src.test_canvases(cell["scale"])
        classes, level = len(src.train.classes) or 10, cell["level"]
        arms = b.arms if cell["kind"] == "main" else RULES[b.rule].plateau_arms
        epochs = b.epochs if cell["kind"] == "main" else 2 * b.epochs
        out["object_extent"] = src.extent(cell["scale"])
        out["object_side"] = src.side(cell["scale"])
    for arm in arms:
        if arm in out["arms"]:
            continue
        if stop is not None and stop():
            out.update(incomplete=True, seconds=earlier + time.perf_counter() - t0)
            return out
        if cell["kind"] == "pc":
            from erf.study.positive_control import EpochMarks

            data = EpochMarks(b.pc_images, cell["distance"], b.canvas, cell["seed"], device)
            _, rec = _train(f"patchnet_l{level}{ARM_SUFFIX[arm]}", classes, b, data, test, cell["seed"], device, epochs)
        else:
            data = src.epochs(cell["scale"], cell["seed"])
            model, rec = _train(f"patchnet_l{level}{ARM_SUFFIX[arm]}", classes, b, data, test.data, cell["seed"],
                                device, epochs)
            if cell["kind"] == "main":
                n = min(b.erf_images, len(test))
                r = object_centred_erf(model, LAYER, test.data.images[:n], test.centres()[:n], test.boxes[:n], LEVELS,
                                       device=device)
                rec["erf"] = {"object_centred": r["object_centred"], "position_averaged": r.get("position_averaged"),
                              "unit_in_box": r["unit_in_box"], "trf_side": r["trf"]["local_size"][0],
                              "trf_global": r["trf"]["global"], "images": r["images"]}
        out["arms"][arm] = rec
    out.update(classes=classes, test_images=len(test), train_images=len(data) if arms else 0,
               seconds=earlier + time.perf_counter() - t0, device=str(device), threads=torch.get_num_threads())
    out.pop("incomplete", None)
    return out


def run(budget: InteractionBudget | str, data: str, device: str = "cpu", previous: dict[str, Any] | None = None,
        on_cell: Callable[[dict[str, Any]], None] | None = None, time_limit: float | None = None,
        progress: bool = False, worker: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Run (or resume) this worker's share of the grid; returns the cells document.

    Args:
        budget: an :data:`~erf.study.budgets.INTERACTION_BUDGETS` key or budget.
        data: the CIFAR-10 source (``cifar10:PATH``).
        previous: the cells document so far (``cells.json``): its cells (and half-finished ``unfinished``
            cells) with equal settings and data are reused.
        on_cell: called with every finished cell's record, and with a half-finished one (``"incomplete"``) when
            the time limit stops a cell between models.
        time_limit: seconds after which no new model starts (at least one model per call); ``0``: train nothing.
        worker: ``(i, n)``: this process runs every n-th cell from the i-th.

    Returns:
        ``{"schema", "budget", "data", "settings", "cells", "unfinished", "planned"}`` (``planned``: cells of the
        whole grid, every worker's).
    """
    from tqdm import tqdm

    b = resolve(budget)
    doc = header(b, data)
    settings = doc["settings"]
    same = bool(previous and previous.get("data") == data)
    cells = [c for c in (previous or {}).get("cells", []) if same and c.get("settings") == settings]
    unfinished = {k: v for k, v in ((previous or {}).get("unfinished") or {}).items()
                  if same and v.get("settings") == settings}
    doc.update(cells=cells, unfinished=unfinished)
    done = {c["key"] for c in cells}
    pending = [c for c in plan(b, worker) if c["key"] not in done]
    if not pending or time_limit == 0:
        return doc
    src = _Sources(data, b, device)
    start, asked = time.perf_counter(), 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return time_limit is not None and asked > 1 and time.perf_counter() - start >= time_limit

    bar = tqdm(pending, desc=f"h2 grid worker {worker[0]}/{worker[1]}", unit="cell", disable=not progress,
               file=sys.stderr)
    for i, cell in enumerate(bar):
        bar.set_postfix_str(f"{cell['key']} ({len(pending) - i} left)")
        rec = run_cell(cell, b, src, device, stop=stop, resume=unfinished.get(cell["key"]))
        rec["settings"] = settings
        if rec.get("incomplete"):
            unfinished[cell["key"]] = rec
        else:
            unfinished.pop(cell["key"], None)
            cells.append(rec)
        if on_cell is not None:
            on_cell(rec)
        if rec.get("incomplete"):
            break
    bar.close()
    return doc


def header(budget: InteractionBudget | str, data: str) -> dict[str, Any]:
    """An empty cells document of ``budget`` on ``data`` (``cells`` and ``unfinished`` empty)."""
    b = resolve(budget)
    return {"schema": SCHEMA, "budget": asdict(b), "data": data, "settings": json.loads(json.dumps(b.training())),
            "planned": len(plan(b)), "cells": [], "unfinished": {}}


def progress(doc: dict[str, Any]) -> dict[str, Any]:
    """How far the grid of cells document ``doc`` is, without a single accuracy in it (safe to print during a
    pre-registered run).

    Returns:
        ``{"done", "planned", "complete", "by_kind": {kind: [finished, planned]}, "unfinished", "seconds",
        "seconds_left"}``; ``seconds`` sums the training seconds of every finished model (finished cells and kept
        models of half-finished ones), i.e. worker-seconds, not wall time. ``seconds_left`` estimates the
        worker-seconds still to train: per kind, the mean seconds of its finished cells times its cells not yet
        finished, less the seconds of the models already kept in half-finished ones; ``None`` while some kind with
        cells left has no finished cell to time it by (0.0 once complete).
    """
    cells, unfinished = doc.get("cells", []), doc.get("unfinished") or {}
    planned = {k: 0 for k in ("main", "plateau", "pc")}
    for c in plan(InteractionBudget(**doc["budget"])):  # the document's own budget, not today's registry entry
        planned[c["kind"]] += 1
    by_kind = {k: [sum(c["kind"] == k for c in cells), n] for k, n in planned.items()}
    def cell_seconds(c: dict[str, Any]) -> float:
        return float(sum(r.get("seconds", 0.0) for r in c.get("arms", {}).values()))

    seconds = sum(cell_seconds(c) for c in (*cells, *unfinished.values()))
    left: float | None = 0.0
    for kind, (finished, n) in by_kind.items():
        timed = [cell_seconds(c) for c in cells if c["kind"] == kind]
        if n > finished:
            left = None if left is None or not timed else left + (n - finished) * sum(timed) / len(timed)
    if left is not None:
        left = max(0.0, left - sum(cell_seconds(c) for c in unfinished.values()))
    total = doc.get("planned", len(cells))
    return {"done": len(cells), "planned": total, "complete": len(cells) >= total, "by_kind": by_kind,
            "unfinished": len(unfinished), "seconds": float(seconds), "seconds_left": left}


def progress_text(doc: dict[str, Any]) -> str:
    """One line for :func:`progress`: cells finished of planned, per kind, half-finished cells, worker-hours done
    and (where every kind left has a finished cell to time it by) the worker-hours still to train."""
    p = progress(doc)
    kinds = ", ".join(f"{k} {d} of {n}" for k, (d, n) in p["by_kind"].items() if n)
    text = (f"{p['done']} of {p['planned']} planned cells finished ({kinds}); {p['unfinished']} half-finished; "
            f"{p['seconds'] / 3600:.1f} worker-hours of training so far")
    if not p["complete"]:
        text += ("; about " + f"{p['seconds_left'] / 3600:.1f} worker-hours left (the mean of each kind's finished "
                 "cells; divide by the workers for wall time)" if p["seconds_left"] is not None
                 else "; time left unknown until every kind has a finished cell")
    return text


def merge(doc: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a cells document) with ``rec`` added: a finished cell replaces any cell or unfinished record of its
    key; an incomplete one goes to ``unfinished``. Returns a new document."""
    out = {**doc, "cells": [c for c in doc.get("cells", []) if c["key"] != rec["key"]],
           "unfinished": {k: v for k, v in (doc.get("unfinished") or {}).items() if k != rec["key"]}}
    if rec.get("incomplete"):
        out["unfinished"][rec["key"]] = rec
    else:
        out["cells"].append(rec)
    return out


# ----------------------------------------------------------------------------- the report
def _as_rule_cell(c: dict[str, Any]) -> dict[str, Any]:
    return {"kind": c["kind"], "capacity": c["arms"]["plain"]["params"] if "plain" in c["arms"] else None,
            "scale": c["scale"], "dilation": c["level"], "seed": c["seed"], "classes": c["classes"],
            "object_extent": c.get("object_extent"), "arms": c["arms"]}


def report(doc: dict[str, Any], command: str = "", report_command: str | None = None) -> dict[str, Any]:
    """The report of a cells document: the pre-registered verdict (:func:`erf.study.interaction.analyse`) and a
    row per main cell with every arm's train and test accuracy and ERF.

    Raises:
        StudyError: no finished main cell.
    """
    from erf.study.interaction import analyse
    from erf.study.preregistered import positive_control_result

    cells = doc.get("cells", [])
    main = [c for c in cells if c["kind"] == "main"]
    if not main:
        raise StudyError("no finished main cell to report on (cells.json has none)")
    b = doc["budget"]
    pcs = [c for c in cells if c["kind"] == "pc"]
    pc = positive_control_result([{"distance": c["distance"], "seed": c["seed"],
                                   "acc_plain": c["arms"]["plain"]["accuracy"],
                                   "acc_attention": c["arms"]["cbam"]["accuracy"]} for c in pcs],
                                 max(b["pc_distances"])) if pcs else None
    plateau = [_as_rule_cell(c) for c in cells if c["kind"] == "plateau"]
    planned_main = len(b["scales"]) * len(b["levels"]) * b["seeds"]
    rule = RULES[b.get("rule", "interaction/1")]
    analysis = analyse([_as_rule_cell(c) for c in main], pc, plateau or None, planned=planned_main,
                       smoke=bool(b.get("smoke")), rule=rule)
    missing = doc.get("planned", len(cells)) - len(cells)
    notes = []
    if missing > 0:
        kinds = {k: sum(c["kind"] == k for c in cells) for k in ("main", "plateau", "pc")}
        notes.append(f"{missing} of {doc.get('planned')} planned cells are not finished (main {kinds['main']} of "
                     f"{planned_main}, plateau {kinds['plateau']}, positive control {kinds['pc']}); the verdict "
                     "covers the finished ones (rerun the same command to resume)")
    rows = []
    for c in sorted(main, key=lambda c: (c["scale"], c["level"], c["seed"])):
        row = {"key": c["key"], "scale": c["scale"], "level": c["level"], "seed": c["seed"],
               "object_side": c.get("object_side"), "object_d50": c["object_extent"]["d50"]}
        for arm, r in c["arms"].items():
            row[f"acc_{arm}"], row[f"train_{arm}"] = r["accuracy"], r["train_accuracy"]
            row[f"erf_{arm}"] = r["erf"]["object_centred"]["d50"]
            row[f"params_{arm}"], row[f"seconds_{arm}"] = r["params"], r["seconds"]
        row["ratio"] = row["erf_plain"] / row["object_d50"]
        rows.append(row)
    return json_ready({"schema": "erf.study.interaction/1", "command": command,
                       **({"report_command": report_command} if report_command else {}), "data": doc["data"],
                       "budget": b, "settings": doc["settings"], "rule": rule.text,
                       "verdict": {"label": analysis["label"], "text": analysis["text"]}, "analysis": analysis,
                       "cells": rows, "positive_control": pc, "notes": notes,
                       "seconds": float(sum(c["seconds"] for c in cells))})


def operating_point(doc: dict[str, Any]) -> dict[str, Any]:
    """Rule 2 alone, the one interim look a pre-registered grid allows (``figures/h2_grid3/design.md``:
    "the only early stop allowed is rule 2 failing on its finished operating-point cells"); nothing about the gain.

    Needs every planned plateau cell and its seed's main cells. The contrast part (CBAM - plain and CBAM - local
    gate on doubling the epochs) is then final; the lag part (mean train accuracy of the gates at E minus the plain
    twin's) is a mean over every included main cell, so with main cells missing it is provisional.

    Returns:
        ``{"rule", "plateau_cells", "main_cells", "planned_main", "contrasts_passed", "lag_final", "result", "text"}``
        (``result``: :func:`erf.study.interaction.plateau_result`).

    Raises:
        StudyError: the budget's rule has no operating-point check, or planned plateau cells are not finished.
    """
    from erf.study.interaction import included, plateau_result

    rule = RULES[doc["budget"].get("rule", "interaction/1")]
    if rule.plateau != "operating_point":
        raise StudyError(f"rule {rule.name} checks an accuracy plateau, not an operating point: use the report")
    state = progress(doc)
    done, planned = state["by_kind"]["plateau"]
    if done < planned:
        raise StudyError(f"{done} of {planned} operating-point cells finished: the check needs all of them")
    main = [_as_rule_cell(c) for c in doc["cells"] if c["kind"] == "main"]
    inc = [c for c in main if included(c)]
    plateau = [_as_rule_cell(c) for c in doc["cells"] if c["kind"] == "plateau"]
    res = plateau_result(inc, plateau, rule)
    ok = res["contrasts_stable"]
    planned_main = state["by_kind"]["main"][1]
    final = len(main) >= planned_main
    spread = res["lag_spread"]
    lag_words = ", ".join(f"{a} SD {100 * v['sd']:.1f} pp over {v['n']} cells (SE {100 * v['se']:.1f} pp)"
                          for a, v in spread.items())
    text = (f"Operating-point check (rule 2 of {rule.name}) on {done} operating-point cells and "
            f"{len(inc)} included of {len(main)} finished main cells (of {planned_main} planned): {res['reason']}. "
            f"The contrast part is final and {'passes' if ok else 'FAILS'}"
            + (", so the pre-registered early stop applies: the label is INCONCLUSIVE whatever the other cells show"
               if not ok else "")
            + (". " if final else "; the lag part is provisional (main cells missing), the report decides it. ")
            + f"Spread of the per-cell lag: {lag_words}.")
    return {"rule": rule.name, "plateau_cells": done, "main_cells": len(main), "planned_main": planned_main,
            "contrasts_passed": bool(ok), "lag_final": final, "lag_spread": spread, "result": res, "text": text}


def table(rep: dict[str, Any]) -> str:
    """Markdown: one row per main cell (train / test accuracy of every arm, ERF and object extent), then the
    design points."""
    arms = [a for a in ("plain", "cbam", "localgate", "cbam_spatial") if any(f"acc_{a}" in r for r in rep["cells"])]
    head = ("| cell | object px | object 2r50 | plain 2r50 | ratio | "
            + " | ".join(f"{a} train/test %" for a in arms) + " |")
    lines = [head, "|" + "---|" * (5 + len(arms))]
    for r in rep["cells"]:
        accs = " | ".join(f"{100 * r.get(f'train_{a}', float('nan')):.1f} / {100 * r.get(f'acc_{a}', float('nan')):.1f}"
                          for a in arms)
        lines.append(f"| {r['key']} | {r['object_side']} | {r['object_d50']:.1f} | {r['erf_plain']:.1f} | "
                     f"{r['ratio']:.2f} | {accs} |")
    lines += ["", "| design point | ratio | seeds | " + " | ".join(f"{a} train/test %" for a in arms) + " |",
              "|" + "---|" * (3 + len(arms))]
    for k, p in rep["analysis"]["design_points"].items():
        accs = " | ".join(f"{100 * p.get(f'train_{a}', float('nan')):.1f} / {100 * p.get(f'acc_{a}', float('nan')):.1f}"
                          for a in arms)
        lines.append(f"| {k} | {p['ratio']:.2f} | {p['seeds']} | {accs} |")
    return "\n".join(lines) + "\n"


def figure(rep: dict[str, Any]) -> Any:
    """Three panels against log2(ERF/object): plain accuracy (the manipulation check), CBAM - plain, CBAM - local
    gate; one colour per object scale, one point per cell."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    scales = sorted({r["scale"] for r in rep["cells"]})
    for k, colour in zip(scales, plt.cm.viridis(np.linspace(0, 0.9, len(scales)))):
        sub = [r for r in rep["cells"] if r["scale"] == k]
        x = np.log2([r["ratio"] for r in sub])
        for ax, y in zip(axes, ([r["acc_plain"] for r in sub],
                                [r["acc_cbam"] - r["acc_plain"] for r in sub],
                                [r["acc_cbam"] - r.get("acc_localgate", float("nan")) for r in sub])):
            ax.scatter(x, 100 * np.asarray(y), color=colour, s=14, label=f"scale {k}")
    for ax, t in zip(axes, ("plain accuracy % (manipulation check)", "CBAM - plain, pp", "CBAM - local gate, pp")):
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("log2(ERF 2r50 / object 2r50)")
        ax.set_title(t, fontsize=9)
    axes[1].axhline(0, color="grey", lw=0.6)
    axes[2].axhline(0, color="grey", lw=0.6)
    axes[0].legend(fontsize=7)
    fig.suptitle(rep["verdict"]["text"][:110] + "...", fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["ARM_SUFFIX", "LAYER", "SCHEMA", "cell_key", "figure", "header", "merge", "object_extent", "plan", "report",
           "resolve", "run", "run_cell", "table"]
