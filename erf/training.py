"""Training and evaluation with the article's recipe.

Defaults (the article's): SGD, lr 0.1, momentum 0.9, weight decay 5e-4,
cosine schedule over the epochs, batch 128, random crop 32 (pad 4) and
horizontal flip, cross-entropy. Seeded; per-epoch log to CSV; ``best.pt`` and
``last.pt`` written atomically; ``resume`` continues from ``last.pt``.

Precision (:mod:`erf.precision`): by default (``precision="auto"``) the forward pass runs under bf16 autocast in
the channels-last memory format where the device has native bf16 units, with float32 master weights and
optimizer state; ``precision="fp32"`` is the plain float32 path. The precision that ran is in the checkpoints'
metadata (``precision``) and in the summary.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erf.checkpoints import save_checkpoint
from erf.data.sources import ImageSet, normalize
from erf.errors import CheckpointError, InputError
from erf.files.atomic import write_text
from erf.files.checkpoint_io import read_checkpoint_file
from erf.precision import autocast, resolve_precision
from erf.recipe import SCHEDULES, Recipe, check_recipe, onecycle_factor
from erf.runtime.devices import pick_device

__all__ = ["SCHEDULES", "EvalResult", "Recipe", "augment_batch", "check_recipe", "evaluate", "make_scheduler", "train"]


def augment_batch(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``, same size) and horizontal flip, per image, vectorised.

    ``images``: un-normalised ``(N, C, H, W)`` in [0, 1], on any device; zero padding is black,
    as torchvision's ``RandomCrop(32, padding=4)`` on the raw image. The random draws (``dy``, ``dx``,
    then ``flip``, from the CPU ``generator``) are those of the per-image loop it replaced
    (``tests/references.py: augment_batch_loop``), and so is the result, exactly: one gather replaces the loop.
    """
    n, c, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    dev = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(dev)  # (N, H)
    cols = torch.arange(w)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)
    cols = (dx[:, None] + cols).to(dev)  # (N, W)
    wp = padded.shape[-1]
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(padded.reshape(n, c, -1), 2, index).reshape(n, c, h, w)


@dataclass
class EvalResult:
    """Accuracy in [0, 1] and mean cross-entropy loss over ``images`` images.

    ``correct``: ``(images,)`` bool numpy array, whether each image was classified correctly (paired tests).
    """

    accuracy: float
    loss: float
    images: int
    correct: Any = field(default=None, repr=False)


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str | None = None,
             precision: str = "fp32") -> EvalResult:
    """Accuracy and loss of ``model`` (eval mode) on ``data`` (labels must be known).

    ``precision``: ``fp32`` (default: the reference), ``bf16`` (autocast, channels-last: the trainer's per-epoch
    evaluation in its own precision) or ``auto``.
    """
    if (data.labels < 0).any():
        raise InputError(f"{data.description}: has no labels to evaluate against")
    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
    model = model.to(dev).eval()
    hits, total_loss = [], 0.0
    for start in range(0, len(data), batch_size):
        x = data.images[start: start + batch_size]
        x = (normalize(x) if data.raw else x).to(dev).contiguous(memory_format=fmt)
        y = data.labels[start: start + batch_size].to(dev)
        with autocast(precision, dev):
            logits = model(x).float()
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        hits.append((logits.argmax(1) == y).cpu())
    correct = torch.cat(hits).numpy()
    return EvalResult(int(correct.sum()) / len(data), total_loss / len(data), len(data), correct)


def train(
    model: nn.Module,
    name: str,
    train_data: ImageSet | Callable[[int], ImageSet],
    test_data: ImageSet,
    out_dir: str | Path | None,
    recipe: Recipe | None = None,
    kwargs: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    resume: bool = False,
    resume_state: dict[str, Any] | None = None,
    device: str | None = None,
    progress: bool = True,
    half_checkpoints: bool = False,
    checkpoints: str = "epoch",
    evaluate_every_epoch: bool = True,
    channels_last: bool = False,
    on_epoch: Any = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Train ``model`` and write ``out_dir/{log.csv,best.pt,last.pt}``.

    Args:
        model: a freshly built (or resumed) module.
        name: its registry name (saved in the checkpoints).
        train_data, test_data: raw (un-normalised) image sets with labels; ``train_data`` may also be a
            callable ``epoch -> ImageSet`` (data redrawn every epoch, e.g. :class:`erf.study.canvases.EpochCanvases`;
            it must return the same set for the same epoch so that resuming stays exact). Images may already
            be on ``device`` (no copy per batch then).
        out_dir: run folder (created); ``None`` only with ``checkpoints="none"``.
        recipe: hyper-parameters; the article's by default.
        kwargs: constructor overrides saved with the checkpoints.
        metadata: facts added to the checkpoints' metadata (data set, subset rule).
        resume: continue from ``out_dir/last.pt``.
        resume_state: the contents of ``out_dir/last.pt`` when the caller has read (and checked) them already;
            the file is then not read again.
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        progress: show a progress bar.
        half_checkpoints: store ``best.pt`` weights as float16 (``last.pt`` stays float32 for exact resume).
        checkpoints: ``"epoch"`` (default: ``best.pt``, ``last.pt`` and ``log.csv`` after every epoch),
            ``"end"`` (``last.pt`` and ``log.csv`` once, after the last epoch; ``best.pt`` is then the last
            model) or ``"none"`` (nothing written: grid cells that keep the model in memory).
        evaluate_every_epoch: evaluate on ``test_data`` after every epoch (default), or only after the last
            (rows of earlier epochs then have NaN test metrics).
        channels_last: train in the channels-last memory format (faster for small convolutions on CPU;
            same results up to float rounding); the model is returned in it. ``bf16`` always uses it.
        on_epoch: called with the epoch number (from 1) once that epoch's files are written (``erf train``
            publishes its output set there).
        precision: ``auto`` (default: ``bf16`` where the device has native bf16 units, else ``fp32``), ``bf16``
            (autocast + channels-last, float32 master weights) or ``fp32`` (see :mod:`erf.precision`). The
            per-epoch test evaluation runs in the same precision. Resuming needs the precision of the run.

    Returns:
        A summary: best and last test accuracy, last-epoch running train accuracy, epochs run, seconds and the
        precision that ran.
    """
    from tqdm import tqdm

    recipe = recipe or Recipe()
    check_recipe(recipe)
    out = _run_folder(out_dir, checkpoints)
    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    channels_last = channels_last or precision == "bf16"
    torch.manual_seed(recipe.seed)
    model, state = _setup(model, recipe, dev, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rows: list[dict[str, Any]] = []
    start_epoch, best_acc, elapsed = 0, -1.0, 0.0
    if resume and checkpoints != "none" and (resume_state is not None or (out / "last.pt").exists()):
        start_epoch, best_acc, rows, elapsed = _resume(out / "last.pt", resume_state, model, state, recipe, precision)

    def epoch_data(epoch: int) -> ImageSet:
        return train_data(epoch) if callable(train_data) else train_data

    n = len(train_data) if hasattr(train_data, "__len__") else len(epoch_data(start_epoch))
    meta_base = _run_metadata(metadata, n, len(test_data), recipe, dev, precision, channels_last)
    best_state: dict[str, torch.Tensor] | None = None
    steps = math.ceil(n / recipe.batch_size)
    bar = tqdm(total=(recipe.epochs - start_epoch) * steps, disable=not progress, desc=f"train {name}",
               unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        loss_sum, correct, seen = _train_epoch(model, epoch_data(epoch), n, epoch, recipe, state, dev, precision,
                                               fmt, bar)
        state.scheduler.step()
        last = epoch + 1 == recipe.epochs
        result = (evaluate(model, test_data, device=str(dev), precision=precision) if evaluate_every_epoch or last
                  else EvalResult(float("nan"), float("nan"), len(test_data)))
        elapsed += time.perf_counter() - t0
        rows.append(_log_row(epoch + 1, state, loss_sum / seen, correct / seen, result, elapsed))
        meta = {**meta_base, "epochs": epoch + 1, "train_seconds": elapsed,
                "last_test_accuracy": result.accuracy, "train_accuracy": correct / seen}
        if result.accuracy > best_acc:
            best_acc = result.accuracy
            if checkpoints == "epoch":
                _save_best(out / "best.pt", model, name, kwargs, meta, best_acc, half_checkpoints)
            elif checkpoints == "end":
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        meta["best_test_accuracy"] = best_acc
        meta["test_accuracy"] = result.accuracy
        if checkpoints == "none" or (checkpoints == "end" and not last):
            continue
        if checkpoints == "end" and best_state is not None:
            with _weights(model, best_state):
                _save_best(out / "best.pt", model, name, kwargs, meta, best_acc, half_checkpoints)
        _save_last(out, model, name, kwargs, meta, state, epoch + 1, rows)
        if on_epoch is not None:
            on_epoch(epoch + 1)
    bar.close()
    model.eval()
    return {"best_test_accuracy": best_acc, "last_test_accuracy": rows[-1]["test_acc"] if rows else None,
            "last_train_accuracy": rows[-1]["train_acc"] if rows else None,
            "epochs": len(rows), "seconds": elapsed, "precision": precision,
            "out": str(out) if checkpoints != "none" else None}


@dataclass
class _State:
    """What training changes besides the weights and what ``last.pt`` keeps for an exact resume: the SGD
    optimiser (momentum buffers), its per-epoch learning-rate scheduler and the CPU generator of the data order
    and augmentation draws."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator


def _run_folder(out_dir: str | Path | None, checkpoints: str) -> Path:
    """The run folder (created unless ``checkpoints="none"``; ``.`` then, never written to).

    Raises:
        InputError: an unknown ``checkpoints`` mode, or no ``out_dir`` for a mode that writes files.
    """
    if checkpoints not in ("epoch", "end", "none"):
        raise InputError(f"checkpoints={checkpoints!r}: use epoch, end or none")
    if out_dir is None and checkpoints != "none":
        raise InputError("train: out_dir is needed unless checkpoints='none'")
    out = Path(out_dir) if out_dir is not None else Path(".")
    if checkpoints != "none":
        out.mkdir(parents=True, exist_ok=True)
    return out


def _setup(model: nn.Module, recipe: Recipe, dev: torch.device, channels_last: bool) -> tuple[nn.Module, _State]:
    """``model`` on ``dev`` (channels-last when asked) and a fresh :class:`_State`: SGD over its trainable
    parameters with the recipe's hyper-parameters, the recipe's scheduler, a generator seeded ``recipe.seed``."""
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=False)
    scheduler = make_scheduler(optimizer, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    return model, _State(optimizer, scheduler, generator)


def _resume(path: Path, resume_state: dict[str, Any] | None, model: nn.Module, state: _State, recipe: Recipe,
            precision: str) -> tuple[int, float, list[dict[str, Any]], float]:
    """Load ``path`` (or ``resume_state``, its contents already read) into ``model`` (weights as float32) and
    ``state``; returns ``(epochs done, best test accuracy so far in [0, 1] or -1, log rows, train seconds)``.

    Raises:
        CheckpointError: the file lacks what a resume needs.
        InputError: the run had another recipe or precision (the schedule and the data order depend on them:
            resuming would not be exact).
    """
    saved_state = resume_state if resume_state is not None else read_checkpoint_file(path)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in saved_state["state_dict"].items()})
        state.optimizer.load_state_dict(saved_state["optimizer"])
        state.scheduler.load_state_dict(saved_state["scheduler"])
        state.generator.set_state(saved_state["generator"])
        start_epoch = int(saved_state["epoch"])
        saved = dict(saved_state["metadata"].get("recipe") or {})
        best_acc = float(saved_state["metadata"].get("best_test_accuracy", -1.0))
        rows = list(saved_state["log"])
        elapsed = float(saved_state["metadata"].get("train_seconds", 0.0))
        saved_precision = saved_state["metadata"].get("precision", "fp32")
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot resume ({exc})") from None
    changed = [f"{k} {saved[k]} -> {v}" for k, v in asdict(recipe).items() if k in saved and saved[k] != v]
    if changed:  # the schedule and the data order depend on the recipe: resuming would not be exact
        raise InputError(f"{path}: cannot resume with a different recipe ({', '.join(changed)}); "
                         "use the original options or start a new run")
    if saved_precision != precision:
        raise InputError(f"{path}: the run trained in {saved_precision}, not {precision}; resume with "
                         f"--precision {saved_precision} or start a new run")
    return start_epoch, best_acc, rows, elapsed


def _run_metadata(metadata: dict[str, Any] | None, train_images: int, test_images: int, recipe: Recipe,
                  dev: torch.device, precision: str, channels_last: bool) -> dict[str, Any]:
    """The checkpoints' metadata common to every epoch: the caller's facts, then the run's sizes and settings."""
    return {
        **(metadata or {}),
        "train_images": train_images,
        "test_images": test_images,
        "recipe": asdict(recipe),
        "device": str(dev),
        "precision": precision,
        "memory_format": "channels_last" if channels_last else "contiguous",
        "torch_threads": torch.get_num_threads(),
    }


def _train_epoch(model: nn.Module, data: ImageSet, n: int, epoch: int, recipe: Recipe, state: _State,
                 dev: torch.device, precision: str, fmt: torch.memory_format, bar: Any) -> tuple[float, int, int]:
    """One epoch of SGD (train mode) over the first ``n`` images of ``data`` in an order drawn from
    ``state.generator`` (then each batch's augmentation draws, when the recipe augments); the scheduler is not
    stepped. Returns ``(summed cross-entropy loss, correct predictions, images seen)`` over the epoch's batches.

    Raises:
        InputError: a non-finite loss (training diverged).
    """
    model.train()
    order = torch.randperm(n, generator=state.generator)
    seen, correct, loss_sum = 0, 0, 0.0
    for s in range(math.ceil(n / recipe.batch_size)):
        idx = order[s * recipe.batch_size: (s + 1) * recipe.batch_size]
        x = data.images[idx.to(data.images.device)]
        if recipe.augment:
            x = augment_batch(x, state.generator)
        x = normalize(x).to(dev, non_blocking=True).contiguous(memory_format=fmt)
        y = data.labels[idx.to(data.labels.device)].to(dev, non_blocking=True)
        with autocast(precision, dev):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise InputError(f"training diverged at epoch {epoch + 1} (loss {loss_value})")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        loss_sum += loss_value * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}")
    return loss_sum, correct, seen


def _log_row(epochs: int, state: _State, train_loss: float, train_acc: float, result: EvalResult,
             elapsed: float) -> dict[str, Any]:
    """The ``log.csv`` row after ``epochs`` epochs: the learning rate the scheduler set for the next epoch, the
    epoch's running train loss and accuracy, the test ones (NaN when not evaluated) and the train seconds so far."""
    return {
        "epoch": epochs,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": result.loss,
        "test_acc": result.accuracy,
        "seconds": elapsed,
    }


@contextmanager
def _weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run the block with ``weights`` loaded into ``model``; its own weights (copies) are loaded back after."""
    keep = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    yield
    model.load_state_dict(keep)


def _save_best(path: Path, model: nn.Module, name: str, kwargs: dict[str, Any] | None, meta: dict[str, Any],
               best_acc: float, half: bool) -> None:
    """Write ``best.pt``: ``model`` (float16 weights when ``half``) with ``meta`` and its test accuracy
    ``best_acc`` (in [0, 1]) as both ``best_test_accuracy`` and ``test_accuracy``."""
    save_checkpoint(path, model, name, kwargs, {**meta, "best_test_accuracy": best_acc, "test_accuracy": best_acc},
                    half=half)


def _save_last(out: Path, model: nn.Module, name: str, kwargs: dict[str, Any] | None, meta: dict[str, Any],
               state: _State, epochs: int, rows: list[dict[str, Any]]) -> None:
    """Write ``last.pt`` (float32 weights and ``state``, all an exact resume after ``epochs`` epochs needs, with
    the log ``rows``) and ``log.csv``."""
    save_checkpoint(  # full precision whatever half_checkpoints says: resuming must be exact
        out / "last.pt", model, name, kwargs, meta,
        extra={"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
               "generator": state.generator.get_state(), "epoch": epochs, "log": rows},
    )
    _write_log(out / "log.csv", rows)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> Any:
    """The per-epoch learning-rate scheduler of ``recipe.schedule`` (a key of :data:`SCHEDULES`).

    Raises:
        InputError: an unknown schedule (param ``schedule``).
    """
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: onecycle_factor(e, recipe.epochs))
    raise InputError(f"{recipe.schedule!r}: use one of {', '.join(SCHEDULES)}", param="schedule")


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
