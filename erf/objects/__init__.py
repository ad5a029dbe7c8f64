"""Object sizes of a data set, in the pixels the model sees.

Three steps, each usable alone:

1. **Read** boxes (and masks) from an annotation set: :func:`read_annotations`
   understands the formats registered in :data:`READERS` (COCO instances JSON,
   Pascal VOC XML, YOLO txt labels, binary or label mask PNGs and a plain CSV).
   Every box becomes an :class:`ObjectBox` in
   *continuous* pixel coordinates of the original image: ``x0, y0`` is the
   top-left corner, ``x1, y1`` the bottom-right corner, so a box covering pixel
   columns 3..5 has ``x0 = 3, x1 = 6`` and width 3.
2. **Rescale** each box through the preprocessing the model sees
   (:class:`Preprocess`: resize shorter side, centre crop, pad, final input
   size) into model-input pixels.
3. **Summarise** the sizes (:func:`object_sizes`, :func:`summarize`,
   :func:`cdf`): sqrt(area), longer side and relative size (object side / image
   side), with quantiles, histograms and per-class breakdowns.

CIFAR-10 has no boxes. :func:`estimate_extents` estimates each image's object
extent with a model-free foreground segmentation (method ``"border-contrast"``,
documented in :func:`estimate_masks`); its results are always flagged
``is_estimate=True``. :func:`estimator_error` measures its error where the truth
is known (objects pasted at known positions, :func:`controlled_check`).

Modules: :mod:`~erf.objects.boxes` (boxes), :mod:`~erf.objects.readers` (one module per format,
registered in ``READERS``), :mod:`~erf.objects.preprocess`, :mod:`~erf.objects.sizes` (with the
``erf.objects/1`` document), :mod:`~erf.objects.estimator`, :mod:`~erf.objects.validation`.
"""

from __future__ import annotations

from erf._lazy import lazy_exports

_EXPORTS = {
    "ESTIMATE_METHODS": "erf.objects.estimator",
    "estimate_boxes": "erf.objects.estimator",
    "estimate_extents": "erf.objects.estimator",
    "estimate_masks": "erf.objects.estimator",
    "Preprocess": "erf.objects.preprocess",
    "rescale": "erf.objects.preprocess",
    "READERS": "erf.objects.readers",
    "Reader": "erf.objects.readers",
    "formats": "erf.objects.readers",
    "guess_format": "erf.objects.readers",
    "mask_boxes": "erf.objects.readers",
    "read_annotations": "erf.objects.readers",
    "register_reader": "erf.objects.readers",
    "Annotations": "erf.objects.boxes",
    "ObjectBox": "erf.objects.boxes",
    "QUANTILES": "erf.objects.sizes",
    "SCHEMA": "erf.objects.sizes",
    "SIZE_MEASURES": "erf.objects.sizes",
    "ObjectSizes": "erf.objects.sizes",
    "annotation_sizes": "erf.objects.sizes",
    "cdf": "erf.objects.sizes",
    "object_sizes": "erf.objects.sizes",
    "summarize": "erf.objects.sizes",
    "box_iou": "erf.objects.validation",
    "controlled_check": "erf.objects.validation",
    "estimator_error": "erf.objects.validation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
