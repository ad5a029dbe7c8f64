"""Paired comparison of the TRF and ERF of two or more models, layer by layer: the heart of ``erf compare``.

Every model sees the same images (``data``), so the ERF maps are *paired*:
image ``n`` of model A and image ``n`` of model B. With ``N <= groups`` (64)
images, :func:`erf.measure` keeps one map per image, and each paired
sample is one image; with more images, image ``n`` goes into group
``n mod groups`` for every model alike, and each paired sample is one group
(its metric is computed on the group's summed map). ``pairing`` in the report
says which.

For each layer, each metric in :data:`COMPARED_METRICS` and each model ``k``
after the first (the *reference*):

* ``estimate``: metric of model ``k``'s summed map minus the reference's
  (the numbers ``erf measure`` reports, subtracted);
* ``ci95``: paired percentile bootstrap: the same resampled images for every
  model, the difference recomputed on each resample;
* ``test``: two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`,
  ``zero_method="wilcox"``: zero differences dropped) on the per-sample
  differences; when every difference is zero there is no evidence of a
  difference and ``p = 1``.

>>> import erf
>>> models = [erf.load_checkpoint(name) for name in ("resnet20", "resnet20_cbam")]   # or nn.Modules
>>> result = erf.compare(models, erf.load_source("bundled"), ["stage3"], count=16)
>>> result.difference("stage3", "radius.95").estimate    # px, resnet20_cbam minus resnet20
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from erf.checkpoints import LoadedModel
from erf.data.sources import ImageSet
from erf.errors import InputError, LayerNotFoundError, UnknownNameError
from erf.files.atomic import json_ready
from erf.layers import match_layers
from erf.measurement import chosen_images, lent, measure
from erf.measurement_result import LayerERF, Measurement
from erf.metrics import erf_metrics
from erf.uncertainty import check_resamples, percentile_interval, signed_rank_test

SCHEMA = "erf.compare/1"
COMPARED_METRICS = ("radius.25", "radius.50", "radius.75", "radius.95")
"""Metric keys (see :meth:`erf.metrics.ERFMetrics.scalars`) whose paired differences are tested: the radius curve.
All are shares of each map's own mass, so models of different gradient scale compare fairly; RepLKNet's area
ratio is not scale-free and is reported per model but never tested between models (see
:data:`erf.metrics.RADIUS_LEVELS` for where each metric is comparable)."""
METRIC_NOTES = {
    "radius.25": "core of the ERF; scale-free; hardly depends on the canvas",
    "radius.50": "scale-free; hardly depends on the canvas",
    "radius.75": "scale-free; mildly canvas-dependent when a faint global plateau exists",
    "radius.95": "scale-free but tail-driven: a faint plateau over the canvas (a global gate) grows it with the "
                 "canvas, so compare it only at one canvas size",
}
"""Where each tested metric is and is not comparable (written into ``compare.json``)."""
TEST_NAME = "wilcoxon-signed-rank"
TEST_DESCRIPTION = ("two-sided Wilcoxon signed-rank test on the paired per-sample differences "
                    "(scipy.stats.wilcoxon, zero_method='wilcox'); p = 1 when every difference is zero")
ALPHA = 0.05


@dataclass
class ModelInfo:
    """One compared model.

    Attributes:
        label: unique display label (the registry name or file stem, ``#2`` appended to repeats).
        letter: ``A``, ``B``... used in the terminal table.
        spec: the checkpoint spec or file it came from; ``name``: architecture name.
        trained: ``False`` for a random initialisation, ``None`` when not recorded (see ``LoadedModel.trained``).
        accuracy: test accuracy in [0, 1], or ``None`` when unknown.
        accuracy_source: ``"metadata"`` (the checkpoint's ``best_test_accuracy``), ``"evaluated"`` or ``None``.
        notes: remarks from loading.
    """

    label: str
    letter: str
    spec: str
    name: str
    trained: bool | None
    accuracy: float | None = None
    accuracy_source: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The model's entry of ``compare.json``."""
        return {"label": self.label, "letter": self.letter, "spec": self.spec, "model": self.name,
                "trained": self.trained, "accuracy": _finite(self.accuracy),
                "accuracy_source": self.accuracy_source, "notes": list(self.notes)}


@dataclass
class Difference:
    """Paired difference of one metric at one layer: ``model`` minus ``reference``.

    Attributes:
        layer, metric: layer name and metric key (``radius.95``: px).
        model, reference: model labels.
        estimate: metric of ``model``'s summed map minus the reference's.
        ci: 95 % paired bootstrap interval of ``estimate`` (``None`` without bootstrap).
        pairs: paired samples (images, or groups when there are more images than groups).
        mean, median: mean and median of the per-sample differences.
        statistic, p_value: Wilcoxon signed-rank statistic and two-sided p-value.
        nonzero: samples with a non-zero difference (the ones the test ranks).
    """

    layer: str
    metric: str
    model: str
    reference: str
    estimate: float
    ci: tuple[float, float] | None
    pairs: int
    mean: float
    median: float
    statistic: float | None
    p_value: float | None
    nonzero: int

    @property
    def significant(self) -> bool:
        """True when the test rejects "no difference" at the 5 % level."""
        return self.p_value is not None and self.p_value < ALPHA

    def to_json(self) -> dict[str, Any]:
        """The difference's entry of ``compare.json`` (estimate, CI, test)."""
        return {
            "metric": self.metric, "model": self.model, "reference": self.reference,
            "estimate": _finite(self.estimate),
            "ci95": [_finite(self.ci[0]), _finite(self.ci[1])] if self.ci else None,
            "pairs": self.pairs, "mean": _finite(self.mean), "median": _finite(self.median),
            "test": {"name": TEST_NAME, "statistic": _finite(self.statistic), "p_value": _finite(self.p_value),
                     "nonzero": self.nonzero},
            "significant": self.significant,
        }


@dataclass
class LayerComparison:
    """One layer of every model (``erfs[k]`` belongs to ``models[k]``) and its paired differences."""

    name: str
    erfs: list[LayerERF]
    differences: list[Difference]


@dataclass
class Comparison:
    """Result of :func:`compare`.

    Attributes:
        models: compared models, the reference first.
        layers: one :class:`LayerComparison` per layer, in request order.
        measurements: the per-model :class:`~erf.measurement_result.Measurement` (same images, same settings).
        images: images used; ``input_size``/``image_size``: ``(H, W)`` canvas and image sizes.
        pairing: ``"image"`` (one paired sample per image) or ``"group"`` (per bootstrap group).
        samples: paired samples per layer.
        settings: probe, data, seed, bootstrap...; ``notes``: remarks for the user.
        figures: relative paths of written figures (filled by the command line).
    """

    models: list[ModelInfo]
    layers: list[LayerComparison]
    measurements: list[Measurement]
    images: int
    input_size: tuple[int, int]
    image_size: tuple[int, int]
    pairing: str
    samples: int
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        labels = ", ".join(m.label for m in self.models)
        layers = ", ".join(lc.name for lc in self.layers[:6]) + (", ..." if len(self.layers) > 6 else "")
        return (f"Comparison([{labels}], {len(self.layers)} layers [{layers}], {self.images} images paired per "
                f"{self.pairing}, input {self.input_size[0]}x{self.input_size[1]}, {len(self.notes)} notes)")

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How the images were brought to the input (the same for every model, see ``Measurement.preprocessing``)."""
        return self.measurements[0].preprocessing

    @property
    def outside(self) -> np.ndarray | None:
        """``(H, W)`` bool mask of canvas padding, or ``None``."""
        return self.measurements[0].outside

    def layer(self, name: str) -> LayerComparison:
        """The layer called ``name``.

        Raises:
            LayerNotFoundError: no compared layer of that name (also a ``KeyError``); the message lists them.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerNotFoundError(f"no compared layer {name!r}; compared: {', '.join(lc.name for lc in self.layers)}")

    def difference(self, layer: str, metric: str, model: str | int = 1) -> Difference:
        """The difference of ``metric`` at ``layer`` for ``model`` (label or index >= 1) minus the reference."""
        label = self.models[model].label if isinstance(model, int) else model
        for d in self.layer(layer).differences:
            if d.metric == metric and d.model == label:
                return d
        raise UnknownNameError(f"no difference of {metric!r} for {label!r} at layer {layer!r}; metrics: "
                               f"{', '.join(COMPARED_METRICS)}; models: {', '.join(m.label for m in self.models[1:])}")

    def to_json(self) -> dict[str, Any]:
        """The ``compare.json`` document (schema ``erf.compare/1``, see ``erf/schemas``)."""
        return {
            "schema": SCHEMA,
            "data": self.settings.get("data"),
            "probe": self.settings.get("probe"),
            "settings": {k: v for k, v in sorted(self.settings.items()) if k not in ("data", "probe")},
            "images": self.images,
            "input_size": list(self.input_size),
            "image_size": list(self.image_size),
            "preprocessing": dict(self.preprocessing),
            "reference": self.models[0].label,
            "metrics": list(COMPARED_METRICS),
            "metric_notes": dict(METRIC_NOTES),
            "pairing": {"unit": self.pairing, "samples": self.samples,
                        "description": ("one paired sample per image (same images for every model)"
                                        if self.pairing == "image" else
                                        f"{self.samples} paired groups: image n in group n mod {self.samples} for "
                                        "every model; per-group metrics of the group's summed map")},
            "test": {"name": TEST_NAME, "description": TEST_DESCRIPTION, "alpha": ALPHA,
                     "ci": "95% paired percentile bootstrap (same resampled images for every model)"},
            "models": [m.to_json() for m in self.models],
            "layers": [
                {"name": lc.name,
                 "models": [{"label": m.label, **_layer_json(e)} for m, e in zip(self.models, lc.erfs)],
                 "differences": [d.to_json() for d in lc.differences]}
                for lc in self.layers
            ],
            "figures": dict(self.figures) or None,
            "notes": list(self.notes),
        }


def _layer_json(layer: LayerERF) -> dict[str, Any]:
    doc = layer.to_json(None)
    doc.pop("map", None)
    doc.pop("name", None)
    return json_ready(doc)


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- statistics
def sample_metrics(layer: LayerERF, outside: np.ndarray | None, keys: Sequence[str] = COMPARED_METRICS,
                   ) -> dict[str, np.ndarray]:
    """Per-sample metrics of ``layer``: one value per non-empty group map (per image when ``N <= G``).

    Returns:
        ``{metric key: (S,) float64}``.
    """
    side = layer.trf.side
    keep = layer.group_counts > 0
    rows = [erf_metrics(m, int(c), layer.center, outside, side).scalars()
            for m, c in zip(layer.group_maps[keep], layer.group_counts[keep])]
    return {k: np.array([r.get(k, math.nan) for r in rows], dtype=np.float64) for k in keys}


def _paired_bootstrap(erfs: Sequence[LayerERF], outside: np.ndarray | None, resamples: int, seed: int,
                      ) -> list[dict[str, np.ndarray]]:
    """Draws of every metric for every model on the same resampled groups: ``[{key: (B,)}]`` per model."""
    keep = erfs[0].group_counts > 0
    g = int(keep.sum())
    draws: list[dict[str, list[float]]] = [{} for _ in erfs]
    if g < 2 or resamples <= 0:
        return [{} for _ in erfs]
    rng = np.random.default_rng(seed)
    stats = []
    for e in erfs:
        side = e.trf.side
        stats.append((e.group_maps[keep], e.group_counts[keep], e.center, side))
    for _ in range(resamples):
        idx = rng.integers(0, g, size=g)
        for k, (maps, counts, center, side) in enumerate(stats):
            values = erf_metrics(maps[idx].sum(axis=0), int(counts[idx].sum()), center, outside, side).scalars()
            for key, v in values.items():
                draws[k].setdefault(key, []).append(v)
    return [{key: np.asarray(v) for key, v in d.items()} for d in draws]


def compare_layer(name: str, erfs: Sequence[LayerERF], labels: Sequence[str], outside: np.ndarray | None,
                  bootstrap: int = 200, seed: int = 0) -> LayerComparison:
    """Bootstrap CIs of every model's metrics (set on ``erfs[k].ci``) and the paired differences to ``erfs[0]``."""
    draws = _paired_bootstrap(erfs, outside, bootstrap, seed)
    for e, d in zip(erfs, draws):
        e.ci = {key: percentile_interval(v) for key, v in d.items()}
    samples = [sample_metrics(e, outside) for e in erfs]
    diffs = []
    for k in range(1, len(erfs)):
        metrics_k, metrics_0 = erfs[k].metrics, erfs[0].metrics
        assert metrics_k is not None and metrics_0 is not None  # measured layers carry their metrics
        point_k, point_0 = metrics_k.scalars(), metrics_0.scalars()
        for key in COMPARED_METRICS:
            if key not in point_k or key not in point_0:
                continue
            per = samples[k][key] - samples[0][key]
            ci = percentile_interval(draws[k][key] - draws[0][key]) if key in draws[k] and key in draws[0] else None
            stat, p, nonzero = signed_rank_test(per)
            diffs.append(Difference(name, key, labels[k], labels[0], point_k[key] - point_0[key], ci,
                                    int(per.size), float(np.mean(per)) if per.size else math.nan,
                                    float(np.median(per)) if per.size else math.nan, stat, p, nonzero))
    return LayerComparison(name, list(erfs), diffs)


# ----------------------------------------------------------------------------- models
def _labels(loaded: Sequence[LoadedModel], specs: Sequence[str]) -> list[str]:
    out: list[str] = []
    for lm, spec in zip(loaded, specs):
        base = lm.name
        path = Path(spec)
        if lm.name == "custom" or (path.suffix and not spec.startswith(("torchvision:", "timm:"))):
            base = path.stem if path.suffix else lm.name
        label, k = base, 2
        while label in out:
            label, k = f"{base}#{k}", k + 1
        out.append(label)
    return out


def as_loaded(model: LoadedModel | nn.Module) -> LoadedModel:
    """``model`` as a :class:`~erf.checkpoints.LoadedModel`; an ``nn.Module`` given in code is labelled by its class."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        return LoadedModel(model, type(model).__name__, f"{type(model).__name__} (given as a module)",
                           trained=None, notes=["given as an nn.Module: whether it is trained is not known"])
    raise InputError(f"compare takes nn.Module or LoadedModel objects, got {type(model).__name__} "
                     "(load specs first with erf.load_checkpoint)")


def compare(
    models: Sequence[LoadedModel | nn.Module],
    images: ImageSet | torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    count: int | None = None,
    input_size: Sequence[int] | None = None,
    device: str = "cpu",
    seed: int = 0,
    bootstrap: int = 200,
    probe: str = "gradient",
    probe_options: dict[str, Any] | None = None,
    fill: str = "zero",
    batch_size: int = 32,
    groups: int = 64,
    all_layers: bool = False,
    evaluate_data: ImageSet | None = None,
    labels: Sequence[str] | None = None,
    progress: bool = False,
    preprocessing: dict[str, Any] | None = None,
    precision: str = "fp32",
) -> Comparison:
    """Compare the TRF and ERF of ``models`` layer by layer on the same images.

    Args:
        models: two or more ``nn.Module`` or :class:`~erf.checkpoints.LoadedModel` (from
            :func:`~erf.checkpoints.load_checkpoint`); the first is the reference. Each is given back as it
            was given (training flags, devices: :func:`erf.measurement.lent`).
        images: an :class:`~erf.data.ImageSet` or a tensor ``(N, C, h, w)`` of normalised model input. Required.
        layers: stable layer names every model has (default: shared ``stem``/``stageN``;
            ``all_layers``: every shared block).
        count: use the first ``count`` images (default ``None``: every image given); recorded in the settings.
        input_size: ``(H, W)`` px canvas the images are embedded in (default: image size).
        device: ``cpu``, ``cuda``...
        seed: bootstrap seed.
        bootstrap: paired bootstrap resamples (0: no CIs).
        probe, probe_options, fill, batch_size, groups: as in :func:`erf.measure`.
        evaluate_data: evaluate test accuracy on these labelled images instead of reading it from
            checkpoint metadata.
        labels: display labels (default: model names, made unique).
        progress: show a progress bar per model (stderr).
        preprocessing: how the images were prepared (recorded as in :func:`erf.measure`).
        precision: ``fp32`` (default) or ``bf16``, as in :func:`erf.measure` (recorded in the settings).

    Returns:
        A :class:`Comparison`: per layer each model's :class:`~erf.measurement_result.LayerERF` and the paired
        :class:`Difference` of every metric in :data:`COMPARED_METRICS` (px) to the reference.

    Raises:
        InputError: fewer than two models, labels not unique, an invalid option.
        LayerError: a requested layer is missing from some model (message lists the shared names).
    """
    if len(models) < 2:
        raise InputError("compare needs two or more models")
    check_resamples(bootstrap)
    loaded = [as_loaded(m) for m in models]
    infos = _model_infos(loaded, labels)
    names = [info.label for info in infos]
    nets = [lm.model for lm in loaded]
    chosen = match_layers(nets, layers, names, all_layers)
    data = chosen_images(images, count)
    notes = _accuracies(infos, loaded, evaluate_data, device)
    measurements = _measure_models(infos, loaded, data, chosen, notes, progress, probe=probe,
                                   probe_options=probe_options, input_size=input_size, fill=fill,
                                   batch_size=batch_size, device=device, groups=groups, seed=seed,
                                   preprocessing=preprocessing, precision=precision)
    comparisons = _compare_layers(chosen, measurements, names, bootstrap, seed, progress)
    first = measurements[0]
    pairing, samples = _pairing(first, notes)
    settings = {"probe": probe, "probe_options": dict(probe_options or {}), "fill": fill, "batch_size": batch_size,
                "bootstrap": bootstrap, "groups": groups, "seed": seed, "precision": precision, "count": count,
                "data": data.description,
                "device": str(device)}
    return Comparison(infos, comparisons, measurements, first.images, first.input_size, first.image_size,
                      pairing, samples, settings, notes)


def _model_infos(loaded: Sequence[LoadedModel], labels: Sequence[str] | None) -> list[ModelInfo]:
    """One :class:`ModelInfo` per model, lettered ``A``, ``B``... and labelled (``labels`` or unique names).

    Raises:
        InputError: labels that are not one per model or not unique.
    """
    specs = [lm.source for lm in loaded]
    names = list(labels) if labels else _labels(loaded, specs)
    if len(names) != len(loaded) or len(set(names)) != len(names):
        raise InputError(f"labels must be unique, one per model: {names}")
    return [ModelInfo(label, chr(ord("A") + k) if k < 26 else str(k + 1), spec, lm.name, lm.trained,
                      notes=list(lm.notes))
            for k, (label, spec, lm) in enumerate(zip(names, specs, loaded))]


def _accuracies(infos: Sequence[ModelInfo], loaded: Sequence[LoadedModel], evaluate_data: ImageSet | None,
                device: str) -> list[str]:
    """Fill every model's test accuracy (in [0, 1]): evaluated on ``evaluate_data`` when given (each model lent
    and given back, :func:`~erf.measurement.lent`), else read from its checkpoint metadata. Returns the notes."""
    if evaluate_data is None:
        for info, lm in zip(infos, loaded):
            info.accuracy = lm.accuracy
            info.accuracy_source = "metadata" if info.accuracy is not None else None
        return []
    from erf.training import evaluate

    for info, lm in zip(infos, loaded):
        with lent(lm.model):  # evaluate moves it to the device in eval mode
            info.accuracy = evaluate(lm.model, evaluate_data, device=device).accuracy
        info.accuracy_source = "evaluated"
    return [f"accuracy evaluated on {evaluate_data.description}"]


def _measure_models(infos: Sequence[ModelInfo], loaded: Sequence[LoadedModel], data: ImageSet, chosen: list[str],
                    notes: list[str], progress: bool, **options: Any) -> list[Measurement]:
    """:func:`~erf.measurement.measure` of every model on the same images ``data`` and layers ``chosen``, each
    with its own input normalisation and no bootstrap of its own (the paired bootstrap comes after); ``options``
    are :func:`compare`'s measurement options. Appends to ``notes`` every model's notes (labelled) but those of
    the images, then the images' notes once."""
    measurements = []
    for info, lm in zip(infos, loaded):
        result = measure(lm.model, data, chosen, normalization=lm.normalization, bootstrap=0,
                         progress=f"{info.letter}: {info.label}" if progress else False,
                         info={"checkpoint": info.spec, "model": info.name}, **options)
        measurements.append(result)
        notes.extend(f"{info.label}: {n}" for n in result.notes if n not in data.notes)
    notes.extend(data.notes)
    return measurements


def _compare_layers(chosen: Sequence[str], measurements: Sequence[Measurement], labels: Sequence[str],
                    bootstrap: int, seed: int, progress: bool) -> list[LayerComparison]:
    """:func:`compare_layer` for every chosen layer of the per-model measurements (same order of layers)."""
    from tqdm import tqdm

    outside = measurements[0].outside
    out = []
    for k, name in enumerate(tqdm(chosen, desc="paired bootstrap", unit="layer", dynamic_ncols=True,
                                  disable=not progress or bootstrap == 0)):
        out.append(compare_layer(name, [m.layers[k] for m in measurements], labels, outside, bootstrap, seed))
    return out


def _pairing(first: Measurement, notes: list[str]) -> tuple[str, int]:
    """``("image" or "group", paired samples)`` of a comparison whose first measurement is ``first``; notes when
    samples are groups or too few for the test."""
    g = int((first.layers[0].group_counts > 0).sum())
    pairing = "image" if g == first.images else "group"
    if pairing == "group":
        notes.append(f"{first.images} images > {g} groups: paired samples are groups (image n in group n mod {g}), "
                     "each metric computed on the group's summed map")
    if g < 6:
        notes.append(f"only {g} paired samples: the two-sided signed-rank test cannot reach p < 0.05 with fewer "
                     "than 6 (use more --images)")
    return pairing, g
