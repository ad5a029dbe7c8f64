"""The statistics every analysis of erf uses: percentile intervals, paired bootstraps,
the Wilcoxon signed-rank test, t intervals and one-sided t tests of a mean, the two one-sided tests of
equivalence (TOST) and least-squares fits (with one intercept per group: :func:`fixed_effects_fit`).

Pure numpy/scipy on plain arrays; nothing here knows about ERF maps or models.
Levels are coverages in (0, 1) (``0.95``: a 95 % interval).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_RESAMPLES = 10_000
"""Bootstrap resamples at most (50 x the default 200): each resample recomputes every metric of every layer."""


def check_resamples(value: Any, param: str = "bootstrap") -> int:
    """``value`` as a resample count in ``[0, MAX_RESAMPLES]``.

    Raises:
        InputError: not an integer, negative or above :data:`MAX_RESAMPLES` (naming ``param``).
    """
    from erf.errors import InputError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{value}: must be an integer >= 0", param=param)
    if value > MAX_RESAMPLES:
        raise InputError(f"{value}: at most {MAX_RESAMPLES:,} resamples (the default is 200)", param=param)
    return int(value)


def percentile_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed percentile interval ``(q_{a}, q_{1-a})``, ``a = (1 - level) / 2``, of ``values``."""
    alpha = (1 - level) / 2
    return (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))


def bootstrap_mean_interval(values: Sequence[float] | np.ndarray, resamples: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` ``(N,)``: ``resamples`` draws of ``N``
    values with replacement (``numpy.random.default_rng(seed)``), the mean of each draw."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(resamples, len(v)))
    return percentile_interval(v[idx].mean(axis=1), level)


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> list[float] | None:
    """Student-t interval ``mean +- t_{n-1} s / sqrt(n)`` of ``values``; ``None`` with fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return [float(v.mean() - half), float(v.mean() + half)]


def difference_of_proportions(p1: float, n1: int, p2: float, n2: int, level: float = 0.95) -> list[float]:
    """Normal-approximation interval of ``p2 - p1`` for independent proportions ``p1`` (of ``n1``) and
    ``p2`` (of ``n2``): ``(p2 - p1) +- z sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2)``."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    se = math.sqrt(sum(p * (1 - p) / max(n, 1) for p, n in ((p1, n1), (p2, n2))))
    d = p2 - p1
    return [d - z * se, d + z * se]


def accuracy_gain(plain: float, attention: float, plain_images: int, attention_images: int,
                  plain_correct: np.ndarray | None = None, attention_correct: np.ndarray | None = None,
                  resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Gain ``attention - plain`` of two accuracies in [0, 1] with a ``level`` interval.

    Paired percentile bootstrap over images (:func:`bootstrap_mean_interval` of the per-image
    differences of correctness) when both per-image ``correct`` vectors are given and have the same
    length; otherwise :func:`difference_of_proportions` (independent samples).

    Returns:
        ``{"value", "ci": [low, high], "method"}``.
    """
    g = attention - plain
    if (plain_correct is not None and attention_correct is not None
            and len(plain_correct) == len(attention_correct) and len(plain_correct) > 1 and resamples > 0):
        diff = np.asarray(attention_correct, dtype=np.float64) - np.asarray(plain_correct, dtype=np.float64)
        lo, hi = bootstrap_mean_interval(diff, resamples, seed, level)
        return {"value": g, "ci": [lo, hi], "method": f"paired bootstrap over {len(diff)} images"}
    lo, hi = difference_of_proportions(plain, plain_images, attention, attention_images, level)
    return {"value": g, "ci": [lo, hi],
            "method": "normal approximation from the two accuracies (independent samples)"}


def signed_rank_test(differences: Sequence[float] | np.ndarray) -> tuple[float | None, float | None, int]:
    """Two-sided Wilcoxon signed-rank test of paired ``differences`` (zeros and non-finite values dropped).

    Returns:
        ``(statistic, p_value, nonzero)``; all-zero differences give ``(0.0, 1.0, 0)``,
        and a test scipy cannot compute gives ``(None, None, nonzero)``.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    d = d[d != 0]  # zero_method="wilcox", done here so that small samples get the exact distribution
    nonzero = int(d.size)
    if nonzero == 0:
        return 0.0, 1.0, 0
    from scipy.stats import wilcoxon

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = wilcoxon(d, alternative="two-sided")
    except ValueError:
        return None, None, nonzero
    stat, p = float(res.statistic), float(res.pvalue)
    return (stat if math.isfinite(stat) else None), (min(p, 1.0) if math.isfinite(p) else None), nonzero


def linear_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
               level: float = 0.95) -> dict[str, Any] | None:
    """Ordinary least squares ``y = a + b x`` with a t interval on the slope ``b``.

    Non-finite pairs are dropped. ``None`` with fewer than 3 usable points or no spread in ``x``.

    Returns:
        ``{"slope", "slope_ci": [low, high], "intercept", "p_value" (two-sided, slope = 0), "r", "n"}``.
    """
    from scipy import stats

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if len(xa) < 3 or np.ptp(xa) == 0:
        return None
    res = stats.linregress(xa, ya)
    t = float(stats.t.ppf(0.5 + level / 2, len(xa) - 2))
    half = t * float(res.stderr)
    return {"slope": float(res.slope), "slope_ci": [float(res.slope) - half, float(res.slope) + half],
            "intercept": float(res.intercept), "p_value": float(res.pvalue), "r": float(res.rvalue),
            "n": int(len(xa))}


def mean_test(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` with a two-sided ``level`` t interval and one-sided p values (``> 0``, ``< 0``).

    Fewer than 2 values: the interval and p values are ``None``; zero spread: p values 0 or 1.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(v.size), "mean": float(v.mean()) if v.size else float("nan"),
                           "sd": float(v.std(ddof=1)) if v.size > 1 else None, "ci": None,
                           "p_greater": None, "p_less": None}
    if v.size < 2:
        return out
    se = float(v.std(ddof=1) / math.sqrt(v.size))
    df = v.size - 1
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    out["ci"] = [out["mean"] - half, out["mean"] + half]
    out["se"] = se
    if se == 0:
        out["p_greater"] = 0.0 if out["mean"] > 0 else 1.0
        out["p_less"] = 0.0 if out["mean"] < 0 else 1.0
    else:
        t = out["mean"] / se
        out["p_greater"] = float(stats.t.sf(t, df))
        out["p_less"] = float(stats.t.cdf(t, df))
    return out


def tost(values: Sequence[float], margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Two one-sided t tests of ``|mean| < margin``: equivalent iff both p < ``alpha``.

    Returns ``{"n", "mean", "margin", "ci90" ((1 - 2 alpha) interval), "p_lower", "p_upper", "equivalent"}``.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(v.size), "mean": float(v.mean()) if v.size else float("nan"),
                           "margin": margin, "ci90": None, "p_lower": None, "p_upper": None, "equivalent": False}
    if v.size < 2:
        return out
    se = float(v.std(ddof=1) / math.sqrt(v.size))
    df = v.size - 1
    m = out["mean"]
    if se == 0:
        out.update(p_lower=0.0 if m > -margin else 1.0, p_upper=0.0 if m < margin else 1.0, ci90=[m, m])
    else:
        out["p_lower"] = float(stats.t.sf((m + margin) / se, df))
        out["p_upper"] = float(stats.t.cdf((m - margin) / se, df))
        half = float(stats.t.ppf(1 - alpha, df)) * se
        out["ci90"] = [m - half, m + half]
    out["equivalent"] = bool(out["p_lower"] < alpha and out["p_upper"] < alpha)
    return out


def fixed_effects_fit(y: Sequence[float], x: Sequence[float], groups: Sequence[Any]) -> dict[str, Any] | None:
    """OLS ``y = a_g + b x`` (one intercept per group) with the slope's SE and one-sided p values.

    The slope is identified by the within-group variation of ``x`` only. Returns ``None`` when it is
    not identifiable (no group with two distinct ``x``) or no residual degree of freedom is left.

    Returns:
        ``{"slope", "se", "df", "ci" (95 %), "p_less", "p_greater", "n", "groups", "intercepts"}``.
    """
    from scipy import stats

    yv = np.asarray(y, dtype=np.float64)
    xv = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(yv) & np.isfinite(xv)
    yv, xv = yv[ok], xv[ok]
    gl = [g for g, keep in zip(groups, ok) if keep]
    keys = sorted(set(gl), key=str)
    if not keys:
        return None
    within = sum(float(np.sum((xv[[g == k for g in gl]] - xv[[g == k for g in gl]].mean()) ** 2)) for k in keys)
    if within <= 1e-12:
        return None
    design = np.zeros((len(yv), len(keys) + 1))
    for i, g in enumerate(gl):
        design[i, keys.index(g)] = 1.0
    design[:, -1] = xv
    df = len(yv) - design.shape[1]
    if df < 1:
        return None
    coef, *_ = np.linalg.lstsq(design, yv, rcond=None)
    resid = yv - design @ coef
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.pinv(design.T @ design)
    b, se = float(coef[-1]), float(math.sqrt(max(cov[-1, -1], 0.0)))
    half = float(stats.t.ppf(0.975, df)) * se
    if se == 0:
        p_less, p_greater = (0.0 if b < 0 else 1.0), (0.0 if b > 0 else 1.0)
    else:
        p_less, p_greater = float(stats.t.cdf(b / se, df)), float(stats.t.sf(b / se, df))
    return {"slope": b, "se": se, "df": int(df), "ci": [b - half, b + half], "p_less": p_less,
            "p_greater": p_greater, "n": int(len(yv)), "groups": [str(k) for k in keys],
            "intercepts": {str(k): float(coef[i]) for i, k in enumerate(keys)}}


def within_slope(y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray,
                 blocks: Sequence[Any]) -> dict[str, Any]:
    """OLS ``y = a_block + b x`` (one intercept per block) for one or many outcome columns at once.

    The same estimate as :func:`fixed_effects_fit` (the slope from the within-block variation of ``x`` only,
    residual SE with ``n - blocks - 1`` df), vectorised so a simulation can fit thousands of simulated
    outcomes of one design in one call.

    Args:
        y: ``(n,)`` or ``(n, R)`` outcomes (``R`` replicates of the same design); must be finite.
        x: ``(n,)`` regressor.
        blocks: ``n`` hashable block labels.

    Returns:
        ``{"slope", "se"}`` (arrays of shape ``(R,)``, or floats for 1-D ``y``), ``"df"`` (int), ``"n"``,
        ``"blocks"``, ``"identified"`` (bool: some block holds two distinct ``x`` and ``df >= 1``; when
        False slope and se are NaN).
    """
    yv = np.asarray(y, dtype=np.float64)
    one = yv.ndim == 1
    yv = yv[:, None] if one else yv
    xv = np.asarray(x, dtype=np.float64)
    keys = {k: i for i, k in enumerate(dict.fromkeys(blocks))}
    idx = np.array([keys[b] for b in blocks], dtype=np.int64)
    nb = len(keys)
    counts = np.bincount(idx, minlength=nb).astype(np.float64)
    xd = xv - (np.bincount(idx, xv, minlength=nb) / counts)[idx]
    ym = np.stack([np.bincount(idx, yv[:, r], minlength=nb) for r in range(yv.shape[1])], axis=1) / counts[:, None]
    yd = yv - ym[idx]
    sxx = float(xd @ xd)
    df = int(len(xv) - nb - 1)
    out: dict[str, Any] = {"df": df, "n": int(len(xv)), "blocks": nb, "identified": bool(sxx > 1e-12 and df >= 1)}
    if not out["identified"]:
        nan = np.full(yv.shape[1], np.nan)
        slope, se = nan, nan
    else:
        slope = (xd @ yd) / sxx
        resid = yd - xd[:, None] * slope[None, :]
        se = np.sqrt(np.sum(resid**2, axis=0) / df / sxx)
    out["slope"], out["se"] = (float(slope[0]), float(se[0])) if one else (slope, se)
    return out


def t_sf(t: float | np.ndarray, df: int) -> float | np.ndarray:
    """One-sided p value ``P(T > t)`` of Student's t with ``df`` degrees of freedom (NaN in, NaN out)."""
    from scipy import stats

    return stats.t.sf(t, df)
