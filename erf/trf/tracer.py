"""The TRF tracer: one forward pass under a :class:`torch.overrides.TorchFunctionMode` that propagates a
:class:`~erf.trf.state.FieldState` alongside every tensor, op by op, with the rules of :mod:`erf.trf.rules`.

Method (Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019). For each
tensor the forward pass produces, we track, per spatial axis, the input-pixel interval ``[lo, hi]`` that output
unit 0 depends on and the *jump* ``j`` (effective stride): unit ``u`` depends on ``[lo + u j, hi + u j]``. A
convolution or pooling window with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps
``(lo, hi, j)`` to ``(lo - p j, hi + (d (k - 1) - p) j, s j)``; the size ``hi - lo + 1`` then obeys
``r_{l-1} = s_l r_l + (k_l - s_l)`` read backwards. Parallel branches (adds, concatenations, products) take
the union of their intervals.

Where the spatial axes are. Each tensor also carries a *layout* (:mod:`erf.trf.layout`): for every tensor
dim, the spatial factors it holds. The input is ``(N, C, H, W)``; a ``permute`` to channels-last moves the
``H`` and ``W`` factors to dims 1 and 2; ``flatten(2)`` of a map gives one token dim holding ``H`` then ``W``;
``view(B, H // 7, 7, W // 7, 7, C)`` splits each axis into two digits (window partition) and the reverse
``view``/``permute`` merges them back. Class tokens concatenated in front of a token dim are its ``prefix``.
An op is judged by the dims it acts on: per position (the TRF is kept), a window (the TRF grows), or global
(``is_global``, with the op and module as ``reason``); each family's rules say which in their module. A local
field must always say where its map is, else it is made global: never a silently local one.

Every call is dispatched by its base name (:func:`base_name`) to the rule registered for it
(:data:`erf.trf.rules.RULES`); an op without a rule is pointwise when every output has the broadcast shape of
its tensor inputs (it is then listed in ``assumed_pointwise`` unless it is a known pointwise op), else global.
An in-place op that writes into a view also changes the tensors that share its storage: see
:mod:`erf.trf.rules.writes`. Module outputs are attributed by forward hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from erf.errors import InputError
from erf.trf.field import TRF
from erf.trf.layout import input_layout, standard
from erf.trf.rules import RULES, Call, bind
from erf.trf.rules.pointwise import POINTWISE
from erf.trf.rules.writes import aliased_write
from erf.trf.state import FieldState, RuleResult, TraceState, tensors_in

IGNORED = {"size", "dim", "numel", "shape", "item", "tolist", "__len__", "__bool__", "__format__", "__repr__",
           "is_floating_point", "stride", "data_ptr", "element_size", "_set_grad_enabled", "requires_grad_",
           "is_contiguous", "__index__", "__int__", "__float__", "get_device", "_assert", "ndimension",
           "nelement", "is_complex", "storage_offset", "untyped_storage", "__hash__", "_base"}
"""Calls that return no tensor data (metadata, Python conversions): not traced."""

_GET_MOVES = {"mT": "mT", "T": "T", "H": "T", "mH": "mT"}
_GET_SAME = {"data", "real", "imag"}
_INPLACE_DUNDERS = {f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
                                              "and", "or", "xor", "lshift", "rshift")}


def base_name(func: Any) -> str | None:
    """The name rules are registered under: ``add_``, ``__add__`` and ``__iadd__`` -> ``add``; ``__radd__`` ->
    ``radd``; a property read (``x.mT``, ``x.data``) -> the op it is; ``None`` for other property reads."""
    name = getattr(func, "__name__", str(func))
    if name == "__get__":
        attr = getattr(getattr(func, "__self__", None), "__name__", "")
        if attr in _GET_MOVES:
            name = _GET_MOVES[attr]
        elif attr in _GET_SAME:
            name = "detach"
        else:
            return None
    base = name.strip("_").rstrip("_") if name.startswith("__") else name.rstrip("_")
    if base.startswith("i") and base[1:] in ("add", "sub", "mul", "truediv", "and", "or", "floordiv", "pow"):
        base = base[1:]
    return base


def inplace(name: str) -> bool:
    """Whether ``name`` writes into its first argument (``add_``, ``__iadd__``; not ``__getitem__``)."""
    return (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS


def propagate(state: TraceState, func: Any, args: tuple, kwargs: dict, out: Any) -> RuleResult:
    """The state of ``func(*args, **kwargs)``'s outputs: its rule's answer, else pointwise or global."""
    base = base_name(func)
    if base is None:
        return None
    rule = RULES.get(base)
    flat, _ = tree_flatten((args, kwargs))
    infos = [state.get(t) for t in flat]
    if all(i is None for i in infos):
        return None
    outs = tensors_in(out)
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    union = state.union(infos)
    if rule is not None and (x is not None or not rule.needs_input):
        params = bind(rule.signature, args, kwargs)
        call = Call(base, func, args, kwargs, out, outs, flat, x, state.get(x), union, params or {})
        if params is None:
            return state.global_(union, base, "arguments not understood", state.kept(x, outs))
        return rule.function(state, call)
    tens = [t for t in flat if isinstance(t, torch.Tensor)]
    if x is None:
        if outs:
            lay, bad = state.broadcast(tens, outs[0].shape)
            return state.global_(union, base) if bad else state.pointwise(tens, lay)
        return union
    # Anything else: pointwise if every output has the (broadcast) shape of the tensor inputs.
    try:
        shape = tuple(torch.broadcast_shapes(*[t.shape for t in tens]))
    except RuntimeError:
        shape = None
    if outs and shape is not None and all(tuple(t.shape) == shape for t in outs):
        if base not in POINTWISE:
            state.assumed_pointwise.add(base)
        lay, bad = state.broadcast(tens, shape)
        if bad:
            return state.global_(union, base, "operands' spatial axes disagree", lay)
        return state.pointwise(tens, lay)
    return state.global_(union, base, "not a known per-position op", state.kept(x, outs))


class TracingMode(TorchFunctionMode):
    """Propagates a :class:`FieldState` alongside every tensor of one forward pass into ``state``."""

    def __init__(self, state: TraceState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in IGNORED:
            return out
        outs = tensors_in(out)
        if not outs and name not in ("__setitem__", "setitem"):
            return out
        state = self.state
        state.note_views(outs)
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        before = state.get(target)
        info = propagate(state, func, args, kwargs, out)
        writes = target is not None and (inplace(name) or name == "__setitem__")
        if isinstance(info, list):
            first = info[0] if info else None
            if writes and inplace(name):
                state.set(target, first, name)
            for k, t in enumerate(outs):
                state.set(t, info[k] if k < len(info) else first, name)
        else:
            if info is not None and writes:
                state.set(target, info, name)  # in-place: the input tensor now carries the new field
            for t in outs:
                state.set(t, info, name)
        if writes and state.get(target) != before:
            aliased_write(state, target, before, name)  # the tensors sharing its storage changed too
        return out


@contextlib.contextmanager
def _module_hooks(model: nn.Module, state: TraceState, outputs: dict[str, Any]) -> Iterator[None]:
    handles = []

    def pre(name: str):
        def hook(module: nn.Module, inputs: Any) -> None:
            state.module_stack.append(name)
        return hook

    def post(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if state.module_stack and state.module_stack[-1] == name:
                state.module_stack.pop()
            tensors = tensors_in(output)
            if tensors and name not in outputs:  # first call, as the ERF probes (a reused module: its first use)
                outputs[name] = (tensors[0], state.get(tensors[0]))
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class TRFTrace:
    """Result of :func:`trace_receptive_fields`: the TRF of every module that ran.

    Attributes:
        trf: module path -> :class:`TRF` (modules whose forward hook fired), in the order
            their first call returned.
        assumed_pointwise: torch ops not in the known tables that were treated as
            pointwise because they kept the shape of their inputs (check them when present).
        input_size: ``(H, W)`` traced with.
        regridded: modules whose map was rebuilt from a vector (its local geometry lost): their
            TRF gives unit ``u`` the ``u``-th cell of a regular grid over the input (always global).
    """

    trf: dict[str, TRF]
    assumed_pointwise: set[str] = field(default_factory=set)
    input_size: tuple[int, int] = (32, 32)
    regridded: set[str] = field(default_factory=set)


def trace_receptive_fields(
    model: nn.Module, input_size: Sequence[int] = (32, 32), channels: int = 3
) -> TRFTrace:
    """Run one forward pass on zeros of shape ``(1, channels, H, W)`` and return every module's TRF.

    The model is run in eval mode under ``torch.no_grad`` on its own device and in
    its parameters' dtype; its training flag is restored afterwards.

    Raises:
        InputError: the model does not run at ``input_size`` (``param="input_size"``).
    """
    h, w = int(input_size[0]), int(input_size[1])
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, channels, h, w, device=device, dtype=dtype)
    state = TraceState()
    outputs: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _module_hooks(model, state, outputs), TracingMode(state):
            state.set(x, FieldState(((0, 0, 1), (0, 0, 1)), layout=input_layout(channels, h, w)))
            try:
                model(x)
            except (RuntimeError, AssertionError, ValueError, TypeError, IndexError) as exc:
                first = (str(exc).strip().splitlines() or ["no message"])[0][:200]
                raise InputError(f"{h}x{w}: the model does not run on a {channels}x{h}x{w} input "
                                 f"({type(exc).__name__}: {first}); give the size it was made for",
                                 param="input_size") from None
    finally:
        model.train(was_training)
    result: dict[str, TRF] = {}
    regridded: set[str] = set()
    for name, (tensor, info) in outputs.items():
        if info is None:
            continue
        std = standard(info.layout) if info.layout is not None and info.axes is not None else None
        spatial_any = info.layout is not None and any(d.spatial for d in info.layout)
        axes = info.axes
        dims: tuple[int, ...] = (2, 3)
        prefix = 0
        feature: tuple[int, int] | None = None
        if std is not None:
            dims, prefix, feature = std
        elif tensor.ndim == 4 and not spatial_any:
            # The local geometry was lost (a map rebuilt from a flattened vector, always global):
            # unit u is given the u-th cell of a regular grid over the input.
            sh, sw = max(1, h // int(tensor.shape[-2])), max(1, w // int(tensor.shape[-1]))
            axes = ((0, sh - 1, sh), (0, sw - 1, sw))
            feature = (int(tensor.shape[-2]), int(tensor.shape[-1]))
            regridded.add(name)
        if axes is None:
            axes = ((0, h - 1, 1), (0, w - 1, 1))
        spatial = feature is not None
        no_map = "output has no spatial map" + (" (its spatial axes are split across dims)" if spatial_any else "")
        result[name] = TRF(
            lo=(axes[0][0], axes[1][0]),
            hi=(axes[0][1], axes[1][1]),
            stride=(axes[0][2], axes[1][2]),
            is_global=info.is_global or not spatial,
            feature_size=feature,
            input_size=(h, w),
            reason=info.reason if info.is_global else (None if spatial else no_map),
            dims=dims,
            prefix=prefix,
        )
    return TRFTrace(result, state.assumed_pointwise, (h, w), regridded)


__all__ = ["IGNORED", "TRFTrace", "TracingMode", "base_name", "inplace", "propagate", "trace_receptive_fields"]
