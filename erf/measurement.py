"""Measure TRF and ERF of layers over a set of images: the heart of ``erf measure`` (``erf.measure``).

>>> import erf
>>> model = erf.load_checkpoint("resnet20_cbam").model          # or any nn.Module
>>> result = erf.measure(model, erf.load_source("bundled"), ["stage3"], count=16)
>>> result.layer("stage3").metrics.radius[0.95]      # px holding 95 % of the gradient mass
>>> erf.measure(model, torch.randn(8, 3, 32, 32), [model.layer3])   # modules and tensors work too

The caller's model comes back as it was given (:func:`lent`): training flags, devices, memory format.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from erf.cost import warn_if_costly
from erf.data.sources import ImageSet
from erf.errors import DataError, InputError, LayerDidNotRunError, UndefinedERFError, check_seed
from erf.layers import default_layers, resolve_layer
from erf.measurement_result import (
    LayerERF,
    Measurement,
    trust_notes,
    trust_of,
)
from erf.metrics import ERFMetrics, bootstrap_ci, erf_metrics
from erf.pasting import embed
from erf.precision import autocast
from erf.probes import Target, make_probe
from erf.runtime.devices import pick_device
from erf.trf import TRF, TRFTrace, trace_receptive_fields
from erf.uncertainty import check_resamples


class _Accumulator:
    """Sums of per-image maps: total and ``G`` bootstrap groups (image n -> group n mod G), float64."""

    def __init__(self, shape: tuple[int, int], groups: int, device: torch.device) -> None:
        self.group_maps = torch.zeros(groups, *shape, dtype=torch.float64, device=device)
        self.group_counts = torch.zeros(groups, dtype=torch.float64, device=device)

    def add(self, maps: torch.Tensor, first_index: int) -> None:
        g = (torch.arange(maps.shape[0], device=maps.device) + first_index) % self.group_maps.shape[0]
        self.group_maps.index_add_(0, g, maps.to(torch.float64))
        self.group_counts.index_add_(0, g, torch.ones(maps.shape[0], dtype=torch.float64, device=maps.device))

    def all_reduce(self) -> None:
        import torch.distributed as dist

        dist.all_reduce(self.group_maps)
        dist.all_reduce(self.group_counts)


def _batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[int, int]]:
    for b, start in enumerate(range(0, n, batch_size)):
        if b % world == rank:
            yield start, min(n, start + batch_size)


def erf_defined(module: nn.Module, trf: TRF) -> bool:
    """Whether a layer has an ERF: it has a spatial map that is not the 1x1 output of global pooling."""
    pooled = isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and trf.feature_size == (1, 1)
    return trf.feature_size is not None and not pooled


def make_targets(
    model: nn.Module,
    layers: Sequence[str | nn.Module],
    input_size: Sequence[int],
    units: dict[str, tuple[int, int]] | None = None,
    channels: int = 3,
    replknet_unit: bool = False,
) -> tuple[list[Target], dict[str, str]]:
    """Resolve layer names into probe targets (TRF + unit) at ``input_size`` ``(H, W)`` px.

    The unit of a layer is ``units[name]`` if given, else the unit whose TRF
    centre is nearest the input centre (:meth:`TRF.central_unit`), or with
    ``replknet_unit`` RepLKNet's ``(h // 2, w // 2)`` of the ``h x w`` map.
    A layer named twice (``stage3`` and its module path ``layer3``) is probed once, under its stable name; a
    module object is reported under its own module path (``layer3``, ``2`` for ``mine[2]``).

    Returns:
        ``(targets, {name: unit rule})``.

    Raises:
        LayerNotFoundError, LayerDidNotRunError, UndefinedERFError.
    """
    trace = trace_receptive_fields(model, input_size, channels)
    return targets_of(model, trace, layers, units, replknet_unit)


def targets_of(
    model: nn.Module,
    trace: TRFTrace,
    layers: Sequence[str | nn.Module],
    units: dict[str, tuple[int, int]] | None = None,
    replknet_unit: bool = False,
) -> tuple[list[Target], dict[str, str]]:
    """:func:`make_targets` on a trace already made (:func:`~erf.trf.trace_receptive_fields` of ``model``)."""
    targets, rules = [], {}
    seen: set[str] = set()
    for name in layers:
        layer = resolve_layer(model, name)
        key = layer.path if isinstance(name, nn.Module) else layer.name if name == layer.path else name
        if key in seen:
            continue
        seen.add(key)
        trf = trace.trf.get(layer.path)
        if trf is None:
            raise LayerDidNotRunError(
                f"layer {name!r} ({layer.path}) never ran through its forward hook: the model may call it as "
                "`module.forward(x)`, which bypasses hooks; it is not measured (never reported as zero)"
            )
        if not erf_defined(layer.module, trf):
            raise UndefinedERFError(
                f"layer {name!r} ({layer.path}) has no spatial map: it comes after global pooling or "
                "flattening, so its ERF is undefined; pick an earlier layer (see `erf layers`)"
            )
        given = units.get(key, units.get(name) if isinstance(name, str) else None) if units else None
        if given is not None:
            unit = tuple(given)
            if not (0 <= unit[0] < trf.feature_size[0] and 0 <= unit[1] < trf.feature_size[1]):
                raise InputError(f"{unit[0]},{unit[1]}: outside layer {key!r}'s {trf.feature_size} map", param="units")
            rule = "given"
        elif replknet_unit:
            unit = (trf.feature_size[0] // 2, trf.feature_size[1] // 2)
            rule = "replknet (h // 2, w // 2)"
        else:
            unit = trf.central_unit()
            even = [s % 2 == 0 for s in trf.feature_size]
            rule = "nearest-centre" + (" (even map: no single centre)" if any(even) else "")
        if trf.describe_unit():  # a token sequence or channels-last map: say which entry the unit is
            rule += f"; {trf.describe_unit()}"
        targets.append(Target(key, layer.path, layer.module,
                              (int(unit[0]), int(unit[1])), trf))
        rules[targets[-1].name] = rule
    return targets, rules


def pointwise_note(trace: TRFTrace) -> str | None:
    """The note naming the torch ops the TRF tracer assumed pointwise (``None`` when there are none)."""
    if not trace.assumed_pointwise:
        return None
    return (f"ops treated as pointwise: {', '.join(sorted(trace.assumed_pointwise))} (not in the TRF tracer's "
            "tables; they kept their input's shape, so each output pixel is taken to depend on the same input "
            "pixel only: check them if the TRF looks too small)")


def as_image_set(images: ImageSet | torch.Tensor) -> ImageSet:
    """``images`` as an :class:`~erf.data.ImageSet`: a tensor ``(N, C, H, W)`` is taken as already normalised
    model input (like the ``tensor:`` source), without labels.

    Raises:
        DataError: a tensor that is not 4-D floating point.
    """
    if isinstance(images, ImageSet):
        return images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"images must be an ImageSet or a float tensor (N, C, H, W), got {shape}")
    x = images.detach().float()
    return ImageSet(x, torch.full((x.shape[0],), -1, dtype=torch.long), f"{x.shape[0]} images given as a tensor")


def chosen_images(images: ImageSet | torch.Tensor | None, count: int | None) -> ImageSet:
    """The images :func:`measure` and :func:`~erf.comparison.compare` use: the first ``count`` of ``images``
    (all of them when ``count`` is ``None`` or at least their number; never fewer without being asked).

    Raises:
        InputError: no images, or a ``count`` that is not a positive integer.
        DataError: ``images`` is neither an ImageSet nor a 4-D float tensor.
    """
    if images is None:
        raise InputError("images: give an ImageSet or a tensor (N, C, H, W) to measure on")
    if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1):
        raise InputError(f"{count}: must be an integer >= 1 (or None: every image given)", param="count")
    return as_image_set(images).head(None if count is None else int(count))


@contextlib.contextmanager
def lent(model: nn.Module, device: str | torch.device | None = None, *,
         memory_format: torch.memory_format | None = None) -> Iterator[nn.Module]:
    """Lend ``model`` to a measurement and give it back as it was given.

    Inside, ``model`` is in eval mode (batch norm must not couple images), on ``device`` and, with
    ``memory_format``, in that layout (``torch.channels_last`` for bf16). On exit, normal or by an exception,
    every submodule's training flag is restored, and every parameter and buffer gets back its own tensor
    (same device, dtype, memory format and storage), gradient and ``requires_grad``; parameters stay the same
    ``nn.Parameter`` objects, so optimizers holding them keep working.

    Yields:
        ``model`` itself (moved in place, as ``nn.Module.to`` does).
    """
    modes = [(module, module.training) for module in model.modules()]
    params: list[tuple[nn.Module, str, nn.Parameter, torch.Tensor, Any, Any, bool]] = []
    buffers: list[tuple[nn.Module, str, torch.Tensor]] = []
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                grad = p.grad
                params.append((module, name, p, p.data, grad, None if grad is None else grad.data, p.requires_grad))
        for name, b in module._buffers.items():
            if b is not None:
                buffers.append((module, name, b))
    try:
        model.eval()
        if device is not None:
            model.to(device)
        if memory_format is not None:
            model.to(memory_format=memory_format)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for module, name, p, data, grad, grad_data, flag in params:
            module._parameters[name] = p
            with torch.no_grad():
                p.data = data
                if grad is not None:
                    grad.data = grad_data
                p.grad = grad
            p.requires_grad_(flag)
        for module, name, b in buffers:
            module._buffers[name] = b


def measure(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    layers: Sequence[str | nn.Module] | None = None,
    *,
    count: int | None = None,
    probe: str = "gradient",
    probe_options: dict[str, Any] | None = None,
    input_size: Sequence[int] | None = None,
    fill: str = "zero",
    units: dict[str, tuple[int, int]] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    tol: float | None = None,
    bootstrap: int = 200,
    groups: int = 64,
    seed: int = 0,
    exact_replknet: bool = False,
    progress: bool | str = False,
    distributed: bool = False,
    info: dict[str, Any] | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    notes: Sequence[str] = (),
    preprocessing: dict[str, Any] | None = None,
    precision: str = "fp32",
) -> Measurement:
    """TRF and ERF metrics of ``layers`` of ``model`` over ``images``.

    Args:
        model: the network, any ``nn.Module``; measured in eval mode on ``device`` and given back as it was
            given (training flags, devices, memory format: :func:`lent`; a note says when it was training).
        images: an :class:`~erf.data.ImageSet` (normalised or raw, ``(N, C, h, w)``) or a tensor
            ``(N, C, h, w)`` of normalised model input (:func:`as_image_set`). Required.
        layers: stable layer names, module paths or submodules of ``model`` (default: every block, see
            :func:`erf.layers.default_layers`); a module is reported under its module path.
        count: use the first ``count`` images (default ``None``: every image given; a larger count than there
            are images uses them all); recorded in the settings.
        probe: a name in :data:`erf.probes.PROBES`; ``probe_options`` its options.
        input_size: ``(H, W)`` px canvas the images are pasted in (default: the image size ``(h, w)``); to bring
            images to a model's own input size by resizing instead, apply :class:`erf.data.Preprocessing` first
            (``erf measure`` does).
        fill: canvas fill, ``zero`` or ``mean`` (see :func:`embed`).
        units: ``{layer: (i, j)}`` overriding the nearest-centre unit (indices into the layer's map).
        batch_size: images per forward pass.
        device: ``cpu`` or ``cuda``.
        tol: stop adding images once every metric's 95 % CI half-width is below
            ``tol`` times its estimate (relative tolerance); ``None`` uses all images.
        bootstrap: bootstrap resamples for the CIs (0: none).
        groups: bootstrap groups G (memory ``G x H x W`` float64 per layer).
        seed: bootstrap seed.
        exact_replknet: RepLKNet's own area-ratio loop and centre unit ``(h // 2, w // 2)``
            (their published numbers; combine with ``probe_options={"mode": "relu"}``).
        progress: show a progress bar on stderr (maps done of images x layers, the layer in progress, ETA); a
            string is the bar's label.
        distributed: shard batches over ``torch.distributed`` ranks and all-reduce the sums
            (the process group must be initialised, e.g. by ``torchrun``).
        info: ``checkpoint``/``model``/``data`` strings copied into the settings.
        normalization: ``(mean, std)`` applied to raw images (default: CIFAR-10's; torchvision and timm models
            carry their own, ``LoadedModel.normalization``).
        notes: remarks of the caller put first in the result's notes (how the images were prepared).
        preprocessing: how the caller prepared the images (:meth:`erf.data.Preprocessing.to_json`), kept in the
            result's ``preprocessing`` (a canvas made here is recorded there too).
        precision: ``fp32`` (default, the reference) or ``bf16`` (the forward and backward under bf16 autocast,
            channels-last; ``erf bench --parts precision`` measures its speed-up and the change of every metric:
            about 0.3 % on norm_8d and resnet50 here, pixel maps up to ~15 % apart); recorded in the settings.

    Returns:
        A :class:`Measurement`: per layer a ``(H, W)`` float64 summed map, radii and sigmas in input px, area
        ratios and mass shares in [0, 1]; its notes say what decided the result (frame, padding, ops the TRF
        tracer assumed pointwise, ``tol``).

    Raises:
        InputError: an invalid option; DataError: images the model cannot take; LayerError: a layer that does
        not exist, never ran or has no ERF.
    """
    data = chosen_images(images, count)
    _check_options(batch_size=batch_size, seed=seed, groups=groups, bootstrap=bootstrap, tol=tol)
    notes = list(notes)
    if model.training:
        notes.append("the model was in train mode; measured in eval mode (batch norm must not couple images), "
                     "then given back in train mode")
    dev = pick_device(device)
    if precision not in ("fp32", "bf16"):
        raise InputError(f"{precision!r}: use fp32 or bf16", param="precision")
    with lent(model, dev, memory_format=torch.channels_last if precision == "bf16" else None):
        x = data.normalized(normalization)
        size, names, n_groups = _plan(model, data, x, input_size, layers, groups, dev)
        trace = trace_receptive_fields(model, size, x.shape[1])
        targets, rules = targets_of(model, trace, names, units, replknet_unit=exact_replknet)
        notes.extend(n for n in [pointwise_note(trace)] if n)
        prb = make_probe(probe, **dict(probe_options or {}))
        rank, world = _ranks(distributed, tol)
        accs, outside, shown = _accumulate(model, prb, targets, x, size, n_groups, dev, fill=fill,
                                           batch_size=batch_size, rank=rank, world=world, tol=tol, seed=seed,
                                           exact=exact_replknet, precision=precision, progress=progress,
                                           notes=notes)
    if distributed:
        for acc in accs.values():
            acc.all_reduce()
    h, w = x.shape[-2:]
    if outside is None and size != (h, w):
        _, outside = embed(x[:1], size, fill)
    label = progress if isinstance(progress, str) else "ERF"
    results = _layer_results(targets, rules, accs, outside, size, exact=exact_replknet, bootstrap=bootstrap,
                             seed=seed, bar=shown and bootstrap > 0, label=label)
    settings = {"probe": probe, "probe_options": dict(probe_options or {}), "fill": fill, "batch_size": batch_size,
                "tol": tol, "bootstrap": bootstrap, "groups": groups, "seed": seed,
                "exact_replknet": exact_replknet, "precision": precision, "count": count, "data": data.description,
                **(info or {})}
    prep = dict(preprocessing or {"kind": "none"})
    if size != (h, w):
        prep = {"kind": "canvas", "source_size": [h, w], "canvas": list(size), "fill": fill,
                **({"resized": preprocessing} if preprocessing else {})}
    return Measurement(results, int(results[0].images), size, (h, w), outside, settings,
                       notes + data.notes + trust_notes(results, size, (h, w), fill), prep)


def _check_options(*, batch_size: int, seed: int, groups: int, bootstrap: int, tol: float | None) -> None:
    """The scalar options of :func:`measure`, each checked before any work.

    Raises:
        InputError: naming the parameter.
    """
    for option, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0), ("groups", groups, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{value}: must be an integer >= {low}", param=option)
    check_seed(seed)
    check_resamples(bootstrap)
    if tol is not None and not (math.isfinite(tol) and tol > 0):
        raise InputError(f"{tol}: must be a positive number (a relative CI half-width, e.g. 0.05)", param="tol")


def _plan(model: nn.Module, data: ImageSet, x: torch.Tensor, input_size: Sequence[int] | None,
          layers: Sequence[str | nn.Module] | None, groups: int,
          device: torch.device) -> tuple[tuple[int, int], list[str | nn.Module], int]:
    """What a measurement of ``x`` ``(N, C, h, w)`` will do, checked before any work: the ``(H, W)`` input size
    in px, the layers to probe and the bootstrap groups (one image each while ``N <= groups``); warns when the
    run is costly (a 4096 px canvas can take hours).

    Raises:
        InputError: a canvas smaller than the images or too large, no layers, sums beyond 8 GiB.
        DataError: images of other channels than the model's first convolution takes.
    """
    n_total, channels, h, w = x.shape
    size = (int(input_size[0]), int(input_size[1])) if input_size else (h, w)
    if size[0] < h or size[1] < w:
        raise InputError(f"{size[0]}x{size[1]} is smaller than the {h}x{w} images", param="input_size")
    if size[0] * size[1] > 4096 * 4096:
        raise InputError(f"{size[0]}x{size[1]} is too large (at most 4096 x 4096)", param="input_size")
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != channels:
        raise DataError(f"data {data.description!r}: images have {channels} channels, the model's first "
                        f"convolution expects {first.in_channels}")
    names: list[str | nn.Module] = list(layers) if layers else list(default_layers(model))
    if not names:
        raise InputError("no layers to measure: name some with --layer (see `erf layers`)")
    n_groups = max(1, min(groups, n_total))
    need = len(names) * n_groups * size[0] * size[1] * 8
    if need > 8 * 2**30:
        raise InputError(f"{size[0]}x{size[1]}: the per-image sums of {len(names)} layers would need "
                         f"{need / 2**30:.0f} GiB; use a smaller input size or fewer layers", param="input_size")
    warn_if_costly(model, channels, size, n_total, device)
    return size, names, n_groups


def _ranks(distributed: bool, tol: float | None) -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` unless ``distributed``.

    Raises:
        InputError: no initialised process group, or ``tol`` asked for as well.
    """
    if not distributed:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise InputError("needs an initialised process group (run under torchrun)", param="distributed")
    if tol is not None:
        raise InputError("and distributed cannot be combined", param="tol")
    return dist.get_rank(), dist.get_world_size()


def _accumulate(model: nn.Module, prb: Any, targets: list[Target], x: torch.Tensor, size: tuple[int, int],
                groups: int, device: torch.device, *, fill: str, batch_size: int, rank: int, world: int,
                tol: float | None, seed: int, exact: bool, precision: str, progress: bool | str,
                notes: list[str]) -> tuple[dict[str, _Accumulator], np.ndarray | None, bool]:
    """Run the probe over this rank's batches of ``x`` ``(N, C, h, w)`` embedded in the ``size`` canvas and sum
    every target's maps; with ``tol``, stop once the CIs are narrow enough (a note in ``notes`` says when).

    Returns:
        ``({layer: sums}, (H, W) bool mask of canvas padding or None, whether a progress bar was shown)``.
    """
    from tqdm import tqdm

    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    n_total = x.shape[0]
    accs = {t.name: _Accumulator(size, groups, device) for t in targets}
    outside = None
    shown = bool(progress) and rank == 0
    # deterministic cuDNN kernels: the same command gives byte-identical maps on a GPU too
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True,
                                    allow_tf32=torch.backends.cudnn.allow_tf32):
        bar = tqdm(total=n_total * len(targets), disable=not shown,
                   desc=progress if isinstance(progress, str) else "ERF maps", unit="map", dynamic_ncols=True)
        reports = shown and hasattr(prb, "on_map")
        if reports:  # the probe reports every layer's maps of every sub-batch as they are made
            prb.on_map = lambda name, count: (bar.set_postfix_str(name, refresh=False), bar.update(count))
        try:
            for start, stop in _batches(n_total, batch_size, rank, world):
                batch, outside = embed(x[start:stop], size, fill)
                batch = batch.to(device, dtype=dtype)
                if precision == "bf16":
                    with autocast("bf16", device):
                        maps = prb.batch_maps(model, targets, batch.contiguous(memory_format=torch.channels_last))
                else:
                    maps = prb.batch_maps(model, targets, batch)
                for t in targets:
                    accs[t.name].add(maps[t.name], start)
                if not reports:
                    bar.update((stop - start) * len(targets))
                if tol is not None:
                    done, blocking = _converged(targets, accs, tol, outside, exact, seed)
                    if done:
                        notes.append(f"--tol {tol}: stopped after {stop} of {n_total} images")
                        break
                    if stop == n_total:
                        notes.append(f"--tol {tol} not reached after all {n_total} images ({blocking}); more "
                                     "--images would narrow it")
        finally:
            bar.close()
            if reports:
                prb.on_map = None
    return accs, outside, shown


def _layer_results(targets: list[Target], rules: dict[str, str], accs: dict[str, _Accumulator],
                   outside: np.ndarray | None, size: tuple[int, int], *, exact: bool, bootstrap: int, seed: int,
                   bar: bool, label: str) -> list[LayerERF]:
    """One :class:`LayerERF` per target from its sums: metrics, bootstrap CIs and trust.

    Raises:
        UndefinedERFError: a summed map holds NaN or Inf.
    """
    from tqdm import tqdm

    results = []
    for t in tqdm(targets, desc=f"{label}: metrics + bootstrap", unit="layer", dynamic_ncols=True, disable=not bar):
        acc = accs[t.name]
        gm = acc.group_maps.cpu().numpy()
        gc = acc.group_counts.cpu().numpy()
        if not np.isfinite(gm).all():
            raise UndefinedERFError(f"layer {t.name!r}: the gradient map holds NaN/Inf (non-finite weights or an "
                                    "overflow), so its ERF is undefined")
        layer = LayerERF(t.name, t.path, t.trf, t.unit, rules[t.name], gm.sum(axis=0), gm, gc, int(gc.sum()))
        layer.metrics, layer.ci = _metrics_with_ci(layer, outside, exact, bootstrap, seed)
        layer.trust = trust_of(layer.metrics, layer.center, size)
        results.append(layer)
    return results


def _stat_fn(layer_center: tuple[float, float], trf: TRF, outside: np.ndarray | None, exact: bool):
    side = trf.side

    def stat(map_: np.ndarray, images: int) -> dict[str, float]:
        return erf_metrics(map_, images, layer_center, outside, side, exact).scalars()

    return stat, side


def _metrics_with_ci(layer: LayerERF, outside: np.ndarray | None, exact: bool, bootstrap: int,
                     seed: int) -> tuple[ERFMetrics, dict[str, tuple[float, float]]]:
    stat, side = _stat_fn(layer.center, layer.trf, outside, exact)
    metrics = erf_metrics(layer.sum_map, layer.images, layer.center, outside, side, exact)
    ci = bootstrap_ci(layer.group_maps, layer.group_counts, stat, bootstrap, seed=seed) if bootstrap else {}
    return metrics, ci


TOL_METRICS = ("radius.50", "radius.95", "sigma.y", "sigma.x")
"""Metrics ``tol`` watches: the mass radii and the Gaussian widths. Square sides and area ratios move in steps
of two pixels (odd squares), so their intervals jump and a relative tolerance may never be met."""
TOL_FLOOR_PX = 0.5
"""A radius interval narrower than the pixel grid cannot be asked for: half-widths up to this many px pass."""


def _converged(targets: list[Target], accs: dict[str, _Accumulator], tol: float, outside: np.ndarray | None,
               exact: bool, seed: int) -> tuple[bool, str]:
    """Whether every watched metric (:data:`TOL_METRICS`) of every layer has a 95 % CI half-width within
    ``tol`` of its value (radii: or within :data:`TOL_FLOOR_PX`); else ``(False, what blocks)``."""
    for t in targets:
        acc = accs[t.name]
        counts = acc.group_counts.cpu().numpy()
        if (counts > 0).sum() < 8:
            return False, f"{t.name}: fewer than 8 image groups so far"
        stat, _ = _stat_fn(t.trf.center(t.unit), t.trf, outside, exact)
        gm = acc.group_maps.cpu().numpy()
        point = stat(gm.sum(axis=0), int(counts.sum()))
        ci = bootstrap_ci(gm, counts, stat, resamples=100, seed=seed)
        for key in TOL_METRICS:
            if key not in ci or not math.isfinite(point[key]):
                continue
            lo, hi = ci[key]
            half, value = (hi - lo) / 2, abs(point[key])
            allowed = max(tol * value, TOL_FLOOR_PX if key.startswith("radius") else 0.0)
            if half > allowed:
                share = 100 * half / max(value, 1e-12)
                return False, f"{t.name} {key}: 95% CI half-width {half:.2f} px is {share:.0f}% of {value:.2f} px"
    return True, ""
