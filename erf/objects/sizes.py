"""Object sizes in model-input pixels (:class:`ObjectSizes`), their summaries and the ``erf.objects/1``
document (:meth:`ObjectSizes.to_json` / :meth:`ObjectSizes.from_json`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erf.errors import InputError
from erf.objects.boxes import Annotations, ObjectBox
from erf.objects.preprocess import Preprocess

SCHEMA = "erf.objects/1"
"""Schema name of the object-size document."""
QUANTILES = (5, 25, 50, 75, 95)
"""Percentiles of the summaries."""
MAX_HISTOGRAM_COUNTS = 20_000_000
"""Counts of all per-class histograms together at most (3 measures x classes x bins): 65,535 classes x 20 bins
are 3.9 million; 20,000 classes x 10,000 bins (6e8, hours and gigabytes of JSON) are refused, naming ``bins``."""
SIZE_MEASURES = (("sqrt_area", "sqrt(area) px"), ("longer_side", "longer side px"), ("relative", "relative size"))
"""The size measures of :class:`ObjectSizes`: attribute and label (px in model input; relative: side / image side)."""


@dataclass
class ObjectSizes:
    """Object sizes in model-input px, one entry per object.

    Attributes:
        sqrt_area: sqrt of the object's area in px (box area, or mask area with
            ``area="mask"`` where known), ``(N,)`` float64.
        longer_side: the box's longer side in px, ``(N,)``.
        relative: ``sqrt_area / sqrt(input W * input H)``: object side over image side, ``(N,)``.
        labels: class name per object (``None`` where unknown).
        is_estimate: True when the sizes are estimated (no annotations), e.g. CIFAR-10.
        method: how the sizes were obtained (``"annotations (box area)"``, ``"border-contrast"``, ...).
        boxes: ``(N, 4)`` boxes in model-input px.
        dropped: objects cut away entirely by the preprocessing (not in the arrays).
    """

    sqrt_area: np.ndarray
    longer_side: np.ndarray
    relative: np.ndarray
    labels: list[str | None]
    is_estimate: bool
    method: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    dropped: int = 0
    source: str = ""
    format: str = ""
    preprocess: Preprocess | None = None
    area: str = "box"
    skipped: int = 0
    images: int | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(len(self.sqrt_area))

    def to_json(self, bins: int = 20, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``erf.objects/1`` document (see ``erf/schemas/objects.schema.json``).

        Args:
            bins: histogram bins of the summary (:func:`summarize`).
            extra: further top-level fields (an estimate's ``data`` and ``estimator_error``).
        """
        notes = list(self.notes)
        if self.dropped:
            notes.append(f"{self.dropped} object(s) lie entirely outside the crop and are not counted")
        return {
            "schema": SCHEMA, "preprocess": (self.preprocess or Preprocess()).to_json(), "area": self.area,
            "source": self.source, "format": self.format, "skipped": self.skipped, "images": self.images,
            "is_estimate": self.is_estimate, "method": self.method, "summary": summarize(self, bins),
            "notes": notes, **(extra or {}),
            "sizes": {
                "sqrt_area": np.asarray(self.sqrt_area, dtype=np.float64).tolist(),
                "longer_side": np.asarray(self.longer_side, dtype=np.float64).tolist(),
                "relative": np.asarray(self.relative, dtype=np.float64).tolist(),
                "labels": list(self.labels),
                "boxes": np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4).tolist()},
        }

    @classmethod
    def from_json(cls, doc: Any, source: str = "") -> ObjectSizes:
        """Sizes from an ``erf.objects/1`` document, or from ``{"objects": [{"sqrt_area", "longer_side"}, ...]}``.

        Raises:
            InputError: ``doc`` holds no per-object sizes.
        """
        objs = (doc.get("objects") or doc.get("sizes")) if isinstance(doc, dict) else None
        if isinstance(objs, list) and objs and isinstance(objs[0], dict) and "sqrt_area" in objs[0]:
            sa = np.array([o["sqrt_area"] for o in objs], dtype=np.float64)
            ls = np.array([o.get("longer_side", o["sqrt_area"]) for o in objs], dtype=np.float64)
            labels: list[str | None] = [o.get("label") for o in objs]
        elif isinstance(objs, dict) and "sqrt_area" in objs:
            sa = np.asarray(objs["sqrt_area"], dtype=np.float64)
            ls = np.asarray(objs.get("longer_side", sa), dtype=np.float64)
            labels = list(objs.get("labels") or [None] * len(sa))
        else:
            raise InputError(f"{source or 'document'}: no per-object sizes (expected an `erf objects --json` "
                             "document)")
        for what, values in (("sqrt_area", sa), ("longer_side", ls)):
            if values.ndim != 1 or len(values) != len(sa) or not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise InputError(f"{source or 'document'}: {what} must hold one finite size > 0 per object "
                                 "(NaN, Inf, zero or negative sizes found)")
        relative = np.asarray(objs.get("relative", []) if isinstance(objs, dict) else [], dtype=np.float64)
        boxes = np.asarray(objs.get("boxes", []) if isinstance(objs, dict) else [], dtype=np.float64).reshape(-1, 4)
        return cls(sa, ls, relative, labels, bool(doc.get("is_estimate", False)), str(doc.get("method", "")),
                   boxes, source=source or str(doc.get("source", "")), format=str(doc.get("format", "")),
                   area=str(doc.get("area", "box")), skipped=int(doc.get("skipped", 0) or 0),
                   images=doc.get("images"), notes=list(doc.get("notes") or []))


def object_sizes(boxes: Sequence[ObjectBox], preprocess: Preprocess | None = None, area: str = "box",
                 is_estimate: bool = False, method: str | None = None) -> ObjectSizes:
    """Sizes of annotated objects in the model's input pixels.

    Args:
        boxes: objects in original-image px.
        preprocess: the model's preprocessing (default: none, original px).
        area: ``"box"`` (box width x height) or ``"mask"`` (the mask area where
            known, scaled by the resize factors and by the fraction of the box that
            survives the crop; box area elsewhere).
        is_estimate, method: recorded in the result (defaults: False, ``"annotations (<area> area)"``).
    """
    if area not in ("box", "mask"):
        raise InputError(f"area {area!r}: use 'box' or 'mask'")
    preprocess = preprocess or Preprocess()
    keep_sqrt, keep_long, keep_rel, labels, kept = [], [], [], [], []
    dropped = 0
    for b in boxes:
        x0, y0, x1, y1 = preprocess.apply(b)
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            dropped += 1
            continue
        a = w * h
        if area == "mask" and b.mask_area is not None:
            sx = sy = 1.0
            for _, ax, ay, *_ in preprocess.steps(b.image_w, b.image_h):
                sx, sy = sx * ax, sy * ay
            a = b.mask_area * sx * sy * (a / (b.width * b.height * sx * sy))
        iw, ih = preprocess.output_size(b.image_w, b.image_h)
        keep_sqrt.append(math.sqrt(a))
        keep_long.append(max(w, h))
        keep_rel.append(math.sqrt(a) / math.sqrt(iw * ih))
        labels.append(b.label)
        kept.append((x0, y0, x1, y1))
    return ObjectSizes(np.asarray(keep_sqrt, dtype=np.float64), np.asarray(keep_long, dtype=np.float64),
                       np.asarray(keep_rel, dtype=np.float64), labels, is_estimate,
                       method or f"annotations ({area} area)",
                       np.asarray(kept, dtype=np.float64).reshape(-1, 4), dropped, preprocess=preprocess, area=area)


def annotation_sizes(annotations: Annotations, preprocess: Preprocess | None = None, area: str = "box") -> ObjectSizes:
    """:func:`object_sizes` of everything :func:`~erf.objects.readers.read_annotations` found, with its provenance
    (source, format, skipped records, image count, notes)."""
    sizes = object_sizes(annotations.boxes, preprocess, area)
    sizes.source, sizes.format, sizes.skipped = annotations.source, annotations.format, annotations.skipped
    sizes.images = len({b.image for b in annotations.boxes})
    sizes.notes = list(annotations.notes)
    return sizes


def cdf(values: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: sorted ``x`` and ``F(x) = (rank + 1) / N`` (fraction of values <= x)."""
    x = np.sort(np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64))
    return x, np.arange(1, len(x) + 1, dtype=np.float64) / max(len(x), 1)


def _describe(values: np.ndarray, bins: int | np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"count": 0, "mean": None, "quantiles": {str(q): None for q in QUANTILES},
                "histogram": {"edges": [], "counts": []}}
    counts, edges = np.histogram(values, bins=bins)
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.percentile(values, QUANTILES))},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def summarize(sizes: ObjectSizes, bins: int = 20) -> dict[str, Any]:
    """Quantiles (5/25/50/75/95, linear interpolation), mean, count and histogram of each
    size measure, overall and per class (labels ``None`` are grouped as ``"(none)"``).

    Returns:
        ``{"count", "is_estimate", "method", "dropped", "sqrt_area": {...}, "longer_side": {...},
        "relative": {...}, "per_class": {label: {"count", "sqrt_area", "longer_side", "relative"}}}``
        where each measure is ``{"count", "mean", "quantiles": {"5": ..}, "histogram": {"edges", "counts"}}``.
        Per-class histograms share the overall bin edges.
    """
    out: dict[str, Any] = {"count": len(sizes), "is_estimate": bool(sizes.is_estimate), "method": sizes.method,
                           "dropped": int(sizes.dropped)}
    edges = {}
    for key in ("sqrt_area", "longer_side", "relative"):
        out[key] = _describe(getattr(sizes, key), bins)
        edges[key] = np.asarray(out[key]["histogram"]["edges"]) if len(sizes) else bins
    out["per_class"] = _per_class(sizes, edges)
    return out


def _per_class(sizes: ObjectSizes, edges: dict[str, Any]) -> dict[str, Any]:
    """:func:`_describe` of each size measure per label, in one vectorised pass (linear in objects and classes: a
    mask with 65,535 labels, a COCO file with 50,000 categories). Values equal :func:`_describe`'s on each class
    alone (means up to rounding): the same linear-interpolation quantiles, the overall histogram edges."""
    labels = ["(none)" if lab is None else str(lab) for lab in sizes.labels]
    if not labels:
        return {}
    names, group = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    group = group.ravel()
    k = len(names)
    cells = 3 * k * (len(edges["sqrt_area"]) - 1)
    if cells > MAX_HISTOGRAM_COUNTS:
        raise InputError(f"{len(edges['sqrt_area']) - 1}: per-class histograms of {k:,} classes would hold {cells:,} "
                         f"counts (at most {MAX_HISTOGRAM_COUNTS:,}); use fewer bins", param="bins")
    counts = np.bincount(group, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per: dict[str, dict[str, Any]] = {}
    for key in ("sqrt_area", "longer_side", "relative"):
        values = np.asarray(getattr(sizes, key), dtype=np.float64)
        order = np.lexsort((values, group))  # by class, then by value
        ordered = values[order]
        means = np.bincount(group, weights=values, minlength=k) / counts
        quantiles = []
        for q in QUANTILES:  # numpy's "linear" method: virtual index q/100 * (n - 1), then its _lerp
            virtual = (q / 100) * (counts - 1)
            lo = np.floor(virtual).astype(np.int64)
            hi = np.minimum(lo + 1, counts - 1)
            t = virtual - lo
            a, b = ordered[starts + lo], ordered[starts + hi]
            diff = b - a
            quantiles.append(np.where(t >= 0.5, b - diff * (1 - t), a + diff * t))
        e = np.asarray(edges[key], dtype=np.float64)
        nb = len(e) - 1
        slot = np.clip(np.searchsorted(e, values, side="right") - 1, 0, nb - 1)
        inside = (values >= e[0]) & (values <= e[-1])
        hist = np.bincount(group[inside] * nb + slot[inside], minlength=k * nb).reshape(k, nb)
        edge_list = [float(v) for v in e]
        for c, name in enumerate(names.tolist()):
            entry = per.setdefault(name, {"count": int(counts[c])})
            entry[key] = {"count": int(counts[c]), "mean": float(means[c]),
                          "quantiles": {str(q): float(v[c]) for q, v in zip(QUANTILES, quantiles)},
                          "histogram": {"edges": edge_list, "counts": hist[c].tolist()}}
    return {name: per[name] for name in sorted(per)}

