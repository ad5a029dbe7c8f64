"""Luo et al.'s gradient ERF probe and the engine that makes it fast.

ERF map of a layer (Luo et al. 2016): the gradient of the layer's target unit,
summed over channels, with respect to the input, absolute value summed over
input channels (and, by the caller, over images):
``M[y, x] = sum_c |d (sum_k a_k[i, j]) / d x[c, y, x]|``. The model is in eval
mode, so batch norm does not couple images and a batch gives per-image
gradients. RepLKNet's variant (``mode="relu"``) applies a ReLU to the centre
activation and to the gradient instead of the absolute value.

The engine:

* one forward pass per batch keeps the outputs of every requested layer
  (forward hooks) and stops right after the deepest one (no deeper layer runs);
* one input-gradient per layer (``torch.autograd.grad`` with the graph
  retained), parameters frozen (no parameter gradient is ever computed);
* eval-mode batch norm runs as a per-channel affine map
  (:func:`affine_batch_norm`: same values, a backward without reductions);
* on CPU, models with grouped convolutions (ResNeXt) are probed in the
  channels-last memory format (:func:`probe_memory_format`), and each crop
  group runs in sub-batches whose largest feature map stays within 16 MiB
  (:data:`CPU_CHUNK_MB`), so that its saved activations stay near the cache;
* for layers whose TRF is local, the input is cropped to the union of the
  targets' TRF boxes, with the crop start a multiple of the effective stride
  so that every feature-map grid keeps its phase: the target unit sees exactly
  the same pixels, so the map is the uncropped one up to float rounding, for
  far less arithmetic. Layers with a global TRF use the full input, and so do
  token-sequence outputs (a crop would change the token grid) and any group
  whose cropped forward the model rejects (a fixed input size).

Layers whose output is not ``(N, C, H, W)`` are probed through their TRF's layout
(:meth:`~erf.trf.TRF.unit_index`): a channels-last ``(N, H, W, C)``
map at ``[:, i, j, :]``, a ViT's token sequence ``(N, L, D)`` at its patch token
``prefix + i W + j`` (the class tokens are skipped); the map is the gradient with
respect to the input pixels, as for a CNN.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from erf import hooks
from erf.errors import ErfError, LayerDidNotRunError, UndefinedERFError
from erf.hooks import first_tensor
from erf.probes.base import Target, frozen_parameters
from erf.trf.field import TRF


@dataclass(frozen=True)
class CropGroup:
    """Targets probed together on one input crop ``[y0, y1) x [x0, x1)`` (``None``: full input)."""

    crop: tuple[int, int, int, int] | None
    targets: tuple[Target, ...]


def _lcm(values: list[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def crop_for(targets: list[Target], height: int, width: int) -> tuple[int, int, int, int] | None:
    """Smallest crop holding every target's TRF box, its start a multiple of the strides.

    Returns ``(y0, y1, x0, x1)`` half-open, or ``None`` when a target is global
    or the crop would be the whole input.
    """
    if any(t.trf.is_global or len(t.trf.dims) != 2 for t in targets):
        return None
    boxes = [t.trf.box(t.unit) for t in targets]
    sy = _lcm([t.trf.stride[0] for t in targets])
    sx = _lcm([t.trf.stride[1] for t in targets])
    y0 = max(0, min(b[0] for b in boxes))
    x0 = max(0, min(b[2] for b in boxes))
    y0, x0 = (y0 // sy) * sy, (x0 // sx) * sx
    y1 = min(height, max(b[1] for b in boxes) + 1)
    x1 = min(width, max(b[3] for b in boxes) + 1)
    if (y0, y1, x0, x1) == (0, height, 0, width):
        return None
    return (y0, y1, x0, x1)


def plan_groups(targets: list[Target], height: int, width: int, crop: bool = True,
                merge_ratio: float = 0.5) -> list[CropGroup]:
    """Group targets into crops: global (and large) layers share the full input;
    local layers are grouped greedily, deepest first, while a layer's own crop
    area is at least ``merge_ratio`` of its group's crop area."""
    if not crop:
        return [CropGroup(None, tuple(targets))]
    full_area = height * width
    full: list[Target] = []
    local: list[tuple[int, Target]] = []
    for t in targets:
        c = crop_for([t], height, width)
        area = full_area if c is None else (c[1] - c[0]) * (c[3] - c[2])
        if c is None or area > merge_ratio * full_area:
            full.append(t)
        else:
            local.append((area, t))
    groups: list[CropGroup] = [CropGroup(None, tuple(full))] if full else []
    local.sort(key=lambda item: -item[0])
    current: list[Target] = []
    current_area = 0
    for area, t in local:
        if current and area >= merge_ratio * current_area:
            current.append(t)
            continue
        if current:
            groups.append(CropGroup(crop_for(current, height, width), tuple(current)))
        current, current_area = [t], area
    if current:
        groups.append(CropGroup(crop_for(current, height, width), tuple(current)))
    return groups


def _affine_bn_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        return type(self).forward(self, x)
    var, mean = self.running_var, self.running_mean
    assert var is not None and mean is not None  # affine_batch_norm swaps only BNs with running statistics
    scale = torch.rsqrt(var + self.eps)
    if self.weight is not None:
        scale = self.weight * scale
    shift = -mean * scale if self.bias is None else self.bias - mean * scale
    return torch.addcmul(shift.to(x.dtype).view(1, -1, 1, 1), x, scale.to(x.dtype).view(1, -1, 1, 1))


@contextlib.contextmanager
def affine_batch_norm(model: nn.Module) -> Iterator[None]:
    """Run every eval-mode ``BatchNorm2d`` (running statistics) as one per-channel affine ``x * s + t``.

    Same function up to float rounding, but its backward is one multiply, where
    ``native_batch_norm_backward`` also reduces over the batch (for parameter
    gradients nobody asked for): on CPU it took 15 % of the engine's time, and
    the swap made all-layer ERF of norm_8d 12-35 % faster (erf bench; an
    in-process A/B). Hooks on the BN
    modules still fire; the original ``forward`` is restored on exit.
    """
    swapped = []
    for mod in model.modules():
        if (isinstance(mod, nn.BatchNorm2d) and not mod.training and mod.running_var is not None
                and mod.running_mean is not None and "forward" not in mod.__dict__):
            mod.forward = types.MethodType(_affine_bn_forward, mod)  # type: ignore[method-assign]
            swapped.append(mod)
    try:
        yield
    finally:
        for mod in swapped:
            del mod.forward


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

CPU_CHUNK_MB = 16.0
"""CPU sub-batch size, as MiB of the largest feature map (all images of the sub-batch, after cropping).

16 MiB is 16 images of ResNeXt-29 8d (1 MiB per image for its largest, stage-1 map). Measured on this
project's 2-core CPU (32 MiB L3), all-layer ERF, 64 images: norm_8d took 2.4 s in batches of 32 against
2.0 s in 16 (two threads), and with one thread sub-batches of 8 were much slower than 16 (5.7 against
3.5 s); cbam_8d (nothing croppable) was faster in 8 than in 16 with two threads (4.7 against 7.1 s) but
not consistently so. 16 is the setting that never lost. Models with small maps (resnet20, torchvision's
resnet18 at 32 px) are not split: they were faster in larger batches."""


def largest_feature_map_bytes(model: nn.Module, targets: list[Target], x: torch.Tensor) -> int:
    """Bytes of the largest output of any leaf module for one image ``x[:1]``, up to the deepest target.

    One forward of one image without gradients (it stops after the deepest target).
    """
    largest = 0

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal largest
        t = first_tensor(output)
        if t is not None:
            largest = max(largest, t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            capture_outputs(model, targets, x[:1])
    finally:
        for h in handles:
            h.remove()
    return largest


def _checked_memory_format(choice: str) -> str:
    if choice != "auto" and choice not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be 'auto' or one of {sorted(MEMORY_FORMATS)}, got {choice!r}")
    return choice


def probe_memory_format(model: nn.Module, device: torch.device, choice: str = "auto") -> torch.memory_format:
    """Memory format of the probed input (convolutions follow their input's format).

    ``"auto"`` picks ``channels_last`` on CPU when the model has a grouped
    convolution and ``contiguous`` otherwise: on this project's 2-core CPU,
    channels-last made all-layer ERF of ResNeXt-29 16x8d 26-36 % faster
    (norm_8d 5.8 -> 4.0 s with one thread and 3.2 -> 2.05 s with two, cbam_8d
    14.9 -> 11.0 s with one; 64 images, batch 16), but torchvision's resnet18
    40 % slower and resnet20 10 % slower (plain convolutions on small maps).
    CUDA keeps the contiguous format (not measured).
    """
    if _checked_memory_format(choice) != "auto":
        return MEMORY_FORMATS[choice]
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def capture_outputs(model: nn.Module, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` until every target module has produced an output; return them by path.

    Raises:
        LayerDidNotRunError: the forward finished and a target's hook never fired.
    """
    captured = hooks.capture_outputs(model, {t.path: t.module for t in targets}, x, stop_early=True)
    missing = [t for t in targets if t.path not in captured]
    if missing:
        t = missing[0]
        raise LayerDidNotRunError(
            f"layer {t.name!r} ({t.path}) never ran through its forward hook: the model may call it as "
            "`module.forward(x)`, which bypasses hooks; it is not measured (never reported as zero)"
        )
    return captured


def _unit_in_output(output: torch.Tensor, unit: tuple[int, int], trf: TRF | None) -> bool:
    """Whether ``unit`` lies on ``output``'s map (grid dims of ``trf``, or its token grid)."""
    i, j = unit
    if trf is None or trf.dims == (2, 3):
        return 0 <= i < output.shape[2] and 0 <= j < output.shape[3]
    if trf.is_tokens:
        h, w = trf.feature_size or (0, 0)
        return 0 <= i < h and 0 <= j < w and trf.prefix + h * w <= output.shape[trf.dims[0]]
    return 0 <= i < output.shape[trf.dims[0]] and 0 <= j < output.shape[trf.dims[1]]


def unit_gradient_map(output: torch.Tensor, unit: tuple[int, int], x: torch.Tensor, mode: str,
                      retain_graph: bool, name: str = "", trf: TRF | None = None) -> torch.Tensor:
    """Per-image map ``(B, h, w)`` float64 of one unit's input gradient (see module docstring).

    ``trf`` (the layer's TRF at this input size) says where the map lies in ``output``
    (:meth:`~erf.trf.TRF.unit_index`); without it ``output`` must be ``(N, C, H, W)``.
    """
    layout = trf if trf is not None and trf.dims != (2, 3) else None  # the TRF when the map is not dims 2, 3
    if layout is not None and output.ndim <= max(layout.dims):
        raise UndefinedERFError(f"layer {name!r}: output shape {tuple(output.shape)} does not match its traced "
                                f"layout (dims {layout.dims})")
    if layout is None and output.ndim != 4:
        raise UndefinedERFError(
            f"layer {name!r} has no spatial map (output shape {tuple(output.shape)}): its ERF is undefined "
            "(it comes after global pooling or flattening)"
        )
    i, j = unit
    if not _unit_in_output(output, unit, trf):
        raise UndefinedERFError(f"layer {name!r}: unit {unit} outside its map (output {tuple(output.shape)})")
    if not output.requires_grad:
        raise UndefinedERFError(
            f"layer {name!r}: its output does not depend on the input through autograd (detached, or computed "
            "under torch.no_grad), so its gradient ERF cannot be measured (it is not reported as zero)"
        )
    act = output[layout.unit_index(unit)] if layout is not None else output[:, :, i, j]
    if mode == "relu":
        act = torch.relu(act)
    (grad,) = torch.autograd.grad(act.sum(), x, retain_graph=retain_graph, allow_unused=True)
    if grad is None:
        return torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.float64, device=x.device)
    grad = grad.abs() if mode == "abs" else torch.relu(grad)
    return grad.sum(dim=1, dtype=torch.float64)


class GradientProbe:
    """Luo et al.'s gradient ERF with the cropping engine.

    Args:
        mode: ``"abs"`` (Luo: |gradient|) or ``"relu"`` (RepLKNet: ReLU on the
            centre activation and on the gradient).
        crop: crop the input to the TRF of local layers (exact; faster).
        merge_ratio: grouping threshold of :func:`plan_groups`.
        memory_format: ``"auto"``, ``"channels_last"`` or ``"contiguous"``
            (:func:`probe_memory_format`); same maps up to float rounding.
        cpu_chunk_mb: on CPU, split each crop group's batch into sub-batches whose
            largest feature map takes at most this many MiB (:data:`CPU_CHUNK_MB`);
            ``None``: never split. Same maps up to float rounding.
    """

    name = "gradient"

    def __init__(self, mode: str = "abs", crop: bool = True, merge_ratio: float = 0.5,
                 memory_format: str = "auto", cpu_chunk_mb: float | None = CPU_CHUNK_MB) -> None:
        if mode not in ("abs", "relu"):
            raise ValueError(f"mode must be 'abs' or 'relu', got {mode!r}")
        if cpu_chunk_mb is not None and not cpu_chunk_mb > 0:
            raise ValueError(f"cpu_chunk_mb must be positive or None, got {cpu_chunk_mb}")
        self.memory_format = _checked_memory_format(memory_format)
        self.cpu_chunk_mb = cpu_chunk_mb
        self._map_bytes: tuple[tuple, int] | None = None  # (model, input, targets) key -> largest map bytes
        self._uncropped: set[tuple] = set()  # groups whose crop the model rejected: run uncropped from then on
        self.mode = mode
        self.crop = crop
        self.merge_ratio = merge_ratio
        self.on_map: Callable[[str, int], None] | None = None
        """Called ``(layer name, images)`` after each layer's maps of each sub-batch (progress bars)."""

    def batch_maps(self, model: nn.Module, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{target name: (B, H, W) float64}`` maps for the batch ``x`` ``(B, C, H, W)``."""
        b, _, h, w = x.shape
        fmt = probe_memory_format(model, x.device, self.memory_format)
        out: dict[str, torch.Tensor] = {}
        with frozen_parameters(model), affine_batch_norm(model), torch.enable_grad():
            groups = plan_groups(targets, h, w, self.crop, self.merge_ratio)
            per_image = self._largest_map_bytes(model, targets, x) if self._splits(x) else 0
            for group in groups:
                y0, y1, x0, x1 = group.crop or (0, h, 0, w)
                chunk = self.sub_batch(per_image * (y1 - y0) * (x1 - x0) / (h * w), b)
                parts = [self._group_maps(model, group, xs, fmt) for xs in torch.split(x, chunk)]
                out.update({k: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]})
        return out

    def _splits(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.cpu_chunk_mb is not None and x.shape[0] > 1

    def sub_batch(self, bytes_per_image: float, batch: int) -> int:
        """Images per sub-batch for a group whose largest map takes ``bytes_per_image`` bytes per image."""
        if self.cpu_chunk_mb is None or bytes_per_image <= 0:
            return batch
        return int(max(1, min(batch, self.cpu_chunk_mb * 2**20 // bytes_per_image)))

    def _largest_map_bytes(self, model: nn.Module, targets: list[Target], x: torch.Tensor) -> int:
        key = (id(model), tuple(x.shape[1:]), x.dtype, tuple((t.path, id(t.module)) for t in targets))
        if self._map_bytes is None or self._map_bytes[0] != key:
            self._map_bytes = (key, largest_feature_map_bytes(model, targets, x))
        return self._map_bytes[1]

    def _group_maps(self, model: nn.Module, group: CropGroup, x: torch.Tensor,
                    fmt: torch.memory_format = torch.contiguous_format) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        key = (id(model), tuple(x.shape[1:]), group.crop, tuple((t.path, t.unit) for t in group.targets))
        if group.crop is not None and key in self._uncropped:
            group = CropGroup(None, group.targets)
        y0, y1, x0, x1 = group.crop or (0, h, 0, w)
        xc = x[:, :, y0:y1, x0:x1].detach().clone(memory_format=fmt).requires_grad_(True)
        try:
            outputs = capture_outputs(model, list(group.targets), xc)
        except (ErfError, torch.OutOfMemoryError):
            raise
        except Exception:
            if group.crop is None:
                raise
            # The model rejects the cropped size (a ViT's fixed image size): this group runs uncropped, now
            # and in every later batch (remembered, so the failing cropped forward is not tried again).
            self._uncropped.add(key)
            return self._group_maps(model, CropGroup(None, group.targets), x, fmt)
        units = {}
        for t in group.targets:
            unit = (t.unit[0] - y0 // t.trf.stride[0], t.unit[1] - x0 // t.trf.stride[1])
            o = outputs[t.path]
            if group.crop is not None and o.ndim == 4 and not _unit_in_output(o, unit, t.trf):
                # The crop lost the unit (exotic padding); measure this group on the full input instead.
                self._uncropped.add(key)
                return self._group_maps(model, CropGroup(None, group.targets), x, fmt)
            units[t.name] = unit
        maps: dict[str, torch.Tensor] = {}
        for n, t in enumerate(group.targets):
            m = unit_gradient_map(outputs[t.path], units[t.name], xc, self.mode,
                                  retain_graph=n < len(group.targets) - 1, name=t.name, trf=t.trf)
            if group.crop is not None:
                full = torch.zeros(b, h, w, dtype=torch.float64, device=x.device)
                full[:, y0:y1, x0:x1] = m
                m = full
            maps[t.name] = m
            if self.on_map is not None:
                self.on_map(t.name, b)
        return maps
