"""``erf bench``'s precision parts: the machine's fp32 and bf16 peaks, training throughput, and the ERF in bf16.

Three measurements, each side by side in one process so that their ratios share the machine's load:

* :func:`machine_peaks`: GFLOP/s of a square matrix product and of a 3x3 convolution (64 -> 64 channels,
  32 x 56 x 56, NCHW and channels-last) in float32 and bfloat16, best of ``repeat``. The ceiling every other
  number is read against: where bf16 is not several times fp32 here, no bf16 path can be.
* :func:`training_throughput`: images/s of one SGD step (forward, cross-entropy, backward, update; noise images,
  batch ``batch``) of each model in each precision, the precisions interleaved and the best of ``repeat`` kept;
  the bf16 speed-up per model and the attention model's cost over its plain twin per precision.
* :func:`erf_precision`: the engine's all-layer ERF (:func:`erf.bench.run_engine`) in float32 and under bf16
  autocast (channels-last), the maps' max relative difference and the relative change of r50, r95 and sigma
  of every layer versus fp32, and whether bf16 *pays* by the project's rule (:data:`PAYS_RULE`).

Times are wall-clock seconds; the documents say the threads and the 1-minute load average at the start, since
on a shared machine a loaded core slows whatever runs on it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from erf.precision import autocast, bf16_supported, cpu_bf16_units

PAYS_RULE = {"min_speedup": 2.0, "max_metric_change": 0.01}
"""bf16 measurement pays when the engine is at least 2x faster and no metric (r50, r95, sigma of any layer)
changes by 1 % or more relative to fp32 (issue 22's rule, checked on resnet50 at 224 px and norm_8d)."""
TRAINING_MODELS = ("norm_8d", "cbam_8d")
"""The article's 16x8d twins: the models whose training throughput the bench reports by default."""


def load_average() -> float | None:
    """The 1-minute load average of this machine (``None`` where unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _best(fn: Callable[[], Any], repeat: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _syncer(device: torch.device) -> Callable[[], None]:
    """A no-argument :func:`erf.bench._sync` for ``device`` (waits for CUDA kernels; nothing on CPU)."""
    from erf.bench import _sync

    return functools.partial(_sync, device)


def machine_peaks(device: str = "cpu", repeat: int = 3, size: int = 2048) -> dict[str, Any]:
    """Measured GFLOP/s of a ``size``-square matmul and a 3x3 64->64 convolution on ``32 x 64 x 56 x 56``
    (NCHW and channels-last), float32 and bfloat16.

    Returns:
        ``{"matmul": {"fp32", "bf16"}, "conv3x3_nchw": {...}, "conv3x3_channels_last": {...},
        "bf16_units": [...], "bf16_supported": bool}`` (GFLOP/s).
    """
    dev = torch.device(device)
    sync = _syncer(dev)
    out: dict[str, Any] = {"bf16_units": cpu_bf16_units() if dev.type == "cpu" else ["cuda"],
                           "bf16_supported": bf16_supported(dev)}
    a = torch.randn(size, size, device=dev)
    flops = 2 * size**3
    out["matmul"] = {"fp32": flops / _best(lambda: a @ a, repeat, sync) / 1e9}
    ab = a.bfloat16()
    out["matmul"]["bf16"] = flops / _best(lambda: ab @ ab, repeat, sync) / 1e9
    x = torch.randn(32, 64, 56, 56, device=dev)
    w = torch.randn(64, 64, 3, 3, device=dev)
    conv_flops = 2 * 32 * 64 * 64 * 9 * 56 * 56
    for key, fmt in (("conv3x3_nchw", torch.contiguous_format), ("conv3x3_channels_last", torch.channels_last)):
        xx, ww = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
        row = {}
        for precision, (xp, wp) in (("fp32", (xx, ww)), ("bf16", (xx.bfloat16(), ww.bfloat16()))):
            row[precision] = conv_flops / _best(functools.partial(F.conv2d, xp, wp, padding=1), repeat, sync) / 1e9
        out[key] = row
    return out


def training_throughput(models: Sequence[str] = TRAINING_MODELS, device: str = "cpu", batch: int = 64,
                        repeat: int = 2, precisions: Sequence[str] = ("fp32", "bf16"),
                        seed: int = 0) -> dict[str, Any]:
    """Images/s of one training step of each registry model in each precision (interleaved, best of ``repeat``).

    Returns:
        ``{"batch", "images_per_second": {model: {precision: float}}, "bf16_speedup": {model: float},
        "attention_cost": {precision: {attention_model: seconds ratio over its plain twin}}}``.
    """
    from erf.models import create_model, get_entry

    dev = torch.device(device)
    sync = _syncer(dev)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (batch,), generator=g).to(dev)
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    for name in models:
        for precision in precisions:
            torch.manual_seed(seed)
            model = create_model(name).to(dev).train()
            fmt = torch.channels_last if precision == "bf16" else torch.contiguous_format
            model = model.to(memory_format=fmt)
            xin = x.contiguous(memory_format=fmt)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

            def step(model=model, xin=xin, opt=opt, precision=precision) -> None:
                with autocast(precision, dev):
                    logits = model(xin)
                loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step()  # warm-up (oneDNN primitive creation)
            steps[name, precision] = step
    best = {key: float("inf") for key in steps}
    for _ in range(max(1, repeat)):  # interleaved: each round runs every (model, precision) once
        for key, run in steps.items():
            t0 = time.perf_counter()
            run()
            sync()
            best[key] = min(best[key], time.perf_counter() - t0)
    ips = {name: {p: batch / best[name, p] for p in precisions} for name in models}
    speedup = {name: best[name, "fp32"] / best[name, "bf16"] for name in models
               if "fp32" in precisions and "bf16" in precisions}
    cost: dict[str, dict[str, float]] = {}
    for name in models:
        twin = get_entry(name).twin
        if twin and twin in models:
            for p in precisions:
                cost.setdefault(p, {})[name] = best[name, p] / best[twin, p]
    return {"batch": batch, "repeat": repeat, "step_seconds": {f"{m}/{p}": s for (m, p), s in best.items()},
            "images_per_second": ips, "bf16_speedup": speedup, "attention_cost": cost}


_METRICS = ("radius.50", "radius.95", "sigma.y", "sigma.x")


def erf_precision(model_spec: str, images: int = 8, layers: Sequence[str] | None = None, device: str = "cpu",
                  size: int | None = None, batch_size: int = 8, repeat: int = 1, seed: int = 0) -> dict[str, Any]:
    """The engine's ERF of ``model_spec`` in float32 and under bf16 autocast, side by side.

    Args:
        model_spec: a checkpoint spec (random weights seeded by ``seed`` where not trained).
        images: noise images of ``size`` px (default: the model's own input size).
        layers: default :func:`erf.layers.bench_layers`.

    Returns:
        ``{"model", "input_size", "seconds": {"fp32", "bf16"}, "speedup", "max_rel_diff",
        "metric_change": {layer: {metric: relative change}}, "worst_metric_change", "pays"}``; metrics are
        r50 and r95 (mass radii, px) and sigma (y, x), relative change ``|bf16 - fp32| / fp32``.
    """
    from erf.bench import noise_images, run_engine
    from erf.checkpoints import load_checkpoint
    from erf.layers import bench_layers
    from erf.measurement import make_targets
    from erf.metrics import erf_metrics
    from erf.probes.base import frozen_parameters

    dev = torch.device(device)
    sync = _syncer(dev)
    loaded = load_checkpoint(model_spec, seed=seed)
    model = loaded.model.eval().to(dev)
    side = int(size or (loaded.input_size[0] if loaded.input_size else 32))
    names = list(layers) if layers else bench_layers(model)
    targets, _ = make_targets(model, names, (side, side))
    x = noise_images(images, side, 3, seed).to(dev)
    seconds: dict[str, float] = {}
    maps: dict[str, dict[str, torch.Tensor]] = {}
    with frozen_parameters(model), torch.enable_grad():
        seconds["fp32"] = _best(lambda: maps.__setitem__("fp32", run_engine(model, targets, x, batch_size)),
                                repeat, sync)
        model_cl = model.to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)

        def bf16() -> None:
            with autocast("bf16", dev):
                maps["bf16"] = run_engine(model_cl, targets, xcl, batch_size)

        seconds["bf16"] = _best(bf16, repeat, sync)
        model.to(memory_format=torch.contiguous_format)
    diff, change = 0.0, {}
    for t in targets:
        ref = maps["fp32"][t.name].cpu().numpy()
        low = maps["bf16"][t.name].cpu().numpy()
        diff = max(diff, float(np.abs(low - ref).max() / (np.abs(ref).max() or 1.0)))
        center = t.trf.center(t.unit)
        m32 = erf_metrics(ref, images, center).scalars()
        m16 = erf_metrics(low, images, center).scalars()
        change[t.name] = {k: abs(m16[k] - m32[k]) / abs(m32[k]) if m32[k] else float(m16[k] != m32[k])
                          for k in _METRICS}
    worst = max((v for row in change.values() for v in row.values()), default=0.0)
    speedup = seconds["fp32"] / seconds["bf16"]
    return {"model": model_spec, "input_size": [side, side], "images": images, "layers": [t.name for t in targets],
            "seconds": seconds, "speedup": speedup, "max_rel_diff": diff, "metric_change": change,
            "worst_metric_change": worst,
            "pays": bool(speedup >= PAYS_RULE["min_speedup"] and worst < PAYS_RULE["max_metric_change"])}
