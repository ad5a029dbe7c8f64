"""Rules of ops that write values at positions and of ops that read positions by index: ``x[i] = v``,
in-place writes into views (``out[..., 1:].copy_(x[..., :-1])``, TSM's temporal shift), ``index_copy``,
``scatter``, ``gather``, ``index_select``; creation ops (constants) and the ops known to mix every position.

The tracer keeps one state per tensor object, but an in-place write into a view changes every tensor that
shares its storage. :func:`aliased_write` therefore carries a write into a view over to its base, shifted by
where the view lies in it (a box of the base: a slice of step 1 per dim), and makes every other view of that
storage global: never a field smaller than the true support. A write it cannot place is global.

Ops reading or writing by a constant index tensor are local along the indexed dim: unit ``u`` of the result
reads unit ``u + d`` of the source for offsets ``d`` taken from the index values, so the field is the source's
widened by the offsets' range (an affine index ``s u + b`` is a strided slice: jump times ``s``). An index
that depends on the input is global.
"""

from __future__ import annotations

from typing import Any

import torch

from erf.trf.layout import Dim, Layout, merge_dims, plain, resized, sized
from erf.trf.rules.registry import Call, register_rule
from erf.trf.state import FieldState, RuleResult, TraceState, relaid

CREATION = ("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like",
            "empty_like", "full_like", "rand_like", "randn_like", "randint_like")
"""Ops whose values do not depend on their tensor argument (only its shape, dtype, device)."""

MIXING = ("upsample", "upsample_nearest", "upsample_bilinear", "grid_sample", "fold", "conv_transpose1d",
          "conv_transpose2d", "conv_transpose3d", "affine_grid", "take", "take_along_dim", "masked_select", "nonzero",
          "unique", "embedding_bag", "bilinear", "masked_scatter", "index_put",
          "fft_fft", "fft_fft2", "fft_fftn", "fft_rfft", "fft_rfft2", "fft_rfftn", "fft_ifft", "fft_ifft2",
          "fft_ifftn", "fft_irfft", "fft_irfft2", "fft_irfftn")
"""Ops taken as mixing every position of their input (global)."""


@register_rule(*CREATION, needs_input=False)
def constant(state: TraceState, call: Call) -> RuleResult:
    """Creation ops (``zeros_like``...): a constant, untracked."""
    return None


@register_rule(*MIXING, needs_input=False)
def mixing(state: TraceState, call: Call) -> RuleResult:
    """An op that mixes every position: global (the input's layout kept when the rank is)."""
    return state.global_(call.union, call.name, layout=state.kept(call.x, call.outs))


# ----------------------------------------------------------------------------- index offsets
def _offset_field(state: TraceState, src: FieldState, lay: Layout, d: int, deltas: torch.Tensor,
                  length: int, out_size: int) -> FieldState | None:
    """The field of a result whose unit ``u`` along dim ``d`` reads source unit ``u + delta`` for every
    ``delta`` in ``deltas`` (``length``: the source's size along ``d``, ``out_size`` the result's)."""
    dim = lay[d]
    axis = dim.pure()
    if axis is None:
        return None
    new = list(lay)
    new[d] = resized(dim, out_size)
    if src.axes is None or deltas.numel() == 0:
        return FieldState(src.axes, src.is_global, src.reason, tuple(new))
    a = 0 if axis == "y" else 1
    lo, hi, j = src.axes[a]
    axes = list(src.axes)
    axes[a] = (lo + int(deltas.min()) * j, hi + int(deltas.max()) * j, j)
    return FieldState((axes[0], axes[1]), src.is_global, src.reason, tuple(new))


def _affine(index: torch.Tensor) -> tuple[int, int] | None:
    """``(step, start)`` when ``index[u] == step u + start`` with ``step >= 1``, else ``None``."""
    if index.ndim != 1 or index.numel() < 2:
        return (1, int(index[0])) if index.numel() == 1 else None
    step = int(index[1] - index[0])
    ok = step >= 1 and bool(torch.equal(index, index[0] + step * torch.arange(len(index), device=index.device)))
    return (step, int(index[0])) if ok else None


@register_rule("index_select", signature="input, dim, index", needs_input=False)
def index_select(state: TraceState, call: Call) -> RuleResult:
    """``index_select(x, dim, index)``: per position over channels; along a spatial axis, unit ``u`` reads
    unit ``index[u]`` (an affine index is a strided slice)."""
    x, union, outs, p = call.x, call.union, call.outs, call.params
    if x is None or not outs or state.get(p["index"]) is not None:
        return state.global_(union, call.name, layout=state.kept(x, outs))
    d = int(p["dim"]) % x.ndim
    lay = state.layout(x)
    if not lay[d].spatial:  # a selection of channels: per position
        return relaid(union, sized(lay, outs[0].shape))
    info, index = state.get(x), p["index"].reshape(-1).long()
    if info is None or lay[d].pure() is None:
        return state.global_(union, call.name, layout=state.kept(x, outs))
    affine = _affine(index)
    if affine is not None and info.axes is not None:
        step, start = affine
        axes = list(info.axes)
        a = 0 if lay[d].pure() == "y" else 1
        lo, hi, j = axes[a]
        axes[a] = (lo + start * j, hi + start * j, j * step)
        new = list(lay)
        new[d] = resized(lay[d], outs[0].shape[d])
        return FieldState((axes[0], axes[1]), info.is_global, info.reason, tuple(new))
    deltas = index - torch.arange(len(index), device=index.device)
    return _offset_field(state, info, lay, d, deltas, int(x.shape[d]), int(outs[0].shape[d]))


@register_rule("gather", signature="input, dim, index")
def gather(state: TraceState, call: Call) -> RuleResult:
    """``gather(x, dim, index)``: unit ``u`` along ``dim`` reads ``index[..., u, ...]``."""
    x, union, outs, p = call.x, call.union, call.outs, call.params
    assert x is not None
    info, index = state.get(x), p["index"]
    if info is None or not outs or state.get(index) is not None:
        return state.global_(union, call.name, layout=state.kept(x, outs))
    d = int(p["dim"]) % x.ndim
    lay = sized(state.layout(x), index.shape)
    if not lay[d].spatial:
        return relaid(union, lay)
    shape = [1] * index.ndim
    shape[d] = index.shape[d]
    deltas = index.long() - torch.arange(index.shape[d], device=index.device).reshape(shape)
    got = _offset_field(state, info, lay, d, deltas, int(x.shape[d]), int(index.shape[d]))
    return got if got is not None else state.global_(union, call.name, layout=state.kept(x, outs))


def _written(state: TraceState, call: Call, target: torch.Tensor, src: Any, d: int,
             deltas: torch.Tensor | None) -> RuleResult:
    """``target`` with ``src`` written along dim ``d``: target unit ``u`` gets source unit ``u + delta``."""
    union, outs = call.union, call.outs
    old, sinfo = state.get(target), state.get(src)
    lay = state.layout(target) if old is not None else sized(state.layout(src), target.shape) \
        if isinstance(src, torch.Tensor) else state.layout(target)
    if sinfo is None:  # a constant written in: the field is unchanged
        return relaid(old, lay)
    if not lay[d].spatial or deltas is None:
        if lay[d].spatial:
            return state.global_(union, call.name, "input-dependent values written at indexed positions",
                                 state.kept(target, outs))
        return state.union([old, sinfo], lay)
    slay = state.layout(src)
    moved = _offset_field(state, sinfo, tuple(lay[k] if k != d else slay[d] for k in range(len(lay))), d, deltas,
                          int(src.shape[d]), int(target.shape[d]))
    if moved is None:
        return state.global_(union, call.name, "input-dependent values written at indexed positions",
                             state.kept(target, outs))
    return state.union([old, moved], lay)


@register_rule("index_copy", "index_add", signature="input, dim, index, source, *rest")
def index_copy(state: TraceState, call: Call) -> RuleResult:
    """``index_copy(x, dim, index, source)``: unit ``index[i]`` of the result gets unit ``i`` of the source
    (TSM's shift ``index = (arange(w) + s) % w``: the field widens by the offsets, wrap-around included)."""
    x, p = call.x, call.params
    assert x is not None
    index = p["index"]
    d = int(p["dim"]) % x.ndim
    deltas = None
    if state.get(index) is None:
        index = index.reshape(-1).long()
        deltas = torch.arange(len(index), device=index.device) - index
    return _written(state, call, x, p["source"], d, deltas)


@register_rule("scatter", "scatter_add", "scatter_reduce", signature="input, dim, index, src=None, *rest, value=None")
def scatter(state: TraceState, call: Call) -> RuleResult:
    """``scatter(x, dim, index, src)``: ``result[..., index[e], ...]`` gets ``src`` at ``e``'s position."""
    x, p = call.x, call.params
    assert x is not None
    index, src = p["index"], p["src"] if p["src"] is not None else p["value"]
    d = int(p["dim"]) % x.ndim
    deltas = None
    if state.get(index) is None and isinstance(src, torch.Tensor):
        shape = [1] * index.ndim
        shape[d] = index.shape[d]
        deltas = torch.arange(index.shape[d], device=index.device).reshape(shape) - index.long()
    return _written(state, call, x, src, d, deltas)


@register_rule("index_fill", signature="input, *rest")
def fill(state: TraceState, call: Call) -> RuleResult:
    """``index_fill``: the input's field, with the fill value's (a gate) if it is tracked."""
    return state.pointwise(call.tensors(), state.layout(call.x))


# ----------------------------------------------------------------------------- writes into tensors and views
def view_box(view: torch.Tensor, base: torch.Tensor) -> list[int] | None:
    """Per-dim start of ``view`` inside ``base`` when ``view`` is a box of it (same dims and strides: a slice of
    step 1 per dim), else ``None``."""
    if view.ndim != base.ndim or view.dtype != base.dtype:
        return None
    if any(vs != bs for vs, bs, n in zip(view.stride(), base.stride(), view.shape) if n > 1):
        return None
    offset = int(view.storage_offset()) - int(base.storage_offset())
    starts = [0] * base.ndim
    strides = base.stride()
    for d in sorted(range(base.ndim), key=lambda k: -strides[k]):
        stride = base.stride(d)
        if stride > 0 and base.shape[d] > 1:
            starts[d], offset = divmod(offset, stride)
    if offset or any(s < 0 or s + v > b for s, v, b in zip(starts, view.shape, base.shape)):
        return None
    return starts


def in_base(info: FieldState, view: torch.Tensor, base: torch.Tensor) -> FieldState | None:
    """``info`` (the state of ``view``) in the coordinates of ``base``, or ``None`` when it cannot be placed."""
    starts = view_box(view, base)
    if starts is None or info.layout is None or len(info.layout) != base.ndim:
        return None
    axes = list(info.axes) if info.axes is not None else None
    new: list[Dim] = []
    for d, dim in enumerate(info.layout):
        if starts[d] == 0 and view.shape[d] == base.shape[d]:
            new.append(dim)
        elif not dim.spatial:
            new.append(plain(base.shape[d]))
        elif dim.pure() is not None:
            if axes is not None:
                a = 0 if dim.pure() == "y" else 1
                lo, hi, j = axes[a]
                axes[a] = (lo - starts[d] * j, hi - starts[d] * j, j)
            new.append(resized(dim, base.shape[d]))
        else:
            return None
    return FieldState((axes[0], axes[1]) if axes is not None else None, info.is_global, info.reason, tuple(new))


def _merged_into(state: TraceState, old: FieldState | None, written: FieldState, op: str) -> FieldState:
    """``old`` (the base's state, maybe untracked) with ``written`` (placed in its coordinates) written in."""
    if old is None or old.layout is None:
        return written if old is None else state.union([old, written], written.layout)  # type: ignore[return-value]
    dims: list[Dim] = []
    for a, b in zip(old.layout, written.layout or ()):
        found, bad = merge_dims([a, b])
        if bad:
            return state.global_(state.union([old, written]), op, "a write whose spatial axes disagree", old.layout)
        dims.append(found if found is not None else a)
    merged = state.union([old, written], tuple(dims))
    assert merged is not None
    return merged


@register_rule("setitem", signature="input, index, value=None")
def setitem(state: TraceState, call: Call) -> RuleResult:
    """``x[index] = value``: a constant keeps the field; input-dependent values written into a box of ``x``
    (basic indexing) are placed there, shifted by where the box starts; anything else is global."""
    x, union, p = call.x, call.union, call.params
    assert x is not None
    value, index = p["value"], p["index"]
    if state.get(value) is None and not any(state.get(t) is not None for t in _tensor_list(index)):
        return state.get(x)  # a constant written in: the field is unchanged
    placed = None
    if isinstance(value, torch.Tensor) and not _tensor_list(index):
        view = x[index]
        vinfo = state.get(value)
        if vinfo is not None and view.ndim >= value.ndim:
            lay, bad = state.broadcast([value], view.shape)
            written = None if bad else state.pointwise([value], lay)
            placed = in_base(written, view, x) if written is not None else None
    if placed is None:  # input-dependent values written at positions not followed (conservative)
        return state.global_(union, "__setitem__", "input-dependent values written into a tensor",
                             state.layout(x) if state.get(x) is not None else None)
    return _merged_into(state, state.get(x), placed, "__setitem__")


def _tensor_list(obj: Any) -> list[torch.Tensor]:
    items = obj if isinstance(obj, (tuple, list)) else [obj]
    return [t for t in items if isinstance(t, torch.Tensor)]


def aliased_write(state: TraceState, target: torch.Tensor, before: FieldState | None, op: str) -> None:
    """``target`` was written in place (its state went from ``before`` to its current one): carry the write
    over to the tensors that share its storage. Its base gets the write placed where ``target`` lies in it
    (:func:`in_base`; global when it cannot be placed); every other view of the storage is made global."""
    now = state.get(target)
    if now == before or now is None:
        return
    base = target._base if target._base is not None else target
    if base is not target:
        old = state.get(base)
        placed = in_base(now, target, base)
        if placed is None:
            new = state.global_(state.union([old, now]), op, "input-dependent values written into a view",
                                old.layout if old is not None else None)
        else:
            new = _merged_into(state, old, placed, op)
        state.set(base, new, op)
    for view in state.views.get(id(base), []):
        if view is target or view is base:
            continue
        vinfo = state.get(view)
        state.set(view, state.global_(state.union([vinfo, now]), op, "written through a tensor sharing its storage",
                                      state.layout(view) if vinfo is not None else None), op)


__all__ = ["CREATION", "MIXING", "aliased_write", "constant", "fill", "gather", "in_base", "index_copy",
           "index_select", "mixing", "scatter", "setitem", "view_box"]
