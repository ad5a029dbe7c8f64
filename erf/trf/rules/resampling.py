"""Rules of resampling ops: ``F.interpolate``, ``pixel_shuffle`` / ``pixel_unshuffle`` and ``F.unfold``.

They are local. The catch is the jump: the field of unit ``u`` is ``[lo + u j, hi + u j]`` with an integer
jump ``j`` in input pixels, so an op that makes the map ``r`` times finer keeps an exact field only when ``r``
divides the jump (upsampling a stride-8 map by 2 gives jump 4); at a finer map the field is global, as before
(never a box smaller than the support).

* ``interpolate`` (every mode): along each spatial axis, the input units that output unit ``v`` reads are the
  non-zero weights of the same interpolation applied to a one-axis identity (so ``nearest``, ``bilinear``,
  ``bicubic``, ``area``, ``align_corners`` and ``antialias`` are all read from torch itself); the new jump is
  ``j n / m`` (``n`` -> ``m`` units) and the box the hull of ``[lo + a(v) j, hi + b(v) j] - v j'`` over ``v``.
* ``pixel_shuffle(r)``: unit ``v = r u + i`` reads unit ``u``: jump ``j / r``, ``lo - (r - 1) j / r``.
* ``pixel_unshuffle(r)``: a window of ``r`` with stride ``r`` (the ``r^2`` phases go to channels).
* ``unfold``: the windows of a convolution as a token sequence over the output grid (``N, C k^2, L``);
  ``Tensor.unfold(dim, size, step)``: a window along ``dim`` whose elements form a new last dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erf.trf.layout import Dim, plain, resized, sized
from erf.trf.rules.registry import Call, bind, register_rule
from erf.trf.rules.windows import ntuple
from erf.trf.state import FieldState, RuleResult, TraceState


def _finer(state: TraceState, call: Call, why: str) -> FieldState:
    return state.global_(call.union, call.name, why, state.kept(call.x, call.outs))


def _reads(n: int, m: int, k: int, nd: int, p: dict) -> list[tuple[int, int]]:
    """For each of the ``m`` output units of axis ``k`` (of ``nd`` interpolated axes): the first and last of
    the ``n`` input units with a non-zero interpolation weight, from ``F.interpolate`` of an identity."""
    shape = [1] * nd
    shape[k] = n
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    size = [1] * nd
    size[k] = m
    kwargs: dict = {"mode": p["mode"]}
    if p["align_corners"] is not None:
        kwargs["align_corners"] = p["align_corners"]
    if p["antialias"]:
        kwargs["antialias"] = True
    scale = p["scale_factor"]
    if scale is not None and not p["recompute_scale_factor"]:
        factors = [1.0] * nd
        factors[k] = float(scale[k] if isinstance(scale, (tuple, list)) else scale)
        out = F.interpolate(eye, scale_factor=factors, **kwargs)
    else:
        out = F.interpolate(eye, size=size, **kwargs)
    weights = out.reshape(n, -1)[:, :m]
    reads = []
    for v in range(m):
        nz = torch.nonzero(weights[:, v]).flatten()
        reads.append((int(nz[0]), int(nz[-1])) if len(nz) else (v * n // m, v * n // m))
    return reads


@register_rule("interpolate", signature="input, size=None, scale_factor=None, mode='nearest', align_corners=None, "
                                        "recompute_scale_factor=None, antialias=False")
def interpolate(state: TraceState, call: Call) -> RuleResult:
    """``F.interpolate``: local; each output unit reads the input units of its non-zero weights."""
    x, xinfo, outs = call.x, call.xinfo, call.outs
    assert x is not None
    if xinfo is None or not outs:
        return call.union
    out, lay, nd = outs[0], state.layout(x), x.ndim - 2
    axes = list(xinfo.axes) if xinfo.axes is not None else None
    new = list(lay)
    with torch.no_grad():
        for k in range(nd):
            d = 2 + k
            n, m, dim = int(x.shape[d]), int(out.shape[d]), lay[d]
            if not dim.spatial:
                if n != m:
                    return _finer(state, call, "along a dim without a spatial axis")
                continue
            axis = dim.pure()
            if axis is None:
                return _finer(state, call, "of a token or partitioned axis")
            new[d] = resized(dim, m)
            if axes is None:
                continue
            a = 0 if axis == "y" else 1
            lo, hi, j = axes[a]
            if (j * n) % m:
                return _finer(state, call, "to a map finer than the input's jump")
            jump = j * n // m
            reads = _reads(n, m, k, nd, call.params)
            axes[a] = (lo + min(first * j - v * jump for v, (first, _) in enumerate(reads)),
                       hi + max(last * j - v * jump for v, (_, last) in enumerate(reads)), jump)
    axes_t = (axes[0], axes[1]) if axes is not None else None
    glob = call.union if call.union is not None and call.union.is_global else xinfo
    return FieldState(axes_t, glob.is_global, glob.reason, sized(new, out.shape))


def _map_dims(state: TraceState, call: Call) -> tuple[list[Dim], list | None] | None:
    """``(layout, axes)`` of an ``(..., C, y, x)`` input whose last two dims are the whole axes, else ``None``."""
    x, xinfo = call.x, call.xinfo
    assert x is not None and xinfo is not None
    lay = list(state.layout(x))
    if x.ndim < 3 or lay[-2].pure() != "y" or lay[-1].pure() != "x" or lay[-3].spatial:
        return None
    return lay, (list(xinfo.axes) if xinfo.axes is not None else None)


def _regridded(call: Call, lay: list, axes: list | None) -> FieldState:
    """The output field of a pixel (un)shuffle: channels plain, the two map axes resized to the output's, the
    input's field with the new ``axes`` (``None``: no local field)."""
    out = call.outs[0]
    lay[-3:] = [plain(out.shape[-3]), resized(lay[-2], out.shape[-2]), resized(lay[-1], out.shape[-1])]
    info = call.xinfo
    assert info is not None
    return FieldState((axes[0], axes[1]) if axes is not None else None, info.is_global, info.reason, tuple(lay))


@register_rule("pixel_shuffle", signature="input, upscale_factor")
def pixel_shuffle(state: TraceState, call: Call) -> RuleResult:
    """``pixel_shuffle(r)``: output unit ``r u + i`` reads input unit ``u`` (channels ``C r^2`` -> ``C``)."""
    if call.xinfo is None or not call.outs:
        return call.union
    got, r = _map_dims(state, call), int(call.params["upscale_factor"])
    if got is None:
        return _finer(state, call, "of a map that is not (..., C, H, W)")
    lay, axes = got
    if axes is not None:
        if any(axes[a][2] % r for a in (0, 1)):
            return _finer(state, call, "to a map finer than the input's jump")
        axes = [(lo - (r - 1) * (j // r), hi, j // r) for lo, hi, j in axes]
    return _regridded(call, lay, axes)


@register_rule("pixel_unshuffle", signature="input, downscale_factor")
def pixel_unshuffle(state: TraceState, call: Call) -> RuleResult:
    """``pixel_unshuffle(r)``: a window of ``r`` with stride ``r`` on both axes (the phases go to channels)."""
    if call.xinfo is None or not call.outs:
        return call.union
    got, r = _map_dims(state, call), int(call.params["downscale_factor"])
    if got is None:
        return state.global_(call.union, call.name, "of a map that is not (..., C, H, W)", None)
    lay, axes = got
    if axes is not None:
        axes = [(lo, hi + (r - 1) * j, j * r) for lo, hi, j in axes]
    return _regridded(call, lay, axes)


@register_rule("unfold", signature="input, kernel_size, dilation=1, padding=0, stride=1")
def unfold(state: TraceState, call: Call) -> RuleResult:
    """``F.unfold``: the ``(N, C k^2, L)`` columns of a convolution's windows; the ``L`` dim is the token
    sequence of the output grid (row-major), each token with the window's field. ``Tensor.unfold(dim, size,
    step)``, the same name: a window of ``size`` and stride ``step`` along ``dim``, its elements in a new last dim."""
    x, info, outs, p = call.x, call.xinfo, call.outs, call.params
    assert x is not None
    if call.func is not F.unfold:
        return _tensor_unfold(state, call)
    if info is None or not outs or x.ndim != 4:
        return state.global_(call.union, call.name, layout=None)
    got = _map_dims(state, call)
    if got is None:
        return state.global_(call.union, call.name, "of a map that is not (N, C, H, W)", None)
    _, axes = got
    kernel, dilation = ntuple(p["kernel_size"], 2), ntuple(p["dilation"], 2)
    padding, stride = ntuple(p["padding"], 2), ntuple(p["stride"], 2)
    grid = [(int(x.shape[2 + a]) + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
            for a in (0, 1)]
    if axes is not None:
        axes = [(lo - padding[a] * j, hi + (dilation[a] * (kernel[a] - 1) - padding[a]) * j, j * stride[a])
                for a, (lo, hi, j) in enumerate(axes)]
    out = outs[0]
    tokens = Dim(((("y", ()), grid[0]), (("x", ()), grid[1])))
    lay = (plain(out.shape[0]), plain(out.shape[1]), tokens)
    return FieldState((axes[0], axes[1]) if axes is not None else None, info.is_global, info.reason, lay)


def _tensor_unfold(state: TraceState, call: Call) -> RuleResult:
    x, info, outs = call.x, call.xinfo, call.outs
    p = bind("input, dimension, size, step", call.args, call.kwargs)
    assert x is not None
    if info is None or not outs or p is None:
        return call.union
    d, lay = int(p["dimension"]) % x.ndim, list(state.layout(x))
    axes = list(info.axes) if info.axes is not None else None
    size, step, axis = int(p["size"]), int(p["step"]), lay[d].pure()
    if lay[d].spatial:
        if axis is None:
            return state.global_(call.union, call.name, "window over a token or partitioned axis", None)
        if axes is not None:
            a = 0 if axis == "y" else 1
            lo, hi, j = axes[a]
            axes[a] = (lo, hi + (size - 1) * j, j * step)
    lay[d] = resized(lay[d], outs[0].shape[d])
    return FieldState((axes[0], axes[1]) if axes is not None else None, info.is_global, info.reason,
                      (*lay, plain(size)))


__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle", "unfold"]
