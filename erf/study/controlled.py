"""The controlled experiment: twins trained on canvases whose object size ``s`` is set by construction
(:func:`erf.canvas.paste_objects`), for several sizes and seeds, with a regression of the gain on
``log2(ERF / s)`` and the verdict of :func:`erf.study.verdicts.controlled_verdict`.

Twin pairs (:data:`PAIRS`) and grid sizes (:data:`BUDGETS`) are registries: the command line's
``--pairs`` and ``--budget`` choices come from them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erf.errors import InputError, StudyError
from erf.statistics import mean_interval
from erf.study.budgets import BUDGETS, PAIRS, Budget, PairSpec
from erf.study.conversion import CONVERSION, SCHEMA
from erf.study.pairing import pair_rows
from erf.study.real import correctness
from erf.study.records import Accuracy, ModelERF, measure_model, model_json
from erf.study.verdicts import controlled_verdict, fit_gain


def source_splits(spec: str, train_n: int | None, test_n: int | None) -> tuple[Any, Any, list[str]]:
    """Train and test image sets of ``spec``; the bundled sample (test images only) is split in two."""
    from erf.data import load_source

    notes: list[str] = []
    if spec.split(":")[0] in ("bundled", "sample"):
        allx = load_source(spec, "test")
        n = len(allx)
        te = min(test_n or n // 3, n // 2)
        tr = min(train_n or n - te, n - te)
        if tr < (train_n or 0) or te < (test_n or 0):
            notes.append(f"the bundled sample has {n} images: {tr} train / {te} test")
        idx_tr, idx_te = slice(0, tr), slice(n - te, n)
        from erf.data.sources import ImageSet

        def take(s: slice, what: str) -> Any:
            return ImageSet(allx.images[s], allx.labels[s], f"{allx.description}, {what}", allx.classes, raw=True)

        return take(idx_tr, f"images 0..{tr - 1}"), take(idx_te, f"images {n - te}..{n - 1}"), notes
    train = load_source(spec, "train", count=train_n)
    test = load_source(spec, "test", count=test_n)
    return train, test, notes + train.notes + test.notes


def default_controlled_source() -> str:
    """``cifar10:/work/shared/data/cifar10_prefix.npz``-style source when present, else ``bundled``."""
    for p in (Path("../shared/data/cifar10_prefix.npz"), Path("/work/shared/data/cifar10_prefix.npz"),
              Path("runs/study_data/cifar10_prefix.npz")):
        if p.exists():
            return f"cifar10:{p}"
    return "bundled"


def cell_key(seed: int, size: int, pair: str) -> str:
    """The key of one grid cell (``seed=0/size=12/pair=twoconv``): the pairing group of its two models."""
    return f"seed={seed}/size={size}/pair={pair}"


def run_cell(pair: PairSpec, size: int, seed: int, train_src: Any, test_src: Any, budget: Budget,
             device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Train both twins of ``pair`` on objects of side ``size`` (seed ``seed``), measure, evaluate."""
    import tempfile

    from erf.canvas import paste_objects
    from erf.models import create_model
    from erf.training import Recipe, train

    train_set, test_set = (paste_objects(src.images, size, budget.canvas, "study", offset + seed,
                                         labels=src.labels.numpy(), description=src.description,
                                         classes=src.classes)
                           for src, offset in ((train_src, 1000), (test_src, 2000)))
    kwargs = dict(pair.kwargs)
    out: dict[str, Any] = {"seed": seed, "size": size, "pair": pair.key, "canvas": budget.canvas,
                           "train_images": len(train_set), "test_images": len(test_set)}
    t0 = time.perf_counter()
    for role, name in (("plain", pair.plain), ("attention", pair.attention)):
        torch.manual_seed(seed)
        model = create_model(name, **kwargs)
        recipe = Recipe(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr, seed=seed)
        with tempfile.TemporaryDirectory(prefix="erf-study-") as tmp:
            train(model, name, train_set.data, test_set.data, tmp, recipe, kwargs={k: v for k, v in kwargs.items()},
                  metadata={"controlled_size": size}, device=device, progress=progress)
        model = model.cpu().eval() if device == "cpu" else model.eval()
        c = correctness(model, test_set.data, device)
        m, _ = measure_model(model, test_set.data.head(budget.erf_images), name, name, None,
                             bootstrap=budget.bootstrap, seed=seed, device=device)
        out[role] = {"name": name, "accuracy": float(c.mean()), "correct": c.astype(int).tolist(),
                     "layers": m.layers}
    out["seconds"] = time.perf_counter() - t0
    out["device"] = str(device)
    return out


def cells_to_models(cells: Sequence[dict[str, Any]]) -> list[ModelERF]:
    """Two :class:`ModelERF` (plain, attention) per finished cell, grouped by :func:`cell_key`."""
    models = []
    for c in cells:
        group = cell_key(c["seed"], c["size"], c["pair"])
        for role in ("plain", "attention"):
            r = c[role]
            corr = np.asarray(r["correct"], dtype=bool)
            models.append(ModelERF(f"{group}/{role}", r["name"], None if role == "plain" else "cbam", r["layers"],
                                   Accuracy(r["accuracy"], len(corr), "evaluated on the cell's test set", corr),
                                   group=group))
    return models


def resumable_cells(previous: Any, budget: Budget, data: str) -> list[dict[str, Any]]:
    """The finished cells of a previous run's ``cells.json`` document that this run can reuse: all of them
    when it ran with the same budget and data, else none."""
    if not isinstance(previous, dict):
        return []
    same = (json.loads(json.dumps(previous.get("budget"))) == json.loads(json.dumps(budget.to_json()))
            and previous.get("data") == data)
    return list(previous.get("cells", [])) if same else []


def resolve_budget(budget: Budget | str, sizes: Sequence[int] | None = None, seeds: int | None = None,
                   pairs: Sequence[str] | None = None, epochs: int | None = None
                   ) -> tuple[Budget, tuple[int, ...], tuple[str, ...], int]:
    """The budget with ``epochs`` overridden, and the grid's sizes, pairs and seed count (the budget's by default).

    Raises:
        InputError: an unknown budget or pair, a size outside the canvas, fewer than one seed.
    """
    if isinstance(budget, str) and budget not in BUDGETS:
        raise InputError(f"budget {budget!r}: use {', '.join(BUDGETS)}")
    b = BUDGETS[budget] if isinstance(budget, str) else budget
    size_list = tuple(int(s) for s in (sizes or b.sizes))
    for s in size_list:
        if not 1 <= s <= b.canvas:
            raise InputError(f"sizes {s}: must be between 1 and the {b.canvas} px canvas")
    pair_keys = tuple(pairs or b.pairs)
    for p in pair_keys:
        if p not in PAIRS:
            raise InputError(f"pairs {p!r}: use {', '.join(PAIRS)}")
    n_seeds = int(seeds or b.seeds)
    if n_seeds < 1:
        raise InputError(f"seeds {n_seeds}: must be at least 1")
    if epochs:
        b = b.replace(epochs=int(epochs))
    return b, size_list, pair_keys, n_seeds


def run_controlled(budget: Budget | str, sizes: Sequence[int] | None = None, seeds: int | None = None,
                   pairs: Sequence[str] | None = None, data: str | None = None, device: str = "cpu",
                   progress: bool = True, time_limit: float | None = None, epochs: int | None = None,
                   previous: Any = None,
                   on_cell: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the controlled grid and report on it.

    Cells (seed x size x pair, seeds outermost) found in ``previous`` (a former run's ``cells.json``
    document, see :func:`resumable_cells`) are not run again. After every new cell ``on_cell`` receives
    the updated ``cells.json`` document (``{"budget", "data", "cells"}``), so the caller can persist it and
    a later run can resume. ``time_limit`` (seconds) stops starting new cells once exceeded; the report then
    covers the finished cells and says so.

    Returns:
        The ``erf.study/1`` document (mode ``controlled``).
    """
    from tqdm import tqdm

    b, sizes, pair_keys, n_seeds = resolve_budget(budget, sizes, seeds, pairs, epochs)
    data = data or default_controlled_source()
    cells = resumable_cells(previous, b, data)
    done = {cell_key(c["seed"], c["size"], c["pair"]) for c in cells}
    train_src, test_src, notes = source_splits(data, b.train_images, b.test_images)
    grid = [(seed, s, p) for seed in range(n_seeds) for s in sizes for p in pair_keys]
    t0 = time.perf_counter()
    stopped = 0
    bar = tqdm(grid, desc="controlled grid", unit="cell", disable=not progress)
    for seed, s, p in bar:
        key = cell_key(seed, s, p)
        if key in done:
            continue
        if time_limit is not None and time.perf_counter() - t0 >= time_limit:
            stopped += 1
            continue
        bar.set_postfix(seed=seed, size=s, pair=p)
        cells.append(run_cell(PAIRS[p], s, seed, train_src, test_src, b, device))
        if on_cell is not None:
            on_cell({"budget": b.to_json(), "data": data, "cells": list(cells)})
    bar.close()
    if stopped:
        notes.append(f"--time-limit: {stopped} of {len(grid)} cells were not run; the report covers "
                     f"{len(grid) - stopped} cells (rerun with the same --out to resume)")
    cells = [c for c in cells if c["size"] in sizes and c["pair"] in pair_keys and c["seed"] < n_seeds]
    doc, _ = controlled_report(cells, b, data, notes)
    doc["settings"]["device"] = device
    doc["settings"]["cell_devices"] = sorted({str(c.get("device", "unrecorded")) for c in cells})
    return doc


def controlled_report(cells: Sequence[dict[str, Any]], budget: Budget, data: str,
                      notes: Sequence[str] = ()) -> tuple[dict[str, Any], list[ModelERF]]:
    """The ``erf.study/1`` document of finished controlled cells."""
    if not cells:
        raise StudyError("no finished cells to report on")
    models = cells_to_models(cells)
    med = {cell_key(c["seed"], c["size"], c["pair"]): float(c["size"]) for c in cells}
    rows, pnotes = pair_rows(models, med)
    for r in rows:
        r["size"] = int(r["object_size"])
        r["pair"] = r["group"].split("pair=")[1]
    fit = fit_gain([r["ratio"] for r in rows], [r["gain"] for r in rows])
    v, fit_trained = controlled_verdict(rows, fit)
    by_pair: dict[str, Any] = {}
    for key in sorted({r["pair"] for r in rows}):
        sub = [r for r in rows if r["pair"] == key]
        by_pair[key] = {"fit": fit_gain([r["ratio"] for r in sub], [r["gain"] for r in sub]),
                        "sizes": {str(s): {"mean_gain": float(np.mean([r["gain"] for r in sub if r["size"] == s])),
                                           "gain_ci": mean_interval([r["gain"] for r in sub if r["size"] == s]),
                                           "mean_ratio": float(np.mean([r["ratio"] for r in sub if r["size"] == s])),
                                           "seeds": sum(r["size"] == s for r in sub)}
                                  for s in sorted({r["size"] for r in sub})}}
    model_rows = [model_json(m, None) for m in models]
    doc = {"schema": SCHEMA, "mode": "controlled", "conversion": CONVERSION.replace("median object sqrt(area)",
                                                                                    "object side s"),
           "data": data, "budget": budget.to_json(), "models": model_rows, "pairs": rows, "by_pair": by_pair,
           "fit": fit, "fit_without_near_chance": fit_trained, "verdict": v, "notes": list(notes) + pnotes,
           "objects": {"count": len(cells), "source": "controlled: true sizes by construction", "is_estimate": False,
                       "method": "pasted square of side s", "sizes": sorted({int(c["size"]) for c in cells})},
           "settings": {"bootstrap": budget.bootstrap, "seeds": len({c["seed"] for c in cells}),
                        "cells": len(cells)}}
    return doc, models
