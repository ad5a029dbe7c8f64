"""``erf bench``: time all-layer ERF by the engine against three baselines, on the same images.

Methods (all on the same noise images, same layers, same units, parameters frozen):

* ``engine``: :class:`erf.probes.GradientProbe` (cropping engine) over batches,
  per-image maps summed into float64 sums (what :func:`erf.measure` runs);
* ``captum``: captum's ``NeuronGradient`` layer by layer (one full forward and
  one backward per layer and batch), :class:`erf.probes.CaptumProbe`;
* ``per_image``: a loop over images as in RepLKNet's ERF script: one full
  forward per image (batch of 1, up to the logits), then one input-gradient per
  layer (graph retained);
* ``floor``: the naive autograd floor: one batched forward per batch keeping
  the layers' outputs, then one ``torch.autograd.grad`` per layer (graph
  retained), nothing else.

Each method runs in its own subprocess (``python -m erf.bench``) so that its
peak memory is its own: on CPU the peak is the rise of the process's resident
set high-water mark (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs``) over the resident set once model and images are
loaded, across the warm-up and the first timed run, in MiB; on CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated at that point. Seconds are the wall-clock best of
``repeat`` timed runs (after one untimed warm-up on one batch); ``cpu_seconds``
is the process CPU time of that run (all threads), a companion that suffers
less from other jobs on a shared CPU (OpenMP threads that lose their core to
another process make wall-clock times of multi-threaded runs erratic; compare
``OMP_NUM_THREADS=1`` runs there). The maps of every method are
compared with the engine's: ``max_rel_diff[m] = max |M_m - M_engine| / max
|M_engine|`` over layers, ``M`` the map summed over images.

>>> from erf.bench import bench
>>> doc = bench("twoconv", images=4, methods=("engine", "floor"), isolate=False)
>>> doc["ratios"]["engine_over_floor"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SCHEMA = "erf.bench/1"
METHODS = ("engine", "captum", "per_image", "floor")
DEFAULT_MODELS = ("norm_8d", "cbam_8d", "torchvision:resnet18")
DEFAULT_IMAGES = 64
"""64 noise images: the issue's reference measurement."""
DEFAULT_BATCH = {"cpu": 16, "cuda": 64}
"""Images per batch by device type. On CPU 16 beat 32 for every batched method (norm_8d, one thread: engine
~25 %, floor ~35 % less time): a 32-image stage-1 map of ResNeXt-29 (32x256x32x32 float32, 33.5 MB) no longer
fits a 32 MiB L3 cache."""


def noise_images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """``(n, channels, size, size)`` float32 N(0, 1) images (model input space), fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def _zeros(targets: Sequence[Any], x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {t.name: torch.zeros(x.shape[2], x.shape[3], dtype=torch.float64, device=x.device) for t in targets}


def run_engine(model: nn.Module, targets: Sequence[Any], x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Method (a): the cropping engine; ``{layer: (H, W) float64}`` maps summed over images."""
    from erf.probes import GradientProbe

    probe = GradientProbe(mode="abs", crop=True)
    sums = _zeros(targets, x)
    for s, e in _batches(x.shape[0], batch_size):
        maps = probe.batch_maps(model, list(targets), x[s:e])
        for name, m in maps.items():
            sums[name] += m.sum(dim=0)
    return sums


def run_captum(model: nn.Module, targets: Sequence[Any], x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Method (b): captum ``NeuronGradient``, one attribution call per layer and batch."""
    from erf.probes import CaptumProbe

    probe = CaptumProbe("captum-gradient")
    sums = _zeros(targets, x)
    for s, e in _batches(x.shape[0], batch_size):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Input Tensor 0 did not already require gradients"
            maps = probe.batch_maps(model, list(targets), x[s:e])
        for name, m in maps.items():
            sums[name] += m.sum(dim=0)
    return sums


def _forward_keep(model: nn.Module, targets: Sequence[Any], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Full forward of ``model(x)`` keeping every target's output (no early stop)."""
    from erf.hooks import capture_outputs

    return capture_outputs(model, {t.path: t.module for t in targets}, x)


def _grads_into(sums: dict[str, torch.Tensor], targets: Sequence[Any], kept: dict[str, torch.Tensor],
                xin: torch.Tensor) -> None:
    for k, t in enumerate(targets):
        i, j = t.unit
        (g,) = torch.autograd.grad(kept[t.path][:, :, i, j].sum(), xin, retain_graph=k < len(targets) - 1)
        sums[t.name] += g.abs().sum(dim=1, dtype=torch.float64).sum(dim=0)


def run_per_image(model: nn.Module, targets: Sequence[Any], x: torch.Tensor,
                  batch_size: int) -> dict[str, torch.Tensor]:
    """Method (c): RepLKNet-style loop, one full forward per image, one input-gradient per layer."""
    sums = _zeros(targets, x)
    for n in range(x.shape[0]):
        xin = x[n: n + 1].detach().clone().requires_grad_(True)
        kept = _forward_keep(model, targets, xin)
        _grads_into(sums, targets, kept, xin)
    return sums


def run_floor(model: nn.Module, targets: Sequence[Any], x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Method (d): the naive autograd floor, one batched forward + one input-gradient per layer, per batch."""
    sums = _zeros(targets, x)
    for s, e in _batches(x.shape[0], batch_size):
        xin = x[s:e].detach().clone().requires_grad_(True)
        kept = _forward_keep(model, targets, xin)
        _grads_into(sums, targets, kept, xin)
    return sums


RUNNERS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "engine": run_engine, "captum": run_captum, "per_image": run_per_image, "floor": run_floor,
}


def count_flops(runner: Callable[..., Any], model: nn.Module, targets: Sequence[Any], x: torch.Tensor,
                batch_size: int) -> int:
    """Floating-point operations of one run of ``runner`` (forward and backward): every aten op that
    :data:`torch.utils.flop_counter.flop_registry` knows (matrix products and convolutions) counted by its
    formula; elementwise ops are not counted, so this is a lower bound that every method shares.
    (``FlopCounterMode`` itself cannot be used: its module tracker's backward hooks break
    ``torch.autograd.grad`` with respect to inputs, which every method calls.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func._overloadpacket)
            if count is not None:
                Counter.total += int(count(*args, **kwargs, out_val=out))
            return out

    with Counter():
        runner(model, targets, x, batch_size)
    return Counter.total


def matmul_peak(device: str = "cpu", size: int = 2048, repeat: int = 5) -> float:
    """The machine's measured float32 matrix-product rate in GFLOP/s: best of ``repeat`` ``size x size``
    products (``2 size^3`` operations each), after one warm-up; the ceiling the methods' GFLOP/s are read against."""
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    a @ b
    _sync(dev)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


_PEAKS: dict[tuple[str, int], float] = {}
""":func:`matmul_peak` by ``(device, threads)``, measured on first use in this process."""


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def time_method(method: str, model_spec: str, layers: Sequence[str] | None, images: int, device: str = "cpu",
                batch_size: int = 32, repeat: int = 1, seed: int = 0, size: int = 32,
                trust: bool = False) -> dict[str, Any]:
    """Run ``method`` in this process; return seconds (best of ``repeat``), peak memory and the summed maps.

    Returns:
        ``{"seconds", "peak_memory_mb", "memory_measure", "maps": {layer: (H, W) float64 ndarray},
        "layers": [names]}``.
    """
    from erf.checkpoints import load_checkpoint
    from erf.layers import bench_layers
    from erf.measurement import make_targets
    from erf.probes.base import frozen_parameters

    dev = torch.device(device)
    # the same random weights in every method's process: load_checkpoint seeds every random init
    loaded = load_checkpoint(model_spec, trust=trust, seed=seed)
    model = loaded.model.eval().to(dev)
    names = list(layers) if layers else bench_layers(model)
    x = noise_images(images, size, 3, seed).to(dev)
    targets, _ = make_targets(model, names, (size, size))
    runner = RUNNERS[method]
    if method == "captum":
        import captum.attr  # noqa: F401  (imported before the memory baseline: modules are not the method's peak)
    measure_kind = "cuda.max_memory_allocated" if dev.type == "cuda" else "VmHWM-rise"
    # The memory baseline is taken before the warm-up: the peak covers warm-up and first timed run (the same
    # batch shapes), so memory that the allocator kept from the warm-up does not hide the method's own peak.
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        if not _reset_hwm():
            measure_kind = "VmHWM-rise (no reset: includes earlier peaks)"
        base = _status_kb("VmRSS") or 0
    best, cpu, peak = float("inf"), 0.0, None
    with frozen_parameters(model), torch.enable_grad():
        runner(model, targets, x[: min(batch_size, images)], batch_size)  # warm-up at full batch shape, untimed
        _sync(dev)
        for r in range(max(1, repeat)):
            t0, c0 = time.perf_counter(), time.process_time()
            sums = runner(model, targets, x, batch_size)
            _sync(dev)
            if time.perf_counter() - t0 < best:
                best, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                if dev.type == "cuda":
                    peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
                else:
                    hwm = _status_kb("VmHWM")
                    peak = None if hwm is None else max(0, hwm - base) / 1024
    with frozen_parameters(model), torch.enable_grad():
        flops = count_flops(runner, model, targets, x, batch_size)  # untimed: the counter slows the run
    return {"seconds": best, "cpu_seconds": cpu, "peak_memory_mb": peak, "memory_measure": measure_kind,
            "flops": flops, "maps": {k: v.cpu().numpy() for k, v in sums.items()}, "layers": [t.name for t in targets]}


def _run_isolated(method: str, kwargs: dict[str, Any], threads: int) -> dict[str, Any]:
    """:func:`time_method` in a fresh ``python -m erf.bench`` process (its own peak memory)."""
    with tempfile.TemporaryDirectory(prefix="erf-bench-") as tmp:
        out = Path(tmp) / "result.npz"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "erf.bench", json.dumps({"method": method, "threads": threads,
                                                               "out": str(out), **kwargs})]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        last = (proc.stdout.strip().splitlines() or ["{}"])[-1]
        if proc.returncode != 0:
            from erf import errors

            try:
                failure = json.loads(last)
            except json.JSONDecodeError:
                failure = {}
            if "error" in failure:  # the worker's own typed error, raised here as it was raised there
                cls = getattr(errors, str(failure["error"]), errors.ErfError)
                cls = cls if isinstance(cls, type) and issubclass(cls, errors.ErfError) else errors.ErfError
                raise cls(str(failure["detail"]), param=failure.get("param"))
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise errors.InputError(f"bench method {method!r} failed in its subprocess: {tail[0]}")
        meta = json.loads(last)
        with np.load(out) as z:
            meta["maps"] = {k: z[k] for k in z.files}
    return meta


def _max_rel_diff(maps: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, r in ref.items():
        scale = float(np.abs(r).max()) or 1.0
        worst = max(worst, float(np.abs(maps[name] - r).max()) / scale)
    return worst


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def bench(model: str, images: int = DEFAULT_IMAGES, layers: Sequence[str] | None = None, device: str = "cpu",
          repeat: int = 1, batch_size: int | None = None, methods: Sequence[str] = METHODS, seed: int = 0,
          size: int = 32, threads: int | None = None, isolate: bool = True, trust: bool = False,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark all-layer ERF of ``model`` (a checkpoint spec) by each of ``methods``.

    Args:
        model: model spec (registry name, ``torchvision:NAME``, checkpoint file).
        images: noise images (``size`` px, seed ``seed``); layers: default :func:`bench_layers`.
        device: ``cpu`` or ``cuda``; repeat: timed runs per method (the best is kept).
        batch_size: images per batch for the batched methods (default :data:`DEFAULT_BATCH`).
        methods: a subset of :data:`METHODS`.
        threads: torch CPU threads (default: this process's ``torch.get_num_threads()``).
        isolate: one subprocess per method (peak memory per method); ``False`` runs in this process.
        progress: called with a line of text before each method.

    Returns:
        The ``erf.bench/1`` document (see ``erf/schemas/bench.schema.json``).
    """
    batch_size = _checked_options(methods, images, repeat, batch_size, device)
    threads = int(threads or torch.get_num_threads())
    kwargs: dict[str, Any] = {"model_spec": model, "layers": list(layers) if layers else None, "images": images,
                              "device": str(device), "batch_size": batch_size, "repeat": repeat, "seed": seed,
                              "size": size, "trust": trust}
    order = ["engine", *[m for m in methods if m != "engine"]] if "engine" in methods else list(methods)
    results = _run_methods(order, kwargs, threads, isolate, progress)
    seconds = {m: (results[m]["seconds"] if m in results else None) for m in METHODS}
    flops: dict[str, Any] = {m: (results[m]["flops"] if m in results else None) for m in METHODS}
    if (str(device), threads) not in _PEAKS:  # a machine constant: measured once per process, not per model
        with _torch_threads(threads):
            _PEAKS[str(device), threads] = matmul_peak(str(device))
    peak = _PEAKS[str(device), threads]
    first = results[order[0]]
    ref = results["engine"]["maps"] if "engine" in results else None
    diff = {m: (_max_rel_diff(results[m]["maps"], ref) if ref is not None and m in results else None)
            for m in METHODS if m != "engine"}
    return {
        "schema": SCHEMA,
        "model": model,
        "images": images,
        "layers": len(first["layers"]),
        "layer_names": first["layers"],
        "device": str(device),
        "batch_size": batch_size,
        "repeat": repeat,
        "input_size": [size, size],
        "seconds": seconds,
        "ratios": {
            "captum_over_engine": _ratio(seconds["captum"], seconds["engine"]),
            "per_image_over_engine": _ratio(seconds["per_image"], seconds["engine"]),
            "engine_over_floor": _ratio(seconds["engine"], seconds["floor"]),
        },
        "images_per_second": {m: (images / s if s else None) for m, s in seconds.items()},
        "cpu_seconds": {m: (results[m]["cpu_seconds"] if m in results else None) for m in METHODS},
        "peak_memory_mb": {m: (results[m]["peak_memory_mb"] if m in results else None) for m in METHODS},
        "gflop": {m: (f / 1e9 if f is not None else None) for m, f in flops.items()},
        "gflop_per_second": {m: (f / seconds[m] / 1e9 if f is not None and seconds[m] else None)
                             for m, f in flops.items()},
        "matmul_peak_gflop_per_second": peak,
        "memory_measure": first["memory_measure"] + ("" if isolate else " (one process for all methods)"),
        "max_rel_diff": diff,
        "torch": torch.__version__,
        "threads": threads,
    }


def _checked_options(methods: Sequence[str], images: int, repeat: int, batch_size: int | None,
                     device: str) -> int:
    """:func:`bench`'s options checked before any run; returns the batch size (``batch_size``, or
    :data:`DEFAULT_BATCH` of the device type).

    Raises:
        InputError: an unknown method, a count that is not positive, CUDA asked for where there is none.
    """
    from erf.errors import InputError

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"{','.join(unknown)}: unknown; choose from {', '.join(METHODS)}", param="methods")
    if batch_size is None:
        batch_size = DEFAULT_BATCH.get(torch.device(device).type, 32)
    if images < 1 or repeat < 1 or batch_size < 1:
        raise InputError("images, repeat and batch_size must be positive")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{device}: CUDA is not available", param="device")
    return batch_size


def _run_methods(order: Sequence[str], kwargs: dict[str, Any], threads: int, isolate: bool,
                 progress: Callable[[str], None] | None) -> dict[str, dict[str, Any]]:
    """:func:`time_method` of each method in ``order`` with ``kwargs`` on ``threads`` torch threads, each in its
    own subprocess when ``isolate``; ``progress`` is told each method before it runs. Returns its results by
    method (seconds, peak memory in MiB, FLOPs, summed maps)."""
    results: dict[str, dict[str, Any]] = {}
    for m in order:
        if progress:
            progress(f"{kwargs['model_spec']}: {m} ...")
        if isolate:
            results[m] = _run_isolated(m, kwargs, threads)
        else:
            with _torch_threads(threads):
                results[m] = time_method(m, **kwargs)
    return results


def _worker(spec: dict[str, Any]) -> None:
    threads = int(spec.pop("threads"))
    torch.set_num_threads(threads)
    out = spec.pop("out")
    method = spec.pop("method")
    from erf.errors import ErfError

    try:
        res = time_method(method, **spec)
    except ErfError as exc:  # handed to the parent, which raises it again as the same error
        print(json.dumps({"error": type(exc).__name__, "detail": exc.detail, "param": exc.param}))
        sys.exit(exc.exit_code)
    np.savez(out, **res.pop("maps"))
    print(json.dumps(res))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
