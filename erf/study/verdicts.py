"""The real-data verdict on hypothesis 2 from gain points (:func:`verdict`, written out with its numbers, with
the capacity guard of :mod:`erf.study.preregistered`); the controlled grid's pre-registered rule is in
:mod:`erf.study.preregistered`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from erf.study.records import CHANCE_MARGIN
from erf.uncertainty import fixed_effects_fit, linear_fit, mean_interval


def fit_gain(ratios: Sequence[float], gains: Sequence[float], level: float = 0.95) -> dict[str, Any] | None:
    """OLS fit ``gain = a + b log2(ratio)`` with a t-interval on the slope ``b``; ``None`` with < 3 usable points."""
    fit = linear_fit(np.log2(np.asarray(ratios, dtype=np.float64)), gains, level)
    if fit is None:
        return None
    return {**fit, "x": "log2(ERF diameter 2*r50 of the plain twin / object size)",
            "y": "gain (attention - plain accuracy)"}


def verdict(points: Sequence[dict[str, Any]], fit: dict[str, Any] | None,
            flagged: Sequence[str] = ()) -> dict[str, Any]:
    """A written verdict on hypothesis 2 from gain points ``{"label", "ratio", "gain", "gain_ci"}``.

    Rules: with a fit (3+ points), the slope's CI below 0 supports the hypothesis, above 0
    contradicts it, else inconclusive; with 2 points, the gain difference (smaller ratio minus
    larger) with a CI from the two gain CIs; with 1 point, inconclusive about the trend. A
    single point's gain above 0 (CI excluded) at ratio < 1 is consistent with it; a gain
    below 0 at ratio < 1 contradicts it. Flagged (near-chance) models make any verdict inconclusive.

    Capacity guard (:func:`erf.study.preregistered.capacity_guard`): points that carry a ``capacity`` (the
    plain twin's parameter count) support or contradict the hypothesis only through ratios that differ
    *within* one capacity; when every ratio difference is also a difference of architecture, a
    ``supports`` / ``contradicts`` label becomes ``inconclusive``, and otherwise it stands only if the fit
    with one intercept per capacity (:func:`~erf.uncertainty.fixed_effects_fit`) has a slope of the
    same sign with a 95 % CI excluding 0.
    """
    pts = [p for p in points if math.isfinite(p["ratio"]) and math.isfinite(p["gain"])]
    if not pts:
        return {"label": "inconclusive", "text": "No (plain, attention) pair with a finite ERF/object ratio and "
                                                 "gain: the hypothesis cannot be judged."}
    lines = _group_lines(pts)
    if fit is not None:
        label, trend = _fit_trend(fit)
    elif len(pts) == 2 and pts[0]["ratio"] != pts[1]["ratio"]:
        label, trend = _two_point_trend(pts[0], pts[1])
    else:
        label, trend = _one_ratio_trend(pts)
    lines.extend(trend)
    if label in ("supports", "contradicts") and all(p.get("capacity") is not None for p in pts):
        label, guarded = _capacity_guarded(pts, label)
        lines.extend(guarded)
    if flagged:
        lines.append(f"Caution: {', '.join(flagged)} are within {100 * CHANCE_MARGIN:.0f} pp of chance accuracy "
                     "(untrained or under-trained), so their gains say nothing about attention; the verdict is "
                     "inconclusive.")
        label = "inconclusive"
    lines.insert(0, {"supports": "Verdict: the evidence SUPPORTS hypothesis 2.",
                     "contradicts": "Verdict: the evidence CONTRADICTS hypothesis 2.",
                     "inconclusive": "Verdict: INCONCLUSIVE."}[label])
    return {"label": label, "text": " ".join(lines)}


def _group_lines(pts: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per non-empty side of ratio 1 (ratio < 1, ratio >= 1): its points and mean gain in pp, with a
    95 % t interval over the points (or the single point's own ``gain_ci``, when it has one)."""
    lines: list[str] = []
    small = [p for p in pts if p["ratio"] < 1]
    large = [p for p in pts if p["ratio"] >= 1]
    for name, group in (("ERF smaller than the objects (ratio < 1)", small), ("ERF at least the objects' size "
                                                                             "(ratio >= 1)", large)):
        if group:
            gs = [p["gain"] for p in group]
            ci = mean_interval(gs)
            ci_txt = f" [95% CI {100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else (
                f" [95% CI {100 * group[0]['gain_ci'][0]:+.1f}, {100 * group[0]['gain_ci'][1]:+.1f}]"
                if group[0].get("gain_ci") else "")
            lines.append(f"{name}: {len(group)} point(s), mean gain {100 * float(np.mean(gs)):+.1f} pp{ci_txt}.")
    return lines


def _fit_trend(fit: dict[str, Any]) -> tuple[str, list[str]]:
    """``(label, sentences)`` from the fit over 3+ points: the slope's 95 % CI (pp per doubling of the ratio)
    below 0 supports, above 0 contradicts, else inconclusive."""
    lo, hi = fit["slope_ci"]
    lines = [f"Fit over {fit['n']} points: gain changes by {100 * fit['slope']:+.1f} pp per doubling of "
             f"ERF/object [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], p = {fit['p_value']:.3g}."]
    if hi < 0:
        lines.append("The gain falls as the ERF grows relative to the objects, as the hypothesis predicts.")
        return "supports", lines
    if lo > 0:
        lines.append("The gain grows as the ERF grows relative to the objects: the evidence contradicts the "
                     "hypothesis.")
        return "contradicts", lines
    lines.append("The slope's CI includes 0: no detectable dependence of the gain on ERF/object size.")
    return "inconclusive", lines


def _two_point_trend(first: dict[str, Any], second: dict[str, Any]) -> tuple[str, list[str]]:
    """``(label, sentences)`` from two points at different ratios: the gain at the smaller ratio minus at the
    larger, with an approximate 95 % CI whose half-width is the root sum of squares of the two ``gain_ci``
    half-widths; above 0 supports, below 0 contradicts, else inconclusive."""
    a, b = sorted((first, second), key=lambda p: p["ratio"])
    d = a["gain"] - b["gain"]
    half = math.sqrt(sum(((p["gain_ci"][1] - p["gain_ci"][0]) / 2) ** 2 for p in (a, b)))
    lines = [f"Gain at the smaller ratio ({a['label']}, {a['ratio']:.2f}) minus gain at the larger "
             f"({b['label']}, {b['ratio']:.2f}): {100 * d:+.1f} pp [approx. 95% CI {100 * (d - half):+.1f}, "
             f"{100 * (d + half):+.1f}]."]
    if d - half > 0:
        lines.append("Attention helps more where the ERF is smaller relative to the objects, as predicted "
                     "(two pairs only: weak evidence).")
        return "supports", lines
    if d + half < 0:
        lines.append("Attention helps less where the ERF is smaller relative to the objects: this contradicts "
                     "the hypothesis (two pairs only).")
        return "contradicts", lines
    lines.append("The difference's CI includes 0: inconclusive.")
    return "inconclusive", lines


def _one_ratio_trend(pts: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """``(label, sentences)`` without a trend (no fit, no two ratios): the first point alone contradicts the
    hypothesis when its ERF is smaller than the objects (ratio < 1) and its gain's CI lies below 0."""
    p = pts[0]
    lo, hi = p.get("gain_ci") or (p["gain"], p["gain"])
    lines = [f"Only {len(pts)} point(s) at one ratio: no trend can be judged."]
    if p["ratio"] < 1 and hi < 0:
        lines.append(f"{p['label']}: the ERF is smaller than the objects but attention lowers accuracy "
                     f"({100 * p['gain']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]): contrary to the "
                     "hypothesis.")
        return "contradicts", lines
    return "inconclusive", lines


def _capacity_guarded(pts: Sequence[dict[str, Any]], label: str) -> tuple[str, list[str]]:
    """The capacity guard on a ``supports`` / ``contradicts`` ``label`` of points that all carry a ``capacity``:
    the label stands only if some capacity holds two ratios and the fit with one intercept per capacity has a
    slope of the label's sign with a 95 % CI excluding 0; else ``inconclusive``. Returns ``(label, sentences)``."""
    from erf.study.preregistered import capacity_guard

    guard = capacity_guard(pts)
    if not guard["ok"]:
        return "inconclusive", [f"Capacity guard: {guard['reason']}; the verdict is inconclusive."]
    within = fixed_effects_fit([p["gain"] for p in pts], [math.log2(p["ratio"]) for p in pts],
                               [p["capacity"] for p in pts])
    sign = -1 if label == "supports" else 1
    holds = within is not None and (within["ci"][1] < 0 if sign < 0 else within["ci"][0] > 0)
    lines: list[str] = []
    if within is not None:
        lines.append(f"Within equal capacity (one intercept per architecture): "
                     f"{100 * within['slope']:+.1f} pp per doubling [95% CI {100 * within['ci'][0]:+.1f}, "
                     f"{100 * within['ci'][1]:+.1f}].")
    if not holds:
        lines.append("The trend does not hold within equal capacity; the verdict is inconclusive.")
        return "inconclusive", lines
    return label, lines
