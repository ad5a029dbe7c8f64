"""Rules of reductions, ops along one dim, shifts and normalisations.

Per position when they act on dims without spatial factors (``mean`` or ``softmax`` over channels, a
channels-last ``layer_norm``, ``batch_norm`` in eval mode); global over a dim with a spatial factor (``mean``
over H, W; ``group_norm``, ``instance_norm``, a layer norm over the map; ``roll``, ``flip`` or ``sort`` of a
spatial axis).
"""

from __future__ import annotations

import torch

from erf.trf.layout import plain, resized
from erf.trf.rules.registry import Call, register_rule
from erf.trf.state import FieldState, RuleResult, TraceState, relaid

REDUCTIONS = ("mean", "sum", "amax", "amin", "max", "min", "std", "var", "prod", "norm", "logsumexp",
              "argmax", "argmin", "median", "nansum", "nanmean", "var_mean", "std_mean", "count_nonzero",
              "all", "any", "aminmax", "nanmedian")
"""Reductions whose dims are their second argument (``dim``, or ``axis``)."""

_ALONG_DIM = ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")


def _reduce_over(state: TraceState, call: Call, dim: object) -> RuleResult:
    x, union, outs, base = call.x, call.union, call.outs, call.name
    assert x is not None
    if isinstance(dim, torch.Tensor):
        return state.global_(union, base)
    dims = state.dims_arg(x, dim)
    keep = bool(outs) and outs[0].ndim == x.ndim
    lay = state.layout(x)
    if dims is None:
        spatial = any(d.spatial for d in lay)
        infos = [state.global_(union, base, "over every axis") if spatial else union] * len(outs)
        return [FieldState(i.axes, i.is_global, i.reason, None) if i else None for i in infos]
    new = []
    for d, dim_ in enumerate(lay):
        if d in dims:
            if keep:
                new.append(resized(dim_, 1) if dim_.pure() else plain(1))
            continue
        new.append(dim_)
    if any(lay[d].spatial for d in dims):
        axes_names = {lay[d].pure() or "token" for d in dims if lay[d].spatial}
        return [state.global_(union, base, f"over {'/'.join(sorted(axes_names))}", tuple(new))] * len(outs)
    return [relaid(union, tuple(new))] * len(outs)


@register_rule(*REDUCTIONS, signature="input, dim=None, *rest, axis=None")
def reduction(state: TraceState, call: Call) -> RuleResult:
    """A reduction over ``dim`` (every dim when it is ``None``); ``max``/``min`` of two tensors is pointwise."""
    p, x, outs = call.params, call.x, call.outs
    assert x is not None
    dim = p["dim"] if p["dim"] is not None else p["axis"]
    if call.name in ("max", "min") and isinstance(dim, torch.Tensor):
        lay, bad = state.broadcast([x, dim], outs[0].shape) if outs else ((), False)
        return state.global_(call.union, call.name, "operands' spatial axes disagree", lay) if bad \
            else relaid(call.union, lay)
    return _reduce_over(state, call, dim)


@register_rule("mode", signature="input, dim=-1, keepdim=False")
@register_rule("kthvalue", signature="input, k, dim=-1, keepdim=False")
def reduction_last(state: TraceState, call: Call) -> RuleResult:
    """``mode`` and ``kthvalue``: a reduction over ``dim`` (the last by default)."""
    return _reduce_over(state, call, call.params["dim"])


def _along(state: TraceState, call: Call, dim: object) -> RuleResult:
    x, union, outs = call.x, call.union, call.outs
    assert x is not None
    lay = state.layout(x)
    dims = state.dims_arg(x, dim)
    if dims is None:
        dims = list(range(x.ndim))
    if any(lay[d].spatial for d in dims):
        return [state.global_(union, call.name, "along a spatial axis",
                              lay if o.shape == x.shape else state.kept(x, [o])) for o in outs]
    return [relaid(union, lay if o.shape == x.shape else state.kept(x, [o])) for o in outs]


@register_rule(*_ALONG_DIM, signature="input, dim=None")
@register_rule("normalize", signature="input, p=2.0, dim=1")
@register_rule("sort", "argsort", "glu", signature="input, dim=-1")
@register_rule("topk", signature="input, k, dim=-1")
@register_rule("roll", signature="input, shifts, dims=None")
@register_rule("rot90", signature="input, k=1, dims=(0, 1)")
def along(state: TraceState, call: Call) -> RuleResult:
    """An op along one dim (``softmax``, ``cumsum``, ``sort``, ``roll``...): global along a spatial axis
    (``dims=None``: along every dim)."""
    p = call.params
    return _along(state, call, p["dims"] if "dims" in p else p["dim"])


@register_rule("flip", signature="input, *dims")
def flip(state: TraceState, call: Call) -> RuleResult:
    """``flip(dims)``, ``x.flip(2, 3)``: global along a spatial axis."""
    dims = call.params["dims"]
    if "dims" in call.params["extra"]:
        dims = call.params["extra"]["dims"]
    elif len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return _along(state, call, list(dims))


@register_rule("fliplr", "flipud", signature="input")
def flip_matrix(state: TraceState, call: Call) -> RuleResult:
    """``fliplr`` (dim 1) and ``flipud`` (dim 0)."""
    return _along(state, call, [1] if call.name == "fliplr" else [0])


@register_rule("layer_norm", "rms_norm", signature="input, normalized_shape, *rest")
@register_rule("group_norm", "local_response_norm", signature="input, *rest")
@register_rule("instance_norm", signature="input, running_mean=None, running_var=None, weight=None, bias=None, "
                                         "use_input_stats=True, *rest")
@register_rule("batch_norm", signature="input, running_mean=None, running_var=None, weight=None, bias=None, "
                                      "training=False, *rest")
def norm(state: TraceState, call: Call) -> RuleResult:
    """Normalisations: global when their statistics are taken over a spatial dim (``group_norm``,
    ``instance_norm``, ``batch_norm`` in training mode, a ``layer_norm`` over the map)."""
    x, p, base = call.x, call.params, call.name
    assert x is not None
    lay = state.layout(x)
    if base in ("layer_norm", "rms_norm"):
        shape = p["normalized_shape"]
        k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
        dims = list(range(x.ndim - k, x.ndim))
    elif base == "group_norm":
        dims = list(range(1, x.ndim))
    elif base == "instance_norm":
        dims = list(range(2, x.ndim)) if p["use_input_stats"] else []
    elif base == "batch_norm":
        dims = [d for d in range(x.ndim) if d != 1] if p["training"] else []
    else:  # local_response_norm: a window over channels only
        dims = [1] if x.ndim > 1 else []
    if any(lay[d].spatial for d in dims):
        return state.global_(call.union, base, "over a spatial axis", lay)
    return relaid(call.union, lay)


__all__ = ["REDUCTIONS", "along", "flip", "flip_matrix", "norm", "reduction", "reduction_last"]
