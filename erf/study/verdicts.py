"""Verdicts on hypothesis 2 from gain points: the real-data rule (:func:`verdict`) and the controlled
grid's rule (:func:`controlled_verdict`), written out with their numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from erf.statistics import linear_fit, mean_interval
from erf.study.records import CHANCE_MARGIN


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
    if flagged:
        lines.append(f"Caution: {', '.join(flagged)} are within {100 * CHANCE_MARGIN:.0f} pp of chance accuracy "
                     "(untrained or under-trained), so their gains say nothing about attention; the verdict is "
                     "inconclusive.")
        label = "inconclusive"
    lines.insert(0, {"supports": "Verdict: the evidence SUPPORTS hypothesis 2.",
                     "contradicts": "Verdict: the evidence CONTRADICTS hypothesis 2.",
                     "inconclusive": "Verdict: INCONCLUSIVE."}[label])
    return {"label": label, "text": " ".join(lines)}


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
        extra.append(fit_text("over all cells, near-chance ones included", fit_all, len(rows)))
    for key, f in within.items():
        extra.append(fit_text(f"within {key} only (same architecture, object size varied"
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


def fit_text(what: str, fit: dict[str, Any] | None, n: int) -> str:
    if fit is None:
        return f"Fit {what}: not possible (n = {n}; a fit needs 3 points at 2 or more ratios)."
    lo, hi = fit["slope_ci"]
    sign = "falls" if hi < 0 else "rises" if lo > 0 else "shows no detectable trend"
    return (f"Fit {what}: {100 * fit['slope']:+.1f} pp per doubling of ERF/object [95% CI {100 * lo:+.1f}, "
            f"{100 * hi:+.1f}], n = {fit['n']}, p = {fit['p_value']:.3g}: the gain {sign}"
            + (" as the ERF grows relative to the objects" if sign != "shows no detectable trend" else "")
            + (" (contrary to the hypothesis)." if lo > 0 else " (as the hypothesis predicts)." if hi < 0 else "."))
