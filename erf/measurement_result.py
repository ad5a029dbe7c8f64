"""What a measurement returns: :class:`LayerERF` (one layer's TRF, ERF map and metrics), :class:`Measurement`
(all layers of one model, its ``measure.json`` document) and :class:`Trust` with :func:`trust_notes`: whether the
input frame or canvas padding bounds a layer's ERF, in numbers and in words. :func:`erf.measurement.measure` makes
them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erf.errors import LayerNotFoundError
from erf.metrics import ERFMetrics, level_key
from erf.trf import TRF

SCHEMA = "erf.measure/1"
FRAME_LIMIT = 0.9
"""A layer's ERF is *bounded by the frame* when its r95 reaches this share of the distance from the probed unit's
centre to the outermost pixel row or column of the model input. For a Gaussian ERF (sigma 3-12 px) cut by frames of
many sizes, ``tests/test_trust.py`` checks that every one whose r95 the cut shrinks by more than 5 % is flagged, and
none whose uncut r95 stays below 80 % of the distance to the border."""
PADDING_LIMIT = 0.05
"""A layer's ERF is *decided by the padding* when more than this share of its mass lies on canvas padding: the
images then hold less than 95 % of the mass, so the disk of radius r95 must reach into the padding."""


@dataclass(frozen=True)
class Trust:
    """Whether a layer's ERF is bounded by the input frame or decided by canvas padding (see :data:`FRAME_LIMIT`,
    :data:`PADDING_LIMIT`).

    Attributes:
        r95: px, the radius holding 95 % of the mass.
        border: px, distance from the probed unit's centre to the nearest outermost pixel row or column of the
            model input (negative: the centre lies outside the input).
        padding_mass: share of the mass on canvas padding, in [0, 1] (0 without a canvas).
    """

    r95: float
    border: float
    padding_mass: float

    @property
    def frame_bound(self) -> bool:
        """r95 reaches :data:`FRAME_LIMIT` of the distance to the border: the frame bounds the ERF."""
        return self.border <= 0 or self.r95 >= FRAME_LIMIT * self.border

    @property
    def padding_bound(self) -> bool:
        """More than :data:`PADDING_LIMIT` of the mass lies on canvas padding: the padding decides r95."""
        return self.padding_mass > PADDING_LIMIT

    @property
    def flags(self) -> list[str]:
        """``"frame"`` and/or ``"padding"``, what decides the result (empty: neither)."""
        return [f for f, on in (("frame", self.frame_bound), ("padding", self.padding_bound)) if on]

    def to_json(self) -> dict[str, Any]:
        """The layer's ``trust`` entry of ``measure.json``."""
        return {"r95_over_border": self.r95 / self.border if self.border > 0 else None, "border_px": self.border,
                "padding_mass": self.padding_mass, "frame_bound": self.frame_bound,
                "padding_bound": self.padding_bound, "frame_limit": FRAME_LIMIT, "padding_limit": PADDING_LIMIT}


def trust_of(metrics: ERFMetrics, center: Sequence[float], shape: Sequence[int]) -> Trust:
    """The :class:`Trust` of a layer's metrics, its unit centre ``(cy, cx)`` (px) and the ``(H, W)`` input."""
    cy, cx = float(center[0]), float(center[1])
    border = min(cy, shape[0] - 1 - cy, cx, shape[1] - 1 - cx)
    return Trust(float(metrics.radius[0.95]), float(border), float(metrics.clipped_fraction))


@dataclass(repr=False)
class LayerERF:
    """TRF and ERF of one layer.

    Attributes:
        name: stable layer name; ``path``: module path.
        trf: theoretical receptive field at the probe input size.
        unit: ``(i, j)`` probed unit; ``unit_rule``: how it was chosen.
        sum_map: ``(H, W)`` float64, sum over images and input channels of the probe's map.
        group_maps, group_counts: ``(G, H, W)`` / ``(G,)`` partial sums for the bootstrap.
        images: images summed.
        metrics: :class:`~erf.metrics.ERFMetrics` of ``sum_map``.
        ci: ``{metric key: (low, high)}`` 95 % bootstrap intervals over images.
        trust: whether the frame or the canvas padding decides the ERF (:class:`Trust`).
    """

    name: str
    path: str
    trf: TRF
    unit: tuple[int, int]
    unit_rule: str
    sum_map: np.ndarray
    group_maps: np.ndarray
    group_counts: np.ndarray
    images: int
    metrics: ERFMetrics | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    trust: Trust | None = None

    def __repr__(self) -> str:
        trf = "global" if self.trf.is_global else f"{self.trf.size[0]} px"
        m = self.metrics
        erf = f"r50={m.radius[0.5]:.1f} px, r95={m.radius[0.95]:.1f} px" if m else "no metrics"
        flags = f", bounded by {' and '.join(self.trust.flags)}" if self.trust and self.trust.flags else ""
        return (f"LayerERF({self.name!r}, module={self.path!r}, TRF {trf}, unit={self.unit}, {erf}, "
                f"{self.images} images, map {self.sum_map.shape[0]}x{self.sum_map.shape[1]}{flags})")

    @property
    def center(self) -> tuple[float, float]:
        """Input-pixel centre of the probed unit's TRF."""
        return self.trf.center(self.unit)

    def to_json(self, map_path: str | None) -> dict[str, Any]:
        """The layer's entry of ``measure.json`` (schema ``erf.measure/1``)."""
        m = self.metrics
        assert m is not None
        erf = {
            "area_ratio": {level_key(t): v for t, v in m.area_ratio.items()},
            "area_ratio_flagged": [level_key(t) for t in m.area_ratio_flagged],
            "square_side": {level_key(q): v for q, v in m.square_side.items()},
            "radius": {level_key(q): v for q, v in m.radius.items()},
            "sigma": list(m.sigma),
            "clipped_fraction": m.clipped_fraction,
            "erf_over_trf": m.erf_over_trf,
            "ci95": {k: list(v) for k, v in sorted(self.ci.items())},
        }
        return {
            "name": self.name,
            "module": self.path,
            "feature_size": list(self.trf.feature_size) if self.trf.feature_size else None,
            "unit": list(self.unit),
            "unit_rule": self.unit_rule,
            "trf": self.trf.to_json(self.unit),
            "erf": erf,
            "images": self.images,
            "trust": self.trust.to_json() if self.trust else None,
            "map": map_path,
        }


@dataclass(repr=False)
class Measurement:
    """Result of :func:`measure` for one model.

    Attributes:
        layers: one :class:`LayerERF` per requested layer, in request order.
        images: images used; ``input_size``: ``(H, W)`` fed to the model;
        image_size: ``(h, w)`` of the images before canvas embedding;
        outside: ``(H, W)`` bool mask of canvas padding, or ``None``.
        settings: probe, data, fill, seed... as given; ``notes``: remarks for the user.
        preprocessing: how the images were brought to the input: ``{"kind": "none"}``, a canvas
            (``{"kind": "canvas", "source_size", "canvas", "fill"}``) or the caller's resize
            (:meth:`erf.data.Preprocessing.to_json`).
    """

    layers: list[LayerERF]
    images: int
    input_size: tuple[int, int]
    image_size: tuple[int, int]
    outside: np.ndarray | None
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})

    def __repr__(self) -> str:
        names = ", ".join(layer.name for layer in self.layers[:6]) + (", ..." if len(self.layers) > 6 else "")
        flagged = [layer.name for layer in self.layers if layer.trust and layer.trust.flags]
        warn = f", {len(flagged)} bounded by frame or padding" if flagged else ""
        return (f"Measurement({len(self.layers)} layers [{names}], {self.images} images, input "
                f"{self.input_size[0]}x{self.input_size[1]}, images {self.preprocessing.get('kind', 'none')}"
                f"{warn}, {len(self.notes)} notes)")

    def layer(self, name: str) -> LayerERF:
        """The layer called ``name`` (stable name or module path).

        Raises:
            LayerNotFoundError: no measured layer of that name (also a ``KeyError``); the message lists them.
        """
        for layer in self.layers:
            if layer.name == name or layer.path == name:
                return layer
        raise LayerNotFoundError(f"no measured layer {name!r}; measured: {_names(self.layers)}")

    def to_json(self, map_paths: dict[str, str] | None = None) -> dict[str, Any]:
        """The ``measure.json`` document (schema ``erf.measure/1``, see ``erf/schemas``)."""
        return {
            "schema": SCHEMA,
            **{k: self.settings.get(k) for k in ("checkpoint", "model", "probe", "data")},
            "settings": {k: v for k, v in self.settings.items() if k not in ("checkpoint", "model", "probe", "data")},
            "images": self.images,
            "input_size": list(self.input_size),
            "image_size": list(self.image_size),
            "preprocessing": dict(self.preprocessing),
            "notes": list(self.notes),
            "layers": [layer.to_json((map_paths or {}).get(layer.name)) for layer in self.layers],
        }


def _names(layers: Sequence[LayerERF]) -> str:
    names = [layer.name for layer in layers]
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])} and {len(names) - 3} more"


def _range(values: Sequence[float], unit: str = " px", digits: int = 1) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}{unit}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else \
        f"{lo:.{digits}f}-{hi:.{digits}f}{unit}"


def trust_notes(layers: Sequence[LayerERF], input_size: Sequence[int], image_size: Sequence[int],
                fill: str = "zero") -> list[str]:
    """In words, the layers whose ERF the frame bounds or the canvas padding decides (:class:`Trust`), and what to
    do: at most two notes (one per cause), naming the layers."""
    out = []
    framed = [layer for layer in layers if layer.trust and layer.trust.frame_bound]
    padded = [layer for layer in layers if layer.trust and layer.trust.padding_bound]
    size = f"{input_size[0]}x{input_size[1]}"
    if framed:
        r95 = _range([layer.trust.r95 for layer in framed if layer.trust])
        border = _range([max(layer.trust.border, 0.0) for layer in framed if layer.trust])
        out.append(f"bounded by the frame: {_names(framed)}: r95 ({r95}) reaches the border of the {size} input "
                   f"({border} from the unit's centre), so the ERF is cut by the frame and r95 is a lower bound, "
                   "not the ERF's size; to see it whole give a larger --input-size: photos (--data folder:DIR) "
                   "are then loaded at that size, fixed-size images pasted on a canvas whose padding share is "
                   "reported")
    if padded:
        share = _range([100 * layer.trust.padding_mass for layer in padded if layer.trust], unit=" %", digits=0)
        what = "zeros of the model's input space, the data-set mean colour" if fill == "zero" else \
            "each image's mean colour"
        out.append(f"decided by the padding: {_names(padded)}: {share} of the ERF mass lies on the canvas padding "
                   f"around the {image_size[0]}x{image_size[1]} images (filled with {what}), so r95 describes the "
                   "model's response to that flat fill more than to the images; without --input-size, models with "
                   "a known input size get images resized to it (no padding)")
    return out
