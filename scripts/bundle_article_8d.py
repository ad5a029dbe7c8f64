"""Bundle the trained 16x8d twins (after ``scripts/train_article_8d.sh`` has finished both runs).

For each model: the LAST epoch's weights (the end of the schedule; not the best-by-test epoch, which would select
on the test set), stored as float16 safetensors in ``erf/weights/MODEL.safetensors`` with the recipe, precision,
epochs, seconds, the float32-evaluated test accuracy of the stored float16 weights, their train accuracy (no
augmentation) and the plateau check in the header; and ``figures/article_8d/training.json`` +
``training_curves.png`` (both runs' curves).

Plateau criterion (fixed before the runs): over the last 10 % of the epochs (at least 2), test accuracy changes by
less than 1 percentage point (max - min).

    python3 scripts/bundle_article_8d.py [--runs figures/article_8d/runs] [--models norm_8d cbam_8d]
    python3 scripts/bundle_article_8d.py --runs RUNS --export DIR   # RUNS/MODEL/last.pt -> DIR/MODEL/

``--export`` writes, per model, ``last_weights16.pt`` (the last epoch's weights as float16 with the checkpoint's
metadata, no optimizer state: about 10 MB instead of 45) and ``log.csv``: what bundling needs, small enough to come
back from a lent GPU machine (``scripts/device_article_8d.sh``). Bundling reads ``last.pt`` or, where a run folder
has none, ``last_weights16.pt``; both give the same bundle (bundling stores float16 weights either way).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from erf.data import load_source  # noqa: E402
from erf.files.checkpoint_io import read_checkpoint_file, save_safetensors  # noqa: E402
from erf.models import create_model  # noqa: E402
from erf.training import evaluate  # noqa: E402

STAND_IN = ("all 4660 training and 932 test images of the shared CIFAR-10 prefix (the first 932 of each official "
            "batch file): the stand-in for the article's first 10 % (5000/1000), which this file cannot reproduce")


def plateau(rows: list[dict[str, str]], fraction: float = 0.1, pp: float = 1.0) -> dict:
    """The plateau check over the last ``fraction`` of the epochs (at least 2)."""
    k = max(2, math.ceil(fraction * len(rows)))
    acc = [float(r["test_acc"]) for r in rows[-k:]]
    spread = 100 * (max(acc) - min(acc))
    return {"last_epochs": k, "test_accuracy_spread_pp": spread, "threshold_pp": pp, "reached": spread < pp}


LAST_FILES = ("last.pt", "last_weights16.pt")
"""What bundling reads from a run folder, in this order: the resumable checkpoint, else its float16 export."""


def read_last(run: Path) -> dict:
    """The last-epoch checkpoint of run folder ``run`` (``last.pt``, else ``last_weights16.pt``)."""
    for f in LAST_FILES:
        if (run / f).is_file():
            return read_checkpoint_file(run / f)
    raise FileNotFoundError(f"{run}: neither {' nor '.join(LAST_FILES)}; run scripts/train_article_8d.sh first")


def export(runs: Path, models: list[str], to: Path) -> list[Path]:
    """Write ``to/MODEL/last_weights16.pt`` (float16 weights + metadata of ``runs/MODEL/last.pt``) and
    ``to/MODEL/log.csv`` for every model; return the files written."""
    import shutil

    from erf.checkpoints import save_checkpoint

    written = []
    for name in models:
        state = read_checkpoint_file(runs / name / "last.pt")
        model = create_model(name, **(state.get("model_kwargs") or {}))
        model.load_state_dict(state["state_dict"])
        (to / name).mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in state["metadata"].items() if k != "library_versions"}  # save_checkpoint adds them
        save_checkpoint(to / name / "last_weights16.pt", model, name, state.get("model_kwargs"),
                        {**meta, "exported_from": "last.pt (float32 + optimizer state), weights as float16"},
                        half=True)
        shutil.copyfile(runs / name / "log.csv", to / name / "log.csv")
        written += [to / name / "last_weights16.pt", to / name / "log.csv"]
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "figures/article_8d/runs"))
    p.add_argument("--models", nargs="+", default=["norm_8d", "cbam_8d"])
    p.add_argument("--weights", default=str(ROOT / "erf/weights"))
    p.add_argument("--figures", default=str(ROOT / "figures/article_8d"))
    p.add_argument("--data", default="cifar10:" + str(ROOT.parent / "shared/data/cifar10_prefix.npz"))
    p.add_argument("--export", default=None, metavar="DIR",
                   help="only write DIR/MODEL/{last_weights16.pt,log.csv} from --runs (no evaluation, no bundle)")
    args = p.parse_args()
    if args.export is not None:
        for f in export(Path(args.runs), args.models, Path(args.export)):
            print(f"wrote {f} ({f.stat().st_size / 1e6:.1f} MB)")
        return 0
    train_data = load_source(args.data, "train")
    test_data = load_source(args.data, "test")
    summary = {"schema": "erf.article_8d.training/1", "data": args.data, "stand_in": STAND_IN, "models": {}}
    curves = {}
    for name in args.models:
        run = Path(args.runs) / name
        try:
            state = read_last(run)
        except FileNotFoundError as e:
            print(e, file=sys.stderr)
            return 2
        meta = dict(state["metadata"])
        rows = list(csv.DictReader(open(run / "log.csv")))
        epochs = int(meta["recipe"]["epochs"])
        if len(rows) != epochs:
            print(f"{name}: {len(rows)} of {epochs} epochs done; run scripts/train_article_8d.sh to finish",
                  file=sys.stderr)
            return 2
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in state["state_dict"].items()}
        model = create_model(name)
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in half.items()})
        test = evaluate(model, test_data, precision="fp32")
        train = evaluate(model, train_data, precision="fp32")
        check = plateau(rows)
        facts = {**meta, "bundled_epoch": epochs, "weights": "last epoch, float16",
                 "test_accuracy": test.accuracy, "test_images": test.images,
                 "train_accuracy": train.accuracy, "train_images": train.images,
                 "train_accuracy_note": "stored float16 weights, evaluated in float32 without augmentation",
                 "best_epoch_test_accuracy": max(float(r["test_acc"]) for r in rows),
                 "plateau": check, "data_note": STAND_IN}
        facts.pop("best_test_accuracy", None)  # selected on the test set: not the bundled model's accuracy
        target = Path(args.weights) / f"{name}.safetensors"
        save_safetensors(target, half, name, state.get("model_kwargs"), facts)
        summary["models"][name] = {k: facts[k] for k in ("test_accuracy", "train_accuracy", "best_epoch_test_accuracy",
                                                         "plateau", "precision", "train_seconds", "recipe")}
        curves[name] = rows
        print(f"{name}: test {test.accuracy:.4f}, train {train.accuracy:.4f}, plateau {check}, -> {target}")
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rows in curves.items():
        e = [int(r["epoch"]) for r in rows]
        ax[0].plot(e, [100 * float(r["test_acc"]) for r in rows], label=f"{name} test")
        ax[0].plot(e, [100 * float(r["train_acc"]) for r in rows], "--", label=f"{name} train (running, augmented)")
        ax[1].plot(e, [float(r["test_loss"]) for r in rows], label=name)
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("accuracy (%)"), ax[0].legend(fontsize=7)
    ax[1].set_xlabel("epoch"), ax[1].set_ylabel("test cross-entropy"), ax[1].legend(fontsize=7)
    fig.suptitle("ResNeXt-29 16x8d, plain vs CBAM, on 4660 CIFAR-10 images (one seed each)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
