"""Rules of windowed ops: convolutions and pooling (the field grows by the window and the jump by the stride),
adaptive pooling, and padding (the field moves by the padding).

A window over a dim holding a whole spatial axis follows Araujo et al.'s recurrence; over a dim without
spatial factors it changes nothing; over the outer digit of an axis whose inner digit was moved to another dim
(space-to-batch) it is a window dilated by the inner size (stride 1 only); over any other token or partitioned
axis (a window of 1 aside) it is global, as are global or non-divisible adaptive pooling and circular padding of
a spatial axis.
"""

from __future__ import annotations

from typing import Any

from erf.trf.layout import Dim, Layout, plain, resized, sized
from erf.trf.rules.registry import Call, register_rule
from erf.trf.state import FieldState, RuleResult, TraceState


def ntuple(value: Any, n: int) -> tuple[int, ...]:
    """An int or a sequence as ``n`` ints (the last ``n`` of a longer one; one value repeated)."""
    if isinstance(value, (tuple, list)):
        vals = [int(v) for v in value]
        return tuple(vals) if len(vals) == n else tuple([vals[-1]] * n if len(vals) == 1 else vals[-n:])
    return (int(value),) * n


def _spatial_rank(name: str) -> int:
    """``conv2d`` -> 2, ``max_pool3d_with_indices`` -> 3, ``adaptive_avg_pool1d`` -> 1."""
    return int(name.split("_with_indices")[0][-2])


_CONVS = [f"conv{n}d" for n in (1, 2, 3)]
_MAX_POOLS = [f"max_pool{n}d{s}" for n in (1, 2, 3) for s in ("", "_with_indices")]
_AVG_POOLS = [f"avg_pool{n}d" for n in (1, 2, 3)]
_LP_POOLS = [f"lp_pool{n}d" for n in (1, 2, 3)]
_ADAPTIVE = [f"adaptive_{kind}_pool{n}d{suffix}" for kind in ("avg", "max") for n in (1, 2, 3)
             for suffix in ("", "_with_indices")]


def window(state: TraceState, call: Call, kernel: tuple[int, ...], stride: tuple[int, ...],
           padding: tuple[int, ...], dilation: tuple[int, ...]) -> RuleResult:
    """A sliding window over the last ``len(kernel)`` dims of ``call.x``."""
    x, xinfo, union, outs, n = call.x, call.xinfo, call.union, call.outs, len(kernel)
    assert x is not None
    if xinfo is None or not outs:
        return union
    lay = state.layout(x)
    out = outs[0]
    if call.name.startswith("conv") and x.ndim == n + 2 and lay[1].spatial:
        return state.global_(union, call.name, "over a spatial axis held as channels", state.kept(x, outs))
    axes = list(xinfo.axes) if xinfo.axes is not None else None
    new = list(lay)
    for w in range(n):
        d = x.ndim - n + w
        dim = lay[d]
        if not dim.spatial:
            new[d] = plain(out.shape[d])
            continue
        axis = dim.pure()
        k_eff = dilation[w] * (kernel[w] - 1) + 1
        spread = 1
        if axis is None:
            if k_eff == 1 and stride[w] == 1 and padding[w] == 0:
                continue
            digit = outer_digit(lay, d)
            if digit is None or stride[w] != 1:
                return state.global_(union, call.name, "window over a token or partitioned axis",
                                     state.kept(x, outs))
            axis, spread = digit  # space-to-batch: a window over the outer digit is dilated by the inner size
            new[d] = Dim((((axis, (0,)), int(out.shape[d])),))
        else:
            new[d] = resized(dim, out.shape[d])
        if axes is not None:
            a = 0 if axis == "y" else 1
            lo, hi, j = axes[a]
            jj = j * spread
            axes[a] = (lo - padding[w] * jj, hi + (k_eff - 1 - padding[w]) * jj, j * stride[w])
    axes_t = (axes[0], axes[1]) if axes is not None else None
    glob = union if union is not None and union.is_global else xinfo
    return FieldState(axes_t, glob.is_global, glob.reason, sized(new, out.shape))


def outer_digit(layout: Layout, d: int) -> tuple[str, int] | None:
    """``(axis, inner size)`` when dim ``d`` is exactly the outer digit of an axis split in two whose inner
    digit lies in another dim (a space-to-batch layout: ``y = inner_size * outer + inner``), else ``None``.
    A window of kernel ``k`` over that digit reads the axis at a dilation of the inner size."""
    dim = layout[d]
    if dim.prefix or dim.suffix or len(dim.factors) != 1 or dim.factors[0][0] is None:
        return None
    axis, path = dim.factors[0][0]
    if path != (0,):
        return None
    digits = [(k, f) for k, other in enumerate(layout) for f in other.factors
              if f[0] is not None and f[0][0] == axis]
    inner = [(k, f) for k, f in digits if f[0] is not None and f[0][1] == (1,)]
    if len(digits) != 2 or len(inner) != 1 or inner[0][0] == d:
        return None
    return axis, int(inner[0][1][1])


@register_rule(*_CONVS, signature="input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1")
def convolution(state: TraceState, call: Call) -> RuleResult:
    """``conv{1,2,3}d``: the window of the weight's kernel (``padding="same"``/``"valid"`` included)."""
    p, n = call.params, _spatial_rank(call.name)
    kernel = tuple(int(k) for k in p["weight"].shape[-n:])
    stride, dilation = ntuple(p["stride"], n), ntuple(p["dilation"], n)
    padding = p["padding"]
    if isinstance(padding, str):
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        padding = (0,) * n if padding == "valid" else tuple(t // 2 for t in total)
    if state.get(p["weight"]) is not None:
        return state.global_(call.union, call.name, "input-dependent weight", state.kept(call.x, call.outs))
    return window(state, call, kernel, stride, ntuple(padding, n), dilation)


def _pool(state: TraceState, call: Call) -> RuleResult:
    p, n = call.params, _spatial_rank(call.name)
    kernel = ntuple(p["kernel_size"], n)
    stride = ntuple(p["stride"] or p["kernel_size"], n)
    return window(state, call, kernel, stride, ntuple(p.get("padding", 0), n), ntuple(p.get("dilation", 1), n))


@register_rule(*_MAX_POOLS, signature="input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, "
                                      "return_indices=False")
def max_pool(state: TraceState, call: Call) -> RuleResult:
    """``max_pool{1,2,3}d``: a window (stride defaults to the kernel)."""
    return _pool(state, call)


@register_rule(*_AVG_POOLS, signature="input, kernel_size, stride=None, padding=0, ceil_mode=False, "
                                      "count_include_pad=True, divisor_override=None")
def avg_pool(state: TraceState, call: Call) -> RuleResult:
    """``avg_pool{1,2,3}d``: a window (stride defaults to the kernel)."""
    return _pool(state, call)


@register_rule(*_LP_POOLS, signature="input, norm_type, kernel_size, stride=None, ceil_mode=False")
def lp_pool(state: TraceState, call: Call) -> RuleResult:
    """``lp_pool{1,2,3}d``: a window (stride defaults to the kernel)."""
    return _pool(state, call)


@register_rule(*_ADAPTIVE, signature="input, output_size, return_indices=False")
def adaptive_pool(state: TraceState, call: Call) -> RuleResult:
    """Adaptive pooling: a window of ``in / out`` when the output size divides the map, else global."""
    x, xinfo, union, outs, n = call.x, call.xinfo, call.union, call.outs, _spatial_rank(call.name)
    assert x is not None
    if xinfo is None or not outs:
        return union
    out = outs[0]
    lay = state.layout(x)
    axes = list(xinfo.axes) if xinfo.axes is not None else None
    new = list(lay)
    glob: str | None = None
    for w in range(n):
        d = x.ndim - n + w
        dim, size_in, size_out = lay[d], int(x.shape[d]), int(out.shape[d])
        if not dim.spatial:
            new[d] = plain(size_out)
            continue
        axis = dim.pure()
        new[d] = resized(dim, size_out)
        if size_in == size_out:
            continue
        if axis is None or size_out == 1 or size_in % size_out:
            glob = "global pooling" if size_out == 1 else "pooling to a size that does not divide the map"
            continue
        if axes is not None:
            s = size_in // size_out
            a = 0 if axis == "y" else 1
            lo, hi, j = axes[a]
            axes[a] = (lo, hi + (s - 1) * j, j * s)
    axes_t = (axes[0], axes[1]) if axes is not None else None
    info = FieldState(axes_t, xinfo.is_global, xinfo.reason, sized(new, out.shape))
    if glob is not None:
        info = state.global_(info, call.name, glob, tuple(new))
    return [info] * len(outs)


@register_rule("pad", signature="input, pad, mode='constant', value=None")
def pad(state: TraceState, call: Call) -> RuleResult:
    """``F.pad``: the field moves by the leading padding (negative: a crop); circular padding is global."""
    x, xinfo, union, outs = call.x, call.xinfo, call.union, call.outs
    assert x is not None
    if xinfo is None or not outs:
        return union
    widths, mode = list(call.params["pad"]), call.params["mode"]
    lay = state.layout(x)
    axes = list(xinfo.axes) if xinfo.axes is not None else None
    new = list(lay)
    for p in range(len(widths) // 2):
        d = x.ndim - 1 - p
        before, after = int(widths[2 * p]), int(widths[2 * p + 1])
        dim = lay[d]
        if not dim.spatial:
            new[d] = plain(outs[0].shape[d])
            continue
        if before == 0 and after == 0:
            continue
        axis = dim.pure()
        if axis is None or mode == "circular":
            return state.global_(union, "pad", "circular" if mode == "circular" else "of a token axis",
                                 state.kept(x, outs))
        new[d] = resized(dim, outs[0].shape[d])
        if axes is not None:
            a = 0 if axis == "y" else 1
            lo, hi, j = axes[a]
            axes[a] = (lo - before * j, hi - before * j, j)
    axes_t = (axes[0], axes[1]) if axes is not None else None
    return FieldState(axes_t, xinfo.is_global, xinfo.reason, sized(new, outs[0].shape))


__all__ = ["adaptive_pool", "avg_pool", "convolution", "lp_pool", "max_pool", "ntuple", "outer_digit", "pad",
           "window"]
