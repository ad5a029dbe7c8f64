"""Object extents estimated without annotations (CIFAR-10 has no boxes): a model-free foreground
segmentation per image (:func:`estimate_masks`), its boxes and sizes. Results are always flagged
``is_estimate=True``; :mod:`erf.objects.validation` measures the estimator's error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from erf.errors import InputError
from erf.objects.boxes import ObjectBox
from erf.objects.preprocess import Preprocess
from erf.objects.sizes import ObjectSizes, object_sizes

ESTIMATE_METHODS = ("border-contrast",)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D ``values``: maximises the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    k = int(np.argmax(between[:-1])) if len(between) > 1 else 0
    return float(edges[k + 1])


def _border_distance(image: np.ndarray, band: int, smooth: float) -> np.ndarray:
    """Mahalanobis distance ``(H, W)`` of each smoothed pixel colour to the border colours."""
    from scipy import ndimage

    img = image.astype(np.float64)
    if smooth > 0:
        img = ndimage.gaussian_filter(img, sigma=(smooth, smooth, 0))
    border = np.ones(img.shape[:2], dtype=bool)
    border[band:-band, band:-band] = False
    colours = img[border]
    centre = np.median(colours, axis=0)
    cov = np.cov(colours, rowvar=False) + np.eye(3) * 25.0  # 5 grey levels of slack: flat borders
    inv = np.linalg.inv(cov)
    diff = img - centre
    return np.sqrt(np.einsum("hwi,ij,hwj->hw", diff, inv, diff))


def estimate_masks(images: np.ndarray, method: str = "border-contrast", band: int | None = None,
                   smooth: float = 1.0, min_distance: float = 3.0, min_fraction: float = 0.02) -> np.ndarray:
    """Model-free foreground masks ``(N, H, W)`` bool of uint8 images ``(N, H, W, 3)``.

    ``"border-contrast"`` (per image, uses nothing but its pixels):

    1. smooth the image with a Gaussian (``smooth`` px) against pixel noise;
    2. the background model is the colour distribution of a border band
       (``band`` px, default ``max(1, min(H, W) // 16)``): its median and
       covariance (+ 25 grey levels^2 on the diagonal);
    3. each pixel's Mahalanobis distance to it; threshold with Otsu's method,
       but never below ``min_distance`` (a uniform image has no foreground);
    4. 3x3 binary opening against specks; 8-connected components;
    5. keep the component with the largest area among those touching the central
       half of the image (the object of a photograph is roughly centred), or the
       largest one when none touches it; merge every other component of at least
       a quarter of its area whose box overlaps its box; fill holes.

    An image where nothing stands out gets an all-true mask (the object is
    assumed to fill the frame) — biased high, never silent: see
    :func:`estimate_extents`' ``method`` text.
    """
    from scipy import ndimage

    if method not in ESTIMATE_METHODS:
        raise InputError(f"estimate method {method!r}: use one of {', '.join(ESTIMATE_METHODS)}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
    n, h, w, _ = images.shape
    band = band or max(1, min(h, w) // 16)
    eight = np.ones((3, 3), dtype=bool)
    masks = np.zeros((n, h, w), dtype=bool)
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4: h - h // 4, w // 4: w - w // 4] = True
    for i in range(n):
        d = _border_distance(images[i], band, smooth)
        t = max(_otsu(d), min_distance)
        fg = ndimage.binary_opening(d > t, structure=eight)
        fg = fg | ndimage.binary_closing(fg, structure=eight)  # bridge one-pixel gaps
        comps, count = ndimage.label(fg, structure=eight)
        if count == 0:
            masks[i] = True
            continue
        areas = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, count + 1))
        central = np.unique(comps[centre & (comps > 0)])
        pool = central if len(central) else np.arange(1, count + 1)
        best = int(pool[np.argmax(areas[pool - 1])])
        keep = np.zeros(count + 1, dtype=bool)
        keep[best] = True
        # every other central component of at least min_fraction of the image belongs to the object too
        for k in central:
            if areas[k - 1] >= min_fraction * h * w:
                keep[k] = True
        masks[i] = ndimage.binary_fill_holes(keep[comps])
    return masks


def estimate_boxes(images: np.ndarray, method: str = "border-contrast", **options: Any) -> np.ndarray:
    """Estimated object boxes ``(N, 4)`` float64 ``x0, y0, x1, y1`` (continuous px of the images)."""
    masks = estimate_masks(images, method, **options)
    out = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def estimate_extents(images: np.ndarray, method: str = "border-contrast", preprocess: Preprocess | None = None,
                     labels: Sequence[str | None] | None = None, area: str = "box",
                     **options: Any) -> ObjectSizes:
    """Estimated object sizes of images without annotations (one object per image).

    Args:
        images: uint8 ``(N, H, W, 3)``.
        method: ``"border-contrast"`` (see :func:`estimate_masks`).
        preprocess: the model's preprocessing of these images (default none).
        labels: a class name per image (kept per object), optional.
        area: ``"box"`` (estimated box area) or ``"mask"`` (estimated mask area).

    Returns:
        :class:`ObjectSizes` with ``is_estimate=True``.
    """
    images = np.asarray(images)
    masks = estimate_masks(images, method, **options)
    n, h, w = masks.shape
    boxes = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes.append(ObjectBox(str(i), None if labels is None else labels[i], float(xs.min()), float(ys.min()),
                               float(xs.max() + 1), float(ys.max() + 1), float(w), float(h), float(m.sum())))
    full = int(sum(m.all() for m in masks))
    text = (f"estimate: {method} foreground segmentation ({area} area; "
            f"{full} of {n} images without a detected object counted as full-frame)")
    return object_sizes(boxes, preprocess, area=area, is_estimate=True, method=text)
