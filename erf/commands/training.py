"""``erf models``, ``erf train`` and ``erf evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from erf.commands._base import add_model_options, command, print_json, print_notes
from erf.errors import CheckpointError
from erf.precision import PRECISIONS, precision_help
from erf.recipe import SCHEDULES


# ----------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    """``erf models``: the registry with parameter counts (from the registry, never by training); exit code.

    Reads the torch-free copy of the registry's table (:mod:`erf.catalog`) while it is current, else the registry."""
    import fnmatch

    from erf.catalog import build_catalog, has_bundled_weights, read_catalog

    table = read_catalog() or build_catalog()["models"]
    rows = [{**row, "bundled_weights": has_bundled_weights(row["name"])}
            for row in table if fnmatch.fnmatch(row["name"], args.pattern)]
    if args.json:
        print_json({"schema": "erf.models/1", "models": rows})
        return 0
    print(f"{'name':<24}{'params':>12}  {'weights':<8} description")
    for r in rows:
        print(f"{r['name']:<24}{r['params']:>12,}  {'bundled' if r['bundled_weights'] else '-':<8} "
              f"{r['description']}")
    return 0


# ----------------------------------------------------------------------------- train / evaluate
TRAIN_FILES = ("log.csv", "best.pt", "last.pt", "best.safetensors")
"""The files of an ``erf train`` run folder (an older run's files matching these are replaced with ``--force``)."""


def _resumable_state(path: Path, name: str) -> dict:
    """The contents of a ``last.pt`` that ``erf train --resume`` can continue; refuse one that is unreadable or
    not a training run of ``name`` (typed errors naming the file)."""
    from erf.files.checkpoint_io import FORMAT, read_checkpoint_file

    state = read_checkpoint_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by erf train (nothing to resume)")
    missing = [k for k in ("state_dict", "optimizer", "scheduler", "generator", "epoch", "log") if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); nothing to resume")
    if state.get("model") != name:
        raise CheckpointError(f"{path}: a run of {state.get('model')!r}, not of {name!r}; cannot resume it")
    return state


def cmd_train(args: argparse.Namespace) -> int:
    """``erf train``: train a registry model with the article's recipe; exit code."""
    from erf.data import load_source
    from erf.files.outputs import OutputSet
    from erf.models import canonical_name, create_model
    from erf.training import Recipe, check_recipe, train

    name = canonical_name(args.model)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                    weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
                    augment=not args.no_augment)
    check_recipe(recipe)
    # the run folder is published whole after every epoch: a crash keeps the last finished epoch's files
    with OutputSet(args.out, force=args.force, patterns=TRAIN_FILES, resume=args.resume,
                   seed=TRAIN_FILES if args.resume else ()) as stage:
        resume_state = None
        if args.resume:
            if not (stage.path / "last.pt").is_file():
                raise CheckpointError(f"{Path(args.out) / 'last.pt'}: nothing to resume")
            resume_state = _resumable_state(Path(args.out) / "last.pt", name)  # read once, handed to train
        train_data = load_source(args.data, "train", subset=args.subset)
        test_data = load_source(args.data, "test", subset=args.subset)
        print_notes(train_data.notes + test_data.notes)
        import torch

        torch.manual_seed(args.seed)
        model = create_model(name)

        def on_epoch(epoch: int) -> None:
            if args.safetensors:
                write_safetensors(stage.path / "best.pt", stage.path / "best.safetensors")
            stage.publish()

        summary = train(model, name, train_data, test_data, stage.path, recipe,
                        metadata={"data": args.data, "subset": args.subset,
                                  "train_description": train_data.description,
                                  "test_description": test_data.description},
                        resume=args.resume, resume_state=resume_state, device=args.device, progress=not args.quiet,
                        half_checkpoints=args.half, on_epoch=on_epoch, precision=args.precision)
    summary["out"] = str(args.out)
    if args.json:
        print_json({"schema": "erf.train/1", **summary})
    else:
        print(f"{name}: best test accuracy {summary['best_test_accuracy']:.4f} after "
              f"{summary['epochs']} epochs ({summary['seconds']:.0f} s, {summary['precision']}); "
              f"checkpoints in {args.out}")
    return 0


def write_safetensors(checkpoint: Path, target: Path) -> None:
    """Write the weights of the erf checkpoint ``checkpoint`` as ``target`` (safetensors: tensors and strings
    only, so it cannot carry code), unless ``target`` is already newer (``best.pt`` changes only on improvement)."""
    from erf.files.checkpoint_io import checkpoint_to_safetensors

    if target.exists() and target.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns:
        return
    checkpoint_to_safetensors(checkpoint, target)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``erf evaluate``: test accuracy and mean cross-entropy of a checkpoint; exit code."""
    from erf.checkpoints import load_checkpoint
    from erf.data import load_source
    from erf.training import evaluate

    loaded = load_checkpoint(args.checkpoint, trust=args.trust)
    print_notes(loaded.notes)
    data = load_source(args.data, "test", subset=args.subset, count=args.images)
    print_notes(data.notes)
    result = evaluate(loaded.model, data, device=args.device)
    if args.json:
        print_json({"schema": "erf.evaluate/1", "checkpoint": str(args.checkpoint), "model": loaded.name,
                     "data": data.description, "images": result.images,
                     "accuracy": result.accuracy, "loss": result.loss})
    else:
        what = str(args.checkpoint) if str(args.checkpoint) == loaded.name else f"{args.checkpoint} ({loaded.name})"
        print(f"{what}: accuracy {result.accuracy:.4f}, loss {result.loss:.4f} "
              f"on {result.images} images ({data.description})")
    return 0


def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'cbam_*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.epilog = None  # the model-spec / data-source block of the other commands does not apply here


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registry name (see `erf models`)")
    p.add_argument("--data", default="bundled", help="data source with train and test splits, e.g. cifar10:ROOT")
    p.add_argument("--subset", default=None,
                   help="the article's rule: the FIRST samples; a fraction of the official split (0.1 = "
                        "5000 train / 1000 test) or a count")
    p.add_argument("--epochs", type=int, default=200, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="images per SGD step")
    p.add_argument("--lr", type=float, default=0.1, help="initial SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (L2)")
    p.add_argument("--schedule", default="cosine", choices=list(SCHEDULES),
                   help="learning-rate schedule, stepped per epoch: "
                        + "; ".join(f"{k}: {v}" for k, v in SCHEDULES.items()))
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                   help="arithmetic of the training steps (recorded in the checkpoints): " + precision_help())
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and augmentation")
    p.add_argument("--out", required=True, help="run folder: log.csv, best.pt, last.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    p.add_argument("--half", action="store_true", help="store best.pt weights as float16 (last.pt stays float32)")
    p.add_argument("--safetensors", action="store_true",
                   help="also write best.safetensors beside best.pt (weights only: a format that cannot carry code)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model spec (see below)")
    p.add_argument("--data", default="bundled", help="test images with labels (see below)")
    p.add_argument("--subset", default=None, help="the article's first-N subset rule (fraction or count)")
    p.add_argument("--images", type=int, default=None, help="evaluate on the first N images only")
    p.add_argument("--json", action="store_true", help="print accuracy and loss as JSON")
    add_model_options(p)


command("models", "list the model registry with parameter counts")(_args_models)(cmd_models)
command("train", "train a registry model with the article's recipe")(_args_train)(cmd_train)
command("evaluate", "test accuracy and loss of a checkpoint")(_args_evaluate)(cmd_evaluate)


