"""Analytic theoretical receptive fields (TRF) of every layer, from the real graph.

Method (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). For each tensor the forward pass produces, we track,
per spatial axis, the input-pixel interval ``[lo, hi]`` that output unit 0
depends on and the *jump* ``j`` (effective stride): unit ``u`` depends on
``[lo + u j, hi + u j]``. A convolution or pooling window with kernel ``k``,
stride ``s``, padding ``p`` and dilation ``d`` maps ``(lo, hi, j)`` to
``(lo - p j, hi + (d (k - 1) - p) j, s j)``; the size ``hi - lo + 1`` then obeys
``r_{l-1} = s_l r_l + (k_l - s_l)`` read backwards. Parallel branches (adds,
concatenations, products) take the union of their intervals. Any op that
mixes all positions (global or adaptive pooling, means over H and W,
flattening, linear layers on flattened maps, attention over tokens) marks the
tensor ``global``; pointwise ops keep the interval. CBAM's channel gate is
therefore global, its spatial gate alone a local 7x7 widening.

The graph is read by running the model once under a
:class:`torch.overrides.TorchFunctionMode`, which sees every torch call
(functional ops and ``module.forward`` calls that bypass hooks included).
Module outputs are attributed by forward hooks.

Coordinates are input pixels, 0-based (pixel ``y`` covers ``[y - 0.5, y + 0.5]``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from erf.errors import LayerDidNotRunError
from erf.layers import named_layers, resolve_layer


@dataclass(frozen=True)
class TRF:
    """Theoretical receptive field of one layer.

    Attributes:
        lo, hi: ``(y, x)`` first and last input pixel that unit ``(0, 0)`` depends on
            (unclipped: may lie outside the input).
        stride: ``(y, x)`` effective stride (jump) in input pixels per unit.
        is_global: True when some op on the path mixes all positions.
        feature_size: ``(H, W)`` of the layer's output for ``input_size``, or ``None``
            when the output has no spatial map (after flattening).
        input_size: ``(H, W)`` of the input the graph was traced with.
        reason: for a global layer, the op and module that made it global.
    """

    lo: tuple[int, int]
    hi: tuple[int, int]
    stride: tuple[int, int]
    is_global: bool = False
    feature_size: tuple[int, int] | None = None
    input_size: tuple[int, int] = (32, 32)
    reason: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(y, x)`` receptive-field side in input pixels (of the local path when global)."""
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    @property
    def side(self) -> int | None:
        """Side in input px of a local field (the larger of its height and width); ``None`` when global."""
        return None if self.is_global else max(self.size)

    @property
    def padding(self) -> tuple[int, int]:
        """Effective padding: how far unit 0's field starts before pixel 0 (Araujo et al.)."""
        return (-self.lo[0], -self.lo[1])

    def box(self, unit: Sequence[int]) -> tuple[int, int, int, int]:
        """Inclusive ``(y0, y1, x0, x1)`` input-pixel box of ``unit = (i, j)``, unclipped."""
        i, j = unit
        return (self.lo[0] + i * self.stride[0], self.hi[0] + i * self.stride[0],
                self.lo[1] + j * self.stride[1], self.hi[1] + j * self.stride[1])

    def center(self, unit: Sequence[int]) -> tuple[float, float]:
        """Input-pixel ``(y, x)`` centre of ``unit``'s field."""
        y0, y1, x0, x1 = self.box(unit)
        return ((y0 + y1) / 2.0, (x0 + x1) / 2.0)

    def central_unit(self) -> tuple[int, int]:
        """The unit whose field centre is nearest the input centre ``((H-1)/2, (W-1)/2)``.

        For an even feature map there is no single centre; ties go to the lower
        index. Raises ``ValueError`` when the layer has no spatial map.
        """
        if self.feature_size is None:
            raise ValueError("no spatial map")
        unit = []
        for axis in (0, 1):
            target = (self.input_size[axis] - 1) / 2.0
            c0 = (self.lo[axis] + self.hi[axis]) / 2.0
            best = min(range(self.feature_size[axis]),
                       key=lambda u: (abs(c0 + u * self.stride[axis] - target), u))
            unit.append(best)
        return (unit[0], unit[1])

    def to_json(self, unit: Sequence[int] | None = None) -> dict[str, Any]:
        """JSON form: ``global``, ``size`` (null when global), ``stride``, ``padding``, ``center``."""
        out: dict[str, Any] = {
            "global": self.is_global,
            "size": None if self.is_global else list(self.size),
            "local_size": list(self.size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "reason": self.reason,
        }
        if unit is not None:
            out["center"] = list(self.center(unit))
            out["box"] = list(self.box(unit))
        return out


@dataclass(frozen=True)
class _Info:
    """Receptive-field state of one tensor: per-axis ``(lo, hi, jump)`` or ``None``."""

    axes: tuple[tuple[int, int, int], tuple[int, int, int]] | None
    is_global: bool = False
    reason: str | None = None


_WINDOW_ARGS = {
    # name: positional parameter names after ``input``
    "conv2d": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "max_pool2d_with_indices": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                "return_indices"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "lp_pool2d": ("norm_type", "kernel_size", "stride", "ceil_mode"),
}
_REDUCTIONS = {
    "mean", "sum", "amax", "amin", "max", "min", "std", "var", "prod", "norm", "logsumexp",
    "argmax", "argmin", "median", "nansum", "nanmean", "var_mean", "std_mean", "count_nonzero",
    "all", "any", "softmax", "log_softmax", "cumsum", "cumprod", "topk", "sort", "flip", "roll",
}
_LAYOUT = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as",
           "contiguous", "view_as", "reshape_as", "clone", "detach", "to", "float", "double", "half",
           "type", "type_as", "repeat"}
_MIXING = {"linear", "matmul", "bmm", "mm", "einsum", "baddbmm", "addmm", "scaled_dot_product_attention",
           "interpolate", "upsample", "grid_sample", "conv_transpose2d", "fold", "unfold",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
           "fft_fft2", "fft_rfft2", "multi_head_attention_forward"}
_MOVES = {"permute", "transpose", "movedim", "swapaxes", "swapdims", "t", "mT"}
_SPLITS = {"split", "chunk", "unbind", "tensor_split"}
_IGNORED = {"__get__", "__set__", "size", "dim", "numel", "shape", "item", "tolist", "__len__",
            "__bool__", "__format__", "__repr__", "is_floating_point", "stride", "data_ptr",
            "element_size", "_set_grad_enabled", "requires_grad_", "__setitem__"}


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


class _RFMode(TorchFunctionMode):
    """Propagates :class:`_Info` alongside every tensor of one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[int, tuple[torch.Tensor, _Info]] = {}
        self.module_stack: list[str] = []
        self.assumed_pointwise: set[str] = set()

    # -- table -------------------------------------------------------------
    def get(self, t: Any) -> _Info | None:
        if isinstance(t, torch.Tensor):
            hit = self.table.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
        return None

    def set(self, t: Any, info: _Info | None) -> None:
        if isinstance(t, torch.Tensor) and info is not None:
            self.table[id(t)] = (t, info)

    # -- rules -------------------------------------------------------------
    def _where(self, op: str) -> str:
        where = self.module_stack[-1] if self.module_stack else "the model's forward"
        return f"{op} in {where or 'the model'}"

    def _global(self, info: _Info | None, op: str) -> _Info:
        axes = info.axes if info is not None else None
        reason = info.reason if info is not None and info.is_global else self._where(op)
        return _Info(axes, True, reason)

    @staticmethod
    def _union(infos: Iterable[_Info | None]) -> _Info | None:
        infos = [i for i in infos if i is not None]
        if not infos:
            return None
        glob = next((i for i in infos if i.is_global), None)
        boxes = [i.axes for i in infos if i.axes is not None]
        axes = None
        if boxes:
            axes = tuple(
                (min(b[a][0] for b in boxes), max(b[a][1] for b in boxes), max(b[a][2] for b in boxes))
                for a in (0, 1)
            )
        return _Info(axes, glob is not None, glob.reason if glob else None)

    def _window(self, name: str, x: torch.Tensor, info: _Info, args: tuple, kwargs: dict) -> _Info:
        params = dict(zip(_WINDOW_ARGS[name], args[1:]))
        params.update(kwargs)
        if name == "conv2d":
            kernel = tuple(params["weight"].shape[-2:])
            stride = _pair(params.get("stride", 1))
            dilation = _pair(params.get("dilation", 1))
            padding = params.get("padding", 0)
            if isinstance(padding, str):
                total = [d * (k - 1) for d, k in zip(dilation, kernel)]
                padding = (0, 0) if padding == "valid" else (total[0] // 2, total[1] // 2)
            padding = _pair(padding)
        else:
            kernel = _pair(params["kernel_size"])
            stride = _pair(params.get("stride") or params["kernel_size"])
            padding = _pair(params.get("padding", 0))
            dilation = _pair(params.get("dilation", 1))
        if info.axes is None:
            return info
        axes = []
        for a in (0, 1):
            lo, hi, j = info.axes[a]
            k_eff = dilation[a] * (kernel[a] - 1) + 1
            axes.append((lo - padding[a] * j, hi + (k_eff - 1 - padding[a]) * j, j * stride[a]))
        return _Info((axes[0], axes[1]), info.is_global, info.reason)

    def _spatial_dims(self, x: torch.Tensor) -> tuple[int, int]:
        return (x.ndim - 2, x.ndim - 1)

    def _dims(self, x: torch.Tensor, dim: Any) -> list[int] | None:
        if dim is None:
            return None
        dims = dim if isinstance(dim, (tuple, list)) else [dim]
        return [int(d) % x.ndim for d in dims]

    def _rule(self, func: Any, args: tuple, kwargs: dict, out: Any) -> _Info | None:
        name = getattr(func, "__name__", str(func))
        base = name.strip("_").rstrip("_") if name.startswith("__") else name.rstrip("_")
        if base.startswith("i") and base[1:] in ("add", "sub", "mul", "truediv", "and", "or"):
            base = base[1:]
        flat, _ = tree_flatten((args, kwargs))
        infos = [self.get(t) for t in flat]
        if all(i is None for i in infos):
            return None
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        xinfo = self.get(x)
        if base in _WINDOW_ARGS and xinfo is not None:
            return self._window(base, x, xinfo, args, kwargs)
        if base in ("pad",) and xinfo is not None and xinfo.axes is not None:
            pad = list(args[1] if len(args) > 1 else kwargs["pad"]) + [0, 0, 0, 0]
            (lx, hx, jx), (ly, hy, jy) = xinfo.axes[1], xinfo.axes[0]
            return _Info(((ly - pad[2] * jy, hy - pad[2] * jy, jy), (lx - pad[0] * jx, hx - pad[0] * jx, jx)),
                         xinfo.is_global, xinfo.reason)
        union = self._union(infos)
        if base in _MIXING:
            if base.startswith("adaptive") and isinstance(out, torch.Tensor) and x is not None \
                    and out.shape[-2:] == x.shape[-2:]:
                return union
            if base == "linear" and x is not None and x.ndim < 3:
                return self._global(union, base)
            return self._global(union, base)
        if x is None:
            return union
        spatial = self._spatial_dims(x) if x.ndim >= 3 else ()
        if base in _REDUCTIONS:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("dims", kwargs.get("shifts")))
            if base in ("max", "min") and isinstance(dim, torch.Tensor):
                return union  # torch.max(a, b): elementwise, not a reduction
            if base == "roll":
                dim = args[2] if len(args) > 2 else kwargs.get("dims")
            if base in ("softmax", "log_softmax") and dim is None:
                dim = kwargs.get("dim")
            if base in ("topk",):
                dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
            if base in ("sort",):
                dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
            dims = self._dims(x, dim) if not isinstance(dim, torch.Tensor) else None
            if dims is None or any(d in spatial for d in dims) or not spatial:
                return self._global(union, base)
            return union
        if base in _MOVES:
            if base in ("t",) or not spatial:
                return self._global(union, base)
            if base == "permute":
                order = args[1:] if len(args) > 1 and isinstance(args[1], int) else (args[1] if len(args) > 1
                                                                                    else kwargs["dims"])
                order = [int(d) % x.ndim for d in order]
                moved = order[-2:] != list(spatial)
            else:
                dims = [int(a) % x.ndim for a in args[1:3]] if len(args) >= 3 else list(spatial)
                moved = any(d in spatial for d in dims)
            return self._global(union, base) if moved else union
        if base in _SPLITS:
            dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
            if base == "unbind":
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if int(dim) % x.ndim in spatial:
                return self._global(union, base)
            return union
        if base in ("cat", "concat", "concatenate", "stack", "hstack", "vstack"):
            tensors = args[0]
            ref = tensors[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            d = int(dim) % (ref.ndim + (1 if base == "stack" else 0))
            if ref.ndim >= 3 and d >= (ref.ndim - 2) and base != "stack":
                return self._global(union, base)
            if base == "stack" and d >= ref.ndim - 1:
                return self._global(union, base)
            return union
        if base == "getitem":
            return self._getitem(x, xinfo, args[1], union)
        if base in _LAYOUT:
            if isinstance(out, torch.Tensor) and out.ndim >= 3 and x.ndim >= 3 and out.shape[-2:] == x.shape[-2:]:
                return union
            if isinstance(out, torch.Tensor) and out.ndim >= 3 and x.ndim >= 3 and out.shape[-2:] != x.shape[-2:]:
                return self._global(union, base)
            if isinstance(out, torch.Tensor) and out.ndim < 3 and x.ndim >= 3:
                return _Info(None, True, union.reason if union and union.is_global else self._where(base))
            return union
        # Anything else: pointwise if the output keeps the spatial shape of its inputs.
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if outs and all(t.ndim >= 2 and t.ndim >= x.ndim - 0 and tuple(t.shape[-2:]) == tuple(x.shape[-2:])
                        or t.ndim >= 2 and x.ndim >= 2 and tuple(t.shape[-2:]) == _broadcast_hw(flat)
                        for t in outs):
            if base not in _POINTWISE:
                self.assumed_pointwise.add(base)
            return union
        return self._global(union, base)

    def _getitem(self, x: torch.Tensor, info: _Info | None, index: Any, union: _Info | None) -> _Info | None:
        if info is None:
            return union
        idx = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in idx):
            return self._global(union, "advanced indexing")
        if Ellipsis in idx:
            pos = idx.index(Ellipsis)
            fill = x.ndim - (len(idx) - 1 - sum(i is None for i in idx))
            idx = idx[:pos] + (slice(None),) * fill + idx[pos + 1:]
        dims: list[Any] = [i for i in idx if i is not None]
        dims += [slice(None)] * (x.ndim - len(dims))
        if x.ndim < 3 or info.axes is None:
            return union
        axes = list(info.axes)
        for a, sel in enumerate(dims[-2:]):
            if isinstance(sel, int):
                return self._global(union, "integer index on a spatial axis")
            start, _, step = sel.indices(x.shape[x.ndim - 2 + a])
            lo, hi, j = axes[a]
            axes[a] = (lo + start * j, hi + start * j, j * step)
        return _Info((axes[0], axes[1]), info.is_global, info.reason)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _IGNORED:
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:
            return out
        info = self._rule(func, args, kwargs, out)
        if info is not None and name.endswith("_") and args and isinstance(args[0], torch.Tensor):
            self.set(args[0], info)  # in-place: the input tensor now carries the new field
        for t in outs:
            if info is not None and info.axes is not None and t.ndim < 3:
                self.set(t, _Info(None, info.is_global, info.reason))
            else:
                self.set(t, info)
        return out


_POINTWISE = {
    "add", "sub", "mul", "div", "truediv", "rtruediv", "radd", "rsub", "rmul", "neg", "abs", "relu",
    "relu6", "hardtanh", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardsigmoid", "hardswish",
    "elu", "selu", "celu", "softplus", "mish", "exp", "log", "sqrt", "rsqrt", "pow", "clamp", "clip",
    "batch_norm", "instance_norm", "dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout",
    "where", "maximum", "minimum", "square", "reciprocal", "addcmul", "addcdiv", "lerp", "sign",
    "floor", "ceil", "round", "zero", "fill", "copy", "masked_fill", "threshold", "prelu", "rrelu",
    "logsigmoid", "erf", "sin", "cos", "expand", "softsign", "tanhshrink", "hardshrink", "softshrink",
}


def _broadcast_hw(flat: list[Any]) -> tuple[int, ...]:
    hs = [t.shape[-2:] for t in flat if isinstance(t, torch.Tensor) and t.ndim >= 2]
    try:
        return tuple(torch.broadcast_shapes(*hs)) if hs else ()
    except RuntimeError:
        return ()


@contextlib.contextmanager
def _module_hooks(model: nn.Module, mode: _RFMode, outputs: dict[str, Any]) -> Iterator[None]:
    handles = []

    def pre(name: str):
        def hook(module: nn.Module, inputs: Any) -> None:
            mode.module_stack.append(name)
        return hook

    def post(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if mode.module_stack and mode.module_stack[-1] == name:
                mode.module_stack.pop()
            tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
            if tensors and name not in outputs:  # first call, as the ERF probes (a reused module: its first use)
                outputs[name] = (tensors[0], mode.get(tensors[0]))
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
        trf: module path -> :class:`TRF` (modules whose forward hook fired).
        assumed_pointwise: torch ops not in the known tables that were treated as
            pointwise because they kept the spatial shape (check them when present).
        input_size: ``(H, W)`` traced with.
    """

    trf: dict[str, TRF]
    assumed_pointwise: set[str] = field(default_factory=set)
    input_size: tuple[int, int] = (32, 32)


def trace_receptive_fields(
    model: nn.Module, input_size: Sequence[int] = (32, 32), channels: int = 3
) -> TRFTrace:
    """Run one forward pass on zeros of shape ``(1, channels, H, W)`` and return every module's TRF.

    The model is run in eval mode under ``torch.no_grad`` on its own device and in
    its parameters' dtype; its training flag is restored afterwards.
    """
    h, w = int(input_size[0]), int(input_size[1])
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, channels, h, w, device=device, dtype=dtype)
    mode = _RFMode()
    outputs: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _module_hooks(model, mode, outputs), mode:
            mode.set(x, _Info(((0, 0, 1), (0, 0, 1))))
            model(x)
    finally:
        model.train(was_training)
    result: dict[str, TRF] = {}
    for name, (tensor, info) in outputs.items():
        if info is None:
            continue
        spatial = tensor.ndim >= 3 and (info.axes is not None or tensor.ndim == 4)
        axes = info.axes
        if axes is None and spatial:
            # The local geometry was lost (a map rebuilt from a flattened vector, always global):
            # unit u is given the u-th cell of a regular grid over the input.
            sh, sw = max(1, h // int(tensor.shape[-2])), max(1, w // int(tensor.shape[-1]))
            axes = ((0, sh - 1, sh), (0, sw - 1, sw))
        elif axes is None:
            axes = ((0, h - 1, 1), (0, w - 1, 1))
        result[name] = TRF(
            lo=(axes[0][0], axes[1][0]),
            hi=(axes[0][1], axes[1][1]),
            stride=(axes[0][2], axes[1][2]),
            is_global=info.is_global or not spatial,
            feature_size=(int(tensor.shape[-2]), int(tensor.shape[-1])) if spatial else None,
            input_size=(h, w),
            reason=info.reason if info.is_global else (None if spatial else "output has no spatial map"),
        )
    return TRFTrace(result, mode.assumed_pointwise, (h, w))


def theoretical_rf(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    input_size: Sequence[int] = (32, 32),
    channels: int = 3,
) -> dict[str, TRF]:
    """TRF of each layer (stable names or module paths; default: every named layer).

    Returns:
        ``{layer name: TRF}`` in the order given.

    Raises:
        LayerNotFoundError: an unknown layer name.
        LayerDidNotRunError: the layer's hook never fired (e.g. it is called via ``.forward``).
    """
    trace = trace_receptive_fields(model, input_size, channels)
    names = list(layers) if layers is not None else list(named_layers(model))
    out: dict[str, TRF] = {}
    for name in names:
        layer = resolve_layer(model, name)
        if layer.path not in trace.trf:
            raise LayerDidNotRunError(
                f"layer {name!r} ({layer.path}) never ran through its forward hook; the model may call "
                "it as `module.forward(x)`, which bypasses hooks"
            )
        out[name] = trace.trf[layer.path]
    return out


def receptive_field_size_formula(kernels: Sequence[int], strides: Sequence[int],
                                 dilations: Sequence[int] | None = None) -> int:
    """Closed form for a chain of layers: ``r_0 = 1 + sum_l (k_eff_l - 1) prod_{i<l} s_i``."""
    dilations = dilations or [1] * len(kernels)
    r, jump = 1, 1
    for k, s, d in zip(kernels, strides, dilations):
        r += (d * (k - 1)) * jump
        jump *= s
    return r


__all__ = ["TRF", "TRFTrace", "receptive_field_size_formula", "theoretical_rf", "trace_receptive_fields"]
