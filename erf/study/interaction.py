"""The pre-registered rule of the second controlled hypothesis-2 grid (issue #24): the interaction is the test.

Fixed in code, tested on simulated worlds (:mod:`erf.study.worlds`, ``tests/test_interaction.py``) and
committed **before** the grid's first cell; the verdict is decided by this rule alone. It replaces, for the
new grid, the pilot's rule (:mod:`erf.study.preregistered`, kept unchanged for ``figures/h2_cpu``), which
judged the *level* of the CBAM gain against zero and so mixed the gates' overall cost with the ERF effect.

Hypothesis 2 (the article): attention widens the receptive field, so it *helps where the ERF is smaller than
the objects and is superfluous where the ERF already covers them*. What it predicts at fixed capacity is an
**interaction**: the benefit of a global gate falls as the ratio ERF/object grows, against the plain twin
*and* against a local gate with the same parameters and no global path. A flat cost of gating (slower
training, a worse optimum) shifts every level and leaves these slopes alone.

Units. A **cell** is one ``(capacity, scale, dilation, seed)``: the arms ``plain``, ``cbam``, ``localgate``
(and ``cbam_spatial``) trained on the same canvases from the same seed and evaluated on the scale's fixed
test canvases; accuracies are fractions (reported in pp). A **block** is ``(capacity, scale, seed)``: its
cells share the objects' scale, the training canvases and (same tensor shapes) the initialisation, and differ
only in dilation. The **ratio** of a design point ``(capacity, scale, dilation)`` is

    mean over its included seeds of the plain twin's object-centred ERF diameter 2 r_Q (px)
    / the objects' extent 2 r_Q (px, the median over the scale's test objects of the diameter of the
      disc around the object's centre that holds a fraction Q of its foreground mask),

with one quantile ``Q`` (:data:`QUANTILE` = 0.5) in the numerator and the denominator; ``x = log2(ratio)``.
r25 / r75 / r95 (both sides) are sensitivity checks that never change the label.

Rule (constants below; every test one-sided at :data:`ALPHA`):

1. **Inclusion.** A cell counts iff its plain twin reaches ``1 / classes +`` :data:`CHANCE_MARGIN` test
   accuracy (the gated arms never decide). Under :data:`MIN_INCLUDED` of the cells included: INCONCLUSIVE.
2. **Plateau.** For one seed per design point the plain and CBAM twins are also trained for twice the epochs.
   For each of the two arms, the mean over those points of ``acc(2E) - acc(E)`` must be below
   :data:`PLATEAU_PP`; otherwise INCONCLUSIVE: the twins were not trained to a plateau.
3. **Power.** The positive control (:func:`erf.study.preregistered.positive_control_result`) must pass,
   else INCONCLUSIVE.
4. **Manipulation check.** The premise must show: at fixed capacity an ERF smaller than the object limits
   the plain twin. OLS ``acc_plain = a_block + m min(x, 0)`` (block intercepts; slope from dilation within a
   block); ``m > 0`` with p < ALPHA, else INCONCLUSIVE: *the ERF did not limit this task* (a finding, reported
   with its numbers). Not identifiable (no block with an ERF below the object): INCONCLUSIVE.
5. **Primary: the interaction.** Two slopes, each an OLS with one intercept per block (seed blocks nest the
   ``(capacity, scale)`` groups, so the slope comes from dilation within a block; residual SE,
   ``n - blocks - 1`` df): ``b1`` of ``cbam - plain`` on ``x`` and ``b2`` of ``cbam - localgate`` on ``x``.
   **SUPPORTS** iff ``b1 < 0`` and ``b2 < 0``, each with p < ALPHA (an intersection-union test: its error rate
   is at most ALPHA without correction). **CONTRADICTS** iff, for both slopes, ``b > -DELTA`` with p < ALPHA
   (:data:`EQUIVALENCE_BOUND`: evidence that neither slope is as steep as hypothesis 2's smallest effect of
   interest, reversed slopes included; again an intersection-union test). Otherwise INCONCLUSIVE.
   No level is judged against zero.
6. **Secondary** (reported, never change the label): the level of ``cbam - localgate`` where ratio < 1 (the
   only level the rule reads: same parameters, no global path), the object-scale lever (the same two slopes
   with one intercept per ``(capacity, dilation, seed)``: the slope from object scale at fixed dilation), the
   spatial-only arm's slopes, design-point means, the r25 / r75 / r95 sensitivity of ``x``.

The operating characteristics of this rule on the planned design (false-positive rates, power per world, the
power behind :data:`EQUIVALENCE_BOUND`) are computed by :func:`erf.study.worlds.operating_characteristics`;
``figures/h2_grid/design.md`` states them.

Cells (``kind == "main"``) are dicts with ``capacity`` (hashable), ``scale``, ``dilation``, ``seed``,
``classes``, ``object_extent`` (``{"d25", "d50", "d75", "d95"}``: the objects' 2 r_q in px) and ``arms``:
``{arm: {"accuracy", "train_accuracy", "erf": {"object_centred": {"d25", ...}}}}``. Plateau cells
(``kind == "plateau"``) carry the same keys with ``arms: {arm: {"accuracy"}}`` at twice the epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from erf.uncertainty import mean_test, t_sf, within_slope

ALPHA = 0.05
"""One-sided level of every test."""
CHANCE_MARGIN = 0.10
"""Inclusion: the plain twin must reach chance (1 / classes) plus this accuracy."""
MIN_INCLUDED = 2 / 3
"""At least this fraction of the cells must be included, else INCONCLUSIVE."""
PLATEAU_PP = 0.01
"""Plateau: doubling the epochs must raise the mean test accuracy of each twin by less than this (1 pp)."""
EQUIVALENCE_BOUND = 0.015
"""DELTA: hypothesis 2's smallest slope of interest, 1.5 pp of gain per doubling of ERF/object (6 pp over the
16x range the grid spans). CONTRADICTS needs both slopes shown above ``-DELTA``. On the planned design
(:data:`erf.study.worlds.PLANNED`) the simulated power of that test in the global null is about 97 % at the
pilot's noise (cell SD of a difference of two arms 2.4 pp) and about 74 % at 3.5 pp
(``tests/test_interaction.py``)."""
QUANTILE = 0.5
"""Q: the mass quantile of both the ERF diameter and the object extent in the ratio (2 r50 / 2 r50)."""
SENSITIVITY_QUANTILES = (0.25, 0.75, 0.95)
"""Quantiles of the sensitivity checks (the same in the numerator and the denominator)."""
ARMS = ("plain", "cbam", "localgate", "cbam_spatial")
"""Arms of a main cell: the plain twin, CBAM, CBAM with a local (3x3) channel gate, CBAM's spatial gate alone."""
LABELS = ("supports", "contradicts", "inconclusive")

STABLE_PP = 0.04
"""Rule 2 of ``interaction/2``: doubling the epochs must move the mean of each tested contrast (CBAM - plain,
CBAM - local gate) over the plateau points by less than this (4 pp) either way. On ``grid3_cpu``'s 6 plateau points
a stable world passes about 96 % of the time at the pilot's noise (86 % at 2.5 pp per model) and a 5 pp catch-up
of CBAM about 15 % (:func:`erf.study.worlds.operating_point_rates`)."""
LAG_PP = 0.03
"""Rule 2 of ``interaction/2``: at E epochs the gated arms' mean running train accuracy (last epoch, over the
included main cells) must not lie more than this (3 pp) below the plain twin's (no gate still catching up; the
pilot ``h2_cpu``'s CBAM lagged by 6 pp). Set after the convergence pilot's local gate lagged by 2.0 pp at 40 epochs
(one seed, ``figures/h2_grid3/design.md``), before any cell of ``grid3_cpu``."""


@dataclass(frozen=True)
class Rule:
    """One registered version of the rule (registry :data:`RULES`; a budget names the one that judges it).

    Versions differ only in rule 2 and DELTA; rules 1 and 3-6 are the module docstring's.

    Attributes:
        name: registry key (``interaction/1``: the rule of ``grid_cpu``, committed before its first cell).
        plateau: ``accuracy`` (rule 2 as in the module docstring: doubling the epochs raises each twin's mean
            test accuracy by < ``plateau_pp``) or ``operating_point`` (``interaction/2``: doubling moves each
            tested contrast's mean by < ``stable_pp`` either way, and no gated arm's mean train accuracy lies
            more than ``lag_pp`` below the plain twin's; the accuracy change is reported, not required).
        bound: DELTA, the equivalence bound of CONTRADICTS (fraction per doubling).
        plateau_arms: the arms the plateau cells train for twice the epochs.
    """

    name: str
    plateau: str = "accuracy"
    bound: float = EQUIVALENCE_BOUND
    plateau_pp: float = PLATEAU_PP
    stable_pp: float = STABLE_PP
    lag_pp: float = LAG_PP
    plateau_arms: tuple[str, ...] = ("plain", "cbam")

    @property
    def text(self) -> str:
        """The rule in one paragraph (written into every report)."""
        if self.plateau == "operating_point":
            step2 = (f"Operating point (not an accuracy plateau): for one seed per design point, "
                     f"{', '.join(self.plateau_arms)} are also trained for twice the epochs; the mean change of "
                     f"(CBAM - plain) and of (CBAM - local gate) must each lie within +-{100 * self.stable_pp:g} pp, "
                     f"and at E epochs the mean running train accuracy of CBAM and of the local gate over the "
                     f"included cells must each be at least the plain twin's - {100 * self.lag_pp:g} pp, else "
                     "INCONCLUSIVE; the change of test accuracy on doubling is reported, not required.")
        else:
            step2 = (f"Plateau: for one seed per design point, doubling the epochs must raise the mean test accuracy "
                     f"of the plain and of the CBAM twin each by < {100 * self.plateau_pp:g} pp, else INCONCLUSIVE.")
        d = f"-{100 * self.bound:g} pp"
        return (
            f"[{self.name}] Inclusion: a cell counts iff its plain twin reaches chance + {100 * CHANCE_MARGIN:g} pp; "
            f"fewer than {100 * MIN_INCLUDED:.0f}% included: INCONCLUSIVE. {step2} Power: the positive control must "
            "pass, else INCONCLUSIVE. Ratio = design-point mean of the plain twin's object-centred ERF "
            f"2 r{100 * QUANTILE:.0f} / the objects' measured extent 2 r{100 * QUANTILE:.0f} (the same quantile both "
            "sides); x = log2(ratio). Manipulation check: OLS of plain accuracy on min(x, 0) with one intercept per "
            f"(capacity, scale, seed) block; slope > 0 (one-sided p < {ALPHA}) else INCONCLUSIVE: the ERF did not "
            "limit this task. Primary (the interaction): slopes b1 of (CBAM - plain) and b2 of (CBAM - local gate) "
            "on x, one intercept per block (slope from dilation within a block; residual SE, n - blocks - 1 df). "
            f"SUPPORTS iff b1 < 0 and b2 < 0, each one-sided p < {ALPHA} (intersection-union test). CONTRADICTS iff "
            f"b1 > {d} and b2 > {d} per doubling, each one-sided p < {ALPHA} (evidence that neither slope reaches "
            "the smallest effect of interest). Else INCONCLUSIVE. No level is judged against zero. Secondary (never "
            "change the label): CBAM - local gate where ratio < 1; the object-scale lever (intercepts per "
            "(capacity, dilation, seed)); the spatial-only arm; design-point means; r25/r75/r95 sensitivity.")


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("interaction/1"),
    Rule("interaction/2", plateau="operating_point", bound=0.02, plateau_arms=("plain", "cbam", "localgate")),
)}
"""The registered versions of the rule: ``interaction/1`` judged ``grid_cpu`` (committed before its first cell,
unchanged since); ``interaction/2`` was committed before the first cell of ``grid3_cpu``
(``figures/h2_grid3/design.md`` says why rule 2 changed: an accuracy plateau is out of reach on this CPU)."""
RULE = RULES["interaction/1"].text
"""The rule of ``grid_cpu`` in one paragraph."""


# ----------------------------------------------------------------------------- the decision (vectorised)
def slope_tests(y: np.ndarray, x: np.ndarray, blocks: Sequence[Any], bound: float = EQUIVALENCE_BOUND
                ) -> dict[str, Any]:
    """Block-intercept slope of ``y`` on ``x`` with its one-sided tests, for one or many outcome columns.

    Args:
        y: ``(n,)`` or ``(n, R)`` outcomes (fractions); x: ``(n,)`` log2 ratios; blocks: ``n`` block labels.
        bound: DELTA of the test ``b > -bound``.

    Returns:
        :func:`erf.uncertainty.within_slope`'s fit plus ``p_less`` (``b < 0``), ``p_greater`` (``b > 0``) and
        ``p_above_bound`` (``b > -bound``), arrays or floats like the slope; NaN when not identified.
    """
    fit = within_slope(y, x, blocks)
    b, se = np.asarray(fit["slope"], dtype=np.float64), np.asarray(fit["se"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(se > 0, b / np.where(se > 0, se, 1.0), np.sign(b) * np.inf)
        tb = np.where(se > 0, (b + bound) / np.where(se > 0, se, 1.0), np.sign(b + bound) * np.inf)
    df = max(fit["df"], 1)
    p_greater = np.asarray(t_sf(t0, df), dtype=np.float64)
    p_less = np.asarray(t_sf(-t0, df), dtype=np.float64)
    p_above = np.asarray(t_sf(tb, df), dtype=np.float64)
    if not fit["identified"]:
        p_greater = p_less = p_above = np.full_like(b, np.nan)
    scalar = np.ndim(fit["slope"]) == 0
    conv = (lambda a: float(a)) if scalar else (lambda a: a)
    return {**fit, "p_less": conv(p_less), "p_greater": conv(p_greater), "p_above_bound": conv(p_above),
            "bound": bound}


def judge(x: np.ndarray, blocks: Sequence[Any], plain: np.ndarray, cbam: np.ndarray, local: np.ndarray,
          bound: float = EQUIVALENCE_BOUND, alpha: float = ALPHA) -> dict[str, Any]:
    """Rules 4 and 5 (manipulation check, the interaction) on arrays: the one decision analyse() and the
    simulations both use.

    Args:
        x: ``(n,)`` log2(ERF/object) per cell (its design point's); blocks: ``n`` labels ``(capacity, scale,
            seed)``.
        plain, cbam, local: ``(n,)`` or ``(n, R)`` test accuracies (fractions) of the three arms.

    Returns:
        ``{"label"}`` (a str, or an ``(R,)`` array of str), ``"reason"`` (``manipulation``, ``supports``,
        ``contradicts``, ``neither``), and the fits ``manipulation``, ``b1`` (CBAM - plain), ``b2``
        (CBAM - local gate).
    """
    x = np.asarray(x, dtype=np.float64)
    p, c, lg = (np.asarray(a, dtype=np.float64) for a in (plain, cbam, local))
    manip = slope_tests(p, np.minimum(x, 0.0), blocks, bound)
    b1 = slope_tests(c - p, x, blocks, bound)
    b2 = slope_tests(c - lg, x, blocks, bound)
    with np.errstate(invalid="ignore"):
        manip_ok = np.asarray(manip["p_greater"]) < alpha
        sup = (np.asarray(b1["p_less"]) < alpha) & (np.asarray(b2["p_less"]) < alpha) & manip_ok
        con = (np.asarray(b1["p_above_bound"]) < alpha) & (np.asarray(b2["p_above_bound"]) < alpha) & manip_ok
    labels = np.where(sup, "supports", np.where(con, "contradicts", "inconclusive"))
    reasons = np.where(~manip_ok, "manipulation", np.where(sup, "supports", np.where(con, "contradicts", "neither")))
    label, reason = (str(labels), str(reasons)) if labels.ndim == 0 else (labels, reasons)
    return {"label": label, "reason": reason, "manipulation": manip, "b1": b1, "b2": b2}


# ----------------------------------------------------------------------------- from cells
def included(cell: dict[str, Any]) -> bool:
    """Rule 1: the plain twin reaches chance + :data:`CHANCE_MARGIN`."""
    return float(cell["arms"]["plain"]["accuracy"]) >= 1.0 / int(cell.get("classes", 10)) + CHANCE_MARGIN


def _point(c: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (c.get("capacity"), c["scale"], c["dilation"])


def design_ratios(cells: Sequence[dict[str, Any]], quantile: float = QUANTILE) -> dict[tuple[Any, Any, Any], float]:
    """``{(capacity, scale, dilation): mean plain ERF 2 r_q / mean object extent 2 r_q}`` over ``cells``."""
    key = f"d{round(100 * quantile)}"
    erf: dict[tuple[Any, Any, Any], list[float]] = {}
    obj: dict[tuple[Any, Any, Any], list[float]] = {}
    for c in cells:
        erf.setdefault(_point(c), []).append(float(c["arms"]["plain"]["erf"]["object_centred"][key]))
        obj.setdefault(_point(c), []).append(float(c["object_extent"][key]))
    return {k: float(np.mean(erf[k])) / float(np.mean(obj[k])) for k in erf}


def _changes(changes: list[float]) -> dict[str, Any]:
    return {"n": len(changes), "changes": changes, "mean_change": float(np.mean(changes)) if changes else float("nan")}


def _changes_text(summaries: dict[str, dict[str, Any]], by: str) -> str:
    return ", ".join(f"{k} {by}{100 * v['mean_change']:+.1f} pp over {v['n']} point(s)" if v["n"] else f"{k}: none"
                     for k, v in summaries.items())


def plateau_result(cells: Sequence[dict[str, Any]], plateau: Sequence[dict[str, Any]],
                   rule: Rule | None = None) -> dict[str, Any]:
    """Rule 2 from the plateau cells (twice the epochs) and their main cells (same design point and seed).

    Args:
        cells: the included main cells; plateau: the plateau cells; rule: the version (default ``interaction/1``).

    Returns:
        ``{"passed", "points", "by_arm": {arm: {"mean_change", "n", "changes"}}, "reason"}``; the change is
        ``acc(2E) - acc(E)`` (fraction). ``operating_point`` rules add ``"contrasts": {name: {"mean_change", "n",
        "changes"}}``, ``"contrasts_stable"`` (the contrast part alone), ``"lag": {arm: mean train accuracy of arm -
        plain at E}`` and ``"lag_spread": {arm: {"n", "sd", "se"}}`` of those per-cell differences.
    """
    rule = rule or RULES["interaction/1"]
    main = {(*_point(c), c["seed"]): c for c in cells}
    pairs = [(p, main[_point(p) + (p["seed"],)]) for p in plateau if _point(p) + (p["seed"],) in main]
    by_arm: dict[str, dict[str, Any]] = {}
    for arm in rule.plateau_arms:
        changes = [float(p["arms"][arm]["accuracy"]) - float(m["arms"][arm]["accuracy"])
                   for p, m in pairs if arm in p.get("arms", {}) and arm in m["arms"]]
        by_arm[arm] = _changes(changes)
    points = len({_point(p) for p in plateau})
    words = _changes_text(by_arm, "")
    if rule.plateau == "accuracy":
        ok = all(v["n"] > 0 and v["mean_change"] < rule.plateau_pp for v in by_arm.values())
        return {"passed": bool(ok), "points": points, "by_arm": by_arm,
                "reason": f"doubling the epochs changed mean test accuracy by {words} (needs < "
                          f"{100 * rule.plateau_pp:g} pp each): " + ("plateau reached" if ok else "NOT at a plateau")}
    contrasts: dict[str, dict[str, Any]] = {}
    for name, (a, b) in (("cbam - plain", ("cbam", "plain")), ("cbam - localgate", ("cbam", "localgate"))):
        ch = [(float(p["arms"][a]["accuracy"]) - float(p["arms"][b]["accuracy"]))
              - (float(m["arms"][a]["accuracy"]) - float(m["arms"][b]["accuracy"]))
              for p, m in pairs if all(k in p.get("arms", {}) and k in m["arms"] for k in (a, b))]
        contrasts[name] = _changes(ch)
    lag: dict[str, float] = {}
    lag_spread: dict[str, dict[str, float]] = {}  # how far a lag over a partial set of cells may still move
    for arm in ("cbam", "localgate"):
        d = [float(c["arms"][arm]["train_accuracy"]) - float(c["arms"]["plain"]["train_accuracy"]) for c in cells
             if arm in c["arms"] and "train_accuracy" in c["arms"][arm] and "train_accuracy" in c["arms"]["plain"]]
        lag[arm] = float(np.mean(d)) if d else float("nan")
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
        lag_spread[arm] = {"n": len(d), "sd": sd, "se": sd / math.sqrt(len(d)) if d else float("nan")}
    stable = all(v["n"] > 0 and abs(v["mean_change"]) < rule.stable_pp for v in contrasts.values())
    caught_up = all(math.isfinite(v) and v >= -rule.lag_pp for v in lag.values())
    ok = stable and caught_up
    acc_plateau = all(v["n"] > 0 and v["mean_change"] < PLATEAU_PP for v in by_arm.values())
    reason = ("doubling the epochs moved the mean of " + _changes_text(contrasts, "by ")
        + f" (needs within +-{100 * rule.stable_pp:g} pp each); mean train accuracy at E minus the plain twin's: "
        + ", ".join(f"{k} {100 * v:+.1f} pp" for k, v in lag.items())
        + f" (needs >= -{100 * rule.lag_pp:g} pp each): "
        + ("a stable operating point" if ok else "NOT a stable operating point")
        + f"; test accuracy on doubling (reported, not required): {words}, "
        + ("within 1 pp: at an accuracy plateau" if acc_plateau else "so NOT at an accuracy plateau"))
    return {"passed": bool(ok), "points": points, "by_arm": by_arm, "contrasts": contrasts, "lag": lag,
            "lag_spread": lag_spread, "contrasts_stable": bool(stable), "accuracy_plateau": bool(acc_plateau),
            "reason": reason}


def _pp(v: float) -> str:
    return f"{100 * v:+.1f}"


def _p(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _fit_text(name: str, f: dict[str, Any]) -> str:
    if not f["identified"]:
        return f"{name}: not identifiable (no block with two ratios)."
    return (f"{name}: {_pp(f['slope'])} pp per doubling (SE {100 * f['se']:.2f}, df {f['df']}), one-sided "
            f"p(< 0) = {_p(f['p_less'])}, p(> 0) = {_p(f['p_greater'])}, p(> -{100 * f['bound']:g} pp) = "
            f"{_p(f['p_above_bound'])}.")


def analyse(cells: Sequence[dict[str, Any]], positive_control: dict[str, Any] | None = None,
            plateau: Sequence[dict[str, Any]] | None = None, planned: int | None = None,
            smoke: bool = False, rule: Rule | str | None = None) -> dict[str, Any]:
    """Apply the pre-registered rule (module docstring) to the grid's main ``cells``.

    Args:
        cells: main cells (``kind == "main"``; other kinds are ignored).
        positive_control: :func:`erf.study.preregistered.positive_control_result` output (``None``: not run).
        plateau: plateau cells (``None``: not run, which fails rule 2).
        planned: cells the grid planned (a partial run says how many ran).
        smoke: a pipeline-check budget: the text says its numbers mean nothing.
        rule: the version (a :class:`Rule` or a :data:`RULES` key; default ``interaction/1``).

    Returns:
        ``{"label", "text", "rule", "inclusion", "plateau", "positive_control", "manipulation", "b1", "b2",
        "level_vs_local", "scale_lever", "spatial", "sensitivity", "design_points", "partial"}``.
    """
    rule = RULES[rule] if isinstance(rule, str) else (rule or RULES["interaction/1"])
    cells = [c for c in cells if c.get("kind", "main") == "main"]
    inc = [c for c in cells if included(c)]
    frac = len(inc) / len(cells) if cells else 0.0
    lines: list[str] = []
    partial = planned is not None and len(cells) < planned
    if smoke:
        lines.append("SMOKE TEST (a pipeline-check budget: tiny data, 1 epoch): these numbers mean nothing.")
    if partial:
        lines.append(f"PARTIAL RUN: {len(cells)} of {planned} main cells finished; the rule is applied to those.")
    lines.append(f"Inclusion: {len(inc)} of {len(cells)} cells have a plain twin at or above chance + "
                 f"{100 * CHANCE_MARGIN:.0f} pp.")
    pl = plateau_result(inc, plateau, rule) if plateau else None
    lines.append(f"Plateau: {pl['reason']}." if pl else "Plateau: not run (no twice-the-epochs models).")
    lines.append(f"Positive control: {positive_control.get('reason', 'no result')}." if positive_control else
                 "Positive control: not run.")
    out: dict[str, Any] = {"rule": rule.text, "rule_version": rule.name, "partial": partial, "smoke": smoke,
                           "plateau": pl, "positive_control": positive_control,
                           "inclusion": {"included": len(inc), "cells": len(cells), "fraction": frac}}
    ratios = design_ratios(inc) if inc else {}
    x = np.array([math.log2(ratios[_point(c)]) for c in inc])
    blocks = [(c.get("capacity"), c["scale"], c["seed"]) for c in inc]
    acc = {a: np.array([float(c["arms"][a]["accuracy"]) for c in inc]) for a in ("plain", "cbam", "localgate")}
    res = judge(x, blocks, acc["plain"], acc["cbam"], acc["localgate"], rule.bound) if len(inc) >= 3 else None
    gate = None
    if frac < MIN_INCLUDED:
        gate = (f"only {len(inc)} of {len(cells)} cells trained (plain twin above chance + "
                f"{100 * CHANCE_MARGIN:.0f} pp); the rule needs {100 * MIN_INCLUDED:.0f}%")
    elif pl is None or not pl["passed"]:
        gate = ("the twins were not trained to a plateau (rule 2)" if rule.plateau == "accuracy" else
                "the twins were not at a stable operating point (rule 2)")
    elif not (positive_control and positive_control.get("passed")):
        gate = "the positive control " + ("was not run" if positive_control is None else "did not pass") + (
            ", so the experiment's power to see a gate help is not shown")
    if res is not None:
        m = res["manipulation"]
        lines.append("Manipulation check (plain accuracy on min(x, 0), block intercepts): " + (
            f"{_pp(m['slope'])} pp per doubling below ratio 1 (SE {100 * m['se']:.2f}, df {m['df']}), one-sided "
            f"p(> 0) = {_p(m['p_greater'])}: " + ("the ERF limited the plain twin" if m["p_greater"] < ALPHA else
                                                  "NOT shown")
            if m["identified"] else "not identifiable (no block with an ERF below the object)") + ".")
        lines.append(_fit_text("Primary b1, slope of CBAM - plain on log2(ERF/object)", res["b1"]))
        lines.append(_fit_text("Primary b2, slope of CBAM - local gate on log2(ERF/object)", res["b2"]))
        out.update(manipulation=res["manipulation"], b1=res["b1"], b2=res["b2"])
    if gate is not None or res is None:
        label = "inconclusive"
        why = gate or "fewer than 3 included cells"
        head = f"Verdict: INCONCLUSIVE. {why[0].upper()}{why[1:]}."
    elif res["reason"] == "manipulation":
        label = "inconclusive"
        head = ("Verdict: INCONCLUSIVE: the ERF did not limit this task (the plain twin's accuracy does not rise "
                "with ERF/object where the ERF is smaller than the object), so there is nothing for attention to "
                "repair; a finding, not a test of hypothesis 2.")
    else:
        label = res["label"]
        head = {"supports": "Verdict: the evidence SUPPORTS hypothesis 2 (the global gate's benefit falls as the "
                            "ERF grows relative to the objects, against the plain twin and against the local gate, "
                            "at fixed capacity).",
                "contradicts": "Verdict: the evidence CONTRADICTS hypothesis 2 (neither slope reaches "
                               f"-{100 * rule.bound:g} pp per doubling: the global gate's benefit does not "
                               "depend on ERF/object as predicted, at fixed capacity).",
                "inconclusive": "Verdict: INCONCLUSIVE. Neither both slopes below 0 (SUPPORTS) nor both above "
                                f"-{100 * rule.bound:g} pp per doubling (CONTRADICTS) at p < {ALPHA}."}[label]
    if partial and label != "inconclusive":
        head += " (Partial run: the label is the rule's on the finished cells only.)"
    if label != "inconclusive" and pl is not None and not pl.get("accuracy_plateau", True):
        head += (" (At a stable operating point of rule 2, not at an accuracy plateau: test accuracy still rose on "
                 "doubling the epochs.)")
    lines.insert(int(smoke) + int(partial), head)
    out["label"] = label
    out.update(_secondary(inc, ratios, rule))
    lines.extend(out.pop("_lines"))
    out["text"] = " ".join(lines)
    return out


def _secondary(inc: list[dict[str, Any]], ratios: dict[tuple[Any, Any, Any], float], rule: Rule) -> dict[str, Any]:
    """Secondary results (never change the label) and their sentences (``_lines``)."""
    lines: list[str] = []
    out: dict[str, Any] = {}
    if not inc:
        return {"_lines": lines, "design_points": {}}
    x = np.array([math.log2(ratios[_point(c)]) for c in inc])
    acc = {a: np.array([float(c["arms"][a]["accuracy"]) if a in c["arms"] else np.nan for c in inc]) for a in ARMS}
    small = [float(c["arms"]["cbam"]["accuracy"]) - float(c["arms"]["localgate"]["accuracy"])
             for c, xi in zip(inc, x) if xi < 0]
    lv = mean_test(small)
    out["level_vs_local"] = lv
    if lv["ci"]:
        lines.append(f"Secondary, level: CBAM - local gate where ratio < 1: {_pp(lv['mean'])} pp over {lv['n']} cells "
                     f"[95% CI {_pp(lv['ci'][0])}, {_pp(lv['ci'][1])}].")
    scale_blocks = [(c.get("capacity"), c["dilation"], c["seed"]) for c in inc]
    if len(inc) >= 3:
        s1 = slope_tests(acc["cbam"] - acc["plain"], x, scale_blocks, rule.bound)
        s2 = slope_tests(acc["cbam"] - acc["localgate"], x, scale_blocks, rule.bound)
        out["scale_lever"] = {"b1": s1, "b2": s2}
        lines.append(_fit_text("Secondary, object-scale lever b1", s1))
        lines.append(_fit_text("Secondary, object-scale lever b2", s2))
        blocks = [(c.get("capacity"), c["scale"], c["seed"]) for c in inc]
        if np.all(np.isfinite(acc["cbam_spatial"])):
            sp = slope_tests(acc["cbam"] - acc["cbam_spatial"], x, blocks, rule.bound)
            out["spatial"] = sp
            lines.append(_fit_text("Secondary, CBAM - spatial-only gate", sp))
        sens = {}
        for q in SENSITIVITY_QUANTILES:
            rq = design_ratios(inc, q)
            xq = np.array([math.log2(rq[_point(c)]) for c in inc])
            r = judge(xq, blocks, acc["plain"], acc["cbam"], acc["localgate"], rule.bound)
            sens[f"r{round(100 * q)}"] = {"label": r["label"], "b1": r["b1"]["slope"], "b2": r["b2"]["slope"],
                                          "ratio_range": [float(min(rq.values())), float(max(rq.values()))]}
        out["sensitivity"] = sens
        lines.append("Sensitivity (same quantile both sides): " + "; ".join(
            f"{k}: ratios {v['ratio_range'][0]:.2f}-{v['ratio_range'][1]:.2f}, b1 {_pp(v['b1'])}, b2 {_pp(v['b2'])}, "
            f"rule's label {v['label']}" for k, v in sens.items()) + ".")
    points: dict[str, Any] = {}
    for key, ratio in sorted(ratios.items(), key=lambda kv: tuple(map(str, kv[0]))):
        sub = [c for c in inc if _point(c) == key]
        row = {"capacity": key[0], "scale": key[1], "dilation": key[2], "ratio": ratio, "seeds": len(sub)}
        for a in ARMS:
            if all(a in c["arms"] for c in sub):
                row[f"acc_{a}"] = float(np.mean([c["arms"][a]["accuracy"] for c in sub]))
                row[f"train_{a}"] = float(np.mean([c["arms"][a].get("train_accuracy", np.nan) for c in sub]))
        points[f"c={key[0]}/k={key[1]}/d={key[2]}"] = row
    out["design_points"] = points
    out["_lines"] = lines
    return out


__all__ = ["ALPHA", "ARMS", "CHANCE_MARGIN", "EQUIVALENCE_BOUND", "LABELS", "LAG_PP", "MIN_INCLUDED", "PLATEAU_PP",
           "QUANTILE", "RULE", "RULES", "SENSITIVITY_QUANTILES", "STABLE_PP", "Rule", "analyse", "design_ratios",
           "included", "judge", "plateau_result", "slope_tests"]
