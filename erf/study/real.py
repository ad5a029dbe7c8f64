"""The real-data study: trained twins on real images against an object-size distribution.

For each model, the ERF of its last spatial layers (:func:`~erf.study.records.measure_model`) against the
object sizes, and the attention gain of every (plain, attention) twin pair against the ratio ERF size /
object size (:mod:`erf.study.conversion`); the verdict is :func:`erf.study.verdicts.verdict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erf.checkpoints import ACCURACY_KEYS, LoadedModel, load_checkpoint, metadata_accuracy
from erf.errors import CheckpointError, InputError, StudyError
from erf.objects.sizes import ObjectSizes
from erf.study.conversion import CONVERSION, SCHEMA
from erf.study.pairing import pair_rows
from erf.study.records import Accuracy, ModelERF, measure_model, model_json
from erf.study.verdicts import fit_gain, verdict


def _test_images(metadata: Mapping[str, Any], source: str) -> int:
    """The checkpoint metadata's ``test_images`` (how many images its accuracy was measured on; 0 when absent).

    Raises:
        CheckpointError: it is not a whole number >= 0 (a string, a fraction, a negative or non-finite number).
    """
    value = metadata.get("test_images", 0)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{source}: metadata test_images {value!r:.40} is not a whole number >= 0")
    return value


def objects_summary(objects: ObjectSizes) -> dict[str, Any]:
    """Quantiles (px), count and source of the object sizes, JSON-ready (the ``objects`` entry of ``study.json``)."""
    out: dict[str, Any] = {"count": int(objects.sqrt_area.size), "source": objects.source,
                           "is_estimate": bool(objects.is_estimate), "method": objects.method}
    for key, v in (("sqrt_area", objects.sqrt_area), ("longer_side", objects.longer_side)):
        q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9]) if v.size else [float("nan")] * 5
        out[key] = {"mean": float(v.mean()), "q10": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
                    "q75": float(q[3]), "q90": float(q[4])}
    return out


def load_objects(spec: str, data: Any, preprocess: Any = None) -> ObjectSizes:
    """Object sizes for the study from a spec.

    ``spec`` is ``estimate`` (estimated on ``data``'s raw images, :func:`erf.objects.estimate_extents`), an
    ``erf objects --json`` document (:meth:`~erf.objects.ObjectSizes.from_json`), or an annotation file or
    folder read by :func:`erf.objects.read_annotations` and rescaled by ``preprocess`` (default: stretched to
    the images' side, ``Preprocess(input_size=H)``).

    Raises:
        StudyError: the spec provides no sizes.
    """
    from erf.objects import Preprocess, estimate_extents, object_sizes, read_annotations

    if spec == "estimate":
        if not getattr(data, "raw", False):
            raise StudyError(f"objects='estimate': {data.description} holds normalised images; estimation needs "
                             "raw images")
        sizes = estimate_extents(data.uint8())
        sizes.source = f"estimated on {data.description}"
        return sizes
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudyError(f"{spec}: not readable JSON ({exc})") from None
        try:
            return ObjectSizes.from_json(doc, source=str(path))
        except InputError:
            if not (isinstance(doc, dict) and ("images" in doc or "annotations" in doc)):
                raise StudyError(f"{spec}: no per-object sizes in this JSON (expected an `erf objects --json` "
                                 "document with per-object sizes, or COCO instances)") from None
    records = read_annotations(spec)
    side = int(data.images.shape[-1]) if data is not None else None
    sizes = object_sizes(records.boxes, preprocess or Preprocess(input_size=side))
    sizes.source = str(path)
    return sizes


def correctness(model: torch.nn.Module, data: Any, device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Per-image correctness ``(N,)`` bool of ``model`` (eval mode) on a labelled :class:`~erf.data.ImageSet`."""
    from erf.training import evaluate

    if (data.labels < 0).any():
        raise StudyError(f"{data.description}: has no labels; accuracy cannot be evaluated")
    return evaluate(model, data, batch_size=batch_size, device=device).correct


def study_models(checkpoints: Sequence[str | LoadedModel], data: Any, objects: ObjectSizes, accuracy: str = "auto",
                 bootstrap: int = 200, seed: int = 0, device: str = "cpu", trust: bool = False,
                 progress: bool = False, input_size: Sequence[int] | None = None,
                 ) -> tuple[dict[str, Any], list[ModelERF]]:
    """The real-data study of ``checkpoints`` on ``data`` against ``objects``.

    Args:
        checkpoints: model specs (files or registry names) or loaded models; a spec is the model's label.
        data: labelled raw :class:`~erf.data.ImageSet` for the ERFs (and for accuracy when evaluated).
        objects: object sizes in the models' input px.
        accuracy: ``metadata`` (the checkpoints' recorded accuracy, :func:`erf.checkpoints.metadata_accuracy`),
            ``evaluate`` (on ``data``)
            or ``auto`` (metadata when every checkpoint has it, else evaluate).
        bootstrap, seed, device, trust, progress: as for :func:`erf.measure` / ``load_checkpoint``.
        input_size: ``(H, W)`` canvas for the ERF measurement (see :func:`measure_model`).

    Returns:
        ``(document of schema erf.study/1, models)``.
    """
    from tqdm import tqdm

    if accuracy not in ("auto", "metadata", "evaluate"):
        raise InputError(f"{accuracy!r}: use auto, metadata or evaluate", param="accuracy")
    if not checkpoints:
        raise StudyError("no checkpoints given")
    loaded = [c if isinstance(c, LoadedModel) else load_checkpoint(c, trust=trust, seed=seed) for c in checkpoints]
    specs = [c.source if isinstance(c, LoadedModel) else c for c in checkpoints]
    notes = [f"{c}: {n}" for c, lm in zip(specs, loaded) for n in lm.notes]
    recorded = [metadata_accuracy(lm.metadata) for lm in loaded]
    have_meta = all(r is not None for r in recorded)
    if accuracy == "metadata" and not have_meta:
        missing = [c for c, r in zip(specs, recorded) if r is None]
        raise StudyError(f"accuracy='metadata': no recorded accuracy ({', '.join(ACCURACY_KEYS)}) in "
                         f"{', '.join(missing)}")
    use_meta = accuracy == "metadata" or (accuracy == "auto" and have_meta)
    counts = [_test_images(lm.metadata, str(spec)) for spec, lm in zip(specs, loaded)] if use_meta else []
    models: list[ModelERF] = []
    for k, (spec, lm, rec) in enumerate(tqdm(list(zip(specs, loaded, recorded)), desc="study", unit="model",
                                             disable=not progress)):
        from erf.models import get_entry, is_model

        att = get_entry(lm.name).attention if is_model(lm.name) else None
        m, mnotes = measure_model(lm.model, data, str(spec), lm.name, att, bootstrap, seed, device,
                                  input_size=input_size)
        notes += [f"{spec}: {n}" for n in mnotes]
        m.trained = lm.trained
        if use_meta:
            m.accuracy = Accuracy(rec[0], counts[k], f"checkpoint metadata {rec[1]}")
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
    v["text"] = fraction_text(models, objects) + " " + v["text"]
    doc = {"schema": SCHEMA, "mode": "real", "conversion": CONVERSION, "data": data.description,
           "objects": objects_summary(objects), "models": [model_json(m, objects) for m in models], "pairs": rows,
           "fit": fit, "verdict": v, "notes": notes,
           "settings": {"accuracy": "metadata" if use_meta else "evaluate", "bootstrap": bootstrap, "seed": seed,
                        "images": len(data), "input_size": list(input_size) if input_size else None}}
    return doc, models


def fraction_text(models: Sequence[ModelERF], objects: ObjectSizes) -> str:
    """One sentence per model: which share of the objects its ERF (2 r50, 2 r95) and TRF are at least as large as."""
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
