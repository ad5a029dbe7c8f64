"""Property-based tests (hypothesis) of the ERF metrics and the TRF arithmetic (issue 9).

Metrics (:mod:`erf.metrics`), for any non-negative map ``M`` with positive mass:

* scale invariance: ``mass_radius``, ``square_side`` and ``gaussian_sigma`` of
  ``c M`` equal those of ``M`` for every ``c > 0`` (they only see the normalised
  mass distribution);
* RepLKNet's ``area_ratio`` is NOT scale invariant: it thresholds
  ``log10(1 + M) / max log10(1 + M)``, and ``log10(1 + c M)`` is not proportional to
  ``log10(1 + M)``. It is invariant only for maps with a single non-zero value
  (a binary support), and is meant for the *mean* map over images. Both facts are
  tested below, the non-invariance on an explicit example;
* monotonicity: ``mass_radius(q)`` and ``square_side(q)`` are non-decreasing in the
  mass fraction ``q`` (so ``radius(0.5) <= radius(0.95)``), ``area_ratio(t)`` is
  non-decreasing in the threshold ``t``; bounds: ``0 < area_ratio <= 1``, the radius
  at ``q = 1`` is the distance of the farthest non-zero pixel.

TRF (:mod:`erf.trf`): for random stacks of convolutions, max and
average pools with random kernel, stride, dilation and padding, the traced TRF
size equals Araujo et al.'s closed form ``r = 1 + sum_l d_l (k_l - 1) prod_{i<l} s_i``,
the stride equals ``prod s_l``, the effective padding equals
``sum_l p_l prod_{i<l} s_l``, and the bounding box of the non-zero input
gradient of a unit equals its analytic TRF box (linear stacks; a subset of the box
when a max pool routes the gradient to one pixel per window).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from closed_forms import receptive_field_size_formula
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from erf.metrics import area_ratio, gaussian_sigma, mass_radius, square_side
from erf.probes.support import gradient_support
from erf.trf import trace_receptive_fields

# database=None: nothing is written into the repository (.hypothesis/); failures print their example
FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def erf_maps(draw, max_side: int = 12) -> np.ndarray:
    """Non-negative float64 maps with positive mass, many exact zeros and a wide dynamic range."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    values = st.one_of(st.just(0.0), st.floats(1e-6, 1e4, allow_nan=False, allow_infinity=False))
    m = draw(arrays(np.float64, (h, w), elements=values))
    assume(m.sum() > 0)
    return m


@st.composite
def centers(draw, m: np.ndarray | None = None) -> tuple[float, float] | None:
    if draw(st.booleans()):
        return None
    return (draw(st.floats(-1.0, 13.0)), draw(st.floats(-1.0, 13.0)))


scales = st.one_of(st.floats(1e-3, 1e3), st.integers(-20, 20).map(lambda k: 2.0 ** k))
levels = st.floats(0.01, 1.0)


# ============================================================================ scale invariance
@FAST
@given(m=erf_maps(), c=scales, q=levels, center=centers())
def test_radius_and_square_are_scale_invariant(m, c, q, center) -> None:
    assert mass_radius(c * m, q, center) == mass_radius(m, q, center)
    assert square_side(c * m, q, center) == square_side(m, q, center)


@FAST
@given(m=erf_maps(), c=scales)
def test_gaussian_sigma_is_scale_invariant(m, c) -> None:
    np.testing.assert_allclose(gaussian_sigma(c * m), gaussian_sigma(m), rtol=1e-9, atol=1e-9)


@FAST
@given(support=arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))),
       c=st.floats(1e-3, 1e3), t=st.floats(0.05, 0.99))
def test_area_ratio_is_scale_invariant_only_for_binary_maps(support, c, t) -> None:
    assume(support.any())
    m = support.astype(np.float64)
    assert area_ratio(c * m, t) == area_ratio(m, t)


def test_area_ratio_is_not_scale_invariant() -> None:
    """The documented non-invariance: for a Gaussian map, log10(1 + c M) flattens as c grows, so the
    high-contribution square grows with the scale (linear regime for small c, where it equals the map's own)."""
    yy, xx = np.indices((31, 31))
    g = np.exp(-((yy - 15) ** 2 + (xx - 15) ** 2) / (2 * 3.0**2))
    ratios = [area_ratio(c * g, 0.5)[0] for c in (1e-3, 1.0, 1e3, 1e6)]
    assert ratios[0] == pytest.approx(7 * 7 / 31**2)  # small c: log10(1 + c M) ~ c M / ln 10, a 7 x 7 square
    assert ratios[0] <= ratios[1] < ratios[2] < ratios[3]
    assert ratios[3] > 5 * ratios[0]


# ============================================================================ monotonicity and bounds
@FAST
@given(m=erf_maps(), q1=levels, q2=levels, center=centers())
def test_radius_and_square_are_monotone_in_q(m, q1, q2, center) -> None:
    lo, hi = sorted((q1, q2))
    assert mass_radius(m, lo, center) <= mass_radius(m, hi, center)
    assert square_side(m, lo, center) <= square_side(m, hi, center)
    assert mass_radius(m, 0.5, center) <= mass_radius(m, 0.95, center)


@FAST
@given(m=erf_maps(), t1=st.floats(0.01, 0.99), t2=st.floats(0.01, 0.99), exact=st.booleans())
def test_area_ratio_is_monotone_in_t_and_bounded(m, t1, t2, exact) -> None:
    lo, hi = sorted((t1, t2))
    r_lo, _ = area_ratio(m, lo, exact_replknet=exact)
    r_hi, _ = area_ratio(m, hi, exact_replknet=exact)
    assert 0 < r_lo <= r_hi <= 1


@FAST
@given(m=erf_maps(), center=centers())
def test_full_mass_radius_is_the_farthest_nonzero_pixel(m, center) -> None:
    c = center if center is not None else ((m.shape[0] - 1) / 2, (m.shape[1] - 1) / 2)
    yy, xx = np.nonzero(m)
    assert mass_radius(m, 1.0, center) == pytest.approx(np.hypot(yy - c[0], xx - c[1]).max())
    side = square_side(m, 1.0, center)
    assert side % 2 == 1


# ============================================================================ TRF arithmetic
@st.composite
def stacks(draw):
    """Layers ``(kind, kernel, stride, dilation, padding)`` of a random conv / pool stack."""
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 3))
        d = 1 if kind == "avg" else draw(st.integers(1, 3))
        p = draw(st.integers(0, k // 2))
        layers.append((kind, k, s, d, p))
    return layers


def _build(layers) -> nn.Sequential:
    mods = []
    for kind, k, s, d, p in layers:
        if kind == "conv":
            mods.append(nn.Conv2d(2, 2, k, stride=s, dilation=d, padding=p))
        elif kind == "max":
            mods.append(nn.MaxPool2d(k, stride=s, dilation=d, padding=p))
        else:
            mods.append(nn.AvgPool2d(k, stride=s, padding=p))
    return nn.Sequential(*mods)


def _closed_form(layers) -> tuple[int, int, int]:
    """Araujo et al. (2019): size, effective stride, effective padding."""
    ks, ss, ds = [x[1] for x in layers], [x[2] for x in layers], [x[3] for x in layers]
    size = receptive_field_size_formula(ks, ss, ds)
    brute_size, jump, pad = 1, 1, 0
    for _, k, s, d, p in layers:
        brute_size += d * (k - 1) * jump
        pad += p * jump
        jump *= s
    assert size == brute_size
    return size, jump, pad


def _out_sizes(layers, n: int) -> list[int]:
    sizes = []
    for _, k, s, d, p in layers:
        n = (n + 2 * p - d * (k - 1) - 1) // s + 1
        sizes.append(n)
    return sizes


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=stacks(), extra=st.integers(0, 6))
def test_trf_equals_closed_form_and_gradient_support(layers, extra) -> None:
    size, jump, pad = _closed_form(layers)
    side = size + 2 * pad + 2 * jump + extra
    sizes = _out_sizes(layers, side)
    assume(min(sizes) >= 1)
    torch.manual_seed(0)
    model = _build(layers).eval()
    last = str(len(layers) - 1)
    trf = trace_receptive_fields(model, (side, side), channels=2).trf[last]
    assert not trf.is_global
    assert trf.size == (size, size)
    assert trf.stride == (jump, jump)
    assert trf.padding == (pad, pad)
    assert trf.feature_size == (sizes[-1], sizes[-1])
    # a unit whose whole field lies inside the input, so the support is not clipped
    i = math.ceil(pad / jump)
    assume(i < sizes[-1])
    y0, y1, x0, x1 = trf.box((i, i))
    assert 0 <= y0 and y1 <= side - 1
    support = gradient_support(model, [last], (side, side), units={last: (i, i)}, channels=2, samples=3)[last]
    assert support.box is not None
    if any(kind == "max" for kind, *_ in layers):
        sy0, sy1, sx0, sx1 = support.box  # a max pool passes the gradient to one pixel per window
        assert y0 <= sy0 <= sy1 <= y1 and x0 <= sx0 <= sx1 <= x1
    else:
        assert support.box == (y0, y1, x0, x1)
