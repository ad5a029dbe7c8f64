"""The pre-registered analysis of the controlled hypothesis-2 grid (issue #15), and its verdict.

Fixed in code (and in the README's ``erf study`` section) **before** the real run; the verdict
is decided by this rule alone. Hypothesis 2 (the article): *if the ERF is smaller than the
objects, attention helps clearly; if it already covers them, attention is superfluous.*

Units. A **cell** is one (dilation ``d``, object size ``s``, seed) triple: the plain twin and its
CBAM twin trained on the same canvases with the same seed. Its **gain** is
``acc(CBAM) - acc(plain)`` on the cell's fixed test canvases (a fraction; reported in pp).
A **design point** is ``(capacity, s, d)``; its seeds are its replicates. The **ratio** of a
design point is ``mean over its included seeds of the plain twin's object-centred 2 r50 / s``
(:mod:`erf.study.object_centred`, measured on the same test canvases); ``x = log2(ratio)``.

Rule (constants below):

1. **Inclusion.** A cell is included iff its *plain* twin reaches ``1 / classes +``
   :data:`CHANCE_MARGIN` test accuracy. The attention twin never decides inclusion: an attention
   twin that fails to train counts, with its (negative) gain. If fewer than :data:`MIN_INCLUDED`
   of the cells are included, the verdict is INCONCLUSIVE (the grid did not train).
2. **Power.** The positive control (:mod:`erf.study.positive_control`) must pass: at the distance
   beyond the plain twin's TRF, the CBAM gain averaged over seeds is at least :data:`PC_MIN_GAIN`
   and its one-sided seed-replicate t test of gain > 0 has p < :data:`ALPHA`. Otherwise the
   verdict is INCONCLUSIVE: the budget cannot show an attention effect even where one must exist.
3. **Primary.** OLS over the included cells of ``gain = a_g + b x``, one intercept ``a_g`` per
   ``(capacity, s)`` group (object size as a fixed effect; in the dilation grid capacity is one
   group, so the slope ``b`` comes from dilation alone). Seeds are independent replicates: the
   residual variance (seed-to-seed scatter plus lack of fit) gives the standard error, with
   ``n - p`` degrees of freedom. The slope must be identifiable: some group must hold two
   distinct ratios, else INCONCLUSIVE (this is the capacity guard, :func:`capacity_guard`).
   Tests one-sided at :data:`ALPHA`.
4. **Verdict.** SUPPORTS iff ``b < 0`` (one-sided p < ALPHA) **and** the mean gain over the
   included cells with ratio < 1 is > 0 (one-sided t test over those cells, p < ALPHA: attention
   "helps clearly" where the ERF is smaller). CONTRADICTS iff ``b > 0`` (one-sided p < ALPHA) or
   the mean gain at ratio < 1 is < 0 (one-sided p < ALPHA). Else INCONCLUSIVE.
5. **Secondary** (reported with numbers, never change the label): the threshold contrast
   ``c`` in ``gain = a_g + c 1[ratio < 1]`` (one-sided test ``c > 0``); TOST equivalence of the
   mean gain at ratio >= 1 with 0 within +-:data:`EQUIVALENCE_MARGIN` ("superfluous": both
   one-sided tests at ALPHA, i.e. the 90 % CI inside the margin); the design-point-means fit
   (seeds averaged first) as a robustness check; the gating controls (SE, CBAM's spatial gate
   alone, CBAM with a local channel gate) against the plain twin and against CBAM, per design
   point, with seed-paired t intervals: global context vs multiplicative gating.

Cells are dicts with keys ``size`` (px), ``dilation`` (or any design label), ``seed``,
``capacity`` (hashable: parameter count or architecture; equal for dilation twins),
``erf_plain`` (plain 2 r50, px), ``acc_plain``, ``acc_attention`` (fractions), ``classes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from erf.uncertainty import fixed_effects_fit, mean_test, tost

CHANCE_MARGIN = 0.10
"""Inclusion: the plain twin must reach chance (1 / classes) plus this accuracy."""
MIN_INCLUDED = 2 / 3
"""At least this fraction of the cells must be included, else INCONCLUSIVE."""
ALPHA = 0.05
"""One-sided level of every test."""
EQUIVALENCE_MARGIN = 0.015
"""TOST margin (fraction: 1.5 pp) for "attention is superfluous" at ratio >= 1."""
PC_MIN_GAIN = 0.10
"""Positive control passes when the CBAM gain beyond the plain TRF is at least this (10 pp) and significant."""
RULE = (
    f"Inclusion: a cell counts iff its plain twin reaches chance + {100 * CHANCE_MARGIN:.0f} pp (the attention "
    "twin never decides; a failed attention twin counts with its gain); fewer than "
    f"{100 * MIN_INCLUDED:.0f}% of cells included: INCONCLUSIVE. Power: the positive control must pass (CBAM gain "
    f">= {100 * PC_MIN_GAIN:.0f} pp beyond the plain TRF, one-sided seed t test p < {ALPHA}), else INCONCLUSIVE. "
    "Primary: OLS of gain on log2(ratio), ratio = design-point mean of the plain twin's object-centred 2 r50 / s, "
    "with one intercept per (capacity, object size) so the slope comes from dilation; seeds are replicates "
    "(residual SE, n - p df); slope not identifiable within a group: INCONCLUSIVE. SUPPORTS iff slope < 0 "
    f"(one-sided p < {ALPHA}) and the mean gain at ratio < 1 > 0 (one-sided p < {ALPHA}); CONTRADICTS iff slope > 0 "
    f"(one-sided p < {ALPHA}) or the mean gain at ratio < 1 < 0 (one-sided p < {ALPHA}); else INCONCLUSIVE. "
    "Secondary (never change the label): threshold contrast ratio < 1 vs >= 1 with the same intercepts; TOST of "
    f"the gain at ratio >= 1 within +-{100 * EQUIVALENCE_MARGIN:.1f} pp; design-point-means fit; gating controls."
)
"""The rule in one paragraph (written into every report)."""


# ----------------------------------------------------------------------------- small statistics
# ----------------------------------------------------------------------------- capacity guard
def capacity_guard(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Can a trend of the gain over the ERF/object ratio be told apart from capacity?

    ``points``: dicts with ``ratio`` and ``capacity`` (hashable: the plain twin's parameter count, or
    its architecture name and widths) and optionally ``size`` (object size; then groups are
    ``(capacity, size)``). A trend is attributable to the ERF only from ratios that differ **within**
    one group (same capacity, same objects). Returns ``{"ok", "groups_with_variation", "reason"}``:
    ``ok`` False means every ratio difference is also a capacity (or object-size) difference, so a
    SUPPORTS / CONTRADICTS label must not be given.

    How :func:`erf.study.verdict` should use it (real-data study): build one point per (plain,
    attention) pair with ``capacity`` = the plain twin's parameter count (and no ``size``: one object
    distribution), call this, and when ``ok`` is False turn a ``supports`` / ``contradicts`` label
    into ``inconclusive``, appending ``reason`` to the text; when ``ok`` is True, judge the trend by
    :func:`fixed_effects_fit` with ``groups`` = capacity, not by a pooled fit across architectures.
    """
    groups: dict[Any, set[float]] = {}
    for p in points:
        r = float(p["ratio"])
        if not math.isfinite(r):
            continue
        key = (p.get("capacity"), p.get("size")) if "size" in p else (p.get("capacity"),)
        groups.setdefault(key, set()).add(round(r, 9))
    varied = [k for k, v in groups.items() if len(v) >= 2]
    if varied:
        return {"ok": True, "groups_with_variation": [list(map(str, k)) for k in varied],
                "reason": f"{len(varied)} group(s) of equal capacity hold different ERF/object ratios"}
    return {"ok": False, "groups_with_variation": [],
            "reason": "every difference of ERF/object ratio between the points is also a difference of capacity "
                      "(architecture, parameters) or of objects, so a trend cannot be attributed to the ERF"}


# ----------------------------------------------------------------------------- positive control
def positive_control_result(cells: Sequence[dict[str, Any]], far_distance: int) -> dict[str, Any]:
    """Pass / fail of the positive control from its cells ``{"distance", "seed", "acc_plain", "acc_attention"}``.

    Passes iff at ``far_distance`` the seed-mean gain is >= :data:`PC_MIN_GAIN` and its one-sided
    t test of gain > 0 has p < :data:`ALPHA`. Each distance is summarised alike.
    """
    out: dict[str, Any] = {"far_distance": int(far_distance), "min_gain": PC_MIN_GAIN, "alpha": ALPHA,
                           "by_distance": {}}
    for dist in sorted({int(c["distance"]) for c in cells}):
        sub = [c for c in cells if int(c["distance"]) == dist]
        g = mean_test([c["acc_attention"] - c["acc_plain"] for c in sub])
        out["by_distance"][str(dist)] = {"gain": g, "acc_plain": float(np.mean([c["acc_plain"] for c in sub])),
                                         "acc_attention": float(np.mean([c["acc_attention"] for c in sub])),
                                         "seeds": len(sub)}
    far = out["by_distance"].get(str(int(far_distance)))
    if far is None:
        out.update(passed=False, reason=f"no positive-control cell at D = {far_distance} px")
        return out
    g = far["gain"]
    passed = bool(g["p_greater"] is not None and g["mean"] >= PC_MIN_GAIN and g["p_greater"] < ALPHA)
    ci = f"[95% CI {100 * g['ci'][0]:+.1f}, {100 * g['ci'][1]:+.1f}]" if g["ci"] else "[no CI]"
    out["passed"] = passed
    out["reason"] = (f"at D = {far_distance} px (beyond the plain twin's TRF) CBAM gains {100 * g['mean']:+.1f} pp "
                     f"{ci} over {g['n']} seed(s), one-sided p = "
                     f"{_p(g['p_greater'])} (plain {100 * far['acc_plain']:.1f}%, "
                     f"CBAM {100 * far['acc_attention']:.1f}%): "
                     + ("passed" if passed else f"FAILED (needs >= {100 * PC_MIN_GAIN:.0f} pp and p < {ALPHA})"))
    return out


# ----------------------------------------------------------------------------- the analysis
def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _pp(v: float) -> str:
    return f"{100 * v:+.1f}"


def design_ratios(cells: Sequence[dict[str, Any]]) -> dict[tuple[Any, Any, Any], float]:
    """``{(capacity, size, dilation): mean plain 2 r50 / size}`` over the given cells."""
    acc: dict[tuple[Any, Any, Any], list[float]] = {}
    for c in cells:
        acc.setdefault((c.get("capacity"), c["size"], c["dilation"]), []).append(float(c["erf_plain"]))
    return {k: float(np.mean(v)) / float(k[1]) for k, v in acc.items()}


def included(cell: dict[str, Any]) -> bool:
    """Rule 1: the plain twin reaches chance + :data:`CHANCE_MARGIN`."""
    return float(cell["acc_plain"]) >= 1.0 / int(cell.get("classes", 10)) + CHANCE_MARGIN


def analyse(cells: Sequence[dict[str, Any]], positive_control: dict[str, Any] | None = None,
            controls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Apply the pre-registered rule to the grid's ``cells`` (see the module docstring).

    Args:
        cells: main-grid cells (plain vs CBAM).
        positive_control: :func:`positive_control_result` output (``None``: not run, which fails rule 2).
        controls: gating-control rows ``{"size", "dilation", "seed", "gate", "acc_plain", "acc_attention",
            "acc_gate"}`` (``acc_attention``: the CBAM twin of the same cell), summarised only.

    Returns:
        ``{"label" (supports / contradicts / inconclusive), "text", "rule", "inclusion", "primary",
        "small_ratio_gain", "threshold", "tost", "design_points", "design_means_fit", "positive_control",
        "controls", "capacity_guard"}``.
    """
    cells = [dict(c) for c in cells]
    inc = [c for c in cells if included(c)]
    frac = len(inc) / len(cells) if cells else 0.0
    ratios = design_ratios(inc)
    for c in inc:
        c["ratio"] = ratios[(c.get("capacity"), c["size"], c["dilation"])]
        c["gain"] = float(c["acc_attention"]) - float(c["acc_plain"])
    groups = [(c.get("capacity"), c["size"]) for c in inc]
    y = [c["gain"] for c in inc]
    x = [math.log2(c["ratio"]) if c["ratio"] > 0 else float("nan") for c in inc]
    primary = fixed_effects_fit(y, x, groups) if inc else None
    guard = capacity_guard([{"ratio": c["ratio"], "capacity": c.get("capacity"), "size": c["size"]} for c in inc])
    small = mean_test([c["gain"] for c in inc if c["ratio"] < 1])
    large = [c["gain"] for c in inc if c["ratio"] >= 1]
    equivalence = tost(large, EQUIVALENCE_MARGIN, ALPHA)
    threshold = fixed_effects_fit(y, [1.0 if c["ratio"] < 1 else 0.0 for c in inc], groups) if inc else None
    points = _design_points(inc, ratios)
    dp = list(points.values())
    means_fit = fixed_effects_fit([p["gain"]["mean"] for p in dp], [math.log2(p["ratio"]) for p in dp],
                                  [(p["capacity"], p["size"]) for p in dp]) if dp else None
    label, headline = _label(len(inc), len(cells), frac, positive_control, primary, guard, small)
    ctrl = summarise_controls(controls)
    lines = [headline, *_evidence_lines(len(inc), len(cells), positive_control, primary, small),
             *_secondary_lines(threshold, equivalence, means_fit, ctrl)]
    return {"label": label, "text": " ".join(lines), "rule": RULE,
            "inclusion": {"included": len(inc), "cells": len(cells), "fraction": frac,
                          "excluded": [{k: c[k] for k in ("size", "dilation", "seed", "acc_plain") if k in c}
                                       for c in cells if not included(c)]},
            "primary": primary, "small_ratio_gain": small, "threshold": threshold, "tost": equivalence,
            "design_points": points, "design_means_fit": means_fit, "positive_control": positive_control,
            "controls": ctrl, "capacity_guard": guard}


def _design_points(inc: Sequence[dict[str, Any]], ratios: dict[tuple[Any, Any, Any], float]) -> dict[str, Any]:
    """Per design point ``(capacity, s, d)`` of ``ratios`` (sorted), keyed ``"s=S/d=D"``: its ratio, the plain
    twin's mean 2 r50 (px), the seed-replicate :func:`~erf.uncertainty.mean_test` of the gain (fractions) and the
    mean accuracies of the included cells ``inc`` (with their ``ratio`` and ``gain``) at that point."""
    points: dict[str, Any] = {}
    for key, ratio in sorted(ratios.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        sub = [c for c in inc if (c.get("capacity"), c["size"], c["dilation"]) == key]
        points[f"s={key[1]}/d={key[2]}"] = {
            "capacity": key[0], "size": key[1], "dilation": key[2], "ratio": ratio,
            "erf_plain": ratio * float(key[1]), "gain": mean_test([c["gain"] for c in sub]),
            "acc_plain": float(np.mean([c["acc_plain"] for c in sub])),
            "acc_attention": float(np.mean([c["acc_attention"] for c in sub])), "seeds": len(sub)}
    return points


def _label(n_included: int, n_cells: int, frac: float, positive_control: dict[str, Any] | None,
           primary: dict[str, Any] | None, guard: dict[str, Any], small: dict[str, Any]) -> tuple[str, str]:
    """Rules 1 to 4 in order: ``(label, the text's first sentence)`` from the included fraction ``frac``, the
    positive control, the primary fit, the capacity guard and the mean gain at ratio < 1 (``small``)."""
    if frac < MIN_INCLUDED:
        return "inconclusive", (f"Verdict: INCONCLUSIVE. Only {n_included} of {n_cells} cells trained (plain twin "
                                f"above chance + {100 * CHANCE_MARGIN:.0f} pp); the rule needs "
                                f"{100 * MIN_INCLUDED:.0f}%.")
    if positive_control is None:
        return "inconclusive", ("Verdict: INCONCLUSIVE. The positive control was not run, so the experiment's power "
                                "to see attention help is not shown.")
    if not positive_control.get("passed"):
        return "inconclusive", ("Verdict: INCONCLUSIVE. The positive control did not pass: with this training budget "
                                "attention does not show an effect even where one must exist, so the experiment "
                                "lacks the power to judge hypothesis 2.")
    if primary is None or not guard["ok"]:
        return "inconclusive", ("Verdict: INCONCLUSIVE. The slope is not identifiable within one capacity and "
                                f"object size ({guard['reason']}).")
    slope_neg = primary["p_less"] < ALPHA
    slope_pos = primary["p_greater"] < ALPHA
    helps = small["p_greater"] is not None and small["p_greater"] < ALPHA
    hurts = small["p_less"] is not None and small["p_less"] < ALPHA
    if slope_neg and helps:
        return "supports", ("Verdict: the evidence SUPPORTS hypothesis 2 (the gain falls as the ERF grows relative "
                            "to the objects at fixed capacity, and attention helps where the ERF is smaller).")
    if slope_pos or hurts:
        why = ("the gain rises as the ERF grows relative to the objects" if slope_pos
               else "attention lowers accuracy where the ERF is smaller than the objects")
        return "contradicts", f"Verdict: the evidence CONTRADICTS hypothesis 2 ({why}, at fixed capacity)."
    return "inconclusive", ("Verdict: INCONCLUSIVE. Neither the pre-registered support condition (slope < 0 and a "
                            "positive gain at ratio < 1) nor a contradiction (slope > 0, or a negative gain at "
                            f"ratio < 1) reached p < {ALPHA}.")


def _evidence_lines(n_included: int, n_cells: int, positive_control: dict[str, Any] | None,
                    primary: dict[str, Any] | None, small: dict[str, Any]) -> list[str]:
    """The sentences behind the label: inclusion, positive control, primary slope (pp per doubling of the
    ERF/object ratio) and the mean gain at ratio < 1 (pp)."""
    lines = [f"Inclusion: {n_included} of {n_cells} cells have a plain twin at or above chance + "
             f"{100 * CHANCE_MARGIN:.0f} pp."]
    if positive_control is None:
        lines.append("Positive control: not run, so the experiment's power is unknown.")
    else:
        lines.append(f"Positive control: {positive_control.get('reason', 'no result')}.")
    if primary is not None:
        lines.append(f"Primary: slope {_pp(primary['slope'])} pp per doubling of ERF/object [95% CI "
                     f"{_pp(primary['ci'][0])}, {_pp(primary['ci'][1])}], n = {primary['n']} cells, df = "
                     f"{primary['df']}, one-sided p(slope < 0) = {_p(primary['p_less'])}, p(slope > 0) = "
                     f"{_p(primary['p_greater'])}.")
    if small["n"]:
        ci = small["ci"]
        lines.append(f"Mean gain at ratio < 1: {_pp(small['mean'])} pp over {small['n']} cells"
                     + (f" [95% CI {_pp(ci[0])}, {_pp(ci[1])}], one-sided p(> 0) = {_p(small['p_greater'])}"
                        if ci else "") + ".")
    else:
        lines.append("No included cell has ratio < 1.")
    return lines


def _secondary_lines(threshold: dict[str, Any] | None, equivalence: dict[str, Any], means_fit: dict[str, Any] | None,
                     ctrl: Sequence[dict[str, Any]]) -> list[str]:
    """The sentences of rule 5 (never change the label): threshold contrast, TOST at ratio >= 1, the
    design-point-means fit and one per gating-control row of :func:`summarise_controls` (differences in pp)."""
    lines: list[str] = []
    if threshold is not None:
        lines.append(f"Secondary, threshold: gain at ratio < 1 minus at ratio >= 1 (same intercepts) "
                     f"{_pp(threshold['slope'])} pp [95% CI {_pp(threshold['ci'][0])}, {_pp(threshold['ci'][1])}], "
                     f"one-sided p(> 0) = {_p(threshold['p_greater'])}.")
    else:
        lines.append("Secondary, threshold: not estimable (no object size has cells on both sides of ratio 1).")
    if equivalence["n"] >= 2:
        lo, hi = equivalence["ci90"]
        lines.append(f"Secondary, superfluous at ratio >= 1: mean gain {_pp(equivalence['mean'])} pp over "
                     f"{equivalence['n']} cells, 90% CI [{_pp(lo)}, {_pp(hi)}]; equivalent to 0 within "
                     f"+-{100 * EQUIVALENCE_MARGIN:.1f} pp: {'yes' if equivalence['equivalent'] else 'no'} (TOST).")
    else:
        lines.append("Secondary, superfluous at ratio >= 1: fewer than 2 included cells with ratio >= 1; no TOST.")
    if means_fit is not None:
        lines.append(f"Robustness, design-point means: slope {_pp(means_fit['slope'])} pp per doubling [95% CI "
                     f"{_pp(means_fit['ci'][0])}, {_pp(means_fit['ci'][1])}], df = {means_fit['df']}.")
    for row in ctrl:
        lines.append(f"Control {row['gate']} at s = {row['size']}, d = {row['dilation']}: gate minus plain "
                     f"{_pp(row['vs_plain']['mean'])} pp, CBAM minus gate {_pp(row['cbam_vs_gate']['mean'])} pp "
                     f"({row['seeds']} seeds).")
    return lines


def summarise_controls(controls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (gate, size, dilation): seed-paired gate - plain and CBAM - gate accuracy differences."""
    out = []
    keys = sorted({(c["gate"], c["size"], c["dilation"]) for c in controls}, key=str)
    for gate, size, dil in keys:
        sub = [c for c in controls if (c["gate"], c["size"], c["dilation"]) == (gate, size, dil)]
        out.append({"gate": gate, "size": size, "dilation": dil, "seeds": len(sub),
                    "acc_gate": float(np.mean([c["acc_gate"] for c in sub])),
                    "vs_plain": mean_test([c["acc_gate"] - c["acc_plain"] for c in sub]),
                    "cbam_vs_gate": mean_test([c["acc_attention"] - c["acc_gate"] for c in sub])})
    return out


__all__ = ["ALPHA", "CHANCE_MARGIN", "EQUIVALENCE_MARGIN", "MIN_INCLUDED", "PC_MIN_GAIN", "RULE", "analyse",
           "capacity_guard", "design_ratios", "included", "positive_control_result", "summarise_controls"]
