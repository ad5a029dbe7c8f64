"""The figures of the real-data hypothesis-2 study (matplotlib): object-size CDFs against ERF sizes and the gain
against the ERF/object ratio (the controlled grid's are in :mod:`erf.study.grid_figures`). Functions return
figures; commands save them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from erf.objects.sizes import ObjectSizes
from erf.study.records import ModelERF


def _short(label: str) -> str:
    """``/work/runs/resnet20/best.pt`` -> ``resnet20/best.pt`` (figure legends)."""
    p = Path(label)
    return f"{p.parent.name}/{p.name}" if p.suffix in (".pt", ".pth") and p.parent.name else label


def plot_cdf(models: Sequence[ModelERF], objects: ObjectSizes) -> Figure:
    """Object-size CDFs (sqrt(area) solid, longer side dashed) with each model's ERF 2 r50 (solid vertical
    line, CI shaded), 2 r95 (dashed) and TRF side (dotted; a triangle at the top edge) on one axis."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    kind = " (estimated)" if objects.is_estimate else ""
    for values, ls, lab in ((objects.sqrt_area, "-", "sqrt(area)"), (objects.longer_side, "--", "longer side")):
        v = np.sort(values)
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color="black", ls=ls, lw=1.5,
                label=f"objects{kind}: {lab}")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xmax = float(max(objects.longer_side.max(), 1))
    for i, m in enumerate(models):
        c = colors[i % len(colors)]
        d, lo, hi = m.diameter(0.5)
        ax.axvspan(lo, hi, color=c, alpha=0.15, lw=0)
        ax.axvline(d, color=c, lw=2, label=f"{_short(m.label)}: 2r50 {d:.1f}px")
        d95 = m.diameter(0.95)[0]
        ax.axvline(d95, color=c, lw=1.2, ls="--")
        trf = m.last["trf_side"]
        if trf is not None:
            ax.axvline(trf, color=c, lw=1, ls=":")
            ax.plot([trf], [1.02], marker="v", color=c, clip_on=False)
        xmax = max(xmax, d95, trf or 0)
    ax.set_xlim(0, xmax * 1.05)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("size in model-input px (object side; ERF diameter 2r; TRF side)")
    ax.set_ylabel("fraction of objects with size <= x")
    ax.set_title("ERF size vs object-size CDF (solid: 2r50 with CI, dashed: 2r95, dotted/triangle: TRF)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_gain(rows: Sequence[dict[str, Any]], fit: dict[str, Any] | None,
              title: str = "attention gain vs ERF/object ratio") -> Figure:
    """Gain (pp, with CI bars) against the ERF/object ratio (log2 axis), with the fitted line when any."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = sorted({r.get("pair", r["label"]) for r in rows})
    for i, key in enumerate(keys):
        sub = [r for r in rows if r.get("pair", r["label"]) == key]
        key = _short(key)
        x = np.array([r["ratio"] for r in sub])
        y = np.array([100 * r["gain"] for r in sub])
        lo = np.array([100 * r["gain_ci"][0] for r in sub])
        hi = np.array([100 * r["gain_ci"][1] for r in sub])
        chance = np.array([bool(r.get("near_chance")) for r in sub])
        for sel, face, lab in ((~chance, colors[i % len(colors)], key), (chance, "none", f"{key} (near chance)")):
            if sel.any():
                ax.errorbar(x[sel], y[sel], yerr=[(y - lo)[sel], (hi - y)[sel]], fmt="o", color=colors[i % len(colors)],
                            mfc=face, ms=5, capsize=2, alpha=0.8, label=lab)
    if fit is not None and rows:
        xs = np.linspace(min(r["ratio"] for r in rows), max(r["ratio"] for r in rows), 50)
        ax.plot(xs, 100 * (fit["intercept"] + fit["slope"] * np.log2(xs)), "k-", lw=1,
                label=f"fit: {100 * fit['slope']:+.1f} pp/doubling [{100 * fit['slope_ci'][0]:+.1f}, "
                      f"{100 * fit['slope_ci'][1]:+.1f}]")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ERF/object ratio (2 r50 of the plain twin / object size)")
    ax.set_ylabel("attention gain (pp of accuracy)")
    ax.set_title(title, fontsize=9)
    if rows:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def real_study_figures(doc: dict[str, Any], models: Sequence[ModelERF], objects: ObjectSizes) -> dict[str, Figure]:
    """``{"erf_vs_objects_cdf.png", "gain_vs_ratio.png"}`` of a real-data study."""
    return {"erf_vs_objects_cdf.png": plot_cdf(models, objects),
            "gain_vs_ratio.png": plot_gain(doc["pairs"], doc["fit"])}
