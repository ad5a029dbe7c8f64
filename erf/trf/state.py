"""What the tracer knows while it runs: the receptive-field state of every tensor (:class:`FieldState`) and
the table and helpers the op rules (:mod:`erf.trf.rules`) share (:class:`TraceState`).

A tensor's state is, per spatial axis, ``(lo, hi, jump)``: unit ``u`` depends on input pixels
``[lo + u jump, hi + u jump]``; whether some op mixed all positions (global, with the op that did); and
its :data:`~erf.trf.layout.Layout` (which tensor dims hold which spatial factors).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch.utils._pytree import tree_flatten

from erf.trf.layout import Dim, Layout, fits, merge_dims, plain, plain_layout, resized, sized, standard

Axes = tuple[tuple[int, int, int], tuple[int, int, int]]
"""``((lo, hi, jump) of y, (lo, hi, jump) of x)`` in input pixels."""


@dataclass(frozen=True)
class FieldState:
    """Receptive-field state of one tensor: per-axis ``(lo, hi, jump)`` (``None``: the local geometry
    is lost), whether it is global, why, and its :data:`Layout` (``None``: no spatial dims)."""

    axes: Axes | None
    is_global: bool = False
    reason: str | None = None
    layout: Layout | None = None


RuleResult = FieldState | list[FieldState | None] | None
"""What an op rule returns: one state for every output, one per output, or ``None`` (untracked)."""


@overload
def relaid(info: FieldState, layout: Layout | None) -> FieldState: ...
@overload
def relaid(info: FieldState | None, layout: Layout | None) -> FieldState | None: ...
def relaid(info: FieldState | None, layout: Layout | None) -> FieldState | None:
    """``info`` with another layout (``None`` stays ``None``)."""
    return None if info is None else FieldState(info.axes, info.is_global, info.reason, layout)


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """The tensors in a nested structure of arguments or outputs, in order."""
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def fit(info: FieldState, t: torch.Tensor, op: str) -> FieldState:
    """``info`` with a layout valid for ``t``. A layout that does not fit is dropped; a local tensor
    whose spatial dims are then unknown is made global (never a silently local one)."""
    ok = info.layout is not None and fits(info.layout, t.shape)
    if info.is_global:
        return info if ok else FieldState(info.axes, True, info.reason, None)
    # a local field must say where its map is
    if ok and info.layout is not None and any(d.spatial for d in info.layout):
        return info
    return FieldState(info.axes, True, f"{op} (its spatial axes could not be followed)", info.layout if ok else None)


def shift_axis(axes: list | None, axis: str, by: int) -> None:
    """Move the field of ``axis`` (``"y"``/``"x"``) by ``by`` jumps in place (a slice starting at ``by``)."""
    if axes is not None:
        a = 0 if axis == "y" else 1
        lo, hi, j = axes[a]
        axes[a] = (lo + by * j, hi + by * j, j)


class TraceState:
    """The table ``id(tensor) -> (tensor, FieldState)`` of one forward pass and the helpers rules share."""

    def __init__(self) -> None:
        self.table: dict[int, tuple[torch.Tensor, FieldState]] = {}
        self.module_stack: list[str] = []
        self.assumed_pointwise: set[str] = set()
        self.views: dict[int, list[torch.Tensor]] = {}  # id(base) -> its views (tracked or not)

    def note_views(self, outs: list[torch.Tensor]) -> None:
        """Remember which of ``outs`` are views of another tensor (an in-place write into one changes its base)."""
        for t in outs:
            if t._base is not None:
                self.views.setdefault(id(t._base), []).append(t)

    # -- table -------------------------------------------------------------
    def get(self, t: Any) -> FieldState | None:
        """The state of ``t`` (``None``: untracked, i.e. independent of the input)."""
        if isinstance(t, torch.Tensor):
            hit = self.table.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
        return None

    def set(self, t: Any, info: FieldState | None, op: str = "an op") -> None:
        """Record ``info`` for tensor ``t`` (fitted to its shape; ``None`` records nothing)."""
        if isinstance(t, torch.Tensor) and info is not None:
            self.table[id(t)] = (t, fit(info, t, self.where(op)))

    def layout(self, t: Any) -> Layout:
        """The layout of ``t`` (plain when it carries none, or is not tracked)."""
        info = self.get(t)
        if info is not None and info.layout is not None and fits(info.layout, t.shape):
            return info.layout
        return plain_layout(t.shape) if isinstance(t, torch.Tensor) else ()

    # -- helpers -----------------------------------------------------------
    def where(self, op: str, detail: str | None = None) -> str:
        """``"OP (DETAIL) in MODULE"``, the reason a field became global."""
        where = self.module_stack[-1] if self.module_stack else "the model's forward"
        return f"{op}{f' ({detail})' if detail else ''} in {where or 'the model'}"

    def global_(self, info: FieldState | None, op: str, detail: str | None = None,
                layout: Layout | None = None) -> FieldState:
        """``info`` made global by ``op`` (an earlier global reason is kept)."""
        axes = info.axes if info is not None else None
        reason = info.reason if info is not None and info.is_global else self.where(op, detail)
        return FieldState(axes, True, reason, layout)

    @staticmethod
    def union(infos: Iterable[FieldState | None], layout: Layout | None = None) -> FieldState | None:
        """The union of fields: the hull of the boxes, the largest jump, global if any is."""
        known = [i for i in infos if i is not None]
        if not known:
            return None
        glob = next((i for i in known if i.is_global), None)
        boxes = [i.axes for i in known if i.axes is not None]
        axes = None
        if boxes:
            y, x = ((min(b[a][0] for b in boxes), max(b[a][1] for b in boxes), max(b[a][2] for b in boxes))
                    for a in (0, 1))
            axes = (y, x)
        return FieldState(axes, glob is not None, glob.reason if glob else None, layout)

    def broadcast(self, tensors: list[torch.Tensor], shape: Sequence[int]) -> tuple[Layout, bool]:
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

    def pointwise(self, tensors: list[torch.Tensor], layout: Layout) -> FieldState | None:
        """Elementwise result: the union of the operands' fields. An operand without a map (a pooled scalar,
        a gate) makes it global if it is, but its local box does not widen the result's."""
        infos = [self.get(t) for t in tensors]
        mapped = [i for t, i in zip(tensors, infos) if i is not None and any(d.spatial for d in self.layout(t))]
        union = self.union(infos, layout)
        if union is None or not mapped:
            return union
        local = self.union(mapped, layout)
        assert local is not None
        return FieldState(local.axes, union.is_global, union.reason, layout)

    def kept(self, x: torch.Tensor | None, outs: list[torch.Tensor]) -> Layout | None:
        """For a global op whose output has the input's rank: the input layout, resized (else none)."""
        if x is None or not outs or outs[0].ndim != x.ndim:
            return None
        return sized(self.layout(x), outs[0].shape)

    def lost_or(self, union: FieldState, op: str, before: Layout, after: Layout) -> FieldState:
        """``after`` as the new layout; a local tensor whose map disappears becomes global (no map)."""
        had = standard(before) is not None or any(d.spatial for d in before)
        has = any(d.spatial for d in after)
        if had and not has and not union.is_global:
            return FieldState(None, True, self.where(op, "the spatial map is flattened away"), after)
        return relaid(union, after)

    @staticmethod
    def dims_arg(x: torch.Tensor, dim: Any) -> list[int] | None:
        """A ``dim`` argument (an int or a sequence) as non-negative dims of ``x``; ``None`` stays ``None``."""
        if dim is None:
            return None
        dims = dim if isinstance(dim, (tuple, list, torch.Size)) else [dim]
        return [int(d) % max(x.ndim, 1) for d in dims]

    @staticmethod
    def slice_dim(dim: Dim, n: int, sel: slice, axes: list | None) -> tuple[Dim | None, str | None]:
        """Dim after ``sel`` (``axes`` moved in place); ``(None, reason)`` when positions cannot be followed."""
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


__all__ = ["Axes", "FieldState", "RuleResult", "TraceState", "fit", "relaid", "shift_axis", "tensors_in"]
