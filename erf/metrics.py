"""Metrics of one ERF map (units: input pixels unless stated).

An ERF map ``M`` is a non-negative ``(H, W)`` array: for Luo et al.'s gradient
probe, ``M[y, x] = sum_n sum_c |d u_n / d x_n[c, y, x]|`` for the probed unit
``u``. Its *centre* ``(cy, cx)`` is the centre of the unit's theoretical
receptive field (a half-pixel for even maps, see :meth:`erf.trf.TRF.central_unit`);
squares are centred on the pixel ``(floor(cy + 1/2), floor(cx + 1/2))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from erf.uncertainty import percentile_interval

AREA_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
"""RepLKNet's thresholds t of the high-contribution area ratio."""
MASS_LEVELS = (0.5, 0.95)
"""Mass fractions q of the square sides."""
RADIUS_LEVELS = (0.25, 0.5, 0.75, 0.9, 0.95)
"""Mass fractions q of the radii: the cumulative mass curve r(q) at five points.

Comparability: radii (and square sides) are fractions of the map's own mass, so they do not depend on the
gradient's scale and can be compared between models. The inner radii (q <= 0.75) hardly depend on the canvas;
r95 does: a faint plateau over the whole canvas (CBAM's global gate) that holds a fixed share of the mass moves
r95 with the canvas size, so compare r95 only between maps on the same canvas. The area ratio (RepLKNet's)
takes ``log10(1 + M)`` of the mean map, which is not scale-free: compare it only between maps of one gradient
scale (the same model), never between models."""


def level_key(level: float) -> str:
    """The key of a mass or threshold level in metric names and JSON: ``0.95`` -> ``"95"``."""
    return str(int(round(level * 100)))


def _check(map_: np.ndarray) -> np.ndarray:
    m = np.asarray(map_, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"an ERF map must be 2-D, got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("an ERF map must be finite and non-negative")
    return m


def _pixel(center: Sequence[float]) -> tuple[int, int]:
    return (int(np.floor(center[0] + 0.5)), int(np.floor(center[1] + 0.5)))


def _square_sums(m: np.ndarray, cy: int, cx: int, max_half: int) -> np.ndarray:
    """Sums of ``m`` over centred squares of side ``2 h + 1``, ``h = 0..max_half`` (clipped to the map)."""
    c = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    c[1:, 1:] = m.cumsum(0).cumsum(1)
    h = np.arange(max_half + 1)
    y0 = np.clip(cy - h, 0, m.shape[0])
    y1 = np.clip(cy + h + 1, 0, m.shape[0])
    x0 = np.clip(cx - h, 0, m.shape[1])
    x1 = np.clip(cx + h + 1, 0, m.shape[1])
    return c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0]


def square_side(map_: np.ndarray, q: float, center: Sequence[float] | None = None) -> int:
    """Side (odd, pixels) of the smallest centred square holding at least a fraction ``q`` of the mass.

    ``side = 2 h + 1`` for the smallest ``h`` with ``sum_{square_h} M >= q sum M``;
    squares are clipped to the map. Returns 0 for an all-zero map.
    """
    m = _check(map_)
    total = m.sum()
    if total <= 0:
        return 0
    cy, cx = _pixel(center if center is not None else ((m.shape[0] - 1) / 2, (m.shape[1] - 1) / 2))
    max_half = max(cy, cx, m.shape[0] - 1 - cy, m.shape[1] - 1 - cx, 0)
    sums = _square_sums(m, cy, cx, max_half)
    h = int(np.argmax(sums >= q * total * (1 - 1e-12)))
    return 2 * h + 1


def mass_radius(map_: np.ndarray, q: float, center: Sequence[float] | None = None) -> float:
    """Smallest Euclidean radius ``r`` (pixels) around ``center`` with ``sum_{|p - c| <= r} M >= q sum M``.

    Pixels are points at their centres; ``r`` is the distance of the pixel at
    which the cumulative mass (sorted by distance) first reaches ``q``.
    """
    return mass_radii(map_, (q,), center)[q]


def mass_radii(map_: np.ndarray, levels: Sequence[float], center: Sequence[float] | None = None) -> dict[float, float]:
    """:func:`mass_radius` at every level ``q`` of ``levels`` (``{q: r}``, pixels), sorting the pixels by distance
    once for all levels."""
    m = _check(map_)
    total = m.sum()
    if total <= 0:
        return {q: 0.0 for q in levels}
    c = center if center is not None else ((m.shape[0] - 1) / 2, (m.shape[1] - 1) / 2)
    yy, xx = np.indices(m.shape)
    d = np.hypot(yy - c[0], xx - c[1]).ravel()
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(m.ravel()[order])
    dist = d[order]
    return {q: float(dist[int(np.argmax(cum >= q * total * (1 - 1e-12)))]) for q in levels}


def gaussian_sigma(map_: np.ndarray) -> tuple[float, float]:
    """Per-axis standard deviation ``(sigma_y, sigma_x)`` (pixels) of the map seen as a distribution.

    ``sigma_y^2 = sum_y p(y) (y - mu_y)^2`` with ``p`` the normalised marginal. This
    is the maximum-likelihood Gaussian fit; for Luo's uniform linear stack of
    ``n`` ``k x k`` convolutions it equals ``sqrt(n (k^2 - 1) / 12)`` exactly.
    """
    m = _check(map_)
    total = m.sum()
    if total <= 0:
        return (0.0, 0.0)
    out = []
    for axis in (1, 0):
        p = m.sum(axis=axis) / total
        pos = np.arange(p.size)
        mu = (p * pos).sum()
        out.append(float(np.sqrt(max((p * (pos - mu) ** 2).sum(), 0.0))))
    return (out[0], out[1])


def area_ratio(
    map_: np.ndarray,
    threshold: float,
    center: Sequence[float] | None = None,
    exact_replknet: bool = False,
) -> tuple[float, bool]:
    """RepLKNet's high-contribution area ratio (Ding et al. 2022, ``erf/analyze_erf.py``).

    ``A = log10(1 + M) / max log10(1 + M)``; the smallest centred square of odd
    side ``s`` with ``sum_square A > t sum A``; ratio ``= s^2 / (H W)``, in [0, 1].
    ``M`` should be the *mean* map over images (the log is not scale-invariant).

    With ``exact_replknet`` the square is centred on ``(H // 2, W // 2)`` and
    sides start at 3 and stop before ``H``, as in their script, which crashes
    when no square qualifies; here that case returns ``(1.0, True)``.

    Returns:
        ``(ratio, flagged)``: ``flagged`` is True when no square qualified.
    """
    m = _check(map_)
    a = np.log10(1.0 + m)
    peak = a.max()
    if peak <= 0:
        return (1.0, True)
    a = a / peak
    total = a.sum()
    h_, w_ = a.shape
    if exact_replknet:
        for i in range(1, h_ // 2):
            sel = a[h_ // 2 - i: h_ // 2 + 1 + i, w_ // 2 - i: w_ // 2 + 1 + i]
            if sel.sum() / total > threshold:
                return (min(1.0, (2 * i + 1) / h_ * (2 * i + 1) / w_), False)  # <= 1 on non-square maps
        return (1.0, True)
    cy, cx = _pixel(center if center is not None else ((h_ - 1) / 2, (w_ - 1) / 2))
    max_half = max(cy, cx, h_ - 1 - cy, w_ - 1 - cx, 0)
    sums = _square_sums(a, cy, cx, max_half)
    ok = np.nonzero(sums > threshold * total)[0]
    if len(ok) == 0:
        return (1.0, True)
    side = 2 * int(ok[0]) + 1
    return (min(1.0, side * side / (h_ * w_)), False)


def clipped_fraction(map_: np.ndarray, outside: np.ndarray | None) -> float:
    """Fraction of the mass on pixels where ``outside`` is True (canvas padding around the image)."""
    m = _check(map_)
    total = m.sum()
    if outside is None or total <= 0:
        return 0.0
    return float(m[np.asarray(outside, dtype=bool)].sum() / total)


@dataclass
class ERFMetrics:
    """All metrics of one map (see the module docstring for the definitions).

    Attributes:
        area_ratio: ``{t: ratio}`` for t in :data:`AREA_THRESHOLDS` (RepLKNet).
        area_ratio_flagged: thresholds for which no square qualified (ratio reported as 1.0).
        square_side: ``{q: side px}`` for q in :data:`MASS_LEVELS`.
        radius: ``{q: radius px}`` for q in :data:`RADIUS_LEVELS`.
        sigma: ``(sigma_y, sigma_x)`` px.
        clipped_fraction: mass on canvas padding.
        erf_over_trf: ``square_side[0.95] / max(TRF side)`` (``None`` for global layers).
    """

    area_ratio: dict[float, float]
    area_ratio_flagged: list[float]
    square_side: dict[float, int]
    radius: dict[float, float]
    sigma: tuple[float, float]
    clipped_fraction: float
    erf_over_trf: float | None

    def scalars(self) -> dict[str, float]:
        """Flat ``{metric_key: value}`` used for bootstrap CIs and tolerances."""
        out = {f"area_ratio.{level_key(t)}": v for t, v in self.area_ratio.items()}
        out.update({f"square_side.{level_key(q)}": float(v) for q, v in self.square_side.items()})
        out.update({f"radius.{level_key(q)}": v for q, v in self.radius.items()})
        out.update({"sigma.y": self.sigma[0], "sigma.x": self.sigma[1]})
        out["clipped_fraction"] = self.clipped_fraction
        if self.erf_over_trf is not None:
            out["erf_over_trf"] = self.erf_over_trf
        return out


def erf_metrics(
    sum_map: np.ndarray,
    images: int,
    center: Sequence[float],
    outside: np.ndarray | None = None,
    trf_side: int | None = None,
    exact_replknet: bool = False,
) -> ERFMetrics:
    """Compute every metric of a summed map over ``images`` images.

    Args:
        sum_map: ``(H, W)`` sum over images and input channels of the probe's map.
        images: number of images summed (the area ratio uses the mean map).
        center: unit centre ``(cy, cx)`` in input pixels.
        outside: ``(H, W)`` bool mask of canvas padding (for :func:`clipped_fraction`).
        trf_side: side of a local TRF, for ``erf_over_trf``.
        exact_replknet: use RepLKNet's own centring and loop for the area ratio.
    """
    m = _check(sum_map)
    mean = m / max(images, 1)
    ratios, flagged = {}, []
    for t in AREA_THRESHOLDS:
        r, f = area_ratio(mean, t, center, exact_replknet)
        ratios[t] = r
        if f:
            flagged.append(t)
    sides = {q: square_side(m, q, center) for q in MASS_LEVELS}
    return ERFMetrics(
        area_ratio=ratios,
        area_ratio_flagged=flagged,
        square_side=sides,
        radius=mass_radii(m, RADIUS_LEVELS, center),
        sigma=gaussian_sigma(m),
        clipped_fraction=clipped_fraction(m, outside),
        erf_over_trf=(sides[0.95] / trf_side) if trf_side else None,
    )


def bootstrap_ci(
    group_maps: np.ndarray,
    group_counts: np.ndarray,
    statistic: Callable[[np.ndarray, int], dict[str, float]],
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals over images.

    Images are accumulated into ``G`` groups (image ``n`` into group ``n mod G``;
    one image per group when ``N <= G``); each resample draws ``G`` groups with
    replacement, sums their maps, and evaluates ``statistic(sum_map, images)``.

    Args:
        group_maps: ``(G, H, W)`` per-group summed maps.
        group_counts: ``(G,)`` images per group.
        statistic: map, image count -> ``{name: value}``.
        resamples: bootstrap resamples B.
        level: coverage of the interval.
        seed: resampling seed (results are reproducible).

    Returns:
        ``{name: (low, high)}``.
    """
    rng = np.random.default_rng(seed)
    keep = np.asarray(group_counts) > 0
    maps, counts = np.asarray(group_maps)[keep], np.asarray(group_counts)[keep]
    g = len(maps)
    if g < 2:
        return {}
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, g, size=g)
        stats = statistic(maps[idx].sum(axis=0), int(counts[idx].sum()))
        for k, v in stats.items():
            draws.setdefault(k, []).append(v)
    return {k: percentile_interval(v, level) for k, v in draws.items()}
