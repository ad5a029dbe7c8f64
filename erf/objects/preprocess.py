"""The geometric preprocessing between an original image and the model input (:class:`Preprocess`),
applied to boxes (:func:`rescale`) so that object sizes are in the pixels the model sees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from erf.errors import InputError
from erf.objects.boxes import MAX_IMAGE_SIDE, ObjectBox


@dataclass
class Preprocess:
    """The geometric preprocessing between an original image and the model input.

    Steps, in this order (each optional):

    1. ``resize = R``: as torchvision ``Resize(R)``: the shorter side becomes ``R``,
       the longer one ``int(R * long / short)`` (truncated, like torchvision). A
       point ``(x, y)`` maps to ``(x * W' / W, y * H' / H)``.
    2. ``center_crop = C``: as torchvision ``CenterCrop(C)``: offset
       ``left = int(round((W' - C) / 2))`` (same for ``top``); when ``C`` exceeds a
       side, that side is first zero-padded by ``(C - W') // 2`` on the left/top, so
       the offset is ``-((C - W') // 2)``. ``x -> x - left``.
    3. ``pad_to = P``: the image is placed at the centre of a ``P x P`` canvas, like
       :func:`erf.pasting.embed`: ``x -> x + (P - W) // 2``; a side larger than ``P``
       is an error.
    4. ``input_size = S``: the model's input side. When the steps above do not end
       at ``S x S``, the image is finally stretched to ``S x S``
       (``Resize((S, S))``: ``x -> x * S / W``).

    After every step the box is clipped to the current image; an object cut away
    entirely (by the crop) ends with zero width or height.
    """

    resize: int | None = None
    center_crop: int | None = None
    pad_to: int | None = None
    input_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("resize", "center_crop", "pad_to", "input_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)
                                  or not 0 < v <= MAX_IMAGE_SIDE):
                shown = f"{v!r:.40}" if len(repr(v)) <= 40 else f"{repr(v)[:20]}..."
                raise InputError(f"{shown}: must be a positive integer (at most {MAX_IMAGE_SIDE:,} px)", param=name)

    def steps(self, image_w: float, image_h: float) -> list[tuple[str, float, float, float, float, float, float]]:
        """The affine steps for one image size: ``[(name, sx, sy, dx, dy, W_after, H_after), ...]``.

        A point maps as ``x -> x * sx + dx``, ``y -> y * sy + dy``; then it is
        clipped to ``[0, W_after] x [0, H_after]``.
        """
        w, h = float(image_w), float(image_h)
        out = []
        if self.resize:
            r = self.resize
            if w <= h:
                nw, nh = float(r), float(int(r * h / w))
            else:
                nw, nh = float(int(r * w / h)), float(r)
            out.append(("resize", nw / w, nh / h, 0.0, 0.0, nw, nh))
            w, h = nw, nh
        if self.center_crop:
            c = self.center_crop
            left = int(round((w - c) / 2.0)) if w >= c else -((c - int(w)) // 2)
            top = int(round((h - c) / 2.0)) if h >= c else -((c - int(h)) // 2)
            out.append(("center_crop", 1.0, 1.0, -float(left), -float(top), float(c), float(c)))
            w, h = float(c), float(c)
        if self.pad_to:
            p = self.pad_to
            if w > p or h > p:
                raise InputError(f"{p}: the image is already {int(w)}x{int(h)} px at that step", param="pad_to")
            out.append(("pad_to", 1.0, 1.0, float((p - int(w)) // 2), float((p - int(h)) // 2), float(p), float(p)))
            w, h = float(p), float(p)
        if self.input_size and (w, h) != (self.input_size, self.input_size):
            s = float(self.input_size)
            out.append(("stretch", s / w, s / h, 0.0, 0.0, s, s))
        return out

    def output_size(self, image_w: float, image_h: float) -> tuple[float, float]:
        """``(W, H)`` of the model input for an original image of ``image_w x image_h``."""
        steps = self.steps(image_w, image_h)
        return (steps[-1][5], steps[-1][6]) if steps else (float(image_w), float(image_h))

    def apply(self, box: ObjectBox) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of ``box`` in model-input px, clipped to the input."""
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
        for _, sx, sy, dx, dy, w, h in self.steps(box.image_w, box.image_h):
            x0, x1 = (min(max(v * sx + dx, 0.0), w) for v in (x0, x1))
            y0, y1 = (min(max(v * sy + dy, 0.0), h) for v in (y0, y1))
        return (x0, y0, x1, y1)

    def to_json(self) -> dict[str, int | None]:
        """The preprocessing as a JSON-ready dict."""
        return {"resize": self.resize, "center_crop": self.center_crop, "pad_to": self.pad_to,
                "input_size": self.input_size}


def rescale(boxes: Sequence[ObjectBox], preprocess: Preprocess | None = None) -> np.ndarray:
    """Boxes in model-input px: float64 ``(N, 4)`` of ``x0, y0, x1, y1`` (clipped)."""
    preprocess = preprocess or Preprocess()
    if not boxes:
        return np.zeros((0, 4))
    return np.asarray([preprocess.apply(b) for b in boxes], dtype=np.float64)
