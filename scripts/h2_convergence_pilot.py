"""Convergence pilot for the hypothesis-2 grid's recipe (issue #24): how many epochs reach a plateau?

The registered grid (``grid_cpu``, 10 epochs) failed its own plateau check (doubling to 20 epochs raised mean test
accuracy by +9.2 pp plain, +8.8 pp CBAM). This pilot trains one arm of one design point with the registered recipe
(SGD, cosine to 0, canvases redrawn every epoch) for each of ``--epochs`` and writes, after every model, a JSON list
of ``{arm, scale, level, seed, canvas, epochs, accuracy, train_accuracy, seconds, erf}``. Its cells use seed 1000
and above, so they are no cell of any grid; the pilot informs the epochs of the next grid's budget, nothing else.

    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/h2_convergence_pilot.py --arm plain --epochs 40 80 \
        --out figures/h2_pilot/plain.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch


class _FirstEpoch:
    """The canvases of epoch 0 for every epoch (drawn once): a fixed training set."""

    def __init__(self, canvases: Callable[[int], Any]) -> None:
        self.canvases, self.fixed = canvases, None

    def __call__(self, epoch: int) -> Any:
        if self.fixed is None:
            self.fixed = self.canvases(0)
        return self.fixed

    def __len__(self) -> int:
        return len(self.canvases)  # type: ignore[arg-type]


def _first_epoch_only(epochs: Callable[[float, int], Any]) -> Callable[[float, int], Any]:
    return lambda scale, seed: _FirstEpoch(epochs(scale, seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", default="plain", help="plain, cbam, localgate or cbam_spatial")
    p.add_argument("--epochs", type=int, nargs="+", default=[40, 80])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--canvas", type=int, default=None, help="canvas side (px; default the budget's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default the budget's)")
    p.add_argument("--fixed-train", action="store_true",
                   help="draw the training canvases once (epoch 0's) instead of every epoch")
    p.add_argument("--budget", default="grid_cpu")
    p.add_argument("--data", default=None, help="cifar10:PATH (default: the shared CIFAR-10 prefix where present)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    from erf.files.atomic import write_json
    from erf.study.budgets import INTERACTION_BUDGETS, default_controlled_source
    from erf.study.h2grid import _Sources, cell_key, run_cell

    torch.set_num_threads(1)
    base = replace(INTERACTION_BUDGETS[a.budget], arms=(a.arm,), **({"canvas": a.canvas} if a.canvas else {}),
                   **({"lr": a.lr} if a.lr else {}))
    rows = json.loads(a.out.read_text()) if a.out.exists() else []
    src = None  # data and test canvases do not depend on the epochs: loaded once, when a model is to be trained
    for epochs in a.epochs:
        b = replace(base, epochs=epochs)
        if any(r["epochs"] == epochs and r["arm"] == a.arm and r["scale"] == a.scale and r["level"] == a.level
               and r["seed"] == a.seed and r["canvas"] == b.canvas and r["lr"] == b.lr
               and r.get("fixed_train", False) == a.fixed_train for r in rows):
            continue
        if src is None:
            src = _Sources(a.data or default_controlled_source(), base, "cpu")
            if a.fixed_train:
                src.epochs = _first_epoch_only(src.epochs)  # type: ignore[method-assign]
        cell = {"kind": "main", "scale": a.scale, "level": a.level, "seed": a.seed,
                "key": cell_key("main", scale=a.scale, level=a.level, seed=a.seed)}
        t0 = time.perf_counter()
        rec = run_cell(cell, b, src, "cpu")
        m = rec["arms"][a.arm]
        rows.append({"arm": a.arm, "scale": a.scale, "level": a.level, "seed": a.seed, "canvas": b.canvas,
                     "epochs": epochs, "lr": b.lr, "fixed_train": a.fixed_train, "batch_size": b.batch_size,
                     "width": b.width,
                     "accuracy": m["accuracy"], "train_accuracy": m["train_accuracy"], "seconds": m["seconds"],
                     "cell_seconds": time.perf_counter() - t0, "erf": m.get("erf", {}).get("object_centred"),
                     "object_extent": rec.get("object_extent"), "precision": m["precision"]})
        a.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(a.out, rows)
        print(f"{a.arm} k={a.scale} l={a.level} {epochs} epochs: test {m['accuracy']:.3f} "
              f"train {m['train_accuracy']:.3f} ({m['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
