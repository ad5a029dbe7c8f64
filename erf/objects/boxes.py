"""Annotation records: one :class:`ObjectBox` per object in original-image pixels, the
:class:`Annotations` a reader returns, and the :class:`Collector` readers feed (record validation,
``skip_bad`` handling).

Coordinates are *continuous* pixels: ``x0, y0`` is the top-left corner and ``x1, y1`` the
bottom-right corner, so a box covering pixel columns 3..5 has ``x0 = 3, x1 = 6`` and width 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from erf.errors import AnnotationError

#: boxes may overshoot the image border by this many pixels (rounding in exporters); they are clipped.
BORDER_TOLERANCE = 1.0
MAX_IMAGE_SIDE = 2**20
"""Largest image side (px) an annotation may declare, and the largest ``--resize`` / crop / canvas: beyond it areas
overflow nothing but mean nothing either (gigapixel slides are ~2e5 px a side)."""
MIN_BOX_SIDE = 1e-6
"""Narrowest box side (px) accepted: below it the box area underflows towards 0 (a 1e-300 px box)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Suffixes of image files looked for beside annotations (YOLO image sizes)."""


@dataclass(slots=True)
class ObjectBox:
    """One object in original-image pixels (continuous coordinates, see module docstring).

    Attributes:
        image: image identifier (file name, or the record's image id).
        label: class name (or id as text); ``None`` when unknown.
        x0, y0, x1, y1: box corners in px, ``0 <= x0 < x1 <= image_w``.
        image_w, image_h: original image size in px.
        mask_area: pixel area of the object's mask when known (COCO ``area`` of a
            segmented object, mask PNGs), else ``None``.
    """

    image: str
    label: str | None
    x0: float
    y0: float
    x1: float
    y1: float
    image_w: float
    image_h: float
    mask_area: float | None = None

    @property
    def width(self) -> float:
        """Box width ``x1 - x0`` in original image px."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Box height ``y1 - y0`` in original image px."""
        return self.y1 - self.y0


@dataclass
class Annotations:
    """What :func:`read_annotations` found.

    Attributes:
        boxes: the valid objects.
        skipped: malformed records (and unreadable files) skipped under ``skip_bad``.
        source: the path that was read and its format, for reports.
        notes: remarks for the user (one per skipped record, empty masks, ...).
        format: the format that was read (a key of :data:`~erf.objects.readers.registry.READERS`).
    """

    boxes: list[ObjectBox]
    skipped: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)
    format: str = ""


class Collector:
    """Collect boxes; turn record errors into skips (``skip_bad``) or raise them."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.boxes: list[ObjectBox] = []
        self.skipped = 0
        self.excluded = 0  # objects left out on purpose (exclude_difficult), not malformed
        self.crowd = 0  # COCO iscrowd objects kept (each box holds a group of objects)
        self.crowd_excluded = 0  # COCO iscrowd objects left out (exclude_crowd)
        self.notes: list[str] = []

    def bad(self, message: str) -> None:
        """Record a malformed record: raise :class:`AnnotationError`, or count and note it under ``skip_bad``.

        Messages are cut at 1000 characters (a hostile file's value is quoted, not dumped)."""
        if len(message) > 1000:
            message = message[:997] + "..."
        if not self.skip_bad:
            raise AnnotationError(message)
        self.skipped += 1
        if len(self.notes) < 20:
            self.notes.append(f"skipped: {message}")
        elif len(self.notes) == 20:
            self.notes.append("skipped: ... (further skipped records not listed)")

    def add(self, where: str, image: str, label: str | None, x0: Any, y0: Any, x1: Any, y1: Any,
            image_w: Any, image_h: Any, mask_area: Any = None) -> None:
        """Validate and append one box; ``where`` names the file and record for messages."""
        if isinstance(label, str) and not _is_unicode(label):
            shown = label.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:60]
            self.bad(f"{where}: label '{shown}' is not valid Unicode text (a lone surrogate, which no output can "
                     "encode)")
            return
        try:
            if any(isinstance(v, bool) for v in (x0, y0, x1, y1, image_w, image_h)):
                raise TypeError("a JSON true/false is not a coordinate")
            x0f, y0f, x1f, y1f, w, h = float(x0), float(y0), float(x1), float(y1), float(image_w), float(image_h)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
            shown = repr([x0, y0, x1, y1, image_w, image_h])
            self.bad(f"{where}: non-numeric box or image size {shown if len(shown) <= 120 else shown[:117] + '...'}")
            return
        problem = box_problem(x0f, y0f, x1f, y1f, w, h)
        if problem:
            self.bad(f"{where}: {problem}")
            return
        area = None
        if mask_area is not None:
            try:
                area = float(mask_area)
            except (TypeError, ValueError, OverflowError):
                self.bad(f"{where}: non-numeric area {repr(mask_area)[:60]}")
                return
            if not math.isfinite(area) or area <= 0:
                self.bad(f"{where}: area {mask_area!r} is not positive")
                return
        self.boxes.append(ObjectBox(image, label, max(0.0, x0f), max(0.0, y0f), min(w, x1f), min(h, y1f),
                                    w, h, area))


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogate, as ``json`` makes of ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def box_problem(x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> str | None:
    """Why a box ``(x0, y0, x1, y1)`` in a ``w x h`` image is invalid, or ``None``."""
    finite = math.isfinite
    if not (finite(x0) and finite(y0) and finite(x1) and finite(y1) and finite(w) and finite(h)):
        return f"non-finite value in box ({x0}, {y0}, {x1}, {y1}) or image size {w}x{h}"
    if w <= 0 or h <= 0:
        return f"image size {w:g}x{h:g} is not positive"
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
        return f"image size {w:g}x{h:g} is outside 1..{MAX_IMAGE_SIDE:,} px a side"
    if x0 < -BORDER_TOLERANCE or y0 < -BORDER_TOLERANCE:
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has a negative corner"
    if x1 > w + BORDER_TOLERANCE or y1 > h + BORDER_TOLERANCE:
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w:g}x{h:g} image"
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        return (f"degenerate box ({x0:g}, {y0:g}, {x1:g}, {y1:g}): width or height below {MIN_BOX_SIDE:g} px "
                "(zero, negative or vanishing)")
    if min(x1, w) <= max(x0, 0.0) or min(y1, h) <= max(y0, 0.0):
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area inside the {w:g}x{h:g} image"
    return None
