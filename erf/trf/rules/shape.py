"""Rules of ops that move positions without mixing them: dim moves (``permute``, ``transpose``), reshapes,
``squeeze``, ``expand``, ``repeat``, concatenation, splits, indexing, and the identities (``clone``, ``to``).

Each follows the layout (:mod:`erf.trf.layout`): a reshape that only moves, splits or merges spatial digits
keeps the field (channel shuffle, a window partition and its reverse); one that folds the inner digit of a
split axis into channels is read as a window of that size (space-to-depth: timm's Swin patch merging); a
slice moves the field and a strided one multiplies the jump; class tokens concatenated in front of a token
dim are counted as its prefix. A reshape that does not keep the spatial axes, a boolean mask, an integer
index or advanced indexing on a spatial axis, tiling a spatial axis: global.
"""

from __future__ import annotations

from typing import Any

import torch

from erf.trf.layout import Dim, merge_dims, plain, refactor, resized, space_to_depth
from erf.trf.rules.registry import Call, register_rule
from erf.trf.state import FieldState, RuleResult, TraceState, relaid

_IDENTITY = ("contiguous", "clone", "detach", "to", "float", "double", "half", "bfloat16", "type", "type_as",
             "cpu", "cuda", "requires_grad", "pin_memory", "coalesce")
_RESHAPES = ("view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "ravel")
_SPLITS = ("split", "chunk", "tensor_split", "split_with_sizes", "unsafe_split", "unsafe_chunk")


@register_rule(*_IDENTITY)
def identity(state: TraceState, call: Call) -> RuleResult:
    """Copies and casts: the field and layout are kept (``type_as(other)``: only the input's)."""
    if call.name.endswith("_as"):
        return relaid(call.xinfo, state.layout(call.x))
    return state.union([state.get(t) for t in call.flat], state.layout(call.x))


@register_rule("channel_shuffle", "native_channel_shuffle", signature="input, groups")
def channel_shuffle(state: TraceState, call: Call) -> RuleResult:
    """``channel_shuffle``: a permutation of dim 1, per position when dim 1 holds no spatial factor."""
    lay = state.layout(call.x)
    if len(lay) > 1 and lay[1].spatial:
        return state.global_(call.union, call.name, "permutes a spatial axis", lay)
    return state.union([state.get(t) for t in call.flat], lay)


@register_rule("permute", signature="input, *dims")
def permute(state: TraceState, call: Call) -> RuleResult:
    """``permute``: the layout's dims in the new order."""
    assert call.x is not None
    lay, nd = state.layout(call.x), call.x.ndim
    order = call.params["dims"]
    if "dims" in call.params["extra"]:
        order = call.params["extra"]["dims"]
    elif len(order) == 1 and not isinstance(order[0], int):
        order = order[0]
    return relaid(call.union, tuple(lay[int(d) % nd] for d in order))


@register_rule("movedim", "moveaxis", signature="input, source, destination")
def movedim(state: TraceState, call: Call) -> RuleResult:
    """``movedim(source, destination)``."""
    assert call.x is not None
    lay, nd = state.layout(call.x), call.x.ndim
    src, dst = call.params["source"], call.params["destination"]
    src = [int(s) % nd for s in (src if isinstance(src, (tuple, list)) else [src])]
    dst = [int(s) % nd for s in (dst if isinstance(dst, (tuple, list)) else [dst])]
    rest = [d for d in range(nd) if d not in src]
    order = [-1] * nd
    for s, d in zip(src, dst):
        order[d] = s
    it = iter(rest)
    order = [o if o >= 0 else next(it) for o in order]
    return relaid(call.union, tuple(lay[d] for d in order))


@register_rule("transpose", "swapaxes", "swapdims", signature="input, dim0=None, dim1=None, *, axis0=None, axis1=None")
@register_rule("t", "adjoint", "mT", "T", signature="input")
def transpose(state: TraceState, call: Call) -> RuleResult:
    """Two dims swapped (``.t()``, ``.mT`` and a ``transpose`` without dims: the last two; ``.T``: all reversed)."""
    assert call.x is not None
    p, nd = call.params, call.x.ndim
    new = list(state.layout(call.x))
    d0 = p.get("dim0") if p.get("dim0") is not None else p.get("axis0")
    d1 = p.get("dim1") if p.get("dim1") is not None else p.get("axis1")
    if call.name == "T":
        new = new[::-1]
    elif d0 is None or d1 is None:
        if nd >= 2:
            new[-1], new[-2] = new[-2], new[-1]
    else:
        d0, d1 = int(d0) % nd, int(d1) % nd
        new[d0], new[d1] = new[d1], new[d0]
    return relaid(call.union, tuple(new))


@register_rule(*_RESHAPES)
def reshape(state: TraceState, call: Call) -> RuleResult:
    """Reshapes: the spatial digits are followed (:func:`~erf.trf.layout.refactor`), a digit folded into
    channels is a window (:func:`~erf.trf.layout.space_to_depth`); else global. ``view_as(other)`` reads only
    ``other``'s shape."""
    x, outs = call.x, call.outs
    union = call.xinfo if call.name.endswith("_as") else call.union
    assert x is not None
    if union is None or not outs:
        return union
    lay = state.layout(x)
    new = refactor(lay, x.shape, outs[0].shape)
    if new is None:
        if any(d.spatial for d in lay):
            return state.global_(union, call.name, "reshape that does not keep the spatial axes", None)
        return relaid(union, None)
    new, axes = space_to_depth(new, union.axes)
    return state.lost_or(FieldState(axes, union.is_global, union.reason), call.name, lay, new)


@register_rule("unsqueeze", signature="input, dim")
@register_rule("squeeze", signature="input, dim=None")
def squeeze(state: TraceState, call: Call) -> RuleResult:
    """``squeeze`` / ``unsqueeze``: a size-1 dim removed or added."""
    x, union, outs = call.x, call.union, call.outs
    assert x is not None
    if union is None or not outs:
        return union
    lay = list(state.layout(x))
    if call.name == "unsqueeze":
        d = int(call.params["dim"]) % (x.ndim + 1)
        new = lay[:d] + [plain(1)] + lay[d:]
    else:
        dim = call.params["dim"]
        dims = set(state.dims_arg(x, dim) or ()) if dim is not None else set(range(x.ndim))
        new = [dim_ for d, dim_ in enumerate(lay) if not (d in dims and x.shape[d] == 1)]
    if len(new) != outs[0].ndim:
        return state.global_(union, call.name, layout=None)
    return state.lost_or(union, call.name, tuple(lay), tuple(new))


@register_rule("expand", "expand_as", "broadcast_to")
def expand(state: TraceState, call: Call) -> RuleResult:
    """Broadcasting a tensor to a larger shape: new leading dims are plain (``expand_as(other)`` reads only
    ``other``'s shape)."""
    x, outs = call.x, call.outs
    union = call.xinfo if call.name.endswith("_as") else call.union
    assert x is not None
    if union is None or not outs:
        return union
    out = outs[0]
    lay = state.layout(x)
    lead = out.ndim - x.ndim
    new = [plain(out.shape[d]) for d in range(lead)]
    for d, dim in enumerate(lay):
        size = int(out.shape[lead + d])
        new.append(dim if x.shape[d] == size else resized(dim, size))
    return relaid(union, tuple(new))


@register_rule("repeat", "tile", "repeat_interleave")
def repeat(state: TraceState, call: Call) -> RuleResult:
    """Tiling: per position along dims without spatial factors, global along a spatial axis."""
    x, union, outs = call.x, call.union, call.outs
    assert x is not None
    if union is None or not outs:
        return union
    out = outs[0]
    lay = state.layout(x)
    lead = out.ndim - x.ndim
    new = [plain(out.shape[d]) for d in range(lead)]
    for d, dim in enumerate(lay):
        if x.shape[d] == out.shape[lead + d]:
            new.append(dim)
        elif dim.spatial:
            return state.global_(union, call.name, "tiles a spatial axis", None)
        else:
            new.append(plain(out.shape[lead + d]))
    if call.name == "repeat_interleave" and len(new) != out.ndim:
        return state.global_(union, call.name, layout=None)
    return relaid(union, tuple(new))


@register_rule("cat", "concat", "concatenate", "stack", "hstack", "vstack", signature="tensors, dim=0, *, axis=0",
               needs_input=False)
def cat(state: TraceState, call: Call) -> RuleResult:
    """Concatenation: along a dim without spatial factors the fields are united; the class tokens put in
    front of a token dim become its prefix; along a spatial axis of several operands, global."""
    union, outs, base = call.union, call.outs, call.name
    tensors = list(call.params["tensors"])
    if not outs or not tensors:
        return union
    out = outs[0]
    dim = call.params["dim"] if "dim" in call.kwargs or len(call.args) > 1 else call.params["axis"]
    if base in ("hstack", "vstack"):
        return state.global_(union, base, layout=None) if any(
            state.get(t) is not None and any(d.spatial for d in state.layout(t)) for t in tensors) else union
    ref = tensors[0]
    if base == "stack":
        d = int(dim) % (ref.ndim + 1)
        lay, bad = state.broadcast(tensors, ref.shape)
        new = lay[:d] + (plain(len(tensors)),) + lay[d:]
        return state.global_(union, base, "operands' spatial axes disagree", new) if bad else relaid(union, new)
    d = int(dim) % ref.ndim
    lays = [(t, state.layout(t)) for t in tensors]
    dims: list[Dim] = []
    bad = False
    for k in range(ref.ndim):  # dims other than d: must agree
        if k == d:
            dims.append(plain(out.shape[d]))
            continue
        found, conflict = merge_dims([lay[k] for t, lay in lays if state.get(t) is not None])
        bad = bad or conflict
        dims.append(found if found is not None else plain(out.shape[k]))
    spatial_along = [(i, lay[d]) for i, (t, lay) in enumerate(lays) if state.get(t) is not None and lay[d].spatial]
    if len(spatial_along) > 1:
        return state.global_(union, base, "along a spatial axis", tuple(dims))
    if spatial_along:
        i, sdim = spatial_along[0]
        before = sum(int(t.shape[d]) for t in tensors[:i])
        after = sum(int(t.shape[d]) for t in tensors[i + 1:])
        dims[d] = Dim(sdim.factors, sdim.prefix + before, sdim.suffix + after)
    if bad:
        return state.global_(union, base, "operands' spatial axes disagree", tuple(dims))
    return relaid(union, tuple(dims))


@register_rule("unbind", signature="input, dim=0")
@register_rule(*_SPLITS, signature="input, sections=None, dim=0")
def split(state: TraceState, call: Call) -> RuleResult:
    """Splits: each piece is a slice of ``dim`` (``unbind``: an integer index of it)."""
    x, union, outs = call.x, call.union, call.outs
    assert x is not None
    if union is None or not outs:
        return union
    d = int(call.params["dim"]) % x.ndim
    lay = state.layout(x)
    info = state.get(x) or union
    result: list[FieldState | None] = []
    start = 0
    for o in outs:
        if call.name == "unbind":
            if lay[d].spatial:
                result.append(state.global_(union, call.name, "along a spatial axis", None))
                continue
            result.append(relaid(union, lay[:d] + lay[d + 1:]))
            continue
        length = int(o.shape[d])
        axes = list(info.axes) if info.axes is not None else None
        got, why = state.slice_dim(lay[d], int(x.shape[d]), slice(start, start + length), axes)
        start += length
        if got is None:
            result.append(state.global_(union, call.name, why, None))
            continue
        axes_t = (axes[0], axes[1]) if axes is not None else None
        result.append(FieldState(axes_t, union.is_global, union.reason, lay[:d] + (got,) + lay[d + 1:]))
    return result


@register_rule("narrow", signature="input, dim, start, length")
def narrow(state: TraceState, call: Call) -> RuleResult:
    """``narrow(dim, start, length)``: the slice ``start:start + length`` of ``dim``."""
    assert call.x is not None
    p = call.params
    d = int(p["dim"]) % call.x.ndim
    start = int(p["start"]) % max(int(call.x.shape[d]), 1)
    index = (slice(None),) * d + (slice(start, start + int(p["length"])),)
    return getitem(state, Call("getitem", call.func, call.args, call.kwargs, call.out, call.outs, call.flat,
                               call.x, call.xinfo, call.union, {"input": call.x, "index": index}))


@register_rule("getitem", signature="input, index")
def getitem(state: TraceState, call: Call) -> RuleResult:
    """``x[index]``: slices move the field (a step multiplies the jump), ``None`` adds a dim; an integer index
    on a spatial axis is global (a class token of a token dim too), as are boolean masks and advanced
    indexing on a spatial axis."""
    x, union, outs = call.x, call.union, call.outs
    assert x is not None
    info = state.get(x)
    if info is None or union is None or not outs:
        return union
    lay = state.layout(x)
    index: Any = call.params["index"]
    idx = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, bool) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool) for i in idx):
        return state.global_(union, "getitem", "boolean mask", None)
    advanced = [i for i in idx if isinstance(i, (torch.Tensor, list))]
    if len(advanced) > 1:
        return state.global_(union, "getitem", "advanced indexing", None)
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if Ellipsis in idx:
        pos = idx.index(Ellipsis)
        idx = idx[:pos] + [slice(None)] * (x.ndim - used) + idx[pos + 1:]
    idx += [slice(None)] * (x.ndim - sum(1 for i in idx if i is not None))
    axes = list(info.axes) if info.axes is not None else None
    new: list[Dim] = []
    d = 0
    reason = None
    for sel in idx:
        if sel is None:
            new.append(plain(1))
            continue
        dim, n = lay[d], int(x.shape[d])
        d += 1
        if isinstance(sel, slice):
            got, why = state.slice_dim(dim, n, sel, axes)
            if got is None:
                return state.global_(union, "getitem", why, None)
            new.append(got)
        elif isinstance(sel, (torch.Tensor, list)):
            if dim.spatial:
                return state.global_(union, "advanced indexing", "on a spatial axis", None)
            k = sel.ndim if isinstance(sel, torch.Tensor) else 1
            new.extend(plain(1) for _ in range(k))  # sizes fixed below
        else:  # an integer
            if not dim.spatial:
                continue
            i = int(sel) % n
            if dim.pure() is not None:
                reason = "integer index on a spatial axis"
            elif dim.prefix and i < dim.prefix or dim.suffix and i >= n - dim.suffix:
                reason = reason or "class token"
            else:
                reason = "integer index on a spatial axis"
    if len(new) != outs[0].ndim:
        return state.global_(union, "getitem", layout=None)
    new = [dim if dim.size == s else plain(s) for dim, s in zip(new, outs[0].shape)]
    axes_t = (axes[0], axes[1]) if axes is not None else None
    result = FieldState(axes_t, info.is_global or union.is_global, info.reason if info.is_global else union.reason,
                        tuple(new))
    if reason is not None:
        if reason == "class token":
            return FieldState(axes_t, True, result.reason if result.is_global else state.where("getitem", reason),
                              tuple(new))
        return state.global_(result, "getitem", reason, tuple(new))
    return result


__all__ = ["cat", "channel_shuffle", "expand", "getitem", "identity", "movedim", "narrow", "permute", "repeat",
           "reshape", "split", "squeeze", "transpose"]
