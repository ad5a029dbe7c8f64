"""Simulated worlds for the pre-registered interaction rule (:mod:`erf.study.interaction`): cheap numpy.

A **world** says how each arm's test accuracy depends on ``x = log2(ERF/object)`` at fixed capacity; the
simulation draws many replicate grids of one design and applies the rule's own decision
(:func:`erf.study.interaction.judge`) to each, so the operating characteristics below are those of the code
that will judge the real run.

Noise model (fractions), per cell ``(capacity, scale, dilation, seed)`` and arm::

    acc = 0.5 + SCALE[scale] + block + arm_block + level[arm] + effect[arm](x) + eps

``block`` ~ N(0, ``sd_block``) is shared by every arm and dilation of a ``(capacity, scale, seed)`` block
(same canvases and initialisation); ``arm_block`` ~ N(0, ``sd_arm_block``) is shared by the dilations of one
arm in one block (a seed that suits one gate); ``eps`` ~ N(0, ``sd``) is the model's own noise, so a
difference of two arms has SD ``sd * sqrt(2)`` (the pilot's cell SD of the gain was 2.4 pp: ``sd`` = 1.7 pp).

Worlds (:data:`WORLDS`): the global null, hypothesis 2 (linear in x, or a hinge: a benefit only where the ERF
is smaller), hypothesis 2 plus a flat cost of every gate, a flat cost alone, a benefit of *any* gating at
small ERF (the local gate shares the slope: not hypothesis 2's mechanism), and hypothesis 2 where the ERF does
not limit the plain twin (the manipulation check must stop it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erf.study.interaction import ALPHA, EQUIVALENCE_BOUND, RULES, Rule, judge


@dataclass(frozen=True)
class World:
    """One simulated world (fractions; slopes per doubling of ERF/object).

    Attributes:
        name, words: registry key and one line.
        h2: slope of CBAM's benefit (negative: hypothesis 2); ``shape``: ``linear`` (``h2 * x``) or ``hinge``
            (``h2 * min(x, 0)``: a benefit only where the ERF is smaller than the object, superfluous above).
        local_share: the fraction of that effect the local gate shares (1: any gating helps alike).
        cost: flat accuracy change of every gated arm (negative: a cost).
        limit: the plain twin's slope on ``min(x, 0)`` (> 0: a small ERF limits it, the manipulation).
        expect: the label this world must (``supports`` / ``contradicts``) or must not (``not supports``) get.
    """

    name: str
    words: str
    h2: float = 0.0
    shape: str = "linear"
    local_share: float = 0.0
    cost: float = 0.0
    limit: float = 0.03
    expect: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def effect(self, x: np.ndarray) -> np.ndarray:
        """CBAM's ERF-dependent benefit at ``x`` (fractions)."""
        return self.h2 * (x if self.shape == "linear" else np.minimum(x, 0.0))


WORLDS: dict[str, World] = {w.name: w for w in (
    World("null", "global null: no effect, no cost, the ERF limits the plain twin", expect="not supports"),
    World("h2", "hypothesis 2, -2 pp per doubling, no cost", h2=-0.02, expect="supports"),
    World("h2_hinge", "hypothesis 2 as a hinge: -3 pp per doubling below ratio 1, flat above", h2=-0.03,
          shape="hinge", expect="supports"),
    World("h2_cost", "hypothesis 2 (-2 pp per doubling) plus a flat -5 pp cost of every gate", h2=-0.02, cost=-0.05,
          expect="supports"),
    World("cost", "no effect, a flat -5 pp cost of every gate", cost=-0.05, expect="not supports"),
    World("any_gate", "any gating helps at small ERF (local gate shares the -2 pp slope): not H2's mechanism",
          h2=-0.02, local_share=1.0, expect="not supports"),
    World("no_limit", "hypothesis 2 (-2 pp per doubling) but the ERF never limits the plain twin", h2=-0.02,
          limit=0.0, expect="not supports"),
)}
"""The simulated worlds (registry)."""


@dataclass(frozen=True)
class Design:
    """A grid layout for the simulation: design points ``(capacity, scale, dilation, x)`` and seeds."""

    points: tuple[tuple[Any, Any, Any, float], ...]
    seeds: int

    def cells(self) -> tuple[np.ndarray, list[tuple[Any, Any, int]], list[Any]]:
        """``(x (n,), blocks (capacity, scale, seed), scales)`` of every cell, seeds outermost."""
        x, blocks, scales = [], [], []
        for seed in range(self.seeds):
            for cap, scale, _d, xi in self.points:
                x.append(float(xi))
                blocks.append((cap, scale, seed))
                scales.append(scale)
        return np.asarray(x), blocks, scales


def design_from(erf_px: dict[int, float], object_px: dict[Any, float], seeds: int, capacity: Any = "c") -> Design:
    """The design of a grid whose plain ERF diameter per dilation (px) and object extent per scale (px) are given."""
    pts = tuple((capacity, k, d, float(np.log2(e / o))) for k, o in object_px.items() for d, e in erf_px.items())
    return Design(pts, seeds)


PLANNED = design_from({1: 17.0, 2: 37.0, 3: 67.0}, {0.5: 10.5, 1.0: 21.0, 2.0: 42.0, 3.0: 63.0}, seeds=5)
"""The planned layout (``INTERACTION_BUDGETS["grid_cpu"]``): 3 ERF levels x 4 object scales x 5 seeds at one
capacity, with the plain ERF diameters 2 r50 (px) of ``patchnet_l{1,2,3}`` measured after one epoch on 96 px
canvases and the objects' measured extents 2 r50 (px; 21.0 at 32 px) per scale; x from -1.9 to +2.7."""


PLANNED3 = design_from({1: 14.8, 3: 35.5}, {0.5: 10.5, 1.0: 21.0, 2.5: 52.5}, seeds=8)
"""The planned layout of ``INTERACTION_BUDGETS["grid3_cpu"]`` (rule ``interaction/2``): 2 ERF levels x 3 object
scales x 8 seeds at one capacity, with the plain ERF diameters 2 r50 (px) of ``patchnet_l1`` / ``patchnet_l3``
measured after one epoch at lr 0.2 on 80 px canvases (the canvas clips level 3, TRF 108 px) and the objects'
extents 2 r50 (px; 21.0 at 32 px, scaled); x from -1.8 to +1.8 (ratios 0.28 to 3.4)."""


def simulate(world: World, design: Design, reps: int, rng: np.random.Generator, sd: float = 0.017,
             sd_block: float = 0.02, sd_arm_block: float = 0.005) -> dict[str, Any]:
    """``reps`` replicate grids of ``design`` in ``world``: ``{"x", "blocks", "plain", "cbam", "localgate"}``
    (accuracy arrays ``(n, reps)``, fractions)."""
    x, blocks, scales = design.cells()
    n = len(x)
    bkeys = {b: i for i, b in enumerate(dict.fromkeys(blocks))}
    bidx = np.array([bkeys[b] for b in blocks])
    skeys = {s: i for i, s in enumerate(dict.fromkeys(scales))}
    scale_level = np.array([-0.05 * skeys[s] for s in scales])[:, None]
    shared = rng.normal(0.0, sd_block, (len(bkeys), reps))[bidx]
    base = 0.5 + scale_level + shared
    eff = world.effect(x)[:, None]
    out: dict[str, Any] = {"x": x, "blocks": blocks}
    for arm, level, slope in (("plain", 0.0, world.limit * np.minimum(x, 0.0)[:, None]),
                              ("cbam", world.cost, world.limit * np.minimum(x, 0.0)[:, None] + eff),
                              ("localgate", world.cost,
                               world.limit * np.minimum(x, 0.0)[:, None] + world.local_share * eff)):
        arm_block = rng.normal(0.0, sd_arm_block, (len(bkeys), reps))[bidx]
        out[arm] = base + level + slope + arm_block + rng.normal(0.0, sd, (n, reps))
    return out


def rates(world: World, design: Design, reps: int = 2000, seed: int = 0, rule: Rule | None = None,
          **noise: float) -> dict[str, float]:
    """Fractions of ``reps`` simulated grids labelled supports / contradicts / inconclusive (and the
    manipulation check's pass rate) by ``rule``'s decision (default ``interaction/1``: its DELTA)."""
    sim = simulate(world, design, reps, np.random.default_rng(seed), **noise)
    bound = (rule or RULES["interaction/1"]).bound
    res = judge(sim["x"], sim["blocks"], sim["plain"], sim["cbam"], sim["localgate"], bound)
    lab = np.asarray(res["label"])
    return {"supports": float(np.mean(lab == "supports")), "contradicts": float(np.mean(lab == "contradicts")),
            "inconclusive": float(np.mean(lab == "inconclusive")),
            "manipulation_passed": float(np.mean(np.asarray(res["reason"]) != "manipulation"))}


def operating_characteristics(design: Design, reps: int = 2000, seed: int = 0, worlds: Sequence[str] | None = None,
                              rule: Rule | None = None, **noise: float) -> dict[str, dict[str, float]]:
    """:func:`rates` of every world (default :data:`WORLDS`) on ``design`` under ``rule``."""
    return {name: rates(WORLDS[name], design, reps, seed, rule, **noise) for name in (worlds or WORLDS)}


def operating_point_rates(design: Design, shift: float = 0.0, reps: int = 4000, seed: int = 0, sd: float = 0.017,
                          sd_arm_block: float = 0.005, rule: Rule | None = None) -> dict[str, float]:
    """How often rule 2 of an ``operating_point`` rule (default ``interaction/2``) finds the contrasts stable.

    The plateau seed's design points are simulated at E and 2E epochs with independent model noise ``sd`` and
    independent arm-by-block effects (conservative: the same seed at two lengths shares more than this); at 2E
    CBAM gains ``shift`` (fraction) over both plain and the local gate at every point (a gate still catching
    up). Returns the fractions of ``reps`` in which each contrast's mean change lies within ``+-stable_pp`` and
    in which both do (``passed``).
    """
    rule = rule or RULES["interaction/2"]
    rng = np.random.default_rng(seed)
    n = len(design.points)

    def contrast(extra: float) -> np.ndarray:
        arms = {a: rng.normal(0.0, sd, (n, reps)) + rng.normal(0.0, sd_arm_block, (1, reps))
                for a in ("plain", "cbam", "localgate")}
        return np.stack([arms["cbam"] + extra - arms["plain"], arms["cbam"] + extra - arms["localgate"]])

    change = (contrast(shift) - contrast(0.0)).mean(axis=1)  # (2, reps): mean over points of each contrast
    within = np.abs(change) < rule.stable_pp
    return {"cbam - plain": float(within[0].mean()), "cbam - localgate": float(within[1].mean()),
            "passed": float(within.all(axis=0).mean())}


_MDE_GRID = tuple(-0.0025 * k for k in range(1, 17))
"""The hypothesis-2 slopes that :func:`min_detectable` tries by default (fractions per doubling)."""


def min_detectable(design: Design, power: float = 0.8, reps: int = 1000, seed: int = 0,
                   grid: Sequence[float] = _MDE_GRID,
                   shape: str = "linear", rule: Rule | None = None, **noise: float) -> float | None:
    """The smallest hypothesis-2 slope (of ``grid``, fractions per doubling) that ``rule`` SUPPORTS with at
    least ``power`` (``None``: none of the grid)."""
    for h in grid:
        if rates(World("mde", "", h2=h, shape=shape), design, reps, seed, rule=rule, **noise)["supports"] >= power:
            return float(h)
    return None


def cells_of(world: World, design: Design, seed: int = 0, **noise: float) -> list[dict[str, Any]]:
    """One simulated grid as main cells in :mod:`erf.study.interaction`'s format (ERF and object extents chosen so
    that the design points' ratios are the design's), for checking ``analyse`` against ``judge``."""
    sim = simulate(world, design, 1, np.random.default_rng(seed), **noise)
    out = []
    i = 0
    for s in range(design.seeds):
        for cap, scale, d, xi in design.points:
            obj = {f"d{q}": 10.0 for q in (25, 50, 75, 95)}
            erf = {f"d{q}": 10.0 * 2.0 ** xi * (1.0 + q / 100) for q in (25, 50, 75, 95)}
            erf["d50"] = 10.0 * 2.0 ** xi
            arms = {a: {"accuracy": float(sim[a][i, 0]), "train_accuracy": float(sim[a][i, 0]) + 0.02,
                        "erf": {"object_centred": erf}} for a in ("plain", "cbam", "localgate")}
            arms["cbam_spatial"] = {"accuracy": float(sim["plain"][i, 0]), "train_accuracy": float(sim["plain"][i, 0]),
                                    "erf": {"object_centred": erf}}
            out.append({"kind": "main", "capacity": cap, "scale": scale, "dilation": d, "seed": s, "classes": 10,
                        "object_extent": obj, "arms": arms})
            i += 1
    return out


__all__ = ["ALPHA", "EQUIVALENCE_BOUND", "PLANNED", "PLANNED3", "WORLDS", "Design", "World", "cells_of", "design_from",
           "min_detectable", "operating_characteristics", "operating_point_rates", "rates", "simulate"]
