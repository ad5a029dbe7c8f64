"""The controlled hypothesis-2 grid (issue #15): dilation twins x object sizes x seeds, controls, positive control.

Cells (all trained from scratch with the same recipe, ``Recipe(augment=False)``: positions,
backgrounds and flips are redrawn every epoch instead, :mod:`erf.study.canvases`):

* ``main``: for dilation ``d``, object size ``s`` and seed: the plain twin ``dilnet_d{d}`` and its
  CBAM twin ``dilnet_d{d}_cbam``, trained on the same per-epoch canvases (same seed), evaluated on
  the size's fixed test canvases; the object-centred and position-averaged ERF of both at
  ``stage2`` (the last spatial layer) on the first :attr:`Budget.erf_images` of those canvases.
* ``control``: one gating control (``se``, ``cbam_spatial``, ``localgate``) at a ``(d, s)`` of the
  main grid, same seed and canvases as that main cell (its plain and CBAM twins are the main cell's).
* ``pc``: the positive control (:mod:`erf.study.positive_control`) at each distance, plain and CBAM
  twins of dilation :attr:`Budget.pc_dilation`.

Every model records its parameters, forward FLOPs (one 64 px image, ``FlopCounterMode``), final
test accuracy (last epoch; no selection on the test set), last-epoch running train accuracy and
the train - test gap (capacity as a covariate), and its training seconds.

:func:`run_grid` runs (or resumes) the grid and hands the cells document to ``on_cell`` after every
cell (the command writes it atomically as ``cells.json``); finished cells whose settings are equal
are skipped. :func:`grid_report` turns cells into the report document (the pre-registered verdict
of :mod:`erf.study.preregistered`, a table per cell); the command writes it and the figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from erf.errors import InputError, StudyError
from erf.files.atomic import json_ready
from erf.study.budgets import BUDGETS, Budget
from erf.study.object_centred import LEVELS, object_centred_erf
from erf.study.preregistered import RULE, analyse, positive_control_result

SCHEMA = "erf.study.grid/1"
LAYER = "stage2"
"""The layer whose ERF is the network's ERF (the last spatial layer, before global pooling)."""


# ----------------------------------------------------------------------------- model facts
def model_facts(model: torch.nn.Module, canvas: int) -> dict[str, Any]:
    """Parameters and forward FLOPs of one ``canvas`` px image (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    x = torch.zeros(1, 3, canvas, canvas, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was)
    return {"params": int(sum(p.numel() for p in model.parameters())), "flops": int(counter.get_total_flops())}


def _correct_string(correct: np.ndarray) -> str:
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def _train_model(name: str, num_classes: int, budget: Budget, train_data: Any, test_data: Any, seed: int,
                 device: str, epochs: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    from erf.models import get_entry
    from erf.training import Recipe, evaluate, train

    torch.manual_seed(seed)
    model = get_entry(name).build(num_classes=num_classes, widths=budget.widths, blocks=budget.blocks)
    facts = model_facts(model, budget.canvas)
    recipe = Recipe(epochs=epochs, batch_size=budget.batch_size, lr=budget.lr, augment=False, seed=seed)
    t0 = time.perf_counter()
    summary = train(model, name, train_data, test_data, None, recipe, checkpoints="none",
                    evaluate_every_epoch=False, channels_last=device == "cpu", device=device, progress=False)
    seconds = time.perf_counter() - t0
    model = model.to(memory_format=torch.contiguous_format).eval()
    ev = evaluate(model, test_data, device=device)
    train_acc = float(summary["last_train_accuracy"])
    return model, {"name": name, **facts, "accuracy": float(ev.accuracy), "train_accuracy": train_acc,
                   "train_test_gap": train_acc - float(ev.accuracy), "seconds": seconds,
                   "images_per_second": len(train_data) * epochs / seconds if seconds > 0 else None,
                   "correct": _correct_string(ev.correct)}


def _erf(model: torch.nn.Module, test: Any, budget: Budget, device: str) -> dict[str, Any]:
    n = min(budget.erf_images, len(test))
    r = object_centred_erf(model, LAYER, test.data.images[:n], test.centres()[:n], test.boxes[:n], LEVELS,
                           device=device)
    return {"object_centred": r["object_centred"], "position_averaged": r.get("position_averaged"),
            "unit_in_box": r["unit_in_box"], "trf_global": r["trf"]["global"], "trf_side": r["trf"]["local_size"][0],
            "images": r["images"]}


# ----------------------------------------------------------------------------- cells
def cell_key(kind: str, **k: Any) -> str:
    """Stable key of a cell: ``main/s=16/d=1/seed=0``, ``control/localgate/s=32/d=1/seed=0``, ``pc/D=48/seed=0``."""
    if kind == "main":
        return f"main/s={k['size']}/d={k['dilation']}/seed={k['seed']}"
    if kind == "control":
        return f"control/{k['gate']}/s={k['size']}/d={k['dilation']}/seed={k['seed']}"
    if kind == "pc":
        return f"pc/D={k['distance']}/seed={k['seed']}"
    raise ValueError(kind)


def plan(budget: Budget, seeds: int | None = None) -> list[dict[str, Any]]:
    """The cells of ``budget`` in run order: seeds outermost (main, then controls, then positive control)."""
    from erf.models import DILATIONS, DILNET_GATES

    for d in (*budget.dilations, budget.pc_dilation, *(p[0] for p in budget.control_points)):
        if d not in DILATIONS:
            raise InputError(f"budget {budget.name}: dilation {d} is not registered (dilnet_d{{{DILATIONS}}})")
    for g in budget.control_gates:
        if g not in DILNET_GATES or g in (None, "cbam"):
            raise InputError(f"budget {budget.name}: unknown gating control {g!r}")
    for d, s in budget.control_points:
        if d not in budget.dilations or s not in budget.sizes:
            raise InputError(f"budget {budget.name}: control point d={d}, s={s} is not in the main grid")
    out: list[dict[str, Any]] = []
    for seed in range(int(seeds or budget.seeds)):
        for s in budget.sizes:
            for d in budget.dilations:
                out.append({"kind": "main", "size": s, "dilation": d, "seed": seed})
        for d, s in budget.control_points:
            for g in budget.control_gates:
                out.append({"kind": "control", "gate": g, "size": s, "dilation": d, "seed": seed})
        for dist in budget.pc_distances:
            out.append({"kind": "pc", "distance": dist, "seed": seed})
    for c in out:
        c["key"] = cell_key(**c)
    return out


class _Sources:
    """CIFAR-10 train/test objects, resized test canvases per size (cached), on the device."""

    def __init__(self, data: str, budget: Budget, device: str) -> None:
        from erf.data import load_source

        self.train = load_source(data, "train", count=budget.train_images)
        self.test = load_source(data, "test", count=budget.test_images)
        if self.train.notes and any("test images only" in n for n in self.train.notes):
            raise StudyError(f"{data}: has no training split (use cifar10:PATH)", param="data")
        self.budget, self.device = budget, device
        self._tests: dict[int, Any] = {}
        self._pc_tests: dict[int, Any] = {}

    def test_canvases(self, size: int) -> Any:
        from erf.study.canvases import fixed_canvases

        if size not in self._tests:
            self._tests[size] = fixed_canvases(self.test.images, self.test.labels, size, self.budget.canvas, seed=0,
                                               device=self.device, description=self.test.description,
                                               classes=self.test.classes)
        return self._tests[size]

    def epochs(self, size: int, seed: int) -> Any:
        from erf.study.canvases import EpochCanvases

        return EpochCanvases(self.train.images, self.train.labels, size, self.budget.canvas, seed, self.device,
                             self.train.description, self.train.classes)

    def pc_test(self, distance: int) -> Any:
        from erf.study.positive_control import fixed_marks

        if distance not in self._pc_tests:
            self._pc_tests[distance] = fixed_marks(self.budget.pc_test_images, distance, self.budget.canvas, seed=0,
                                                   device=self.device)
        return self._pc_tests[distance]


def run_cell(cell: dict[str, Any], budget: Budget, sources: _Sources, device: str = "cpu",
             epochs: int | None = None, stop: Callable[[], bool] | None = None,
             resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and measure the models of one ``cell`` (see the module docstring); returns its record.

    Args:
        stop: asked before every model this call would train; ``True`` ends the cell there, and the record
            comes back with ``"incomplete": True`` and the models trained so far (the time limit, honoured
            between models).
        resume: an incomplete record of this cell (same settings): its finished models are reused.
    """
    from erf.models import DILNET_GATES

    ep = int(epochs or budget.epochs)
    t0 = time.perf_counter()
    out: dict[str, Any] = {k: v for k, v in cell.items()}
    earlier = float(resume.get("seconds", 0.0)) if resume else 0.0

    def _halt(role: str) -> bool:
        if resume and isinstance(resume.get(role), dict):
            out[role] = resume[role]
            return False
        if stop is not None and stop():
            out.update(incomplete=True, seconds=earlier + time.perf_counter() - t0)
            return True
        return False

    if cell["kind"] in ("main", "control"):
        s, d, seed = cell["size"], cell["dilation"], cell["seed"]
        test = sources.test_canvases(s)
        train_data = sources.epochs(s, seed)
        classes = len(sources.train.classes) or 10
        names = ([("plain", f"dilnet_d{d}"), ("attention", f"dilnet_d{d}_cbam")] if cell["kind"] == "main"
                 else [("model", f"dilnet_d{d}{DILNET_GATES[cell['gate']]}")])
        for role, name in names:
            if _halt(role):
                return out
            if role in out:
                continue
            model, rec = _train_model(name, classes, budget, train_data, test.data, seed, device, ep)
            rec["erf"] = _erf(model, test, budget, device)
            out[role] = rec
        out.update(classes=classes, test_images=len(test), train_images=len(train_data))
    else:
        from erf.study.positive_control import EpochMarks

        dist, seed = cell["distance"], cell["seed"]
        test = sources.pc_test(dist)
        train_data = EpochMarks(budget.pc_images, dist, budget.canvas, seed, device)
        pc_epochs = budget.pc_epochs if epochs is None else max(1, min(int(epochs), budget.pc_epochs))
        for role, name in (("plain", f"dilnet_d{budget.pc_dilation}"), ("attention",
                                                                          f"dilnet_d{budget.pc_dilation}_cbam")):
            if _halt(role):
                return out
            if role in out:
                continue
            _, rec = _train_model(name, 2, budget, train_data, test, seed, device, pc_epochs)
            out[role] = rec
        out.update(classes=2, test_images=len(test), train_images=len(train_data))
    out["epochs"] = ep if cell["kind"] != "pc" else pc_epochs
    out["seconds"] = earlier + time.perf_counter() - t0
    out["device"] = str(device)
    out["threads"] = torch.get_num_threads()
    return out


def run_grid(budget: Budget | str, data: str, device: str = "cpu", seeds: int | None = None,
             sizes: Sequence[int] | None = None, epochs: int | None = None, previous: dict[str, Any] | None = None,
             on_cell: Callable[[dict[str, Any]], None] | None = None, time_limit: float | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the grid; returns the cells document ``{"schema", "budget", "data", "settings", "cells"}``.

    Args:
        budget: a :data:`BUDGETS` key or a :class:`Budget`.
        data: the CIFAR-10 source spec (``cifar10:PATH``).
        device: training device.
        seeds, sizes, epochs: overrides of the budget's.
        previous: an earlier cells document (``cells.json``): its cells with equal settings and data are reused.
        on_cell: called with the cells document after every finished cell (write ``cells.json`` there).
        time_limit: seconds after which no new model is started (checked between models, so a cell can stop
            half-way: its finished models are kept in the document's ``unfinished`` and reused on a rerun; at least
            one model is trained per call); ``0``: report on the finished cells only.
        progress: a progress bar over the cells (stderr: cells done and left, the cell running, an ETA).

    Raises:
        InputError: an unknown budget or a size outside the canvas.
    """
    from tqdm import tqdm

    b = resolve_budget(budget, sizes=sizes)
    settings = json.loads(json.dumps({**b.training(), **({"epochs": int(epochs)} if epochs else {})}))
    cells: list[dict[str, Any]] = []
    if previous and previous.get("data") == data:
        cells = [c for c in previous.get("cells", []) if c.get("settings") == settings]
    unfinished: dict[str, Any] = {}
    if previous and previous.get("data") == data:
        unfinished = {k: v for k, v in (previous.get("unfinished") or {}).items() if v.get("settings") == settings}
    done = {c["key"] for c in cells}
    todo = plan(b, seeds)
    doc = {"schema": SCHEMA, "budget": asdict(b), "data": data, "settings": settings, "cells": cells,
           "planned": len(todo), "unfinished": unfinished,
           "planned_kinds": {k: sum(c["kind"] == k for c in todo) for k in ("main", "control", "pc")}}
    pending = [c for c in todo if c["key"] not in done]
    if not pending or time_limit == 0:
        return doc
    sources = _Sources(data, b, device)
    start = time.perf_counter()
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return time_limit is not None and asked > 1 and time.perf_counter() - start >= time_limit

    bar = tqdm(pending, desc="h2 grid", unit="cell", disable=not progress, file=sys.stderr)
    for k, cell in enumerate(bar):
        bar.set_postfix_str(f"{cell['key']} ({len(pending) - k} left)")
        rec = run_cell(cell, b, sources, device, epochs, stop=stop, resume=unfinished.get(cell["key"]))
        rec["settings"] = settings
        if rec.get("incomplete"):
            unfinished[cell["key"]] = rec
            if on_cell is not None:
                on_cell(doc)
            break
        unfinished.pop(cell["key"], None)
        cells.append(rec)
        if on_cell is not None:
            on_cell(doc)
    bar.close()
    return doc


def resolve_budget(budget: Budget | str, sizes: Sequence[int] | None = None) -> Budget:
    """The :class:`Budget` of a registry key (``sizes`` override; control points outside them are dropped)."""
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise InputError(f"{budget!r}: use {', '.join(BUDGETS)}", param="budget")
        budget = BUDGETS[budget]
    if sizes:
        sizes = tuple(int(s) for s in sizes)
        for s in sizes:
            if not 1 <= s <= budget.canvas:
                raise InputError(f"{s}: must be between 1 and the {budget.canvas} px canvas", param="sizes")
        budget = replace(budget, sizes=sizes, control_points=tuple(p for p in budget.control_points if p[1] in sizes))
    return budget


# ----------------------------------------------------------------------------- the report
def _d(rec: dict[str, Any], q: str = "d50", variant: str = "object_centred") -> float:
    e = rec.get("erf") or {}
    v = e.get(variant) or {}
    return float(v.get(q, float("nan")))


def grid_report(doc: dict[str, Any], command: str = "", report_command: str | None = None) -> dict[str, Any]:
    """The report of a cells document: the pre-registered verdict and a row per cell.

    Args:
        doc: the cells document (``cells.json``).
        command: the command that ran the cells (recorded as ``command``).
        report_command: the command that only regenerated this report from finished cells, when it differs
            (recorded as ``report_command``).

    Raises:
        StudyError: no finished main cell.
    """
    cells = doc.get("cells", [])
    main = [c for c in cells if c["kind"] == "main"]
    if not main:
        raise StudyError("no finished main cell to report on (cells.json is empty)")
    rows = []
    for c in main:
        p, a = c["plain"], c["attention"]
        rows.append({"key": c["key"], "size": c["size"], "dilation": c["dilation"], "seed": c["seed"],
                     "capacity": p["params"], "classes": c["classes"],
                     "erf_plain": _d(p), "erf_attention": _d(a),
                     "erf_plain_curve": (p.get("erf") or {}).get("object_centred"),
                     "erf_plain_position_averaged": (p.get("erf") or {}).get("position_averaged"),
                     "erf_attention_curve": (a.get("erf") or {}).get("object_centred"),
                     "unit_in_box": (p.get("erf") or {}).get("unit_in_box"),
                     "acc_plain": p["accuracy"], "acc_attention": a["accuracy"],
                     "gain": a["accuracy"] - p["accuracy"], "ratio_cell": _d(p) / c["size"],
                     "params_plain": p["params"], "params_attention": a["params"],
                     "flops_plain": p["flops"], "flops_attention": a["flops"],
                     "gap_plain": p["train_test_gap"], "gap_attention": a["train_test_gap"],
                     "seconds": c["seconds"]})
    by_main = {(c["size"], c["dilation"], c["seed"]): c for c in main}
    controls = []
    for c in cells:
        if c["kind"] != "control":
            continue
        m = by_main.get((c["size"], c["dilation"], c["seed"]))
        if m is None:
            continue
        controls.append({"gate": c["gate"], "size": c["size"], "dilation": c["dilation"], "seed": c["seed"],
                         "acc_plain": m["plain"]["accuracy"], "acc_attention": m["attention"]["accuracy"],
                         "acc_gate": c["model"]["accuracy"], "params_gate": c["model"]["params"],
                         "erf_gate": _d(c["model"]), "gap_gate": c["model"]["train_test_gap"]})
    pcs = [c for c in cells if c["kind"] == "pc"]
    b = doc["budget"]
    far = max(b["pc_distances"]) if b.get("pc_distances") else 0
    pc = positive_control_result([{"distance": c["distance"], "seed": c["seed"], "acc_plain": c["plain"]["accuracy"],
                                   "acc_attention": c["attention"]["accuracy"]} for c in pcs], far) if pcs else None
    verdict = analyse(rows, pc, controls)
    ratios = {(p["size"], p["dilation"]): p["ratio"] for p in verdict["design_points"].values()}
    for r in rows:
        r["ratio"] = ratios.get((r["size"], r["dilation"]))
    missing = doc.get("planned", len(cells)) - len(cells)
    notes = []
    if missing > 0:
        notes.append(f"{missing} of {doc.get('planned')} planned cells are not finished; the verdict covers the "
                     f"{len(cells)} finished ones (rerun the same command to resume)")
        kinds = {k: sum(c["kind"] == k for c in cells) for k in ("main", "control", "pc")}
        planned = doc.get("planned_kinds") or {}
        ran = ", ".join(f"{what} {kinds[k]}" + (f" of {planned[k]}" if k in planned else "")
                        for k, what in (("main", "main cells"), ("control", "gating controls"),
                                        ("pc", "positive-control cells")))
        verdict["text"] = (f"PARTIAL RUN ({len(cells)} of {doc.get('planned')} cells finished: {ran}); the rule "
                           "below is applied to what ran. " + verdict["text"])
    if b.get("smoke"):
        verdict["text"] = ("SMOKE TEST (budget " + str(b.get("name")) + ": tiny data, 1 epoch): these numbers "
                           "mean nothing. " + verdict["text"])
    return json_ready({"schema": "erf.study.controlled/2", "command": command,
                  **({"report_command": report_command} if report_command else {}), "data": doc["data"], "budget": b,
            "settings": doc["settings"], "rule": RULE, "verdict": {"label": verdict["label"],
                                                                    "text": verdict["text"]},
            "analysis": verdict, "cells": rows, "controls": controls, "positive_control": pc,
            "models": _model_table(cells), "notes": notes,
            "seconds": float(sum(c["seconds"] for c in cells))})


def _model_table(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cells:
        for role in ("plain", "attention", "model"):
            r = c.get(role)
            if not isinstance(r, dict):
                continue
            out.append({"cell": c["key"], "role": role, "name": r["name"], "params": r["params"], "flops": r["flops"],
                        "accuracy": r["accuracy"], "train_accuracy": r["train_accuracy"],
                        "train_test_gap": r["train_test_gap"], "seconds": r["seconds"],
                        "images_per_second": r.get("images_per_second"),
                        "erf_d50": _d(r) if r.get("erf") else None,
                        "erf_curve": (r.get("erf") or {}).get("object_centred"),
                        "erf_position_averaged": (r.get("erf") or {}).get("position_averaged")})
    return out


__all__ = ["BUDGETS", "LAYER", "SCHEMA", "Budget", "cell_key", "grid_report", "model_facts", "plan",
           "resolve_budget", "run_cell", "run_grid"]
