"""The theoretical receptive field of one layer (:class:`TRF`), the value the tracer (:mod:`erf.trf.tracer`)
returns per module: the input-pixel box of unit ``(0, 0)``, the jump, whether it is global, where the map lies
in the output tensor.

Coordinates are input pixels, 0-based (pixel ``y`` covers ``[y - 0.5, y + 0.5]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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
        index.

        Raises:
            UndefinedERFError: the layer has no spatial map (a ``ValueError`` too).
        """
        if self.feature_size is None:
            from erf.errors import UndefinedERFError

            raise UndefinedERFError("no spatial map" + (f" ({self.reason})" if self.reason else "")
                                    + ": no unit is central")
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


__all__ = ["TRF"]
