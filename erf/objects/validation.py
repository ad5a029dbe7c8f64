"""The object-size estimator's error where the truth is known: objects pasted at known positions
(:func:`erf.pasting.paste_objects`), estimated and compared box by box."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from erf.errors import InputError
from erf.objects.estimator import estimate_boxes
from erf.pasting import paste_objects


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes ``(N, 4)`` and ``(N, 4)`` -> ``(N,)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def estimator_error(images_uint8: np.ndarray, true_boxes: np.ndarray, method: str = "border-contrast",
                    **options: Any) -> dict[str, Any]:
    """Error of :func:`estimate_boxes` against known boxes (controlled canvases).

    Args:
        images_uint8: ``(N, H, W, 3)`` uint8.
        true_boxes: ``(N, 4)`` true ``x0, y0, x1, y1`` in px.

    Returns:
        ``{"count", "method", "median_abs_error_px", "p90_abs_error_px", "median_signed_error_px"
        (estimate - truth of sqrt(box area)), "median_relative_error" (|error| / true sqrt area),
        "mean_iou", "median_iou", "iou_above_0.5" (fraction)}``.
    """
    true_boxes = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    if len(true_boxes) != len(images_uint8):
        raise InputError(f"{len(images_uint8)} images but {len(true_boxes)} true boxes")
    est = estimate_boxes(images_uint8, method, **options)
    s_est = np.sqrt((est[:, 2] - est[:, 0]) * (est[:, 3] - est[:, 1]))
    s_true = np.sqrt((true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]))
    err = s_est - s_true
    iou = box_iou(est, true_boxes)
    return {
        "count": int(len(err)),
        "method": method,
        "median_abs_error_px": float(np.median(np.abs(err))),
        "p90_abs_error_px": float(np.percentile(np.abs(err), 90)),
        "median_signed_error_px": float(np.median(err)),
        "median_relative_error": float(np.median(np.abs(err) / s_true)),
        "mean_iou": float(iou.mean()),
        "median_iou": float(np.median(iou)),
        "iou_above_0.5": float((iou > 0.5).mean()),
    }


def controlled_check(images: np.ndarray, sizes: Sequence[int] = (12, 16, 24, 32, 40), canvas: int = 64,
                     background: str = "noise", seed: int = 0, method: str = "border-contrast") -> dict[str, Any]:
    """:func:`estimator_error` on canvases of ``images`` pasted by :func:`erf.pasting.paste_objects`
    (``background`` one of :data:`erf.pasting.BACKGROUNDS`), overall and per size ``s``."""
    made = paste_objects(images, sizes, canvas, background, seed)
    canv, boxes = made.uint8(), made.boxes.numpy().astype(np.float64)
    out = estimator_error(canv, boxes, method)
    out.update({"canvas": canvas, "background": background, "sizes": [int(s) for s in sizes], "seed": seed})
    per = {}
    side = boxes[:, 2] - boxes[:, 0]
    for s in sizes:
        sel = side == s
        if sel.any():
            per[str(int(s))] = estimator_error(canv[sel], boxes[sel], method)
    out["per_size"] = per
    return out
