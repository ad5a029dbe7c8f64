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
            ci = mean_interval(gs)
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
    if label in ("supports", "contradicts") and all(p.get("capacity") is not None for p in pts):
        from erf.study.preregistered import capacity_guard

        guard = capacity_guard(pts)
        if not guard["ok"]:
            lines.append(f"Capacity guard: {guard['reason']}; the verdict is inconclusive.")
            label = "inconclusive"
        else:
            within = fixed_effects_fit([p["gain"] for p in pts], [math.log2(p["ratio"]) for p in pts],
                                       [p["capacity"] for p in pts])
            sign = -1 if label == "supports" else 1
            holds = within is not None and (within["ci"][1] < 0 if sign < 0 else within["ci"][0] > 0)
            if within is not None:
                lines.append(f"Within equal capacity (one intercept per architecture): "
                             f"{100 * within['slope']:+.1f} pp per doubling [95% CI {100 * within['ci'][0]:+.1f}, "
                             f"{100 * within['ci'][1]:+.1f}].")
            if not holds:
                lines.append("The trend does not hold within equal capacity; the verdict is inconclusive.")
                label = "inconclusive"
    if flagged:
        lines.append(f"Caution: {', '.join(flagged)} are within {100 * CHANCE_MARGIN:.0f} pp of chance accuracy "
                     "(untrained or under-trained), so their gains say nothing about attention; the verdict is "
                     "inconclusive.")
        label = "inconclusive"
    lines.insert(0, {"supports": "Verdict: the evidence SUPPORTS hypothesis 2.",
                     "contradicts": "Verdict: the evidence CONTRADICTS hypothesis 2.",
                     "inconclusive": "Verdict: INCONCLUSIVE."}[label])
    return {"label": label, "text": " ".join(lines)}
