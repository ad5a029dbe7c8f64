"""Object-centred ERF: the gradient map of the unit over each object's centre, measured on the test canvases.

For a layer with theoretical receptive field :class:`~erf.trf.TRF` ``T`` (traced at the canvas
size) and an image whose object centre is ``c = (cy, cx)`` (canvas px, from the known box), the
probed unit is the one whose TRF centre ``T.center(u)`` is nearest ``c`` (:func:`object_units`).
Its map is Luo et al.'s ``M[y, x] = sum_ch |d a_u / d x[ch, y, x]|`` (``a_u`` summed over the
layer's channels, model in eval mode, normalised input), computed for a whole batch with one
backward pass (each image's unit depends on that image only).

Maps are **shifted so that the probed unit's TRF centre lands at the centre** of a
``(2H - 1) x (2W - 1)`` accumulator (an integer shift; the sub-pixel part of the centre is the
same for every unit of a layer and is kept as the map's centre), then averaged over images. The
radii ``r_q`` (:func:`erf.metrics.mass_radius`, Euclidean, px) of that mean map around its centre
are reported as diameters ``2 r_q`` for ``q`` in :data:`LEVELS` (``2 r50`` is the primary size).
Canvas borders clip maps of objects near an edge: that is the operating point (the same canvases
the accuracy is taken on), and the clipped mass is simply absent.

Two variants are reported:

* ``object_centred``: the unit over the object (above), averaged over the objects' positions;
* ``position_averaged``: the units of a fixed :data:`GRID` x :data:`GRID` grid of canvas positions
  (whatever the object's place; the canvas-centre unit among them), shifted and averaged alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from erf.data.sources import normalize
from erf.errors import StudyError
from erf.hooks import capture_outputs
from erf.layers import resolve_layer
from erf.metrics import level_key, mass_radii
from erf.trf.field import TRF
from erf.trf.named import theoretical_rf

LEVELS = (0.25, 0.5, 0.75, 0.95)
"""Mass fractions ``q`` whose diameters ``2 r_q`` are reported (``0.5`` primary)."""
GRID = 3
"""Side of the grid of canvas positions of the position-averaged variant."""


def object_units(trf: TRF, centres: torch.Tensor | np.ndarray) -> np.ndarray:
    """Units ``(N, 2)`` int ``(i, j)`` whose TRF centre is nearest each object centre ``(N, 2)`` ``(y, x)`` px.

    Raises:
        StudyError: the layer has no spatial map.
    """
    if trf.feature_size is None:
        raise StudyError("object-centred ERF: the layer has no spatial map")
    c = np.asarray(centres, dtype=np.float64)
    out = np.empty(c.shape, dtype=np.int64)
    for axis in (0, 1):
        c0 = (trf.lo[axis] + trf.hi[axis]) / 2.0
        u = np.floor((c[:, axis] - c0) / trf.stride[axis] + 0.5)
        out[:, axis] = np.clip(u, 0, trf.feature_size[axis] - 1)
    return out


def grid_units(trf: TRF, grid: int = GRID) -> np.ndarray:
    """``grid**2`` units ``(K, 2)`` evenly spread over the map (the centre unit included for odd ``grid``)."""
    if trf.feature_size is None:
        raise StudyError("position-averaged ERF: the layer has no spatial map")
    axes = [np.unique(np.round(np.linspace(0, n - 1, grid + 2)[1:-1]).astype(np.int64)) for n in trf.feature_size]
    return np.array([(i, j) for i in axes[0] for j in axes[1]], dtype=np.int64)


def _unit_maps(out: torch.Tensor, x: torch.Tensor, units: torch.Tensor, retain_graph: bool) -> torch.Tensor:
    """``(B, H, W)`` float64 maps of unit ``units[b]`` ``(B, 2)`` of the layer output ``out`` ``(B, C, h, w)``
    for image ``b`` of ``x`` (the input ``out`` was computed from, with ``requires_grad``)."""
    b = torch.arange(x.shape[0], device=out.device)
    act = out[b, :, units[:, 0].to(out.device), units[:, 1].to(out.device)]  # (B, C)
    (grad,) = torch.autograd.grad(act.sum(), x, retain_graph=retain_graph)
    return grad.abs().sum(dim=1, dtype=torch.float64)


def _shift_add(acc: torch.Tensor, maps: torch.Tensor, centres: np.ndarray, size: tuple[int, int]) -> None:
    """Add ``maps (B, H, W)`` into ``acc (2H - 1, 2W - 1)`` with each map's ``centres[b]`` at ``(H - 1, W - 1)``."""
    h, w = size
    for b in range(maps.shape[0]):
        oy = h - 1 - int(np.floor(centres[b, 0] + 0.5))
        ox = w - 1 - int(np.floor(centres[b, 1] + 0.5))
        acc[oy: oy + h, ox: ox + w] += maps[b]


def _diameters(mean_map: np.ndarray, centre: tuple[float, float], levels: Sequence[float]) -> dict[str, float]:
    return {f"d{level_key(q)}": 2.0 * r for q, r in mass_radii(mean_map, levels, centre).items()}


def object_centred_erf(model: nn.Module, layer: str, images: torch.Tensor, centres: torch.Tensor | np.ndarray,
                       boxes: torch.Tensor | np.ndarray | None = None, levels: Sequence[float] = LEVELS,
                       batch_size: int = 32, device: str | torch.device = "cpu", grid: int = GRID,
                       return_maps: bool = False) -> dict[str, Any]:
    """Object-centred and position-averaged ERF diameters of ``layer`` on raw canvases.

    Args:
        model: the network (put in eval mode; its parameters are not changed).
        layer: stable layer name or module path (``stage2``).
        images: raw canvases ``(N, 3, H, W)`` in [0, 1] (normalised here).
        centres: object centres ``(N, 2)`` ``(y, x)`` in canvas px.
        boxes: ``(N, 4)`` ``x0, y0, x1, y1`` (exclusive ends), to report how many probed units lie over
            their object (``unit_in_box``).
        levels: mass fractions ``q``.
        batch_size: images per backward pass.
        device: where to compute.
        grid: side of the position grid of the position-averaged variant (0: skip it).
        return_maps: also return the mean maps (``(2H - 1, 2W - 1)`` float64 numpy arrays).

    Returns:
        ``{"layer", "levels", "images", "object_centred": {"d25", "d50", ...}, "position_averaged": {...},
        "unit_in_box": fraction, "trf": TRF json, ["maps": {...}]}``; diameters in canvas px.
    """
    was_training = model.training
    model = model.to(device).eval()
    n, _, h, w = images.shape
    target = resolve_layer(model, layer)
    trf = theoretical_rf(model, [layer], input_size=(h, w))[layer]
    units = object_units(trf, centres)
    unit_centres = np.array([trf.center(u) for u in units], dtype=np.float64).reshape(-1, 2)
    frac = unit_centres[0] - np.floor(unit_centres[0] + 0.5) if n else np.zeros(2)
    centre = (h - 1 + float(frac[0]), w - 1 + float(frac[1]))
    inside = None
    if boxes is not None:
        bx = np.asarray(boxes, dtype=np.float64)
        inside = float(np.mean((unit_centres[:, 1] >= bx[:, 0] - 0.5) & (unit_centres[:, 1] <= bx[:, 2] - 0.5)
                               & (unit_centres[:, 0] >= bx[:, 1] - 0.5) & (unit_centres[:, 0] <= bx[:, 3] - 0.5)))
    gunits: np.ndarray = grid_units(trf, grid) if grid else np.zeros((0, 2), dtype=np.int64)
    gcentres = np.array([trf.center(u) for u in gunits], dtype=np.float64).reshape(-1, 2)
    acc_obj = torch.zeros(2 * h - 1, 2 * w - 1, dtype=torch.float64, device=device)
    acc_pos = torch.zeros_like(acc_obj)
    try:
        for start in range(0, n, batch_size):
            x = normalize(images[start: start + batch_size].to(device)).detach().requires_grad_(True)
            feat = capture_outputs(model, {target.path: target.module}, x, stop_early=True)[target.path]
            u = torch.as_tensor(units[start: start + batch_size])
            maps = _unit_maps(feat, x, u, retain_graph=len(gunits) > 0)  # one forward serves every unit
            _shift_add(acc_obj, maps, unit_centres[start: start + batch_size], (h, w))
            for k in range(len(gunits)):
                uk = torch.as_tensor(gunits[k]).expand(x.shape[0], 2)
                maps = _unit_maps(feat, x, uk, retain_graph=k < len(gunits) - 1).sum(0, keepdim=True)
                _shift_add(acc_pos, maps, gcentres[k: k + 1], (h, w))
    finally:
        model.train(was_training)
    if n == 0:
        raise StudyError("object-centred ERF: no images")
    mean_obj = (acc_obj / n).cpu().numpy()
    out: dict[str, Any] = {"layer": layer, "levels": list(levels), "images": int(n),
                           "object_centred": _diameters(mean_obj, centre, levels), "unit_in_box": inside,
                           "trf": trf.to_json()}
    if len(gunits):
        mean_pos = (acc_pos / (n * len(gunits))).cpu().numpy()
        out["position_averaged"] = _diameters(mean_pos, centre, levels)
        out["position_units"] = gunits.tolist()
    if return_maps:
        out["maps"] = {"object_centred": mean_obj, **({"position_averaged": mean_pos} if len(gunits) else {})}
    return out


__all__ = ["GRID", "LEVELS", "grid_units", "object_centred_erf", "object_units"]
