"""What the study knows of each model: its last layers' ERFs (:class:`ModelERF`, measured by
:func:`measure_model`) and its test accuracy (:class:`Accuracy`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from erf.metrics import level_key
from erf.objects.sizes import ObjectSizes
from erf.study.conversion import LEVELS, erf_size, fraction_below

CHANCE_MARGIN = 0.05
"""Models within this of chance accuracy (1 / classes) are flagged as untrained for the verdict."""


@dataclass
class Accuracy:
    """Test accuracy in [0, 1] of ``images`` images; ``correct`` per image when evaluated here."""

    value: float
    images: int
    source: str
    correct: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """The accuracy entry of ``study.json``."""
        return {"value": self.value, "images": self.images, "source": self.source}


@dataclass
class ModelERF:
    """One model's last-layer ERFs and accuracy.

    Attributes:
        label: unique label (the checkpoint spec, or a grid cell's name).
        name: registry name (pairing uses it).
        attention: attention kind or ``None``.
        layers: per layer ``{"name", "trf_side" (None: global), "trf_local_side", "r50", "r95",
            "r50_ci", "r95_ci"}``, last layer last.
        accuracy: test accuracy, if known.
        group: pairing scope (models pair only inside one group, e.g. one grid cell).
        trained: ``False`` for a random initialisation, ``None`` when not recorded (weights from a file).
        classes: number of classes (chance accuracy is ``1 / classes``).
        params: the model's parameter count (its capacity, for the capacity guard).
    """

    label: str
    name: str
    attention: str | None
    layers: list[dict[str, Any]]
    accuracy: Accuracy | None = None
    group: str = ""
    trained: bool | None = True
    classes: int = 10
    params: int | None = None

    @property
    def last(self) -> dict[str, Any]:
        """Metrics of the model's last measured layer."""
        return self.layers[-1]

    def diameter(self, level: float = 0.5) -> tuple[float, float, float]:
        """``(2 r, 2 r_lo, 2 r_hi)`` of the last layer at mass ``level``."""
        k = f"r{level_key(level)}"
        r = self.last[k]
        lo, hi = self.last.get(f"{k}_ci") or (r, r)
        return erf_size(r), erf_size(lo), erf_size(hi)

    def fractions(self, objects: ObjectSizes) -> dict[str, Any]:
        """Fractions of objects below the ERF (50 / 95 % mass, value and CI ends) and below the TRF."""
        out: dict[str, Any] = {}
        for key, values in (("sqrt_area", objects.sqrt_area), ("longer_side", objects.longer_side)):
            row: dict[str, Any] = {}
            for level in LEVELS:
                d, lo, hi = self.diameter(level)
                row[f"below_erf{level_key(level)}"] = {"value": fraction_below(values, d),
                                                       "ci": [fraction_below(values, lo), fraction_below(values, hi)]}
            row["below_trf"] = fraction_below(values, self.last["trf_side"])
            out[key] = row
        return out


def measure_model(model: torch.nn.Module, data: Any, label: str, name: str, attention: str | None,
                  bootstrap: int = 200, seed: int = 0, device: str = "cpu", layers: Sequence[str] | None = None,
                  progress: bool = False, input_size: Sequence[int] | None = None) -> tuple[ModelERF, list[str]]:
    """ERF of the last stage layers of ``model`` over ``data``.

    ``input_size``: ``(H, W)`` canvas the images are embedded in (zero fill) so that an ERF larger than the
    image is not clipped by its border; radii stay in image px (default: the images' own size).
    """
    from erf.layers import study_layers
    from erf.measurement import measure

    res = measure(model, data, list(layers or study_layers(model)), bootstrap=bootstrap, seed=seed, device=device,
                  progress=progress, info={"model": name}, input_size=input_size)
    rows = []
    for layer in res.layers:
        m = layer.metrics
        assert m is not None  # measure() gives every layer its metrics
        row: dict[str, Any] = {"name": layer.name, "trf_side": layer.trf.side,
                               "trf_local_side": max(layer.trf.local_size)}
        for q in LEVELS:
            k = f"r{level_key(q)}"
            row[k] = float(m.radius[q])
            ci = layer.ci.get(f"radius.{level_key(q)}")
            row[f"{k}_ci"] = [float(ci[0]), float(ci[1])] if ci else None
        row["clipped_fraction"] = float(m.clipped_fraction)
        rows.append(row)
    classes = len(getattr(data, "classes", ()) or ()) or 10
    params = int(sum(p.numel() for p in model.parameters()))
    return ModelERF(label, name, attention, rows, classes=classes, params=params), list(res.notes)


def near_chance(m: ModelERF) -> bool:
    """Untrained, or accuracy within :data:`CHANCE_MARGIN` of chance."""
    return m.trained is False or (m.accuracy is not None and m.accuracy.value < 1.0 / m.classes + CHANCE_MARGIN)


def model_json(m: ModelERF, objects: ObjectSizes | None) -> dict[str, Any]:
    """The model's entry of ``study.json`` (ERF diameters with CIs, TRF, accuracy, fractions of objects below)."""
    d50, d95 = m.diameter(0.5), m.diameter(0.95)
    out = {"label": m.label, "name": m.name, "attention": m.attention, "group": m.group, "trained": m.trained,
           "layers": m.layers, "accuracy": m.accuracy.to_json() if m.accuracy else None,
           "erf_diameter50": {"value": d50[0], "ci": [d50[1], d50[2]]},
           "erf_diameter95": {"value": d95[0], "ci": [d95[1], d95[2]]},
           "trf_side": m.last["trf_side"], "trf_local_side": m.last["trf_local_side"]}
    if objects is not None:
        out["fractions"] = m.fractions(objects)
    return out
