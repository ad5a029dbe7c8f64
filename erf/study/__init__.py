"""Hypothesis-2 study: does attention help when the ERF is smaller than the objects?

Two parts share this module:

* the **real-data study** (:func:`study_models`): for each model, the ERF of its last
  spatial layers against an object-size distribution, and the attention gain of
  every (plain, attention) twin pair against the ratio ERF size / object size;
* the **controlled experiment** (:func:`run_controlled`): twins trained on
  :mod:`erf.controlled` data whose object size ``s`` is set by construction, for
  several sizes and seeds, with a regression of the gain on ``log2(ERF / s)``.

Size conventions (all in model-input pixels):

* an ERF of mass radius ``r_q`` (the Euclidean radius around the probed unit's
  centre that holds a fraction ``q`` of the gradient mass, :func:`erf.metrics.mass_radius`)
  is compared with objects as the **diameter** ``2 r_q``; an object is "below" the
  ERF when its size (``sqrt(area)`` or longer side) is ``<= 2 r_q``;
* a local TRF is its side (``max`` of height and width); a global TRF (after
  CBAM's channel pooling, say) covers every object;
* the ERF/object ratio of a pair is ``2 r50`` of the **plain** twin's last layer
  divided by the median object ``sqrt(area)``. The hypothesis predicts a gain
  that is large for ratios below 1 and falls as the ratio grows (a negative slope
  of gain on ``log2`` ratio).

Uncertainty: ERF radii carry the bootstrap CIs of :func:`erf.measure.measure`;
fractions are given at the CI's ends too; a gain's CI is a paired bootstrap over
test images when both twins were evaluated on the same images, else a normal
approximation from the two accuracies and test-set sizes (metadata); the slope's
CI is a t interval of ordinary least squares (:func:`scipy.stats.linregress`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erf.errors import InputError, StudyError

SCHEMA = "erf.study/1"
CONVERSION = (
    "ERF size = 2 x r_q, the diameter of the disc around the probed unit that holds q of the gradient mass "
    "(q = 50% and 95%); an object is below the ERF when its sqrt(area) (or longer side) is <= 2 r_q; a local TRF "
    "is its side in px, a global TRF covers every object; ERF/object ratio = 2 r50 of the plain twin's last layer "
    "/ median object sqrt(area)"
)
ATTENTION_SUFFIXES = ("_cbam_spatial", "_cbam", "_se")
LEVELS = (0.5, 0.95)
CHANCE_MARGIN = 0.05
"""Models within this of chance accuracy (1 / classes) are flagged as untrained for the verdict."""


# ----------------------------------------------------------------------------- sizes and fractions
def erf_size(radius: float) -> float:
    """Size in px comparable to an object side: the diameter ``2 r`` of an ERF of mass radius ``r``."""
    return 2.0 * float(radius)


def fraction_below(values: np.ndarray | Sequence[float], threshold: float | None) -> float:
    """Fraction of ``values`` that are ``<= threshold`` (``None``: a global field, every value is below).

    Raises:
        StudyError: ``values`` is empty.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise StudyError("no objects to compare with the ERF")
    if threshold is None:
        return 1.0
    if not math.isfinite(threshold):
        return float("nan")
    return float(np.mean(v <= threshold))


@dataclass
class ObjectStats:
    """Object sizes in model-input px: ``sqrt_area`` and ``longer_side`` ``(M,)``, with provenance."""

    sqrt_area: np.ndarray
    longer_side: np.ndarray
    source: str
    is_estimate: bool
    method: str = ""

    @classmethod
    def from_sizes(cls, sizes: Any, source: str) -> ObjectStats:
        """From an :class:`erf.objects.ObjectSizes` (duck-typed)."""
        est = np.asarray(getattr(sizes, "is_estimate", False))
        return cls(np.asarray(sizes.sqrt_area, dtype=np.float64), np.asarray(sizes.longer_side, dtype=np.float64),
                   source, bool(est.any()), str(getattr(sizes, "method", "")))

    def summary(self) -> dict[str, Any]:
        """Quantiles (px), count and source of the object sizes, JSON-ready."""
        out: dict[str, Any] = {"count": int(self.sqrt_area.size), "source": self.source,
                               "is_estimate": self.is_estimate, "method": self.method}
        for key, v in (("sqrt_area", self.sqrt_area), ("longer_side", self.longer_side)):
            q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9]) if v.size else [float("nan")] * 5
            out[key] = {"mean": float(v.mean()), "q10": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
                        "q75": float(q[3]), "q90": float(q[4])}
        return out


# ----------------------------------------------------------------------------- models
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
        trained: False for a random initialisation.
    """

    label: str
    name: str
    attention: str | None
    layers: list[dict[str, Any]]
    accuracy: Accuracy | None = None
    group: str = ""
    trained: bool = True
    classes: int = 10

    @property
    def last(self) -> dict[str, Any]:
        """Metrics of the model's last measured layer."""
        return self.layers[-1]

    def diameter(self, level: float = 0.5) -> tuple[float, float, float]:
        """``(2 r, 2 r_lo, 2 r_hi)`` of the last layer at mass ``level``."""
        k = f"r{int(round(level * 100))}"
        r = self.last[k]
        lo, hi = self.last.get(f"{k}_ci") or (r, r)
        return erf_size(r), erf_size(lo), erf_size(hi)

    def fractions(self, objects: ObjectStats) -> dict[str, Any]:
        """Fractions of objects below the ERF (50 / 95 % mass, value and CI ends) and below the TRF."""
        out: dict[str, Any] = {}
        for key, values in (("sqrt_area", objects.sqrt_area), ("longer_side", objects.longer_side)):
            row: dict[str, Any] = {}
            for level in LEVELS:
                d, lo, hi = self.diameter(level)
                row[f"below_erf{int(level * 100)}"] = {"value": fraction_below(values, d),
                                                       "ci": [fraction_below(values, lo), fraction_below(values, hi)]}
            row["below_trf"] = fraction_below(values, self.last["trf_side"])
            out[key] = row
        return out


def twin_of(name: str) -> str | None:
    """The plain twin's name of an attention model (``resnet20_cbam`` -> ``resnet20``), else ``None``.

    Uses the registry's ``twin`` when ``name`` is registered, else the naming convention
    (suffix ``_cbam``, ``_cbam_spatial``, ``_se``; prefix ``cbam_`` -> ``norm_``).
    """
    from erf.models import get_entry, is_model

    if is_model(name):
        entry = get_entry(name)
        if entry.attention is not None:
            return entry.twin
        return None
    for suffix in ATTENTION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    if name.startswith("cbam_"):
        return "norm_" + name[len("cbam_"):]
    return None


def pair_models(models: Sequence[ModelERF]) -> tuple[list[tuple[ModelERF, ModelERF]], list[str]]:
    """Pair each attention model with its plain twin in the same group.

    Returns:
        ``([(plain, attention), ...], notes)``; notes name the models left unpaired
        and the pairs chosen among several candidates.
    """
    pairs, notes, used = [], [], set()
    for att in models:
        twin = twin_of(att.name)
        if twin is None:
            continue
        candidates = [m for m in models if m.name == twin and m.group == att.group]
        if not candidates:
            notes.append(f"{att.label}: no plain twin {twin!r} among the models; left unpaired")
            continue
        free = [m for m in candidates if m.label not in used] or candidates
        if len(candidates) > 1:
            notes.append(f"{att.label}: {len(candidates)} candidates for its twin {twin!r}; paired with "
                         f"{free[0].label}")
        used.add(free[0].label)
        pairs.append((free[0], att))
    paired = {m.label for p in pairs for m in p}
    for m in models:
        if m.label not in paired and twin_of(m.name) is None:
            notes.append(f"{m.label}: plain model without an attention twin; used for the ERF only")
    return pairs, notes


# ----------------------------------------------------------------------------- accuracy and gain
def correctness(model: torch.nn.Module, data: Any, device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Per-image correctness ``(N,)`` bool of ``model`` (eval mode) on a labelled :class:`~erf.data.ImageSet`."""
    from erf.training import evaluate

    if (data.labels < 0).any():
        raise StudyError(f"{data.description}: has no labels; accuracy cannot be evaluated")
    return evaluate(model, data, batch_size=batch_size, device=device).correct


def gain(plain: Accuracy, attention: Accuracy, resamples: int = 2000, seed: int = 0,
         level: float = 0.95) -> dict[str, Any]:
    """Attention gain ``acc(attention) - acc(plain)`` with a ``level`` CI.

    Paired percentile bootstrap over images when both have per-image ``correct`` vectors of the
    same length; otherwise the normal approximation ``z sqrt(p1 q1 / n1 + p2 q2 / n2)``.
    """
    from scipy import stats

    g = attention.value - plain.value
    if (plain.correct is not None and attention.correct is not None
            and len(plain.correct) == len(attention.correct) and len(plain.correct) > 1 and resamples > 0):
        diff = attention.correct.astype(np.float64) - plain.correct.astype(np.float64)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
        boot = diff[idx].mean(axis=1)
        a = (1 - level) / 2
        return {"value": g, "ci": [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))],
                "method": f"paired bootstrap over {len(diff)} images"}
    z = float(stats.norm.ppf(0.5 + level / 2))
    var = sum(a.value * (1 - a.value) / max(a.images, 1) for a in (plain, attention))
    se = math.sqrt(var)
    return {"value": g, "ci": [g - z * se, g + z * se],
            "method": "normal approximation from the two accuracies (independent samples)"}


def fit_gain(ratios: Sequence[float], gains: Sequence[float], level: float = 0.95) -> dict[str, Any] | None:
    """OLS fit ``gain = a + b log2(ratio)`` with a t-interval on the slope ``b``; ``None`` with < 3 usable points."""
    from scipy import stats

    x = np.log2(np.asarray(ratios, dtype=np.float64))
    y = np.asarray(gains, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    res = stats.linregress(x, y)
    t = float(stats.t.ppf(0.5 + level / 2, len(x) - 2))
    half = t * float(res.stderr)
    return {"slope": float(res.slope), "slope_ci": [float(res.slope) - half, float(res.slope) + half],
            "intercept": float(res.intercept), "p_value": float(res.pvalue), "r": float(res.rvalue), "n": int(len(x)),
            "x": "log2(ERF diameter 2*r50 of the plain twin / object size)", "y": "gain (attention - plain accuracy)"}


def _mean_ci(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return [float(v.mean() - half), float(v.mean() + half)]


def verdict(points: Sequence[dict[str, Any]], fit: dict[str, Any] | None,
            flagged: Sequence[str] = ()) -> dict[str, Any]:
    """A written verdict on hypothesis 2 from gain points ``{"label", "ratio", "gain", "gain_ci"}``.

    Rules: with a fit (3+ points), the slope's CI below 0 supports the hypothesis, above 0
    contradicts it, else inconclusive; with 2 points, the gain difference (smaller ratio minus
    larger) with a CI from the two gain CIs; with 1 point, inconclusive about the trend. A
    single point's gain above 0 (CI excluded) at ratio < 1 is consistent with it; a gain
    below 0 at ratio < 1 contradicts it. Flagged (near-chance) models make any verdict inconclusive.
    """
    lines: list[str] = []
    label = "inconclusive"
    pts = [p for p in points if math.isfinite(p["ratio"]) and math.isfinite(p["gain"])]
    if not pts:
        return {"label": label, "text": "No (plain, attention) pair with a finite ERF/object ratio and gain: "
                                         "the hypothesis cannot be judged."}
    small = [p for p in pts if p["ratio"] < 1]
    large = [p for p in pts if p["ratio"] >= 1]
    for name, group in (("ERF smaller than the objects (ratio < 1)", small), ("ERF at least the objects' size "
                                                                             "(ratio >= 1)", large)):
        if group:
            gs = [p["gain"] for p in group]
            ci = _mean_ci(gs)
            ci_txt = f" [95% CI {100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else (
                f" [95% CI {100 * group[0]['gain_ci'][0]:+.1f}, {100 * group[0]['gain_ci'][1]:+.1f}]"
                if group[0].get("gain_ci") else "")
            lines.append(f"{name}: {len(group)} point(s), mean gain {100 * float(np.mean(gs)):+.1f} pp{ci_txt}.")
    if fit is not None:
        lo, hi = fit["slope_ci"]
        lines.append(f"Fit over {fit['n']} points: gain changes by {100 * fit['slope']:+.1f} pp per doubling of "
                     f"ERF/object [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], p = {fit['p_value']:.3g}.")
        if hi < 0:
            label = "supports"
            lines.append("The gain falls as the ERF grows relative to the objects, as the hypothesis predicts.")
        elif lo > 0:
            label = "contradicts"
            lines.append("The gain grows as the ERF grows relative to the objects: the evidence contradicts the "
                         "hypothesis.")
        else:
            lines.append("The slope's CI includes 0: no detectable dependence of the gain on ERF/object size.")
    elif len(pts) == 2 and pts[0]["ratio"] != pts[1]["ratio"]:
        a, b = sorted(pts, key=lambda p: p["ratio"])
        d = a["gain"] - b["gain"]
        half = math.sqrt(sum(((p["gain_ci"][1] - p["gain_ci"][0]) / 2) ** 2 for p in (a, b)))
        lines.append(f"Gain at the smaller ratio ({a['label']}, {a['ratio']:.2f}) minus gain at the larger "
                     f"({b['label']}, {b['ratio']:.2f}): {100 * d:+.1f} pp [approx. 95% CI {100 * (d - half):+.1f}, "
                     f"{100 * (d + half):+.1f}].")
        if d - half > 0:
            label = "supports"
            lines.append("Attention helps more where the ERF is smaller relative to the objects, as predicted "
                         "(two pairs only: weak evidence).")
        elif d + half < 0:
            label = "contradicts"
            lines.append("Attention helps less where the ERF is smaller relative to the objects: this contradicts "
                         "the hypothesis (two pairs only).")
        else:
            lines.append("The difference's CI includes 0: inconclusive.")
    else:
        p = pts[0]
        lo, hi = p.get("gain_ci") or (p["gain"], p["gain"])
        lines.append(f"Only {len(pts)} point(s) at one ratio: no trend can be judged.")
        if p["ratio"] < 1 and hi < 0:
            label = "contradicts"
            lines.append(f"{p['label']}: the ERF is smaller than the objects but attention lowers accuracy "
                         f"({100 * p['gain']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]): contrary to the "
                         "hypothesis.")
    if flagged:
        lines.append(f"Caution: {', '.join(flagged)} are within {100 * CHANCE_MARGIN:.0f} pp of chance accuracy "
                     "(untrained or under-trained), so their gains say nothing about attention; the verdict is "
                     "inconclusive.")
        label = "inconclusive"
    lines.insert(0, {"supports": "Verdict: the evidence SUPPORTS hypothesis 2.",
                     "contradicts": "Verdict: the evidence CONTRADICTS hypothesis 2.",
                     "inconclusive": "Verdict: INCONCLUSIVE."}[label])
    return {"label": label, "text": " ".join(lines)}


# ----------------------------------------------------------------------------- measuring a model
def measure_model(model: torch.nn.Module, data: Any, label: str, name: str, attention: str | None,
                  bootstrap: int = 200, seed: int = 0, device: str = "cpu", layers: Sequence[str] | None = None,
                  progress: bool = False, input_size: Sequence[int] | None = None) -> tuple[ModelERF, list[str]]:
    """ERF of the last stage layers of ``model`` over ``data``.

    ``input_size``: ``(H, W)`` canvas the images are embedded in (zero fill) so that an ERF larger than the
    image is not clipped by its border; radii stay in image px (default: the images' own size).
    """
    from erf.layers import study_layers
    from erf.measure import measure

    res = measure(model, list(layers or study_layers(model)), data, bootstrap=bootstrap, seed=seed, device=device,
                  progress=progress, info={"model": name}, input_size=input_size)
    rows = []
    for layer in res.layers:
        m = layer.metrics
        row: dict[str, Any] = {"name": layer.name, "trf_side": layer.trf.side,
                               "trf_local_side": max(layer.trf.size)}
        for q in LEVELS:
            k = f"r{int(q * 100)}"
            row[k] = float(m.radius[q])
            ci = layer.ci.get(f"radius.{int(q * 100)}")
            row[f"{k}_ci"] = [float(ci[0]), float(ci[1])] if ci else None
        row["clipped_fraction"] = float(m.clipped_fraction)
        rows.append(row)
    classes = len(getattr(data, "classes", ()) or ()) or 10
    return ModelERF(label, name, attention, rows, classes=classes), list(res.notes)


def _near_chance(m: ModelERF) -> bool:
    """Untrained, or accuracy within :data:`CHANCE_MARGIN` of chance."""
    return not m.trained or (m.accuracy is not None and m.accuracy.value < 1.0 / m.classes + CHANCE_MARGIN)


def pair_rows(models: Sequence[ModelERF], objects_median: dict[str, float], resamples: int = 2000,
              seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """Gain rows of the (plain, attention) pairs; ``objects_median[group]`` is the median object size."""
    pairs, notes = pair_models(models)
    rows = []
    for plain, att in pairs:
        if plain.accuracy is None or att.accuracy is None:
            notes.append(f"{att.label}: no accuracy for the pair; no gain")
            continue
        g = gain(plain.accuracy, att.accuracy, resamples, seed)
        obj = objects_median[plain.group]
        d, dlo, dhi = plain.diameter(0.5)
        rows.append({"plain": plain.label, "attention": att.label, "group": plain.group,
                     "label": f"{att.name} vs {plain.name}" + (f" ({plain.group})" if plain.group else ""),
                     "accuracy_plain": plain.accuracy.value, "accuracy_attention": att.accuracy.value,
                     "gain": g["value"], "gain_ci": g["ci"], "gain_method": g["method"],
                     "object_size": obj, "erf_diameter50_plain": d, "erf_diameter50_attention": att.diameter(0.5)[0],
                     "ratio": d / obj if obj > 0 else float("nan"),
                     "ratio_ci": [dlo / obj, dhi / obj] if obj > 0 else None,
                     "near_chance": _near_chance(plain) or _near_chance(att)})
    return rows, notes


def _model_json(m: ModelERF, objects: ObjectStats | None) -> dict[str, Any]:
    d50, d95 = m.diameter(0.5), m.diameter(0.95)
    out = {"label": m.label, "name": m.name, "attention": m.attention, "group": m.group, "trained": m.trained,
           "layers": m.layers, "accuracy": m.accuracy.to_json() if m.accuracy else None,
           "erf_diameter50": {"value": d50[0], "ci": [d50[1], d50[2]]},
           "erf_diameter95": {"value": d95[0], "ci": [d95[1], d95[2]]},
           "trf_side": m.last["trf_side"], "trf_local_side": m.last["trf_local_side"]}
    if objects is not None:
        out["fractions"] = m.fractions(objects)
    return out


# ----------------------------------------------------------------------------- real-data study
def load_objects(spec: str, data: Any, preprocess: Any = None) -> ObjectStats:
    """Object sizes for the study: ``estimate`` (estimated on ``data``'s images), an ``erf objects``
    JSON output with per-object sizes (``{"objects": [{"sqrt_area", "longer_side"}, ...]}`` or
    ``{"sizes": {"sqrt_area": [...], "longer_side": [...]}}``), or an annotation file/folder read by
    :func:`erf.objects.read_annotations` and rescaled by ``preprocess`` (default: stretched to the
    images' side, ``Preprocess(input_size=H)``).

    Raises:
        StudyError: the objects module or the file cannot provide sizes.
    """
    try:
        from erf import objects as obj_mod
    except ImportError as exc:  # pragma: no cover - the module ships with erf
        raise StudyError(f"--objects {spec}: erf.objects is not available ({exc})") from None
    if spec == "estimate":
        if not getattr(data, "raw", False):
            raise StudyError(f"--objects estimate: {data.description} holds normalised images; estimation needs raw "
                             "images")
        x = (data.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        sizes = obj_mod.estimate_extents(x)
        return ObjectStats.from_sizes(sizes, f"estimated on {data.description}")
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudyError(f"--objects {spec}: not readable JSON ({exc})") from None
        objs = (doc.get("objects") or doc.get("sizes")) if isinstance(doc, dict) else None
        if isinstance(objs, list) and objs and isinstance(objs[0], dict) and "sqrt_area" in objs[0]:
            sa = np.array([o["sqrt_area"] for o in objs], dtype=np.float64)
            ls = np.array([o.get("longer_side", o["sqrt_area"]) for o in objs], dtype=np.float64)
            return ObjectStats(sa, ls, str(path), bool(doc.get("is_estimate", False)), str(doc.get("method", "")))
        if isinstance(objs, dict) and "sqrt_area" in objs:
            sa = np.asarray(objs["sqrt_area"], dtype=np.float64)
            ls = np.asarray(objs.get("longer_side", sa), dtype=np.float64)
            return ObjectStats(sa, ls, str(path), bool(doc.get("is_estimate", False)), str(doc.get("method", "")))
        if not (isinstance(doc, dict) and ("images" in doc or "annotations" in doc)):
            raise StudyError(f"--objects {spec}: no per-object sizes in this JSON (expected an `erf objects --json` "
                             "document with per-object sizes, or COCO instances)")
    records = obj_mod.read_annotations(spec)
    boxes = getattr(records, "boxes", records)
    side = int(data.images.shape[-1]) if data is not None else None
    sizes = obj_mod.object_sizes(boxes, preprocess or obj_mod.Preprocess(input_size=side))
    return ObjectStats.from_sizes(sizes, str(path))


def study_models(checkpoints: Sequence[str], data: Any, objects: ObjectStats, accuracy: str = "auto",
                 bootstrap: int = 200, seed: int = 0, device: str = "cpu", trust: bool = False,
                 progress: bool = False, input_size: Sequence[int] | None = None,
                 ) -> tuple[dict[str, Any], list[ModelERF]]:
    """The real-data study of ``checkpoints`` on ``data`` against ``objects``.

    Args:
        checkpoints: model specs (files or registry names).
        data: labelled raw :class:`~erf.data.ImageSet` for the ERFs (and for accuracy when evaluated).
        objects: object sizes in the models' input px.
        accuracy: ``metadata`` (``best_test_accuracy`` of the checkpoints), ``evaluate`` (on ``data``)
            or ``auto`` (metadata when every checkpoint has it, else evaluate).
        bootstrap, seed, device, trust, progress: as for :func:`erf.measure.measure` / ``load_checkpoint``.
        input_size: ``(H, W)`` canvas for the ERF measurement (see :func:`measure_model`).

    Returns:
        ``(document of schema erf.study/1, models)``.
    """
    from tqdm import tqdm

    from erf.checkpoints import load_checkpoint

    if accuracy not in ("auto", "metadata", "evaluate"):
        raise InputError(f"--accuracy {accuracy!r}: use auto, metadata or evaluate")
    if not checkpoints:
        raise StudyError("no checkpoints given")
    loaded = [load_checkpoint(c, trust=trust, seed=seed) for c in checkpoints]
    notes = [f"{c}: {n}" for c, lm in zip(checkpoints, loaded) for n in lm.notes]
    have_meta = all("best_test_accuracy" in lm.metadata for lm in loaded)
    if accuracy == "metadata" and not have_meta:
        missing = [c for c, lm in zip(checkpoints, loaded) if "best_test_accuracy" not in lm.metadata]
        raise StudyError(f"--accuracy metadata: no best_test_accuracy in {', '.join(missing)}")
    use_meta = accuracy == "metadata" or (accuracy == "auto" and have_meta)
    models: list[ModelERF] = []
    for spec, lm in tqdm(list(zip(checkpoints, loaded)), desc="study", unit="model", disable=not progress):
        from erf.models import get_entry, is_model

        att = get_entry(lm.name).attention if is_model(lm.name) else (
            "cbam" if twin_of(lm.name) else None)
        m, mnotes = measure_model(lm.model, data, str(spec), lm.name, att, bootstrap, seed, device,
                                  input_size=input_size)
        notes += [f"{spec}: {n}" for n in mnotes]
        m.trained = lm.trained
        if use_meta:
            m.accuracy = Accuracy(float(lm.metadata["best_test_accuracy"]), int(lm.metadata.get("test_images", 0)),
                                  "checkpoint metadata best_test_accuracy")
        else:
            c = correctness(lm.model, data, device)
            m.accuracy = Accuracy(float(c.mean()), len(c), f"evaluated on {data.description}", c)
        models.append(m)
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise StudyError(f"the same checkpoint is given twice: {labels}")
    med = float(np.median(objects.sqrt_area))
    rows, pnotes = pair_rows(models, {"": med}, seed=seed)
    notes += pnotes
    if use_meta:
        notes.append("accuracies are best_test_accuracy from checkpoint metadata (selected on the test set, so "
                     "slightly optimistic; gains of twins trained alike share that bias)")
    fit = fit_gain([r["ratio"] for r in rows], [r["gain"] for r in rows])
    flagged = sorted({lab for r in rows if r["near_chance"] for lab in (r["plain"], r["attention"])})
    v = verdict(rows, fit, flagged)
    v["text"] = _fraction_text(models, objects) + " " + v["text"]
    doc = {"schema": SCHEMA, "mode": "real", "conversion": CONVERSION, "data": data.description,
           "objects": objects.summary(), "models": [_model_json(m, objects) for m in models], "pairs": rows,
           "fit": fit, "verdict": v, "notes": notes,
           "settings": {"accuracy": "metadata" if use_meta else "evaluate", "bootstrap": bootstrap, "seed": seed,
                        "images": len(data), "input_size": list(input_size) if input_size else None}}
    return doc, models


def _fraction_text(models: Sequence[ModelERF], objects: ObjectStats) -> str:
    kind = "estimated " if objects.is_estimate else ""
    parts = [f"Median {kind}object sqrt(area) {float(np.median(objects.sqrt_area)):.1f} px."]
    for m in models:
        f = m.fractions(objects)["sqrt_area"]
        d, lo, hi = m.diameter(0.5)
        trf = "global" if m.last["trf_side"] is None else f"{m.last['trf_side']} px"
        d95 = m.diameter(0.95)[0]
        parts.append(f"{m.label}: ERF 2r50 {d:.1f} px [{lo:.1f}, {hi:.1f}] is at least the size of "
                     f"{100 * f['below_erf50']['value']:.0f}% of objects, 2r95 {d95:.1f} px of "
                     f"{100 * f['below_erf95']['value']:.0f}%, the TRF ({trf}) of {100 * f['below_trf']:.0f}%.")
    return " ".join(parts)


# ----------------------------------------------------------------------------- controlled experiment
@dataclass(frozen=True)
class PairSpec:
    """A twin pair of the controlled grid: registry names and constructor overrides shared by both."""

    key: str
    plain: str
    attention: str
    kwargs: tuple[tuple[str, Any], ...] = ()


PAIRS: dict[str, PairSpec] = {p.key: p for p in (
    PairSpec("twoconv", "twoconv", "twoconv_cbam"),
    PairSpec("twoconv_narrow", "twoconv", "twoconv_cbam", (("widths", (16, 32)),)),
    PairSpec("resnet8_narrow", "resnet20", "resnet20_cbam", (("depth", 8), ("widths", (8, 16, 32)))),
    PairSpec("resnet20_s2", "resnet20", "resnet20_cbam", (("stages", 2),)),
    PairSpec("resnet20", "resnet20", "resnet20_cbam"),
)}


@dataclass(frozen=True)
class Budget:
    """Size of the controlled grid. ``None`` image counts mean every image of the source."""

    name: str
    sizes: tuple[int, ...]
    seeds: int
    pairs: tuple[str, ...]
    train_images: int | None
    test_images: int | None
    epochs: int
    batch_size: int
    lr: float
    erf_images: int
    bootstrap: int
    canvas: int = 64


BUDGETS: dict[str, Budget] = {
    "tiny": Budget("tiny", (8, 24), 1, ("twoconv_narrow",), 64, 64, 1, 32, 0.05, 8, 20),
    "cpu": Budget("cpu", (12, 16, 32), 3, ("twoconv_narrow", "resnet8_narrow"), None, None, 5, 64, 0.05, 32, 100),
    "gpu": Budget("gpu", (8, 12, 16, 24, 32, 48), 3, ("twoconv", "resnet20_s2", "resnet20"), None, None, 15, 128,
                  0.1, 64, 200),
}


def _source_splits(spec: str, train_n: int | None, test_n: int | None) -> tuple[Any, Any, list[str]]:
    """Train and test image sets of ``spec``; the bundled sample (test images only) is split in two."""
    from erf.data import load_source

    notes: list[str] = []
    if spec.split(":")[0] in ("bundled", "sample"):
        allx = load_source(spec, "test")
        n = len(allx)
        te = min(test_n or n // 3, n // 2)
        tr = min(train_n or n - te, n - te)
        if tr < (train_n or 0) or te < (test_n or 0):
            notes.append(f"the bundled sample has {n} images: {tr} train / {te} test")
        idx_tr, idx_te = slice(0, tr), slice(n - te, n)
        from erf.data.sources import ImageSet

        def take(s: slice, what: str) -> Any:
            return ImageSet(allx.images[s], allx.labels[s], f"{allx.description}, {what}", allx.classes, raw=True)

        return take(idx_tr, f"images 0..{tr - 1}"), take(idx_te, f"images {n - te}..{n - 1}"), notes
    train = load_source(spec, "train", count=train_n)
    test = load_source(spec, "test", count=test_n)
    return train, test, notes + train.notes + test.notes


def default_controlled_source() -> str:
    """``cifar10:/work/shared/data/cifar10_prefix.npz``-style source when present, else ``bundled``."""
    for p in (Path("../shared/data/cifar10_prefix.npz"), Path("/work/shared/data/cifar10_prefix.npz"),
              Path("runs/study_data/cifar10_prefix.npz")):
        if p.exists():
            return f"cifar10:{p}"
    return "bundled"


def _cell_key(seed: int, size: int, pair: str) -> str:
    return f"seed={seed}/size={size}/pair={pair}"


def run_cell(pair: PairSpec, size: int, seed: int, train_src: Any, test_src: Any, budget: Budget,
             device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Train both twins of ``pair`` on objects of side ``size`` (seed ``seed``), measure, evaluate."""
    import tempfile

    from erf.controlled import controlled_from
    from erf.models import create_model
    from erf.training import Recipe, train

    train_set = controlled_from(train_src, size, budget.canvas, seed=1000 + seed)
    test_set = controlled_from(test_src, size, budget.canvas, seed=2000 + seed)
    kwargs = dict(pair.kwargs)
    out: dict[str, Any] = {"seed": seed, "size": size, "pair": pair.key, "canvas": budget.canvas,
                           "train_images": len(train_set), "test_images": len(test_set)}
    t0 = time.perf_counter()
    for role, name in (("plain", pair.plain), ("attention", pair.attention)):
        torch.manual_seed(seed)
        model = create_model(name, **kwargs)
        recipe = Recipe(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr, seed=seed)
        with tempfile.TemporaryDirectory(prefix="erf-study-") as tmp:
            train(model, name, train_set.data, test_set.data, tmp, recipe, kwargs={k: v for k, v in kwargs.items()},
                  metadata={"controlled_size": size}, device=device, progress=progress)
        model = model.cpu().eval() if device == "cpu" else model.eval()
        c = correctness(model, test_set.data, device)
        m, _ = measure_model(model, test_set.data.head(budget.erf_images), name, name, None,
                             bootstrap=budget.bootstrap, seed=seed, device=device)
        out[role] = {"name": name, "accuracy": float(c.mean()), "correct": c.astype(int).tolist(),
                     "layers": m.layers}
    out["seconds"] = time.perf_counter() - t0
    out["device"] = str(device)
    return out


def _cells_to_models(cells: Sequence[dict[str, Any]]) -> list[ModelERF]:
    models = []
    for c in cells:
        group = _cell_key(c["seed"], c["size"], c["pair"])
        for role in ("plain", "attention"):
            r = c[role]
            corr = np.asarray(r["correct"], dtype=bool)
            models.append(ModelERF(f"{group}/{role}", r["name"], None if role == "plain" else "cbam", r["layers"],
                                   Accuracy(r["accuracy"], len(corr), "evaluated on the cell's test set", corr),
                                   group=group))
    return models


def run_controlled(budget: Budget | str, out: str | Path, sizes: Sequence[int] | None = None,
                   seeds: int | None = None, pairs: Sequence[str] | None = None, data: str | None = None,
                   device: str = "cpu", progress: bool = True, time_limit: float | None = None,
                   epochs: int | None = None) -> dict[str, Any]:
    """Run (or resume) the controlled grid; write ``out/cells.json``, ``study.json`` and figures.

    Cells (seed x size x pair, seeds outermost) already in ``out/cells.json`` are skipped;
    the file is rewritten atomically after every cell. ``time_limit`` (seconds) stops starting
    new cells once exceeded; the report then covers the finished cells and says so.

    Returns:
        The ``erf.study/1`` document (mode ``controlled``).
    """
    from tqdm import tqdm

    from erf.atomic import write_json, write_text

    if isinstance(budget, str) and budget not in BUDGETS:
        raise InputError(f"--budget {budget!r}: use {', '.join(BUDGETS)}")
    b = BUDGETS[budget] if isinstance(budget, str) else budget
    sizes = tuple(int(s) for s in (sizes or b.sizes))
    for s in sizes:
        if not 1 <= s <= b.canvas:
            raise InputError(f"--sizes {s}: must be between 1 and the {b.canvas} px canvas")
    pair_keys = tuple(pairs or b.pairs)
    for p in pair_keys:
        if p not in PAIRS:
            raise InputError(f"--pairs {p!r}: use {', '.join(PAIRS)}")
    n_seeds = int(seeds or b.seeds)
    if n_seeds < 1:
        raise InputError(f"--seeds {n_seeds}: must be at least 1")
    if epochs:
        b = Budget(**{**asdict(b), "epochs": int(epochs)})
    data = data or default_controlled_source()
    outp = Path(out)
    cells_path = outp / "cells.json"
    cells: list[dict[str, Any]] = []
    if cells_path.exists():
        try:
            prev = json.loads(cells_path.read_text())
            same = prev.get("budget") == json.loads(json.dumps(asdict(b))) and prev.get("data") == data
            cells = list(prev.get("cells", [])) if same else []
        except (OSError, json.JSONDecodeError):
            cells = []
    done = {_cell_key(c["seed"], c["size"], c["pair"]) for c in cells}
    train_src, test_src, notes = _source_splits(data, b.train_images, b.test_images)
    grid = [(seed, s, p) for seed in range(n_seeds) for s in sizes for p in pair_keys]
    t0 = time.perf_counter()
    stopped = 0
    bar = tqdm(grid, desc="controlled grid", unit="cell", disable=not progress)
    for seed, s, p in bar:
        key = _cell_key(seed, s, p)
        if key in done:
            continue
        if time_limit is not None and time.perf_counter() - t0 >= time_limit:
            stopped += 1
            continue
        bar.set_postfix(seed=seed, size=s, pair=p)
        cells.append(run_cell(PAIRS[p], s, seed, train_src, test_src, b, device))
        write_json(cells_path, {"budget": asdict(b), "data": data, "cells": cells})
    bar.close()
    if stopped:
        notes.append(f"--time-limit: {stopped} of {len(grid)} cells were not run; the report covers "
                     f"{len(grid) - stopped} cells (rerun with the same --out to resume)")
    cells = [c for c in cells if c["size"] in sizes and c["pair"] in pair_keys and c["seed"] < n_seeds]
    doc, models = controlled_report(cells, b, data, notes)
    doc["settings"]["device"] = device
    doc["settings"]["cell_devices"] = sorted({str(c.get("device", "unrecorded")) for c in cells})
    write_json(outp / "study.json", doc)
    write_text(outp / "verdict.txt", doc["verdict"]["text"] + "\n")
    from erf.plotting import plot_controlled

    plot_controlled(doc, outp)
    return doc


def controlled_report(cells: Sequence[dict[str, Any]], budget: Budget, data: str,
                      notes: Sequence[str] = ()) -> tuple[dict[str, Any], list[ModelERF]]:
    """The ``erf.study/1`` document of finished controlled cells."""
    if not cells:
        raise StudyError("no finished cells to report on")
    models = _cells_to_models(cells)
    med = {_cell_key(c["seed"], c["size"], c["pair"]): float(c["size"]) for c in cells}
    rows, pnotes = pair_rows(models, med)
    for r in rows:
        r["size"] = int(r["object_size"])
        r["pair"] = r["group"].split("pair=")[1]
    fit = fit_gain([r["ratio"] for r in rows], [r["gain"] for r in rows])
    v, fit_trained = controlled_verdict(rows, fit)
    by_pair: dict[str, Any] = {}
    for key in sorted({r["pair"] for r in rows}):
        sub = [r for r in rows if r["pair"] == key]
        by_pair[key] = {"fit": fit_gain([r["ratio"] for r in sub], [r["gain"] for r in sub]),
                        "sizes": {str(s): {"mean_gain": float(np.mean([r["gain"] for r in sub if r["size"] == s])),
                                           "gain_ci": _mean_ci([r["gain"] for r in sub if r["size"] == s]),
                                           "mean_ratio": float(np.mean([r["ratio"] for r in sub if r["size"] == s])),
                                           "seeds": sum(r["size"] == s for r in sub)}
                                  for s in sorted({r["size"] for r in sub})}}
    model_rows = [_model_json(m, None) for m in models]
    doc = {"schema": SCHEMA, "mode": "controlled", "conversion": CONVERSION.replace("median object sqrt(area)",
                                                                                    "object side s"),
           "data": data, "budget": asdict(budget), "models": model_rows, "pairs": rows, "by_pair": by_pair,
           "fit": fit, "fit_without_near_chance": fit_trained, "verdict": v, "notes": list(notes) + pnotes,
           "objects": {"count": len(cells), "source": "controlled: true sizes by construction", "is_estimate": False,
                       "method": "pasted square of side s", "sizes": sorted({int(c["size"]) for c in cells})},
           "settings": {"bootstrap": budget.bootstrap, "seeds": len({c["seed"] for c in cells}),
                        "cells": len(cells)}}
    return doc, models


def controlled_verdict(rows: Sequence[dict[str, Any]], fit_all: dict[str, Any] | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Verdict of the controlled grid from its cells ``{"pair", "ratio", "gain", "gain_ci", "near_chance"}``.

    The label is judged on the *trained* cells only (neither twin within
    :data:`CHANCE_MARGIN` of chance: a near-chance model's gain says nothing about
    attention) by :func:`verdict`; all cells near chance: inconclusive. A
    ``supports`` / ``contradicts`` label from the fit across all trained cells
    stands only if the same trend (slope CI excluding 0, same sign) also shows
    within at least one pair (same architecture, only the object size varied)
    and no pair shows the opposite one; otherwise it becomes ``inconclusive``: a
    trend seen only across architectures confounds the ERF with capacity. The
    text also gives the fit over all cells and the within-pair fits.

    ``fit_all``: :func:`fit_gain` over all ``rows`` when the caller has it (else computed here).

    Returns:
        ``({"label", "text"}, fit over the trained cells or None)``.
    """
    if fit_all is None:
        fit_all = fit_gain([r["ratio"] for r in rows], [r["gain"] for r in rows])
    trained = [r for r in rows if not r["near_chance"]]
    n_flag = len(rows) - len(trained)
    if not trained:
        return verdict(rows, fit_all, sorted({r.get("group", r["label"]) for r in rows})), None
    fit_trained = fit_gain([r["ratio"] for r in trained], [r["gain"] for r in trained]) if n_flag else fit_all
    v = verdict(trained, fit_trained)
    within = {key: fit_gain([r["ratio"] for r in trained if r["pair"] == key],
                            [r["gain"] for r in trained if r["pair"] == key])
              for key in sorted({r["pair"] for r in rows})}
    extra = []
    if n_flag:
        extra.append(f"Judged on the {len(trained)} of {len(rows)} cells where both twins are more than "
                     f"{100 * CHANCE_MARGIN:.0f} pp above chance accuracy ({n_flag} near-chance cells left out: "
                     "their gains say nothing about attention).")
        extra.append(_fit_text("over all cells, near-chance ones included", fit_all, len(rows)))
    for key, f in within.items():
        extra.append(_fit_text(f"within {key} only (same architecture, object size varied"
                               + (", trained cells)" if n_flag else ")"), f, sum(r["pair"] == key for r in trained)))
    if v["label"] in ("supports", "contradicts"):
        sign = -1 if v["label"] == "supports" else 1  # the sign of the slope that gave the label
        signs = {k: (-1 if f["slope_ci"][1] < 0 else 1 if f["slope_ci"][0] > 0 else 0)
                 for k, f in within.items() if f is not None}
        agree = [k for k, s in signs.items() if s == sign]
        against = [k for k, s in signs.items() if s == -sign]
        why = (f"within {', '.join(against)} (same architecture, only the object size varied) the gain moves the "
               "other way" if against else "no pair shows it within its own architecture (only the object size "
               "varied), so it may be a difference of capacity between architectures rather than of ERF")
        if against or not agree:
            head = v["text"].split(". ", 1)[0] + "."
            v = {"label": "inconclusive", "text": v["text"].replace(head, "Verdict: INCONCLUSIVE.", 1)
                 + f" The trend across all trained cells is not attributed to the ERF: {why}."}
    extra.append("Fits across pairs mix architectures (depth, width), so they confound the ERF with capacity; the "
                 "within-pair fits vary only the object size.")
    v["text"] += " " + " ".join(extra)
    return v, fit_trained


def _fit_text(what: str, fit: dict[str, Any] | None, n: int) -> str:
    if fit is None:
        return f"Fit {what}: not possible (n = {n}; a fit needs 3 points at 2 or more ratios)."
    lo, hi = fit["slope_ci"]
    sign = "falls" if hi < 0 else "rises" if lo > 0 else "shows no detectable trend"
    return (f"Fit {what}: {100 * fit['slope']:+.1f} pp per doubling of ERF/object [95% CI {100 * lo:+.1f}, "
            f"{100 * hi:+.1f}], n = {fit['n']}, p = {fit['p_value']:.3g}: the gain {sign}"
            + (" as the ERF grows relative to the objects" if sign != "shows no detectable trend" else "")
            + (" (contrary to the hypothesis)." if lo > 0 else " (as the hypothesis predicts)." if hi < 0 else "."))


# ----------------------------------------------------------------------------- figures
def write_real_study(doc: dict[str, Any], models: Sequence[ModelERF], objects: ObjectStats, out: str | Path) -> None:
    """Write ``study.json``, ``erf_vs_objects_cdf.png`` and ``gain_vs_ratio.png`` into ``out``."""
    from erf.atomic import write_json, write_text

    out = Path(out)
    from erf.plotting import plot_cdf, plot_gain

    plot_cdf(models, objects, out / "erf_vs_objects_cdf.png")
    plot_gain(doc["pairs"], doc["fit"], out / "gain_vs_ratio.png")
    write_text(out / "verdict.txt", doc["verdict"]["text"] + "\n")
    write_json(out / "study.json", doc)


__all__ = [
    "BUDGETS", "CONVERSION", "PAIRS", "SCHEMA", "Accuracy", "Budget", "ModelERF", "ObjectStats", "PairSpec",
    "controlled_report", "controlled_verdict", "correctness", "erf_size", "fit_gain", "fraction_below", "gain",
    "load_objects", "measure_model", "pair_models", "pair_rows", "run_cell", "run_controlled",
    "study_models", "twin_of", "verdict", "write_real_study",
]
