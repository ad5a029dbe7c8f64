"""Analytic theoretical receptive fields (TRF) of every layer, from the real graph.

Method (Araujo et al., "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). For each tensor the forward pass produces, we track,
per spatial axis, the input-pixel interval ``[lo, hi]`` that output unit 0
depends on and the *jump* ``j`` (effective stride): unit ``u`` depends on
``[lo + u j, hi + u j]``. A convolution or pooling window with kernel ``k``,
stride ``s``, padding ``p`` and dilation ``d`` maps ``(lo, hi, j)`` to
``(lo - p j, hi + (d (k - 1) - p) j, s j)``; the size ``hi - lo + 1`` then obeys
``r_{l-1} = s_l r_l + (k_l - s_l)`` read backwards. Parallel branches (adds,
concatenations, products) take the union of their intervals.

Where the spatial axes are. Each tensor also carries a *layout*: for every
tensor dim, the spatial factors it holds. The input is ``(N, C, H, W)``; a
``permute`` to channels-last moves the ``H`` and ``W`` factors to dims 1 and 2;
``flatten(2)`` of a map gives one token dim holding ``H`` then ``W`` (row-major);
``view(B, H // 7, 7, W // 7, 7, C)`` splits each axis into two digits (window
partition) and the reverse ``view``/``permute`` merges them back. Class tokens
concatenated in front of a token dim are counted as its ``prefix``. So an op is
judged by the dims it acts on:

* per position (the TRF is kept): pointwise ops; ``linear``/``matmul``/``einsum``
  and ``layer_norm`` over a dim without spatial factors (ConvNeXt's channels-last
  LayerNorm and MLP, a ViT's per-token MLP, layer scale); reductions, ``softmax``
  and ``normalize`` over channels; reshapes that only move, split or merge
  spatial digits (channel shuffle, a window partition and its reverse); slices
  (strided slices change the jump); concatenating class tokens; a reshape that
  folds the inner digit of a split axis into channels is read as a window of
  that size (space-to-depth: timm's Swin patch merging).
* global (``is_global``, with the op and module as ``reason``): a reduction or
  norm over a dim with a spatial factor (``mean`` over H, W, ``group_norm``,
  ``instance_norm``, a layer norm over the map); ``linear`` or a contraction over
  such a dim; a product of two input-dependent tensors that pairs positions
  (attention scores ``q k^T``); ``scaled_dot_product_attention`` and multi-head
  attention over tokens; global or non-divisible adaptive pooling; ``roll``,
  ``flip`` and circular padding of a spatial axis; interpolation, ``fold``/
  ``unfold``, FFTs; input-dependent values written into a tensor; anything whose
  spatial factors cannot be followed (a local field must always say where its
  map is, else it is made global: never a silently local one). Window attention
  (Swin, MaxViT) is therefore called global at its first attention: within-window
  mixing is not a translation-invariant box, so the answer in this model is
  global (conservative; exact when the map is a single window).

CBAM's channel gate is therefore global, its spatial gate alone a local 7x7
widening.

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

from erf.errors import InputError
from erf.probes.layout import (
    Dim,
    Layout,
    fits,
    input_layout,
    merge_dims,
    plain,
    plain_layout,
    refactor,
    resized,
    sized,
    space_to_depth,
    standard,
)


@dataclass(frozen=True)
class TRF:
    """Theoretical receptive field of one layer.

    Attributes:
        lo, hi: ``(y, x)`` first and last input pixel that unit ``(0, 0)`` depends on
            (unclipped: may lie outside the input).
        stride: ``(y, x)`` effective stride (jump) in input pixels per unit.
        is_global: True when some op on the path mixes all positions.
        feature_size: ``(H, W)`` of the layer's output map (the token grid for a token
            sequence) for ``input_size``, or ``None`` when the output has no spatial map.
        input_size: ``(H, W)`` of the input the graph was traced with.
        reason: for a global layer, the op and module that made it global.
        dims: where the map lies in the output tensor (batch is dim 0): ``(2, 3)`` for
            ``(N, C, H, W)``, ``(1, 2)`` for channels-last ``(N, H, W, C)``, ``(1,)`` for a
            token sequence ``(N, L, D)`` whose tokens ``prefix .. prefix + H W - 1`` are
            the grid in row-major order.
        prefix: leading non-spatial tokens (class / distillation tokens) of a token sequence.
    """

    lo: tuple[int, int]
    hi: tuple[int, int]
    stride: tuple[int, int]
    is_global: bool = False
    feature_size: tuple[int, int] | None = None
    input_size: tuple[int, int] = (32, 32)
    reason: str | None = None
    dims: tuple[int, ...] = (2, 3)
    prefix: int = 0

    @property
    def size(self) -> tuple[int, int] | None:
        """``(y, x)`` receptive-field side in input pixels; ``None`` when global (every input pixel), as in the JSON.
        The local path of a global field is :attr:`local_size`."""
        return None if self.is_global else self.local_size

    @property
    def local_size(self) -> tuple[int, int]:
        """``(y, x)`` side in input pixels of the field's local path (the whole field when it is not global)."""
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    @property
    def side(self) -> int | None:
        """Side in input px of a local field (the larger of its height and width); ``None`` when global."""
        return None if self.is_global else max(self.local_size)

    @property
    def padding(self) -> tuple[int, int]:
        """Effective padding: how far unit 0's field starts before pixel 0 (Araujo et al.)."""
        return (-self.lo[0], -self.lo[1])

    @property
    def is_tokens(self) -> bool:
        """Whether the output is a token sequence ``(N, L, D)`` over a grid (a ViT layer)."""
        return len(self.dims) == 1

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

    def unit_index(self, unit: Sequence[int]) -> tuple[Any, ...]:
        """Index into the layer's output that selects unit ``(i, j)`` of every image, all channels.

        ``output[trf.unit_index(unit)]`` has shape ``(N, channels...)``: ``(N, C)`` for
        ``(N, C, H, W)``, ``(N, H, W, C)`` and for a token sequence, where the unit is token
        ``prefix + i W + j`` (the class tokens are skipped).
        """
        i, j = int(unit[0]), int(unit[1])
        if self.is_tokens:
            assert self.feature_size is not None
            return (slice(None),) * self.dims[0] + (self.prefix + i * self.feature_size[1] + j,)
        index: list[Any] = [slice(None)] * (max(self.dims) + 1)
        index[self.dims[0]], index[self.dims[1]] = i, j
        return tuple(index)

    def describe_unit(self) -> str:
        """How unit ``(i, j)`` maps to the output tensor, for unit rules (``""`` for ``(N, C, H, W)``)."""
        if self.is_tokens:
            w = self.feature_size[1] if self.feature_size else "W"
            first = f"{self.prefix} + " if self.prefix else ""
            skipped = f" ({self.prefix} class token{'s' if self.prefix != 1 else ''} skipped)" if self.prefix else ""
            return f"token {first}{w} i + j of the sequence{skipped}"
        if self.dims != (2, 3):
            return f"position (i, j) on dims {self.dims} (channels-last)"
        return ""

    def to_json(self, unit: Sequence[int] | None = None) -> dict[str, Any]:
        """JSON form: ``global``, ``size`` (null when global), ``stride``, ``padding``, ``center``."""
        out: dict[str, Any] = {
            "global": self.is_global,
            "size": None if self.is_global else list(self.local_size),
            "local_size": list(self.local_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "reason": self.reason,
        }
        if self.dims != (2, 3) or self.prefix:
            out["layout"] = {"dims": list(self.dims), "tokens": self.is_tokens, "prefix": self.prefix}
        if unit is not None:
            out["center"] = list(self.center(unit))
            out["box"] = list(self.box(unit))
        return out


@dataclass(frozen=True)
class _Info:
    """Receptive-field state of one tensor: per-axis ``(lo, hi, jump)`` (``None``: the local geometry
    is lost), whether it is global, why, and its :data:`Layout` (``None``: no spatial dims)."""

    axes: tuple[tuple[int, int, int], tuple[int, int, int]] | None
    is_global: bool = False
    reason: str | None = None
    layout: Layout | None = None


def _relaid(info: _Info | None, layout: Layout | None) -> _Info | None:
    """``info`` with another layout (``None`` stays ``None``)."""
    return None if info is None else _Info(info.axes, info.is_global, info.reason, layout)


_WINDOW_ARGS = {
    # name: positional parameter names after ``input``
    "conv": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "lp_pool": ("norm_type", "kernel_size", "stride", "ceil_mode"),
}
_WINDOWS = {f"{kind}{n}d": (kind, n) for kind in ("conv", "max_pool", "avg_pool", "lp_pool") for n in (1, 2, 3)}
_WINDOWS.update({f"max_pool{n}d_with_indices": ("max_pool", n) for n in (1, 2, 3)})
_ADAPTIVE = {f"adaptive_{kind}_pool{n}d{suffix}": n for kind in ("avg", "max") for n in (1, 2, 3)
             for suffix in ("", "_with_indices")}
_REDUCTIONS = {
    "mean", "sum", "amax", "amin", "max", "min", "std", "var", "prod", "norm", "logsumexp",
    "argmax", "argmin", "median", "nansum", "nanmean", "var_mean", "std_mean", "count_nonzero",
    "all", "any", "aminmax", "nanmedian", "mode", "kthvalue",
}
_ALONG = {  # shape-keeping ops along one dim: name -> (positional index of dim, default)
    "softmax": (1, None), "log_softmax": (1, None), "softmin": (1, None), "cumsum": (1, None),
    "cumprod": (1, None), "cummax": (1, None), "cummin": (1, None), "logcumsumexp": (1, None),
    "normalize": (2, 1), "sort": (1, -1), "argsort": (1, -1), "topk": (2, -1), "glu": (1, -1),
}
_SHIFTS = {"roll", "flip", "fliplr", "flipud", "rot90"}
_IDENTITY = {"contiguous", "clone", "detach", "to", "float", "double", "half", "bfloat16", "type", "type_as",
             "cpu", "cuda", "requires_grad", "detach_", "pin_memory", "coalesce"}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "ravel"}
_MOVES = {"permute", "transpose", "movedim", "moveaxis", "swapaxes", "swapdims", "t", "adjoint", "mT", "T"}
_SPLITS = {"split", "chunk", "unbind", "tensor_split", "split_with_sizes", "unsafe_split", "unsafe_chunk"}
_CATS = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}
_MATMULS = {"matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "inner", "outer",
            "__matmul__", "__rmatmul__"}
_ATTENTION = {"scaled_dot_product_attention", "multi_head_attention_forward", "_native_multi_head_attention"}
_MIXING = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "grid_sample", "fold", "unfold",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "pixel_shuffle", "pixel_unshuffle",
           "channel_shuffle", "affine_grid", "index_select", "gather", "scatter", "scatter_add", "take",
           "take_along_dim", "masked_select", "nonzero", "unique", "embedding_bag", "bilinear",
           "fft_fft", "fft_fft2", "fft_fftn", "fft_rfft", "fft_rfft2", "fft_rfftn", "fft_ifft", "fft_ifft2",
           "fft_ifftn", "fft_irfft", "fft_irfft2", "fft_irfftn"}
_CREATION = {"new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like",
             "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}
_IGNORED = {"size", "dim", "numel", "shape", "item", "tolist", "__len__", "__bool__", "__format__", "__repr__",
            "is_floating_point", "stride", "data_ptr", "element_size", "_set_grad_enabled", "requires_grad_",
            "is_contiguous", "__index__", "__int__", "__float__", "get_device", "_assert", "ndimension",
            "nelement", "is_complex", "storage_offset", "untyped_storage", "__hash__"}
_GET_MOVES = {"mT": "mT", "T": "T", "H": "T", "mH": "mT"}
_GET_SAME = {"data", "real", "imag"}


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        vals = [int(v) for v in value]
        return tuple(vals) if len(vals) == n else tuple([vals[-1]] * n if len(vals) == 1 else vals[-n:])
    return (int(value),) * n


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


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

    def set(self, t: Any, info: _Info | None, op: str = "an op") -> None:
        if isinstance(t, torch.Tensor) and info is not None:
            self.table[id(t)] = (t, _fit(info, t, self._where(op)))

    def layout(self, t: Any) -> Layout:
        """The layout of ``t`` (plain when it carries none, or is not tracked)."""
        info = self.get(t)
        if info is not None and info.layout is not None and fits(info.layout, t.shape):
            return info.layout
        return plain_layout(t.shape) if isinstance(t, torch.Tensor) else ()

    # -- helpers -----------------------------------------------------------
    def _where(self, op: str, detail: str | None = None) -> str:
        where = self.module_stack[-1] if self.module_stack else "the model's forward"
        return f"{op}{f' ({detail})' if detail else ''} in {where or 'the model'}"

    def _global(self, info: _Info | None, op: str, detail: str | None = None,
                layout: Layout | None = None) -> _Info:
        axes = info.axes if info is not None else None
        reason = info.reason if info is not None and info.is_global else self._where(op, detail)
        return _Info(axes, True, reason, layout)

    @staticmethod
    def _union(infos: Iterable[_Info | None], layout: Layout | None = None) -> _Info | None:
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
        return _Info(axes, glob is not None, glob.reason if glob else None, layout)

    def _broadcast(self, tensors: list[torch.Tensor], shape: Sequence[int]) -> tuple[Layout, bool]:
        """Layout of a broadcast result of ``shape`` from operand layouts; ``True`` if they disagree."""
        nd = len(shape)
        dims: list[Dim] = []
        conflict = False
        lays = [(t, self.layout(t)) for t in tensors if self.get(t) is not None]
        for d in range(nd):
            cands = []
            for t, lay in lays:
                k = d - (nd - t.ndim)
                if 0 <= k < t.ndim and t.shape[k] == shape[d]:
                    cands.append(lay[k])
            found, bad = merge_dims(cands)
            conflict = conflict or bad
            dims.append(found if found is not None else plain(shape[d]))
        return tuple(dims), conflict

    # -- rules -------------------------------------------------------------
    def _rule(self, func: Any, args: tuple, kwargs: dict, out: Any) -> _Info | list[_Info | None] | None:
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
        if base in _CREATION:
            return None
        flat, _ = tree_flatten((args, kwargs))
        infos = [self.get(t) for t in flat]
        if all(i is None for i in infos):
            return None
        outs = _tensors(out)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        xinfo = self.get(x)
        union = self._union(infos)
        if base in _WINDOWS and x is not None:
            return self._window(base, x, xinfo, union, args, kwargs, outs)
        if base in _ADAPTIVE and x is not None:
            return self._adaptive(base, x, xinfo, union, outs)
        if base == "pad" and x is not None:
            return self._pad(x, xinfo, union, args, kwargs, outs)
        if base in _ATTENTION:
            return self._attention(base, args, kwargs, union, outs)
        if base == "linear" and x is not None:
            return self._linear(x, args, kwargs, union, outs)
        if base in _MATMULS or base == "rmatmul":
            return self._matmul(base, args, kwargs, union, outs)
        if base == "einsum":
            return self._einsum(args, union, outs)
        if base == "index_select" and x is not None and outs:
            d = int(args[1] if len(args) > 1 else kwargs["dim"]) % x.ndim
            if not self.layout(x)[d].spatial:  # a selection of channels: per position
                return _relaid(union, sized(self.layout(x), outs[0].shape))
        if base in _MIXING:
            return self._global(union, base, layout=self._kept(x, outs))
        if base in ("layer_norm", "rms_norm", "group_norm", "instance_norm", "batch_norm",
                    "local_response_norm") and x is not None:
            return self._norm(base, x, union, args, kwargs, outs)
        if base == "setitem" and x is not None:
            value = args[2] if len(args) > 2 else None
            if self.get(value) is None and not any(self.get(t) is not None for t in _tensors(args[1])):
                return self.get(x)  # a constant written in: the field is unchanged
            # input-dependent values written into a tensor at some positions: not followed (conservative)
            return self._global(union, "__setitem__", "input-dependent values written into a tensor",
                                self.layout(x) if self.get(x) is not None else None)
        if x is None and base not in _CATS:
            if outs:
                tens = [t for t in flat if isinstance(t, torch.Tensor)]
                lay, bad = self._broadcast(tens, outs[0].shape)
                return self._global(union, base) if bad else self._pointwise(tens, lay)
            return union
        if base in _CATS:
            return self._cat(base, args, kwargs, union, outs)
        if base in _REDUCTIONS:
            return self._reduce(base, x, union, args, kwargs, outs)
        if base in _ALONG or base in _SHIFTS:
            return self._along(base, x, union, args, kwargs, outs)
        if base in _MOVES:
            return self._move(base, x, union, args, kwargs, outs)
        if base in _RESHAPES:
            return self._reshape(base, x, union, outs)
        if base in ("squeeze", "unsqueeze"):
            return self._squeeze(base, x, union, args, kwargs, outs)
        if base in ("expand", "expand_as", "broadcast_to"):
            return self._expand(x, union, outs)
        if base in ("repeat", "tile", "repeat_interleave"):
            return self._repeat(base, x, union, outs)
        if base in _SPLITS:
            return self._split(base, x, union, args, kwargs, outs)
        if base == "getitem":
            return self._getitem(x, union, args[1], outs)
        if base in _IDENTITY:
            return self._union(infos, self.layout(x))
        # Anything else: pointwise if every output has the (broadcast) shape of the tensor inputs.
        tens = [t for t in flat if isinstance(t, torch.Tensor)]
        try:
            shape = tuple(torch.broadcast_shapes(*[t.shape for t in tens]))
        except RuntimeError:
            shape = None
        if outs and shape is not None and all(tuple(t.shape) == shape for t in outs):
            if base not in _POINTWISE:
                self.assumed_pointwise.add(base)
            lay, bad = self._broadcast(tens, shape)
            if bad:
                return self._global(union, base, "operands' spatial axes disagree", lay)
            return self._pointwise(tens, lay)
        return self._global(union, base, "not a known per-position op", self._kept(x, outs))

    def _pointwise(self, tensors: list[torch.Tensor], layout: Layout) -> _Info | None:
        """Elementwise result: the union of the operands' fields. An operand without a map (a pooled scalar,
        a gate) makes it global if it is, but its local box does not widen the result's."""
        infos = [self.get(t) for t in tensors]
        mapped = [i for t, i in zip(tensors, infos) if i is not None and any(d.spatial for d in self.layout(t))]
        union = self._union(infos, layout)
        if union is None or not mapped:
            return union
        local = self._union(mapped, layout)
        assert local is not None
        return _Info(local.axes, union.is_global, union.reason, layout)

    def _kept(self, x: torch.Tensor | None, outs: list[torch.Tensor]) -> Layout | None:
        """For a global op whose output has the input's rank: the input layout, resized (else none)."""
        if x is None or not outs or outs[0].ndim != x.ndim:
            return None
        return sized(self.layout(x), outs[0].shape)

    def _window(self, base: str, x: torch.Tensor, xinfo: _Info | None, union: _Info | None, args: tuple,
                kwargs: dict, outs: list[torch.Tensor]) -> _Info | None:
        kind, n = _WINDOWS[base]
        params = dict(zip(_WINDOW_ARGS[kind], args[1:]))
        params.update(kwargs)
        if kind == "conv":
            weight = params["weight"]
            kernel = tuple(int(k) for k in weight.shape[-n:])
            stride = _ntuple(params.get("stride", 1), n)
            dilation = _ntuple(params.get("dilation", 1), n)
            padding = params.get("padding", 0)
            if isinstance(padding, str):
                total = [d * (k - 1) for d, k in zip(dilation, kernel)]
                padding = (0,) * n if padding == "valid" else tuple(t // 2 for t in total)
            padding = _ntuple(padding, n)
            if self.get(weight) is not None:
                return self._global(union, base, "input-dependent weight", self._kept(x, outs))
        else:
            kernel = _ntuple(params["kernel_size"], n)
            stride = _ntuple(params.get("stride") or params["kernel_size"], n)
            padding = _ntuple(params.get("padding", 0), n)
            dilation = _ntuple(params.get("dilation", 1), n)
        if xinfo is None or not outs:
            return union
        lay = self.layout(x)
        out = outs[0]
        if kind == "conv" and x.ndim == n + 2 and lay[1].spatial:
            return self._global(union, base, "over a spatial axis held as channels", self._kept(x, outs))
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
            if axis is None:
                if k_eff == 1 and stride[w] == 1 and padding[w] == 0:
                    continue
                return self._global(union, base, "window over a token or partitioned axis", self._kept(x, outs))
            new[d] = resized(dim, out.shape[d])
            if axes is not None:
                a = 0 if axis == "y" else 1
                lo, hi, j = axes[a]
                axes[a] = (lo - padding[w] * j, hi + (k_eff - 1 - padding[w]) * j, j * stride[w])
        axes_t = (axes[0], axes[1]) if axes is not None else None
        glob = union if union is not None and union.is_global else xinfo
        return _Info(axes_t, glob.is_global, glob.reason, sized(new, out.shape))

    def _adaptive(self, base: str, x: torch.Tensor, xinfo: _Info | None, union: _Info | None,
                  outs: list[torch.Tensor]) -> _Info | list | None:
        n = _ADAPTIVE[base]
        if xinfo is None or not outs:
            return union
        out = outs[0]
        lay = self.layout(x)
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
        info = _Info(axes_t, xinfo.is_global, xinfo.reason, sized(new, out.shape))
        if glob is not None:
            info = self._global(info, base, glob, tuple(new))
        return [info] * len(outs)

    def _pad(self, x: torch.Tensor, xinfo: _Info | None, union: _Info | None, args: tuple, kwargs: dict,
             outs: list[torch.Tensor]) -> _Info | None:
        if xinfo is None or not outs:
            return union
        pad = list(args[1] if len(args) > 1 else kwargs["pad"])
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        lay = self.layout(x)
        axes = list(xinfo.axes) if xinfo.axes is not None else None
        new = list(lay)
        for p in range(len(pad) // 2):
            d = x.ndim - 1 - p
            before, after = int(pad[2 * p]), int(pad[2 * p + 1])
            dim = lay[d]
            if not dim.spatial:
                new[d] = plain(outs[0].shape[d])
                continue
            if before == 0 and after == 0:
                continue
            axis = dim.pure()
            if axis is None or mode == "circular":
                return self._global(union, "pad", "circular" if mode == "circular" else "of a token axis",
                                    self._kept(x, outs))
            new[d] = resized(dim, outs[0].shape[d])
            if axes is not None:
                a = 0 if axis == "y" else 1
                lo, hi, j = axes[a]
                axes[a] = (lo - before * j, hi - before * j, j)
        axes_t = (axes[0], axes[1]) if axes is not None else None
        return _Info(axes_t, xinfo.is_global, xinfo.reason, sized(new, outs[0].shape))

    def _norm(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
              outs: list[torch.Tensor]) -> _Info | None:
        lay = self.layout(x)
        if base in ("layer_norm", "rms_norm"):
            shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
            k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
            dims = list(range(x.ndim - k, x.ndim))
        elif base == "group_norm":
            dims = list(range(1, x.ndim))
        elif base == "instance_norm":
            use_input_stats = args[5] if len(args) > 5 else kwargs.get("use_input_stats", True)
            dims = list(range(2, x.ndim)) if use_input_stats else []
        elif base == "batch_norm":
            training = args[5] if len(args) > 5 else kwargs.get("training", False)
            dims = [d for d in range(x.ndim) if d != 1] if training else []
        else:  # local_response_norm: a window over channels only
            dims = [1] if x.ndim > 1 else []
        if any(lay[d].spatial for d in dims):
            return self._global(union, base, "over a spatial axis", lay)
        return _relaid(union, lay)

    def _linear(self, x: torch.Tensor, args: tuple, kwargs: dict, union: _Info | None,
                outs: list[torch.Tensor]) -> _Info | None:
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        if self.get(x) is None or self.get(weight) is not None or self.get(bias) is not None:
            return self._global(union, "linear", "input-dependent weight")
        lay = self.layout(x)
        new = lay[:-1] + (plain(outs[0].shape[-1]),) if outs and outs[0].ndim == x.ndim else None
        if x.ndim and lay[-1].spatial:
            return self._global(union, "linear", "over a spatial axis", new)
        return _relaid(union, new)

    def _mm_layout(self, a: torch.Tensor, b: torch.Tensor) -> tuple[Layout | None, str | None]:
        """Layout of ``a @ b`` and, when positions are mixed, why."""
        la = list(self.layout(a)) if self.get(a) is not None else plain_layout(a.shape)
        lb = list(self.layout(b)) if self.get(b) is not None else plain_layout(b.shape)
        a1, b1 = a.ndim == 1, b.ndim == 1
        if a1:
            la = [plain(1)] + la
        if b1:
            lb = lb + [plain(1)]
        ka, n_dim = la[-1], la[-2]
        kb, m_dim = lb[-2], lb[-1]
        reason = None
        if ka.spatial or kb.spatial:
            reason = "contracts a spatial axis"
        if n_dim.spatial and m_dim.spatial:
            reason = reason or "pairs positions of two input-dependent tensors (attention scores)"
            m_dim = plain(m_dim.size)
        batch_a, batch_b = la[:-2], lb[:-2]
        nb = max(len(batch_a), len(batch_b))
        batch: list[Dim] = []
        for d in range(nb):
            ka_ = d - (nb - len(batch_a))
            kb_ = d - (nb - len(batch_b))
            da = batch_a[ka_] if ka_ >= 0 else None
            db = batch_b[kb_] if kb_ >= 0 else None
            found, bad = merge_dims([da, db])
            if bad:
                reason = reason or "operands' spatial axes disagree"
            size = max(da.size if da else 1, db.size if db else 1)
            batch.append(found if found is not None else plain(size))
        dims = batch + ([] if a1 else [n_dim]) + ([] if b1 else [m_dim])
        spatial_labels = [f[0] for dim in dims for f in dim.factors if f[0] is not None]
        if len(spatial_labels) != len(set(spatial_labels)):
            reason = reason or "pairs positions"
        return tuple(dims), reason

    def _matmul(self, base: str, args: tuple, kwargs: dict, union: _Info | None,
                outs: list[torch.Tensor]) -> _Info | None:
        tens = [t for t in args if isinstance(t, torch.Tensor)]
        if base in ("addmm", "baddbmm", "addbmm", "addmv"):
            extra, pair = tens[:1], tens[1:3]
        else:
            extra, pair = [], tens[:2]
        if base == "rmatmul":
            pair = pair[::-1]
        if len(pair) != 2 or not outs:
            return self._global(union, base)
        a, b = pair
        if base in ("dot", "vdot", "inner"):
            spatial = any(self.get(t) is not None and self.layout(t)[-1].spatial for t in (a, b))
            return self._global(union, base, "contracts a spatial axis") if spatial else union
        if base == "outer":
            a, b = a.reshape(-1, 1), b.reshape(1, -1)
        lay, reason = self._mm_layout(a, b)
        if base == "addbmm" and lay is not None:
            if lay[0].spatial:
                reason = reason or "sums over a spatial axis"
            lay = lay[1:]
        if lay is not None and extra:
            ext_lay, bad = self._broadcast(extra, outs[0].shape)
            merged = []
            for d, e in zip(lay, ext_lay):
                found, conflict = merge_dims([d, e])
                bad = bad or conflict
                merged.append(found if found is not None else d)
            lay = tuple(merged)
            if bad:
                reason = reason or "operands' spatial axes disagree"
        if lay is not None and not fits(lay, outs[0].shape):
            lay = None
        if reason is not None:
            return self._global(union, base, reason, lay)
        return _relaid(union, lay)

    def _einsum(self, args: tuple, union: _Info | None, outs: list[torch.Tensor]) -> _Info | None:
        equation = str(args[0]).replace(" ", "")
        operands = list(args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        lhs, _, rhs = equation.partition("->")
        terms = lhs.split(",")
        if len(terms) != len(operands) or "..." in equation or not outs:
            return self._global(union, "einsum", layout=None)
        if not rhs and "->" not in equation:
            letters = [c for c in lhs if c.isalpha()]
            rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        seen: dict[str, list[tuple[int, Dim]]] = {}
        for k, (term, op) in enumerate(zip(terms, operands)):
            if self.get(op) is None:
                continue
            lay = self.layout(op)
            for letter, dim in zip(term, lay):
                if dim.spatial:
                    seen.setdefault(letter, []).append((k, dim))
        reason = None
        if any(letter not in rhs for letter in seen):
            reason = "contracts a spatial axis"
        owners = {letter: {k for k, _ in seen[letter]} for letter in rhs if letter in seen}
        pairs = any(not (owners[a] & owners[b]) for a in owners for b in owners)
        if pairs:
            reason = reason or "pairs positions of two input-dependent tensors (attention scores)"
        keep = min(min(o) for o in owners.values()) if owners else None
        dims: list[Dim] = []
        for letter, size in zip(rhs, outs[0].shape):
            cands = seen.get(letter, [])
            if pairs:  # keep the positions of one operand only (the scores are global anyway)
                cands = [(k, d) for k, d in cands if k == keep]
            found, bad = merge_dims([d for _, d in cands])
            if bad:
                reason = reason or "operands' spatial axes disagree"
            dims.append(found if found is not None else plain(size))
        lay = tuple(dims) if fits(tuple(dims), outs[0].shape) else None
        if reason is not None:
            return self._global(union, "einsum", reason, lay)
        return _relaid(union, lay)

    def _attention(self, base: str, args: tuple, kwargs: dict, union: _Info | None,
                   outs: list[torch.Tensor]) -> list[_Info | None]:
        q = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("query")
        lay = None
        if isinstance(q, torch.Tensor) and outs and outs[0].ndim == q.ndim:
            ql = self.layout(q)
            lay = ql[:-1] + (plain(outs[0].shape[-1]),)
            if not fits(lay, outs[0].shape):
                lay = None
        first = self._global(union, base, "attention over tokens", lay)
        return [first] + [self._global(union, base, "attention over tokens")] * (len(outs) - 1)

    def _dims_arg(self, x: torch.Tensor, dim: Any) -> list[int] | None:
        if dim is None:
            return None
        dims = dim if isinstance(dim, (tuple, list, torch.Size)) else [dim]
        return [int(d) % max(x.ndim, 1) for d in dims]

    def _reduce(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
                outs: list[torch.Tensor]) -> _Info | list | None:
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis"))
        if base in ("max", "min") and isinstance(dim, torch.Tensor):
            lay, bad = self._broadcast([x, dim], outs[0].shape) if outs else ((), False)
            return self._global(union, base, "operands' spatial axes disagree", lay) if bad \
                else _relaid(union, lay)
        if base == "kthvalue":
            dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
        if base == "mode" and dim is None:  # torch.mode reduces the last dim by default
            dim = -1
        if isinstance(dim, torch.Tensor):
            return self._global(union, base)
        dims = self._dims_arg(x, dim)
        keep = bool(outs) and outs[0].ndim == x.ndim
        lay = self.layout(x)
        if dims is None:
            spatial = any(d.spatial for d in lay)
            infos = [self._global(union, base, "over every axis") if spatial else union] * len(outs)
            return [_Info(i.axes, i.is_global, i.reason, None) if i else None for i in infos]
        new = []
        for d, dim_ in enumerate(lay):
            if d in dims:
                if keep:
                    new.append(resized(dim_, 1) if dim_.pure() else plain(1))
                continue
            new.append(dim_)
        if any(lay[d].spatial for d in dims):
            axes_names = {lay[d].pure() or "token" for d in dims if lay[d].spatial}
            return [self._global(union, base, f"over {'/'.join(sorted(axes_names))}", tuple(new))] * len(outs)
        return [_relaid(union, tuple(new))] * len(outs)

    def _along(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
               outs: list[torch.Tensor]) -> _Info | list | None:
        lay = self.layout(x)
        if base in _SHIFTS:
            if base == "roll":
                dim = args[2] if len(args) > 2 else kwargs.get("dims")
            elif base in ("flip",):
                dim = args[1] if len(args) > 1 else kwargs.get("dims")
            elif base == "rot90":
                dim = args[2] if len(args) > 2 else kwargs.get("dims", (0, 1))
            else:
                dim = [1] if base == "fliplr" else [0]
        else:
            pos, default = _ALONG[base]
            dim = args[pos] if len(args) > pos else kwargs.get("dim", default)
        dims = self._dims_arg(x, dim) if dim is not None else list(range(x.ndim))
        if any(lay[d].spatial for d in dims):
            return [self._global(union, base, "along a spatial axis", lay if o.shape == x.shape else self._kept(x, [o]))
                    for o in outs]
        return [_relaid(union, lay if o.shape == x.shape else self._kept(x, [o])) for o in outs]

    def _move(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
              outs: list[torch.Tensor]) -> _Info | None:
        lay = list(self.layout(x))
        nd = x.ndim
        if base == "permute":
            order = args[1:] if len(args) > 1 and isinstance(args[1], int) else (args[1] if len(args) > 1
                                                                                else kwargs["dims"])
            order = [int(d) % nd for d in order]
            new = [lay[d] for d in order]
        elif base in ("movedim", "moveaxis"):
            src = args[1] if len(args) > 1 else kwargs.get("source")
            dst = args[2] if len(args) > 2 else kwargs.get("destination")
            src = [int(s) % nd for s in (src if isinstance(src, (tuple, list)) else [src])]
            dst = [int(s) % nd for s in (dst if isinstance(dst, (tuple, list)) else [dst])]
            rest = [d for d in range(nd) if d not in src]
            order = [-1] * nd
            for s, d in zip(src, dst):
                order[d] = s
            it = iter(rest)
            order = [o if o >= 0 else next(it) for o in order]
            new = [lay[d] for d in order]
        elif base in ("t", "adjoint", "mT", "T") or (base in ("transpose", "swapaxes", "swapdims") and len(args) < 3
                                                     and "dim0" not in kwargs):
            if base == "T":
                new = lay[::-1]
            else:
                new = lay[:]
                if nd >= 2:
                    new[-1], new[-2] = new[-2], new[-1]
        else:
            d0 = args[1] if len(args) > 1 else kwargs.get("dim0", kwargs.get("axis0"))
            d1 = args[2] if len(args) > 2 else kwargs.get("dim1", kwargs.get("axis1"))
            d0, d1 = int(d0) % nd, int(d1) % nd
            new = lay[:]
            new[d0], new[d1] = new[d1], new[d0]
        return _relaid(union, tuple(new))

    def _reshape(self, base: str, x: torch.Tensor, union: _Info | None, outs: list[torch.Tensor]) -> _Info | None:
        if union is None or not outs:
            return union
        lay = self.layout(x)
        new = refactor(lay, x.shape, outs[0].shape)
        if new is None:
            if any(d.spatial for d in lay):
                return self._global(union, base, "reshape that does not keep the spatial axes", None)
            return _relaid(union, None)
        new, axes = space_to_depth(new, union.axes)
        return self._lost_or(_Info(axes, union.is_global, union.reason), base, lay, new)

    def _lost_or(self, union: _Info, op: str, before: Layout, after: Layout) -> _Info:
        """``after`` as the new layout; a local tensor whose map disappears becomes global (no map)."""
        had = standard(before) is not None or any(d.spatial for d in before)
        has = any(d.spatial for d in after)
        if had and not has and not union.is_global:
            return _Info(None, True, self._where(op, "the spatial map is flattened away"), after)
        return _relaid(union, after)

    def _squeeze(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
                 outs: list[torch.Tensor]) -> _Info | None:
        if union is None or not outs:
            return union
        lay = list(self.layout(x))
        out = outs[0]
        if base == "unsqueeze":
            d = int(args[1] if len(args) > 1 else kwargs["dim"]) % (x.ndim + 1)
            new = lay[:d] + [plain(1)] + lay[d:]
        else:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            dims = set(self._dims_arg(x, dim)) if dim is not None else set(range(x.ndim))
            new = [dim_ for d, dim_ in enumerate(lay) if not (d in dims and x.shape[d] == 1)]
        if len(new) != out.ndim:
            return self._global(union, base, layout=None)
        return self._lost_or(union, base, tuple(lay), tuple(new))

    def _expand(self, x: torch.Tensor, union: _Info | None, outs: list[torch.Tensor]) -> _Info | None:
        if union is None or not outs:
            return union
        out = outs[0]
        lay = self.layout(x)
        lead = out.ndim - x.ndim
        new = [plain(out.shape[d]) for d in range(lead)]
        for d, dim in enumerate(lay):
            size = int(out.shape[lead + d])
            new.append(dim if x.shape[d] == size else resized(dim, size))
        return _relaid(union, tuple(new))

    def _repeat(self, base: str, x: torch.Tensor, union: _Info | None, outs: list[torch.Tensor]) -> _Info | None:
        if union is None or not outs:
            return union
        out = outs[0]
        lay = self.layout(x)
        lead = out.ndim - x.ndim
        new = [plain(out.shape[d]) for d in range(lead)]
        for d, dim in enumerate(lay):
            if x.shape[d] == out.shape[lead + d]:
                new.append(dim)
            elif dim.spatial:
                return self._global(union, base, "tiles a spatial axis", None)
            else:
                new.append(plain(out.shape[lead + d]))
        if base == "repeat_interleave" and len(new) != out.ndim:
            return self._global(union, base, layout=None)
        return _relaid(union, tuple(new))

    def _cat(self, base: str, args: tuple, kwargs: dict, union: _Info | None,
             outs: list[torch.Tensor]) -> _Info | None:
        tensors = list(args[0] if args else kwargs.get("tensors"))
        if not outs or not tensors:
            return union
        out = outs[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
        if base in ("hstack", "vstack"):
            return self._global(union, base, layout=None) if any(
                self.get(t) is not None and any(d.spatial for d in self.layout(t)) for t in tensors) else union
        ref = tensors[0]
        if base == "stack":
            d = int(dim) % (ref.ndim + 1)
            lay, bad = self._broadcast(tensors, ref.shape)
            new = lay[:d] + (plain(len(tensors)),) + lay[d:]
            return self._global(union, base, "operands' spatial axes disagree", new) if bad \
                else _relaid(union, new)
        d = int(dim) % ref.ndim
        lays = [(t, self.layout(t)) for t in tensors]
        # dims other than d: must agree
        dims: list[Dim] = []
        bad = False
        for k in range(ref.ndim):
            if k == d:
                dims.append(plain(out.shape[d]))
                continue
            found, conflict = merge_dims([lay[k] for t, lay in lays if self.get(t) is not None])
            bad = bad or conflict
            dims.append(found if found is not None else plain(out.shape[k]))
        spatial_along = [(i, lay[d]) for i, (t, lay) in enumerate(lays) if self.get(t) is not None and lay[d].spatial]
        if len(spatial_along) > 1:
            return self._global(union, base, "along a spatial axis", tuple(dims))
        if spatial_along:
            i, sdim = spatial_along[0]
            before = sum(int(t.shape[d]) for t in tensors[:i])
            after = sum(int(t.shape[d]) for t in tensors[i + 1:])
            dims[d] = Dim(sdim.factors, sdim.prefix + before, sdim.suffix + after)
        if bad:
            return self._global(union, base, "operands' spatial axes disagree", tuple(dims))
        return _relaid(union, tuple(dims))

    def _slice_dim(self, dim: Dim, n: int, sel: slice, axes: list | None) -> tuple[Dim | None, str | None]:
        """Dim after ``sel``; ``(None, reason)`` when positions cannot be followed."""
        start, stop, step = sel.indices(n)
        length = len(range(start, stop, step))
        if not dim.spatial:
            return plain(length), None
        if (start, stop, step) == (0, n, 1):
            return dim, None
        axis = dim.pure()
        if axis is not None:
            if axes is not None:
                a = 0 if axis == "y" else 1
                lo, hi, j = axes[a]
                axes[a] = (lo + start * j, hi + start * j, j * step)
            return resized(dim, length), None
        grid = dim.size - dim.prefix - dim.suffix
        if step == 1 and start <= dim.prefix and stop >= dim.prefix + grid:
            return Dim(dim.factors, dim.prefix - start, stop - (dim.prefix + grid)), None
        return None, "slice of a token or partitioned axis"

    def _getitem(self, x: torch.Tensor, union: _Info | None, index: Any,
                 outs: list[torch.Tensor]) -> _Info | None:
        info = self.get(x)
        if info is None or union is None or not outs:
            return union
        lay = self.layout(x)
        idx = list(index) if isinstance(index, tuple) else [index]
        if any(isinstance(i, bool) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool) for i in idx):
            return self._global(union, "getitem", "boolean mask", None)
        advanced = [i for i in idx if isinstance(i, (torch.Tensor, list))]
        if len(advanced) > 1:
            return self._global(union, "getitem", "advanced indexing", None)
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
                got, why = self._slice_dim(dim, n, sel, axes)
                if got is None:
                    return self._global(union, "getitem", why, None)
                new.append(got)
            elif isinstance(sel, (torch.Tensor, list)):
                if dim.spatial:
                    return self._global(union, "advanced indexing", "on a spatial axis", None)
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
            return self._global(union, "getitem", layout=None)
        new = [dim if dim.size == s else plain(s) for dim, s in zip(new, outs[0].shape)]
        axes_t = (axes[0], axes[1]) if axes is not None else None
        result = _Info(axes_t, info.is_global or union.is_global, info.reason if info.is_global else union.reason,
                       tuple(new))
        if reason is not None:
            if reason == "class token":
                return _Info(axes_t, True, result.reason if result.is_global else self._where("getitem", reason),
                             tuple(new))
            return self._global(result, "getitem", reason, tuple(new))
        return result

    def _split(self, base: str, x: torch.Tensor, union: _Info | None, args: tuple, kwargs: dict,
               outs: list[torch.Tensor]) -> list[_Info | None] | _Info | None:
        if union is None or not outs:
            return union
        if base == "unbind":
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        else:
            dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        d = int(dim) % x.ndim
        lay = self.layout(x)
        info = self.get(x) or union
        result: list[_Info | None] = []
        start = 0
        for o in outs:
            if base == "unbind":
                if lay[d].spatial:
                    result.append(self._global(union, base, "along a spatial axis", None))
                    continue
                result.append(_relaid(union, lay[:d] + lay[d + 1:]))
                continue
            length = int(o.shape[d])
            axes = list(info.axes) if info.axes is not None else None
            got, why = self._slice_dim(lay[d], int(x.shape[d]), slice(start, start + length), axes)
            start += length
            if got is None:
                result.append(self._global(union, base, why, None))
                continue
            axes_t = (axes[0], axes[1]) if axes is not None else None
            result.append(_Info(axes_t, union.is_global, union.reason, lay[:d] + (got,) + lay[d + 1:]))
        return result

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _IGNORED:
            return out
        outs = _tensors(out)
        if not outs and name not in ("__setitem__", "setitem"):
            return out
        info = self._rule(func, args, kwargs, out)
        inplace = _inplace(name) and bool(args) and isinstance(args[0], torch.Tensor)
        if isinstance(info, list):
            first = info[0] if info else None
            if inplace:
                self.set(args[0], first, name)
            for k, t in enumerate(outs):
                self.set(t, info[k] if k < len(info) else first, name)
            return out
        if info is not None and (inplace or name == "__setitem__") and args and isinstance(args[0], torch.Tensor):
            self.set(args[0], info, name)  # in-place: the input tensor now carries the new field
        for t in outs:
            self.set(t, info, name)
        return out


_INPLACE_DUNDERS = {f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
                                              "and", "or", "xor", "lshift", "rshift")}


def _inplace(name: str) -> bool:
    """Whether ``name`` writes into its first argument (``add_``, ``__iadd__``; not ``__getitem__``)."""
    return (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS


def _fit(info: _Info, t: torch.Tensor, op: str) -> _Info:
    """``info`` with a layout valid for ``t``. A layout that does not fit is dropped; a local tensor
    whose spatial dims are then unknown is made global (never a silently local one)."""
    ok = info.layout is not None and fits(info.layout, t.shape)
    if info.is_global:
        return info if ok else _Info(info.axes, True, info.reason, None)
    if ok and any(d.spatial for d in info.layout):  # a local field must say where its map is
        return info
    return _Info(info.axes, True, f"{op} (its spatial axes could not be followed)", info.layout if ok else None)


_POINTWISE = {
    "add", "sub", "mul", "div", "truediv", "rtruediv", "radd", "rsub", "rmul", "neg", "abs", "relu",
    "relu6", "hardtanh", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardsigmoid", "hardswish",
    "elu", "selu", "celu", "softplus", "mish", "exp", "log", "sqrt", "rsqrt", "pow", "clamp", "clip",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "where", "maximum", "minimum", "square", "reciprocal", "addcmul", "addcdiv", "lerp", "sign",
    "floor", "ceil", "round", "zero", "fill", "copy", "masked_fill", "threshold", "prelu", "rrelu",
    "logsigmoid", "erf", "sin", "cos", "softsign", "tanhshrink", "hardshrink", "softshrink",
    "eq", "ne", "lt", "le", "gt", "ge", "clamp_min", "clamp_max", "exp2", "expm1", "log1p", "log2", "log10",
    "floordiv", "remainder", "fmod", "mod", "and", "or", "xor", "invert", "logical_not", "logical_and",
    "logical_or", "nan_to_num", "erfc", "erfinv", "sinh", "cosh", "atan", "asin", "acos", "hypot", "atan2",
    "rpow", "rdiv", "rfloordiv", "sgn", "trunc", "frac", "isnan", "isinf", "isfinite", "float_power",
    "positive", "negative", "dropout_", "sigmoid_", "silu_", "fmax", "fmin", "heaviside", "logit",
}


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
            tensors = _tensors(output)
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
            mode.set(x, _Info(((0, 0, 1), (0, 0, 1)), layout=input_layout(channels, h, w)))
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
    return TRFTrace(result, mode.assumed_pointwise, (h, w), regridded)


def receptive_field_size_formula(kernels: Sequence[int], strides: Sequence[int],
                                 dilations: Sequence[int] | None = None) -> int:
    """Closed form for a chain of layers: ``r_0 = 1 + sum_l (k_eff_l - 1) prod_{i<l} s_i``."""
    dilations = dilations or [1] * len(kernels)
    r, jump = 1, 1
    for k, s, d in zip(kernels, strides, dilations):
        r += (d * (k - 1)) * jump
        jump *= s
    return r


__all__ = ["TRF", "TRFTrace", "receptive_field_size_formula", "trace_receptive_fields"]
