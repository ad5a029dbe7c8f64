"""Twin pairing: each attention model with its plain twin (the registry's ``twin``), and the attention
gain of every pair with its interval."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from erf.study.records import Accuracy, ModelERF, near_chance
from erf.uncertainty import accuracy_gain


def twin_of(name: str) -> str | None:
    """The plain twin's registry name of attention model ``name`` (``resnet20_cbam`` -> ``resnet20``), from
    the model registry; ``None`` for plain models and for names the registry does not know."""
    from erf.models import get_entry, is_model

    if is_model(name):
        entry = get_entry(name)
        if entry.attention is not None:
            return entry.twin
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


def gain(plain: Accuracy, attention: Accuracy, resamples: int = 2000, seed: int = 0,
         level: float = 0.95) -> dict[str, Any]:
    """Attention gain ``acc(attention) - acc(plain)`` with a ``level`` interval (:func:`erf.uncertainty.accuracy_gain`:
    paired bootstrap over images when both have per-image ``correct`` vectors, else a normal approximation)."""
    return accuracy_gain(plain.value, attention.value, plain.images, attention.images, plain.correct,
                         attention.correct, resamples, seed, level)


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
                     "near_chance": near_chance(plain) or near_chance(att), "capacity": plain.params})
    return rows, notes
