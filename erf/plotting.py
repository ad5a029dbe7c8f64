"""The figures of ERF maps and metrics, comparisons and object sizes (matplotlib).

Every function returns the :class:`matplotlib.figure.Figure` it drew (or draws on a given axis);
nothing is written here: the commands save figures (:func:`erf.files.atomic.save_figure`), notebooks show
them. The study's figures are in :mod:`erf.study.figures`. The backend is left to the caller: the
command line selects Agg, notebooks keep theirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from erf.metrics import level_key
from erf.objects.sizes import SIZE_MEASURES, ObjectSizes, cdf

SCALE = "log10(1 + 9 m)"
"""The colour scale of every ERF heatmap (``erf measure``'s default ``--display log``, ``erf compare``'s panels and
the notebook): ``m`` is a pixel's share of the gradient mass over the largest share shown on one colour bar, so
``m = 1`` is the brightest pixel, ``m = 0.1`` is drawn at 0.28 and ``m = 0.01`` at 0.04."""


def colour_label(log: bool | str = True) -> str:
    """The colour-bar label of a :func:`draw_erf` panel drawn with ``log``."""
    if log == "log1p":
        return "log10(1 + mean map) / its max"
    return f"{SCALE}, m = map / its max" if log else "m = map / its max (linear)"


def _pixel_axes(ax: Any, shape: Sequence[int], labels: bool = True) -> None:
    """Input-pixel ticks (``0 .. H-1``) on an image axis, with axis labels unless ``labels`` is False."""
    ax.tick_params(labelsize=6, length=2)
    if labels:
        ax.set_xlabel("x (input px)", fontsize=7)
        ax.set_ylabel("y (input px)", fontsize=7)
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)


def trf_box_in_view(layer: Any, shape: Sequence[int]) -> bool:
    """Whether the probed unit's TRF box (its local part for a global TRF) has an edge inside the ``(H, W)`` map;
    a box that encloses the whole map is not drawn (its edges would lie outside the axes)."""
    y0, y1, x0, x1 = layer.trf.box(layer.unit)
    return not (y0 <= 0 and x0 <= 0 and y1 >= shape[0] - 1 and x1 >= shape[1] - 1)


def trf_caption(layer: Any, shape: Sequence[int]) -> str:
    """What the dashed box of :func:`draw_erf` shows for ``layer`` on an ``(H, W)`` map, or why none is drawn."""
    side = layer.trf.local_size[0]
    what = f"the {side} px local part of its global TRF" if layer.trf.is_global else f"its {side} px TRF"
    if trf_box_in_view(layer, shape):
        return f"dashed: {what}"
    return f"no box: {what} encloses the whole {shape[0]} px input"


def draw_erf(ax: Any, layer: Any, log: bool | str = True, vmax: float | None = None, title: str | None = None,
             normalise: bool = True, labels: bool = True) -> Any:
    """Draw one layer's ERF map on ``ax`` with input-pixel axes: ``log10(1 + 9 m)`` with ``m`` the mean map over its
    maximum (``log=True``, :data:`SCALE`), ``m`` (``False``) or RepLKNet's ``log10(1 + mean map)`` over its maximum
    (``log="log1p"``), with the probed unit's TRF box (dashed, when an edge of it lies inside the map:
    :func:`trf_box_in_view`; "global" in the title) and its centre (+). Returns the image (for a colour bar:
    :func:`colour_label`); ``labels``: axis labels."""
    m = layer.sum_map / max(layer.images, 1)
    if log == "log1p":
        shown = np.log10(1 + m)
        shown = shown / shown.max() if normalise and shown.max() > 0 else shown
    else:
        if normalise and m.max() > 0:
            m = m / m.max()
        shown = np.log10(1 + 9 * m) if log else m
    im = ax.imshow(shown, cmap="magma", vmin=0, vmax=vmax if vmax is not None else max(shown.max(), 1e-12))
    if trf_box_in_view(layer, m.shape):
        y0, y1, x0, x1 = layer.trf.box(layer.unit)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", ls="--", lw=1))
    cy, cx = layer.center
    ax.plot([cx], [cy], "+", color="cyan", ms=6)
    trf = "global" if layer.trf.is_global else f"TRF {layer.trf.size[0]}px"
    r95 = layer.metrics.radius[0.95] if layer.metrics else float("nan")
    ax.set_title(title or f"{layer.name}: {trf}, r95 {r95:.1f}px", fontsize=8)
    _pixel_axes(ax, m.shape, labels)
    return im


def erf_heatmap(layer: Any, log: bool | str = True, subtitle: str | None = None) -> Figure:
    """One layer's ERF heatmap with input-pixel axes and its TRF box; ``log`` as in :func:`draw_erf`; ``subtitle``
    (e.g. the model, probe and image count) above the plot; a caption says what the dashed box (or its absence)
    and the cross are."""
    fig, ax = plt.subplots(figsize=(3.8, 4.1), dpi=120)
    im = draw_erf(ax, layer, log=log)
    if subtitle:
        fig.suptitle(subtitle, fontsize=7)
    import textwrap

    box = trf_caption(layer, layer.sum_map.shape)
    caption = f"{box}; +: the probed unit's centre {tuple(round(c, 1) for c in layer.center)}"
    fig.text(0.5, 0.01, textwrap.fill(caption, 80), ha="center", va="bottom", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(colour_label(log), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97 if subtitle else 1))
    return fig


def erf_grid(rows: dict[str, Sequence[Any]], log: bool | str = True) -> Figure:
    """ERF heatmaps of several models (rows: ``{label: [LayerERF, ...]}``) and layers (columns), each panel
    normalised to its own maximum, with input-pixel axes and one colour bar (every panel's scale is the same:
    :func:`colour_label`)."""
    ncols = max(len(layers) for layers in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3 * ncols + 1, 3 * len(rows)), squeeze=False,
                             layout="constrained")
    im = None
    for r, (label, layers) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(layers):
                ax.set_visible(False)
                continue
            im = draw_erf(ax, layers[c], log=log, title=f"{label} {layers[c].name}", labels=c == 0)
    assert im is not None  # every row has at least its first panel
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02).set_label(
        colour_label(log) + " (each panel)", fontsize=8)
    return fig


def erf_vs_depth(series: Mapping[str, Sequence[Any]], accuracy: dict[str, float] | None = None) -> Figure:
    """ERF radius (50 % and 95 % mass, with 95 % CIs) and TRF half-size against depth.

    Args:
        series: ``{model label: [LayerERF, ...]}`` in forward order.
        accuracy: optional ``{model label: test accuracy}`` shown in the legend.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names: list[str] = []
    drew_trf = some_global = False
    for k, (label, layers) in enumerate(series.items()):
        c = colors[k % len(colors)]
        x = np.arange(len(layers))
        names = [layer.name for layer in layers] if len(layers) > len(names) else names
        acc = f" (acc {accuracy[label]:.3f})" if accuracy and label in accuracy else ""
        for q, ls in ((0.5, ":"), (0.95, "-")):
            y = [layer.metrics.radius[q] for layer in layers]
            lo = [layer.ci.get(f"radius.{level_key(q)}", (v, v))[0] for layer, v in zip(layers, y)]
            hi = [layer.ci.get(f"radius.{level_key(q)}", (v, v))[1] for layer, v in zip(layers, y)]
            ax.plot(x, y, ls, color=c, marker="o", ms=3, label=f"{label}{acc}: ERF r{level_key(q)}")
            ax.fill_between(x, lo, hi, color=c, alpha=0.15)
        trf = [np.nan if layer.trf.is_global else layer.trf.size[0] / 2 for layer in layers]
        if np.isfinite(trf).any():  # a legend entry only for what is drawn (markers: a lone local layer shows)
            ax.plot(x, trf, "--", color=c, alpha=0.6, marker="x", ms=4, label=f"{label}: TRF half-size")
        drew_trf = drew_trf or bool(np.isfinite(trf).any())
        some_global = some_global or any(layer.trf.is_global for layer in layers)
    frames = {min(layer.sum_map.shape) / 2 for layers in series.values() for layer in layers}
    if len(frames) == 1:
        ax.axhline(frames.pop(), color="gray", ls="-.", lw=0.8, label="half the input side (the frame)")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("input pixels")
    trf_words = ("; TRF half-size dashed, missing where global" if drew_trf and some_global
                 else "; TRF half-size dashed" if drew_trf else "; every TRF global: no TRF line")
    ax.set_title(f"ERF radius vs depth (shaded: 95% bootstrap CI{trf_words})", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- comparisons (erf compare)
def mass_distribution(layer: Any) -> np.ndarray:
    """``(H, W)`` share of the layer's gradient mass per pixel (sums to 1; zeros for an all-zero map).

    Dividing by the total makes maps of different models comparable on one colour
    scale whatever their gradient magnitudes.
    """
    m = np.asarray(layer.sum_map, dtype=np.float64)
    total = m.sum()
    return m / total if total > 0 else np.zeros_like(m)


def radial_profile(map_: np.ndarray, center: Sequence[float], step: float = 1.0) -> tuple[np.ndarray, ...]:
    """Radial profile of a non-negative map around ``center`` ``(cy, cx)`` (input pixels).

    Returns:
        ``(radii, density, cumulative)``: bin centres (px, bins of ``step`` px), mean share of
        the mass per pixel in each annulus, and the share of the mass within each bin's outer radius.
    """
    m = np.asarray(map_, dtype=np.float64)
    total = m.sum()
    yy, xx = np.indices(m.shape)
    d = np.hypot(yy - center[0], xx - center[1]).ravel()
    bins = np.floor(d / step).astype(int)
    nb = int(bins.max()) + 1
    mass = np.bincount(bins, weights=m.ravel(), minlength=nb)
    count = np.bincount(bins, minlength=nb)
    share = mass / total if total > 0 else np.zeros(nb)
    density = np.where(count > 0, share / np.maximum(count, 1), 0.0)
    return (np.arange(nb) + 0.5) * step, density, np.cumsum(share)


def _acc_text(accuracy: dict[str, float] | None, label: str) -> str:
    return f", acc {accuracy[label]:.3f}" if accuracy and accuracy.get(label) is not None else ""


def compare_heatmaps(layers: Sequence[Any], labels: Sequence[str], accuracy: dict[str, float] | None = None,
                     title: str | None = None) -> Figure:
    """Side-by-side ERF maps of one layer for several models on ONE colour scale, plus differences.

    Each map is shown as its share of the gradient mass per pixel (:func:`mass_distribution`) on the scale of
    every ERF heatmap (:data:`SCALE`, ``m`` = share / the largest share of all models' panels); each later model
    also gets a difference panel ``share(model) - share(first model)`` on a symmetric diverging linear scale.
    Input-pixel axes; TRF boxes dashed where an edge lies inside the map (the caption says which).

    Args:
        layers: one ``LayerERF`` per model (same layer name, same input size).
        labels: model labels; ``accuracy``: optional ``{label: test accuracy}`` shown in titles.
    """
    shares = [mass_distribution(layer) for layer in layers]
    n = len(layers)
    cols = n + (n - 1)
    fig, axes = plt.subplots(1, cols, figsize=(2.8 * cols + 1.2, 3.7), dpi=110, squeeze=False, layout="constrained")
    axes = axes[0]
    vmax = max(max(float(s.max()) for s in shares), 1e-12)
    im = None
    boxes = []
    for k, (ax, layer, share, label) in enumerate(zip(axes, layers, shares, labels)):
        im = ax.imshow(np.log10(1 + 9 * share / vmax), cmap="magma", vmin=0.0, vmax=1.0)
        if trf_box_in_view(layer, share.shape):
            y0, y1, x0, x1 = layer.trf.box(layer.unit)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", ls="--",
                                   lw=1))
        boxes.append(f"{chr(65 + k)}: {trf_caption(layer, share.shape)}")
        cy, cx = layer.center
        ax.plot([cx], [cy], "+", color="cyan", ms=6)
        r95 = layer.metrics.radius[0.95] if layer.metrics else float("nan")
        ax.set_title(f"{chr(65 + k)}: {label}{_acc_text(accuracy, label)}\nr95 {r95:.1f}px", fontsize=7)
        _pixel_axes(ax, share.shape, labels=k == 0)
    assert im is not None  # one panel per model, n >= 1
    fig.colorbar(im, ax=list(axes[:n]), fraction=0.04, pad=0.02).set_label(
        f"{SCALE}, m = mass share / largest (all models)", fontsize=7)
    if n > 1:
        diffs = [s - shares[0] for s in shares[1:]]
        lim = max(max(float(np.abs(d).max()) for d in diffs), 1e-12)
        dim = None
        for k, (ax, d) in enumerate(zip(axes[n:], diffs)):
            dim = ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"{chr(66 + k)} - A\n(red: more mass in {chr(66 + k)})", fontsize=7)
            _pixel_axes(ax, d.shape, labels=False)
        assert dim is not None  # n > 1: at least one difference panel
        fig.colorbar(dim, ax=list(axes[n:]), fraction=0.04, pad=0.02).set_label(
            "difference of mass shares (linear)", fontsize=7)
    fig.suptitle(title or f"ERF of {layers[0].name}: one colour scale for all models", fontsize=9)
    fig.supxlabel("; ".join(boxes) + "; +: the probed unit's centre", fontsize=6)
    return fig


def compare_radial_profiles(layers: Sequence[Any], labels: Sequence[str], accuracy: dict[str, float] | None = None,
                            step: float = 1.0) -> Figure:
    """Radial profiles of one layer for several models: mass density per pixel and cumulative
    mass against the distance from the probed unit's centre (px), with each model's r50/r95 marked."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (layer, label) in enumerate(zip(layers, labels)):
        c = colors[k % len(colors)]
        radii, density, cumulative = radial_profile(layer.sum_map, layer.center, step)
        name = f"{chr(65 + k)}: {label}{_acc_text(accuracy, label)}"
        ax1.semilogy(radii, np.where(density > 0, density, np.nan), "-", color=c, marker="o", ms=2, label=name)
        ax2.plot(radii + step / 2, cumulative, "-", color=c, label=name)
        if layer.metrics:
            for q, ls in ((0.5, ":"), (0.95, "--")):
                ax2.axvline(layer.metrics.radius[q], color=c, ls=ls, lw=0.8)
    ax1.set_xlabel("distance from unit centre (px)")
    ax1.set_ylabel("share of mass per px (log)")
    ax2.set_xlabel("radius (px)")
    ax2.set_ylabel("share of mass within radius")
    ax2.set_ylim(0, 1.02)
    ax2.set_title("dotted: r50, dashed: r95", fontsize=8)
    ax1.legend(fontsize=6)
    fig.suptitle(f"radial ERF profiles of {layers[0].name}", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- object sizes
def object_size_figures(sizes: ObjectSizes, title: str, bins: int = 20) -> dict[str, Figure]:
    """``{"histogram.png": three measures, "cdf.png": sqrt area and longer side, per class}``."""
    import textwrap

    title = "\n".join(textwrap.fill(line, 110) for line in title.split("\n"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=100)
    for ax, (key, name) in zip(axes, SIZE_MEASURES):
        ax.hist(getattr(sizes, key), bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("objects")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    figures = {"histogram.png": fig}

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    labels = ["(none)" if lab is None else str(lab) for lab in sizes.labels]
    classes = sorted(set(labels))
    lab_arr = np.asarray(labels, dtype=object)
    for ax, (key, name) in zip(axes, SIZE_MEASURES[:2]):
        values = getattr(sizes, key)
        x, f = cdf(values)
        ax.step(x, f, where="post", color="black", lw=2, label="all")
        if 1 < len(classes) <= 12:
            for c in classes:
                x, f = cdf(values[lab_arr == c])
                ax.step(x, f, where="post", lw=1, alpha=0.7, label=c)
        ax.set_xlabel(name)
        ax.set_ylabel("fraction of objects <= x")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    figures["cdf.png"] = fig
    return figures
