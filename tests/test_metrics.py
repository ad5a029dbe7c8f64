"""ERF metrics on synthetic maps whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from erf.metrics import (
    area_ratio,
    bootstrap_ci,
    clipped_fraction,
    erf_metrics,
    gaussian_sigma,
    mass_radius,
    square_side,
)


def gaussian(sigma: float, half: float = 6.0, sy: float | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Isotropic (or (sy, sigma)) Gaussian sampled at pixel centres on a (2 half sigma + 1)^2 grid."""
    n = int(2 * half * max(sigma, sy or 0)) + 1
    c = (n - 1) / 2
    yy, xx = np.indices((n, n))
    sy = sy or sigma
    return np.exp(-((yy - c) ** 2) / (2 * sy * sy) - (xx - c) ** 2 / (2 * sigma * sigma)), (c, c)


def disc(radius: float) -> tuple[np.ndarray, tuple[float, float]]:
    n = int(2 * radius) + 11
    c = (n - 1) / 2
    yy, xx = np.indices((n, n))
    return (np.hypot(yy - c, xx - c) <= radius).astype(float), (c, c)


@pytest.mark.parametrize("sigma", [2.0, 4.5, 8.0])
def test_gaussian_sigma(sigma: float) -> None:
    g, _ = gaussian(sigma)
    sy, sx = gaussian_sigma(g)
    # truncation at 6 sigma removes < 1e-8 of the variance
    assert sy == pytest.approx(sigma, rel=1e-7) and sx == pytest.approx(sigma, rel=1e-7)
    # anisotropic, off-centre, scaled: sigma is per axis, and shift/scale invariant
    a, _ = gaussian(3.0, sy=5.0)
    a = np.pad(7.5 * a, ((3, 20), (11, 0)))
    sy, sx = gaussian_sigma(a)
    assert (sy, sx) == (pytest.approx(5.0, rel=1e-6), pytest.approx(3.0, rel=1e-6))


@pytest.mark.parametrize("sigma", [6.0, 10.0])
def test_mass_radius_of_a_gaussian(sigma: float) -> None:
    """2-D isotropic Gaussian: P(|r| <= R) = 1 - exp(-R^2 / 2 sigma^2), so R_q = sigma sqrt(-2 ln(1 - q)).

    Pixels count at their centres, so radii are distances between pixel centres: within 0.15 px here.
    """
    g, c = gaussian(sigma)
    for q in (0.5, 0.95):
        truth = sigma * math.sqrt(-2 * math.log(1 - q))
        assert mass_radius(g, q, c) == pytest.approx(truth, abs=0.15)
    assert mass_radius(g, 0.5, c) == pytest.approx(sigma * math.sqrt(2 * math.log(2)), abs=0.15)


@pytest.mark.parametrize("radius", [10.0, 20.0, 37.5])
def test_mass_radius_of_a_uniform_disc(radius: float) -> None:
    """Uniform disc of radius R: the mass within r is (r / R)^2, so R_q = R sqrt(q) (within 0.5 px, pixel grid)."""
    d, c = disc(radius)
    for q in (0.25, 0.5, 0.95):
        assert mass_radius(d, q, c) == pytest.approx(radius * math.sqrt(q), abs=0.5)
    assert mass_radius(d, 1.0, c) <= radius


def _square_map(n: int = 31, side: int = 11, value: float = 5.0) -> np.ndarray:
    m = np.zeros((n, n))
    a = (n - side) // 2
    m[a: a + side, a: a + side] = value
    return m


@pytest.mark.parametrize("exact", [False, True])
def test_area_ratio_on_a_square(exact: bool) -> None:
    """A constant 11 x 11 square on a 31 x 31 map: after log10(1 + M) / max it is 1 inside, 0 outside, so
    the smallest odd side s with s^2 > t 121 is 5, 7, 9, 11 for t = 20, 30, 50, 99 %; ratio s^2 / 961."""
    m = _square_map()
    for t, side in ((0.2, 5), (0.3, 7), (0.5, 9), (0.99, 11)):
        ratio, flagged = area_ratio(m, t, (15, 15), exact_replknet=exact)
        assert ratio == pytest.approx(side * side / 961) and not flagged
    assert square_side(m, 0.5, (15, 15)) == 9  # >= rather than >: 81 >= 60.5
    assert square_side(m, 1.0, (15, 15)) == 11


def test_area_ratio_no_square_qualifies() -> None:
    """RepLKNet's loop stops before the full side: on a uniform even map no square holds 99 %
    (31^2 / 32^2 = 94 %); their script crashes, we report 1.0 and a flag."""
    m = np.ones((32, 32))
    assert area_ratio(m, 0.99, exact_replknet=True) == (1.0, True)
    ratio, flagged = area_ratio(m, 0.5, exact_replknet=True)
    assert not flagged and ratio == pytest.approx(23 * 23 / 1024)  # 529 / 1024 > 0.5, 21^2 = 441 is not
    # our centred squares may grow to the whole map: 1.0 without a flag
    assert area_ratio(m, 0.99) == (1.0, False)
    assert area_ratio(np.zeros((8, 8)), 0.5) == (1.0, True)
    metrics = erf_metrics(m, 1, (15.5, 15.5), exact_replknet=True)
    assert metrics.area_ratio[0.99] == 1.0 and 0.99 in metrics.area_ratio_flagged


def test_area_ratio_uses_the_mean_map() -> None:
    """The log is not scale-invariant, so erf_metrics divides the summed map by the image count."""
    g, c = gaussian(3.0)
    one = erf_metrics(20 * g, 1, c)
    many = erf_metrics(20 * g * 7, 7, c)
    assert one.area_ratio == many.area_ratio
    assert erf_metrics(g, 1, c).area_ratio != one.area_ratio  # a different mean map, a different ratio


def test_clipped_fraction_and_erf_over_trf() -> None:
    m = np.ones((10, 10))
    outside = np.zeros((10, 10), dtype=bool)
    outside[:, :3] = True
    assert clipped_fraction(m, outside) == pytest.approx(0.3)
    assert clipped_fraction(m, None) == 0.0
    sq = _square_map()
    metrics = erf_metrics(sq, 1, (15, 15), trf_side=22)
    assert metrics.square_side[0.95] == 11 and metrics.erf_over_trf == pytest.approx(0.5)
    assert erf_metrics(sq, 1, (15, 15)).erf_over_trf is None
    with pytest.raises(ValueError):
        gaussian_sigma(-sq)


def _dataset(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-image maps a_n G + b_n U (G: Gaussian sigma 2.5, U: uniform), a ~ Exp(mean 1), b ~ Exp(mean 0.5)."""
    g, _ = gaussian(2.5, half=3.0)
    g = g / g.sum()
    u = np.full_like(g, 1.0 / g.size)
    a = rng.exponential(1.0, n)
    b = rng.exponential(0.5, n)
    return a[:, None, None] * g + b[:, None, None] * u, (1.0 * g + 0.5 * u)


def _sigma_stat(m: np.ndarray, images: int) -> dict[str, float]:
    return {"sigma": gaussian_sigma(m)[1]}


def test_bootstrap_ci_covers_the_truth_and_shrinks() -> None:
    """Population map E[map] = 1 G + 0.5 U; its sigma is the truth. Over 40 data sets of 32 images the 95 %
    interval must cover it most of the time; with 16x more images the interval must be about 4x narrower."""
    rng = np.random.default_rng(0)
    truth = _sigma_stat(_dataset(1, rng)[1], 1)["sigma"]
    covered, widths = 0, {32: [], 512: []}
    for rep in range(40):
        maps, _ = _dataset(32, rng)
        lo, hi = bootstrap_ci(maps, np.ones(32), _sigma_stat, resamples=200, seed=rep)["sigma"]
        covered += lo <= truth <= hi
        widths[32].append(hi - lo)
    for rep in range(6):
        maps, _ = _dataset(512, rng)
        # 512 images in 64 groups (image n -> group n mod 64), as the measurement accumulates them
        groups = np.stack([maps[g::64].sum(0) for g in range(64)])
        lo, hi = bootstrap_ci(groups, np.full(64, 8.0), _sigma_stat, resamples=200, seed=rep)["sigma"]
        widths[512].append(hi - lo)
    assert covered >= 34  # nominal 38 of 40; percentile intervals with 32 images under-cover a little
    ratio = np.mean(widths[512]) / np.mean(widths[32])
    assert 0.15 < ratio < 0.4  # sqrt(32 / 512) = 0.25


def test_bootstrap_is_reproducible_and_handles_single_group() -> None:
    rng = np.random.default_rng(1)
    maps, _ = _dataset(10, rng)
    a = bootstrap_ci(maps, np.ones(10), _sigma_stat, resamples=50, seed=3)
    b = bootstrap_ci(maps, np.ones(10), _sigma_stat, resamples=50, seed=3)
    assert a == b
    assert bootstrap_ci(maps[:1], np.ones(1), _sigma_stat) == {}


def test_radii_are_scale_free_and_r95_follows_the_canvas_but_r50_does_not() -> None:
    """What compare may test: a map scaled x1000 keeps every radius (the area ratio moves); a faint plateau
    holding a fixed 8 % of the mass over the whole canvas moves r95 with the canvas while r50 stays put."""
    from erf.metrics import RADIUS_LEVELS, area_ratio, mass_radius

    def blob_with_plateau(side: int) -> np.ndarray:
        yy, xx = np.indices((side, side))
        c = (side - 1) / 2
        blob = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * 2.0**2))
        blob *= 0.92 / blob.sum()
        return blob + 0.08 / side**2

    m = blob_with_plateau(33)
    for q in RADIUS_LEVELS:
        assert mass_radius(1000 * m, q) == mass_radius(m, q)
    assert area_ratio(1000 * m, 0.5)[0] != area_ratio(m, 0.5)[0]
    r50 = [mass_radius(blob_with_plateau(s), 0.5) for s in (33, 65, 97)]
    r95 = [mass_radius(blob_with_plateau(s), 0.95) for s in (33, 65, 97)]
    assert max(r50) - min(r50) <= 0.5 and r95[0] < r95[1] < r95[2]
