"""Figures of ERF maps and metrics (matplotlib, Agg backend; saved atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from erf.atomic import save_figure  # noqa: E402


def draw_erf(ax: Any, layer: Any, log: bool = True, vmax: float | None = None, title: str | None = None,
             normalise: bool = True) -> Any:
    """Draw one layer's ERF map on ``ax``: ``log10(1 + M / mean images)`` (or linear), the
    probed unit's TRF box (dashed; "global" in the title when global) and its centre."""
    m = layer.sum_map / max(layer.images, 1)
    if normalise and m.max() > 0:
        m = m / m.max()
    shown = np.log10(1 + 9 * m) if log else m
    im = ax.imshow(shown, cmap="magma", vmin=0, vmax=vmax if vmax is not None else max(shown.max(), 1e-12))
    y0, y1, x0, x1 = layer.trf.box(layer.unit)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", ls="--", lw=1))
    cy, cx = layer.center
    ax.plot([cx], [cy], "+", color="cyan", ms=6)
    ax.set_xlim(-0.5, m.shape[1] - 0.5)
    ax.set_ylim(m.shape[0] - 0.5, -0.5)
    trf = "global" if layer.trf.is_global else f"TRF {layer.trf.size[0]}px"
    r95 = layer.metrics.radius[0.95] if layer.metrics else float("nan")
    ax.set_title(title or f"{layer.name}: {trf}, r95 {r95:.1f}px", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def erf_heatmap(layer: Any, path: str | Path, log: bool = True) -> None:
    """Save one layer's ERF heatmap with its TRF box to ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(3.4, 3.4), dpi=120)
    im = draw_erf(ax, layer, log=log)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="log10(1 + 9 m), m = map / max" if log else "map / max")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def erf_vs_depth(series: dict[str, Sequence[Any]], path: str | Path, accuracy: dict[str, float] | None = None) -> None:
    """Plot ERF radius (50 % and 95 % mass, with 95 % CIs) and TRF half-size against depth.

    Args:
        series: ``{model label: [LayerERF, ...]}`` in forward order.
        path: PNG destination.
        accuracy: optional ``{model label: test accuracy}`` shown in the legend.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names: list[str] = []
    for k, (label, layers) in enumerate(series.items()):
        c = colors[k % len(colors)]
        x = np.arange(len(layers))
        names = [layer.name for layer in layers] if len(layers) > len(names) else names
        acc = f" (acc {accuracy[label]:.3f})" if accuracy and label in accuracy else ""
        for q, ls in ((0.5, ":"), (0.95, "-")):
            y = [layer.metrics.radius[q] for layer in layers]
            lo = [layer.ci.get(f"radius.{int(q * 100)}", (v, v))[0] for layer, v in zip(layers, y)]
            hi = [layer.ci.get(f"radius.{int(q * 100)}", (v, v))[1] for layer, v in zip(layers, y)]
            ax.plot(x, y, ls, color=c, marker="o", ms=3, label=f"{label}{acc}: ERF r{int(q * 100)}")
            ax.fill_between(x, lo, hi, color=c, alpha=0.15)
        trf = [np.nan if layer.trf.is_global else layer.trf.size[0] / 2 for layer in layers]
        ax.plot(x, trf, "--", color=c, alpha=0.6, label=f"{label}: TRF half-size")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("input pixels")
    ax.set_title("ERF radius vs depth (shaded: 95% bootstrap CI; TRF missing = global)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
