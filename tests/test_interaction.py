"""The pre-registered interaction rule of the second hypothesis-2 grid (issue #24) on simulated worlds.

Every rate here is computed by the rule's own decision (:func:`erf.study.interaction.judge`) on thousands of
simulated grids of the planned design (:data:`erf.study.worlds.PLANNED`), so a change to the rule that breaks
its operating characteristics fails here. Monte Carlo tolerance: 3 standard errors of a rate near ALPHA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from erf.study import interaction as rule
from erf.study.preregistered import positive_control_result
from erf.study.worlds import PLANNED, WORLDS, World, cells_of, min_detectable, operating_characteristics, rates
from erf.uncertainty import fixed_effects_fit, within_slope

REPS = 2000
TOL = 3 * math.sqrt(rule.ALPHA * (1 - rule.ALPHA) / REPS)
PILOT_SD = 0.017  # per model: a difference of two arms has the pilot's cell SD, 2.4 pp
PASSED = positive_control_result([{"distance": 48, "seed": k, "acc_plain": 0.5, "acc_attention": 0.9 + 0.01 * k}
                                  for k in range(3)], far_distance=48)


@pytest.fixture(scope="module")
def oc() -> dict[str, dict[str, float]]:
    return operating_characteristics(PLANNED, reps=REPS, seed=1, sd=PILOT_SD)


def test_within_slope_is_the_fixed_effects_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    blocks = [k % 7 for k in range(40)]
    y = 0.3 * x + rng.normal(size=40) + np.array(blocks) * 0.5
    a, b = within_slope(y, x, blocks), fixed_effects_fit(y, x, blocks)
    assert a["slope"] == pytest.approx(b["slope"]) and a["se"] == pytest.approx(b["se"]) and a["df"] == b["df"]
    many = within_slope(np.stack([y, 2 * y], axis=1), x, blocks)
    assert many["slope"] == pytest.approx([b["slope"], 2 * b["slope"]])
    assert not within_slope(y, np.array(blocks, dtype=float), blocks)["identified"]  # x constant within blocks


def test_global_null_false_positive_rate_at_most_nominal(oc):
    assert oc["null"]["supports"] <= rule.ALPHA + TOL
    assert oc["null"]["manipulation_passed"] >= 0.99  # the null world's plain twin is ERF-limited


def test_equivalence_bound_is_powered(oc):
    # CONTRADICTS needs evidence of absence: in the null world the design shows |slope| < DELTA most of the time
    assert oc["null"]["contradicts"] >= 0.8
    assert oc["cost"]["contradicts"] >= 0.8


def test_flat_cost_neither_supports_nor_changes_anything(oc):
    assert oc["cost"]["supports"] <= rule.ALPHA + TOL
    # a flat cost of every gate cancels exactly in the slopes: same noise, same labels
    assert oc["h2_cost"] == oc["h2"] and oc["cost"] == oc["null"]


def test_effect_worlds_support(oc):
    for name in ("h2", "h2_cost"):  # -2 pp per doubling, with and without a -5 pp flat cost
        assert oc[name]["supports"] >= 0.9 and oc[name]["contradicts"] <= 0.01, (name, oc[name])
    assert oc["h2_hinge"]["supports"] >= 0.8, oc["h2_hinge"]  # benefit only below ratio 1


def test_not_the_mechanism_and_not_limited_do_not_support(oc):
    # any gating helps at small ERF (local gate shares the slope): b2 = 0, the IUT keeps SUPPORTS near ALPHA
    assert oc["any_gate"]["supports"] <= rule.ALPHA + TOL and oc["any_gate"]["contradicts"] <= 0.01
    # hypothesis 2 true but the plain twin never limited by its ERF: the manipulation check stops the verdict
    assert oc["no_limit"]["manipulation_passed"] <= rule.ALPHA + TOL
    assert oc["no_limit"]["supports"] <= rule.ALPHA + TOL


def test_noisier_world_still_controls_errors():
    noisy = operating_characteristics(PLANNED, reps=REPS, seed=2, sd=0.025, worlds=("null", "h2", "any_gate"))
    assert noisy["null"]["supports"] <= rule.ALPHA + TOL and noisy["any_gate"]["supports"] <= rule.ALPHA + TOL
    assert noisy["h2"]["supports"] >= 0.8
    assert noisy["null"]["contradicts"] >= 0.6  # the bound's power falls with noise (stated in design.md)


def test_minimum_detectable_slope_is_below_the_bound():
    mde = min_detectable(PLANNED, reps=500, seed=3, sd=PILOT_SD)
    assert mde is not None and -rule.EQUIVALENCE_BOUND <= mde < 0


def test_pilot_rule_fails_the_effect_plus_cost_world():
    """The pilot's rule (kept for figures/h2_cpu) judged the level against zero: effect + cost reads CONTRADICTS."""
    from erf.study.preregistered import analyse as pilot

    w = WORLDS["h2_cost"]
    labels = []
    for seed in range(20):
        cells = []
        for c in cells_of(w, PLANNED, seed=seed, sd=PILOT_SD):
            cells.append({"size": c["scale"], "dilation": c["dilation"], "seed": c["seed"], "capacity": c["capacity"],
                          "erf_plain": c["arms"]["plain"]["erf"]["object_centred"]["d50"] * c["scale"] / 10.0,
                          "acc_plain": c["arms"]["plain"]["accuracy"], "acc_attention": c["arms"]["cbam"]["accuracy"],
                          "classes": 10})
        labels.append(pilot(cells, PASSED)["label"])
    assert labels.count("contradicts") >= 15


def _plateau(cells: list[dict], change: float, arms: tuple[str, ...] = ("plain", "cbam"),
             extra: dict[str, float] | None = None) -> list[dict]:
    """One plateau cell per design point: every arm's accuracy + ``change`` (+ ``extra[arm]``)."""
    seen, out = set(), []
    for c in cells:
        key = (c["capacity"], c["scale"], c["dilation"])
        if key in seen:
            continue
        seen.add(key)
        out.append({**c, "kind": "plateau", "arms": {
            a: {"accuracy": c["arms"][a]["accuracy"] + change + (extra or {}).get(a, 0.0)} for a in arms}})
    return out


@pytest.mark.parametrize("world", ["null", "h2", "h2_cost", "any_gate", "no_limit"])
def test_analyse_applies_the_same_decision(world):
    w = WORLDS[world]
    for seed in range(3):
        cells = cells_of(w, PLANNED, seed=seed, sd=PILOT_SD)
        a = rule.analyse(cells, PASSED, _plateau(cells, 0.002))
        x = np.log2([c["arms"]["plain"]["erf"]["object_centred"]["d50"] / 10.0 for c in cells])
        j = rule.judge(x, [(c["capacity"], c["scale"], c["seed"]) for c in cells],
                       *(np.array([c["arms"][k]["accuracy"] for c in cells]) for k in ("plain", "cbam", "localgate")))
        assert a["label"] == j["label"], a["text"]
        assert a["b1"]["slope"] == pytest.approx(j["b1"]["slope"])
        assert a["text"].startswith("Verdict:") and "Manipulation check" in a["text"]
        if j["reason"] == "manipulation":
            assert "the ERF did not limit this task" in a["text"]


def test_gates_make_it_inconclusive():
    cells = cells_of(WORLDS["h2"], PLANNED, seed=0, sd=PILOT_SD)
    ok = rule.analyse(cells, PASSED, _plateau(cells, 0.0))
    assert ok["label"] == "supports", ok["text"]
    not_converged = rule.analyse(cells, PASSED, _plateau(cells, 0.02))
    assert not_converged["label"] == "inconclusive" and "NOT at a plateau" in not_converged["text"]
    assert "not trained to a plateau" in not_converged["text"]
    assert rule.analyse(cells, PASSED, None)["label"] == "inconclusive"
    failed = positive_control_result([{"distance": 48, "seed": k, "acc_plain": 0.5, "acc_attention": 0.52}
                                      for k in range(3)], 48)
    no_pc = rule.analyse(cells, failed, _plateau(cells, 0.0))
    assert no_pc["label"] == "inconclusive" and "did not pass" in no_pc["text"]
    assert "was not run" in rule.analyse(cells, None, _plateau(cells, 0.0))["text"]
    untrained = [{**c, "arms": {**c["arms"], "plain": {**c["arms"]["plain"], "accuracy": 0.12}}} for c in cells]
    assert "cells trained" in rule.analyse(untrained, PASSED, _plateau(cells, 0.0))["text"]


def test_partial_and_smoke_runs_say_so():
    cells = cells_of(WORLDS["h2"], PLANNED, seed=0, sd=PILOT_SD)
    part = rule.analyse(cells[:30], PASSED, _plateau(cells[:30], 0.0), planned=len(cells))
    assert f"PARTIAL RUN: 30 of {len(cells)}" in part["text"] and part["partial"]
    smoke = rule.analyse(cells, PASSED, _plateau(cells, 0.0), smoke=True)
    assert smoke["text"].startswith("SMOKE TEST") and "mean nothing" in smoke["text"]
    assert "Verdict:" in smoke["text"]


def test_sensitivity_and_secondaries_reported():
    cells = cells_of(WORLDS["h2"], PLANNED, seed=0, sd=PILOT_SD)
    a = rule.analyse(cells, PASSED, _plateau(cells, 0.0))
    assert set(a["sensitivity"]) == {"r25", "r75", "r95"}
    assert "Secondary, level: CBAM - local gate where ratio < 1" in a["text"]
    assert a["scale_lever"]["b1"]["identified"]  # the object-scale lever: intercepts per (capacity, d, seed)
    assert len(a["design_points"]) == len(PLANNED.points)
    assert all("train_plain" in p and "acc_localgate" in p for p in a["design_points"].values())


def test_rates_of_a_custom_world_respond_to_the_effect():
    weak = rates(World("weak", "", h2=-0.002), PLANNED, reps=500, seed=4, sd=PILOT_SD)["supports"]
    strong = rates(World("strong", "", h2=-0.03), PLANNED, reps=500, seed=4, sd=PILOT_SD)["supports"]
    assert weak < 0.3 < 0.95 < strong


# ----------------------------------------------------------------------------- rule interaction/2 on grid3_cpu
V2 = rule.RULES["interaction/2"]


@pytest.fixture(scope="module")
def oc3() -> dict[str, dict[str, float]]:
    from erf.study.worlds import PLANNED3

    return operating_characteristics(PLANNED3, reps=REPS, seed=5, rule=V2, sd=PILOT_SD)


def test_v2_planned_design_is_the_budget():
    from erf.study.budgets import INTERACTION_BUDGETS
    from erf.study.worlds import PLANNED3

    b = INTERACTION_BUDGETS["grid3_cpu"]
    assert b.rule == V2.name and b.seeds == PLANNED3.seeds
    assert {(p[1], p[2]) for p in PLANNED3.points} == {(k, lv) for k in b.scales for lv in b.levels}
    assert set(V2.plateau_arms) == {"plain", "cbam", "localgate"} <= set(b.arms)


def test_v2_error_rates_on_the_planned_design(oc3):
    assert oc3["null"]["supports"] <= rule.ALPHA + TOL and oc3["cost"]["supports"] <= rule.ALPHA + TOL
    assert oc3["any_gate"]["supports"] <= rule.ALPHA + TOL
    assert oc3["no_limit"]["supports"] <= rule.ALPHA + TOL
    assert oc3["h2_cost"] == oc3["h2"] and oc3["cost"] == oc3["null"]  # a flat cost cancels in the slopes


def test_v2_power_on_the_planned_design(oc3):
    # the design is powered for hypothesis 2's -2 pp per doubling and for DELTA = 2 pp at the pilot's noise
    assert oc3["h2"]["supports"] >= 0.9 and oc3["h2"]["contradicts"] <= 0.02, oc3["h2"]
    assert oc3["null"]["contradicts"] >= 0.9, oc3["null"]


def test_v2_operating_point_check_passes_stable_worlds_and_catches_a_catch_up():
    from erf.study.worlds import PLANNED3, operating_point_rates

    stable = operating_point_rates(PLANNED3, shift=0.0, reps=REPS, seed=6, sd=PILOT_SD)
    catching_up = operating_point_rates(PLANNED3, shift=0.08, reps=REPS, seed=6, sd=PILOT_SD)
    assert stable["passed"] >= 0.9 and catching_up["passed"] <= 0.05, (stable, catching_up)


def _v2_plateau(cells: list[dict], cbam_change: float) -> list[dict]:
    # all arms still rise by 3 pp (not an accuracy plateau); CBAM by cbam_change more
    return _plateau(cells, 0.03, V2.plateau_arms, {"cbam": cbam_change})


def test_v2_operating_point_gates_the_verdict_and_says_it_is_not_an_accuracy_plateau():
    from erf.study.worlds import PLANNED3

    cells = cells_of(WORLDS["h2"], PLANNED3, seed=0, sd=PILOT_SD)
    ok = rule.analyse(cells, PASSED, _v2_plateau(cells, 0.0), rule=V2.name)
    assert ok["plateau"]["passed"] and not ok["plateau"]["accuracy_plateau"], ok["plateau"]["reason"]
    assert ok["label"] == rule.judge(
        np.log2([c["arms"]["plain"]["erf"]["object_centred"]["d50"] / 10.0 for c in cells]),
        [(c["capacity"], c["scale"], c["seed"]) for c in cells],
        *(np.array([c["arms"][k]["accuracy"] for c in cells]) for k in ("plain", "cbam", "localgate")),
        V2.bound)["label"]
    if ok["label"] != "inconclusive":
        assert "not at an accuracy plateau" in ok["text"]
    assert ok["rule"].startswith("[interaction/2]") and "Operating point" in ok["rule"]
    moved = rule.analyse(cells, PASSED, _v2_plateau(cells, 0.06), rule=V2)
    assert moved["label"] == "inconclusive" and "NOT a stable operating point" in moved["text"]
    assert "not at a stable operating point" in moved["text"]
    # a gate still catching up: its train accuracy at E below the plain twin's by more than LAG_PP
    slow = lambda c: {**c["arms"]["localgate"], "train_accuracy": c["arms"]["plain"]["train_accuracy"] - 0.04}  # noqa: E731
    lagging = [{**c, "arms": {**c["arms"], "localgate": slow(c)}} for c in cells]
    lag = rule.analyse(lagging, PASSED, _v2_plateau(lagging, 0.0), rule=V2)
    assert lag["label"] == "inconclusive" and lag["plateau"]["lag"]["localgate"] == pytest.approx(-0.04)


def test_rule_texts_state_their_bounds_exactly():
    assert "-1.5 pp" in rule.RULES["interaction/1"].text and "-2 pp" not in rule.RULES["interaction/1"].text
    assert f"-{100 * V2.bound:g} pp" in V2.text and f"+-{100 * V2.stable_pp:g} pp" in V2.text
