"""Where the spatial axes of a tensor are: the per-dim *layout* the TRF tracer carries (see
:mod:`erf.trf.tracer`).

A layout has one :class:`Dim` per tensor dim: the spatial factors the dim holds, most significant first.
A factor is ``(label, size)`` with label ``("y" | "x", digit path)`` or ``None`` (channels, batch): path
``()`` is the whole axis; splitting a digit of path ``p`` into two gives ``p + (0,)`` (outer) and
``p + (1,)`` (inner), so ``view(B, H // 7, 7, W // 7, 7, C)`` of a channels-last map is
``(B), (y0), (y1), (x0), (x1), (C)`` and the reverse view merges the digits back into ``y`` and ``x``.
A token dim holds ``y`` then ``x`` (row-major), after ``prefix`` class tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A spatial factor is ``(label, size)`` with label ``("y" | "x", digit path)``: path ``()`` is the
# whole axis; splitting a digit of path ``p`` gives ``p + (0,)`` (outer) and ``p + (1,)`` (inner).
# A non-spatial factor has label ``None``.
Label = tuple[str, tuple[int, ...]] | None
Factor = tuple[Label, int]


@dataclass(frozen=True)
class Dim:
    """One tensor dim: the product of ``factors`` (most significant first), after ``prefix``
    non-spatial entries (class tokens) and before ``suffix`` ones."""

    factors: tuple[Factor, ...] = ()
    prefix: int = 0
    suffix: int = 0

    @property
    def size(self) -> int:
        return self.prefix + math.prod(s for _, s in self.factors) + self.suffix

    @property
    def spatial(self) -> bool:
        return any(label is not None for label, _ in self.factors)

    def pure(self) -> str | None:
        """``"y"``/``"x"`` when this dim is exactly one whole spatial axis, else ``None``."""
        if self.prefix == 0 and self.suffix == 0 and len(self.factors) == 1:
            label = self.factors[0][0]
            if label is not None and label[1] == ():
                return label[0]
        return None

    def tokens(self) -> bool:
        """Whether this dim is a token sequence: whole ``y`` then whole ``x`` (row-major), maybe with class tokens."""
        return (len(self.factors) == 2 and self.factors[0][0] == ("y", ()) and self.factors[1][0] == ("x", ()))


Layout = tuple[Dim, ...]


def plain(n: int) -> Dim:
    return Dim(((None, int(n)),)) if int(n) != 1 else Dim(())


def plain_layout(shape: Sequence[int]) -> Layout:
    return tuple(plain(n) for n in shape)


def canon(dim: Dim) -> Dim:
    """Merge adjacent non-spatial factors and adjacent sibling digits; drop size-1 non-spatial factors."""
    factors = list(dim.factors)
    while True:
        out: list[Factor] = []
        for label, size in factors:
            if label is None and size == 1:
                continue
            if out and label is None and out[-1][0] is None:
                out[-1] = (None, out[-1][1] * size)
                continue
            prev = out[-1][0] if out else None
            if (prev is not None and label is not None and prev[0] == label[0] and label[1]
                    and label[1][-1] == 1 and prev[1] == label[1][:-1] + (0,)):
                out[-1] = ((label[0], label[1][:-1]), out[-1][1] * size)
                continue
            out.append((label, size))
        if out == factors:
            return Dim(tuple(out), dim.prefix, dim.suffix)
        factors = out


def resized(dim: Dim, n: int) -> Dim:
    """The same dim with a new size: kept for a whole axis or a plain dim, else plain."""
    axis = dim.pure()
    if axis is not None:
        return Dim((((axis, ()), int(n)),))
    return plain(n)


def sized(layout: Sequence[Dim], shape: Sequence[int]) -> Layout:
    """``layout`` with each non-spatial (or whole-axis) dim resized to ``shape``."""
    return tuple(d if d.size == int(n) else (resized(d, n) if not d.spatial or d.pure() else d)
                 for d, n in zip(layout, shape))


def standard(layout: Layout | None) -> tuple[tuple[int, ...], int, tuple[int, int]] | None:
    """``(dims, prefix, (H, W))`` when the layout is a readable map (two axis dims or one token dim)."""
    if not layout:
        return None
    ys = [d for d, dim in enumerate(layout) if dim.pure() == "y"]
    xs = [d for d, dim in enumerate(layout) if dim.pure() == "x"]
    spatial = [d for d, dim in enumerate(layout) if dim.spatial]
    if len(ys) == 1 and len(xs) == 1 and len(spatial) == 2 and ys[0] < xs[0]:
        return ((ys[0], xs[0]), 0, (layout[ys[0]].size, layout[xs[0]].size))
    toks = [d for d, dim in enumerate(layout) if dim.tokens()]
    if len(toks) == 1 and len(spatial) == 1:
        dim = layout[toks[0]]
        return ((toks[0],), dim.prefix, (dim.factors[0][1], dim.factors[1][1]))
    return None


def refactor(layout: Layout, in_shape: Sequence[int], out_shape: Sequence[int]) -> Layout | None:
    """Layout after a reshape from ``in_shape`` to ``out_shape`` (row-major), or ``None`` when the
    spatial factors cannot be followed (a split that does not divide, a token dim with class
    tokens merged with other dims)."""
    queue: list[tuple[Label | Dim, int]] = []  # a Dim label: a dim with class tokens, kept whole
    for dim, n in zip(layout, in_shape):
        if dim.prefix or dim.suffix:
            queue.append((dim, int(n)))
        elif dim.factors:
            queue.extend(dim.factors)
        elif n != 1:
            queue.append((None, int(n)))
    out: list[Dim] = []
    for target in out_shape:
        target = int(target)
        factors: list[Factor] = []
        prod = 1
        kept = False
        while prod < target:
            if not queue:
                return None
            label, size = queue.pop(0)
            if prod * size <= target and target % (prod * size) == 0:
                if isinstance(label, Dim):
                    if prod != 1 or size != target:
                        return None
                    out.append(label)
                    prod = target
                    kept = True
                    break
                factors.append((label, size))
                prod *= size
                continue
            need = target // prod
            if target % prod or size % need or isinstance(label, Dim):
                return None
            if label is None:
                factors.append((None, need))
                queue.insert(0, (None, size // need))
            else:
                axis, path = label
                factors.append(((axis, path + (0,)), need))
                queue.insert(0, ((axis, path + (1,)), size // need))
            prod *= need
        if kept:
            continue
        out.append(canon(Dim(tuple(factors))))
    if any(size != 1 for _, size in queue):
        return None
    return tuple(out)


def space_to_depth(layout: Layout, axes: tuple | None) -> tuple[Layout, tuple | None]:
    """Read an axis whose inner digit was merged into channels as a window of the inner size (timm's Swin
    patch merging, pixel unshuffle): the outer digit becomes the axis, the jump grows by the inner size and
    the field by ``inner - 1`` jumps.

    Either the axis is split in two digits, the outer one a dim of its own; or the map is down to one unit
    (``view(B, 1, 2, 1, 2, C)`` of a 2 x 2 map: the outer digits have size 1, so the view keeps no trace of
    them) and both axes are merged whole into the same channel dim with two free size-1 dims between the
    batch (dim 0, never used) and it: the nearer becomes ``x``, the other ``y``. ``flatten(1)`` of a map has no
    such dims and stays a flattened (global) vector."""
    new = list(layout)
    axes_l = list(axes) if axes is not None else None

    def widen(a: int, inner: int) -> None:
        if axes_l is not None:
            lo, hi, j = axes_l[a]
            axes_l[a] = (lo, hi + (inner - 1) * j, j * inner)

    def fold(d: int, k: int) -> None:
        factors = list(new[d].factors)
        factors[k] = (None, factors[k][1])
        new[d] = canon(Dim(tuple(factors), new[d].prefix, new[d].suffix))

    whole: dict[str, tuple[int, int, int]] = {}
    for a, axis in enumerate(("y", "x")):
        found = [(d, k, f[1], f[0][1]) for d, dim in enumerate(new) for k, f in enumerate(dim.factors)
                 if f[0] is not None and f[0][0] == axis]  # (dim, factor index, size, path)
        paths = sorted(t[3] for t in found)
        if paths == [()]:
            whole[axis] = found[0][:3]
            continue
        if paths != [(0,), (1,)]:
            continue
        (do, _, outer, _), = [t for t in found if t[3] == (0,)]
        (di, ki, inner, _), = [t for t in found if t[3] == (1,)]
        if len(new[do].factors) != 1 or new[do].prefix or new[do].suffix or do == di \
                or not any(f[0] is None for f in new[di].factors):
            continue
        fold(di, ki)
        new[do] = Dim((((axis, ()), outer),))
        widen(a, inner)
    if len(whole) == 2 and whole["y"][0] == whole["x"][0]:
        d = whole["y"][0]
        free = [k for k in range(1, d) if not new[k].factors and not new[k].prefix and not new[k].suffix]
        if len(free) >= 2 and any(f[0] is None for f in new[d].factors):
            for a, axis, target in ((0, "y", free[-2]), (1, "x", free[-1])):
                k = next(k for k, f in enumerate(new[d].factors) if f[0] == (axis, ()))
                size = new[d].factors[k][1]
                fold(d, k)
                new[target] = Dim((((axis, ()), 1),))
                widen(a, size)
    return tuple(new), ((axes_l[0], axes_l[1]) if axes_l is not None else None)


def merge_dims(dims: Iterable[Dim | None]) -> tuple[Dim | None, bool]:
    """One dim from aligned operand dims (broadcast): the spatial one; ``True`` if they disagree."""
    found: Dim | None = None
    conflict = False
    for d in dims:
        if d is None or not d.spatial:
            continue
        if found is None:
            found = d
        elif d != found:
            conflict = True
    return found, conflict


def fits(layout: Layout | None, shape: Sequence[int]) -> bool:
    return layout is not None and len(layout) == len(shape) and all(d.size == int(n) for d, n in zip(layout, shape))


def input_layout(channels: int, h: int, w: int) -> Layout:
    return (plain(1), plain(channels), Dim(((("y", ()), h),)), Dim(((("x", ()), w),)))




__all__ = ["Dim", "Factor", "Label", "Layout", "canon", "fits", "input_layout", "merge_dims", "plain", "plain_layout",
           "refactor", "resized", "sized", "space_to_depth", "standard"]
