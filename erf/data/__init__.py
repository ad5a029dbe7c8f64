"""Image sources for training and probing.

A *source spec* is a string:

=====================  ==============================================================
``bundled``            the CIFAR-10 sample shipped with the package (first 300 test images)
``cifar10:ROOT``       CIFAR-10 from ``ROOT`` (torchvision's ``cifar-10-batches-py``
                       layout, or an ``.npz`` with ``x_train/y_train/x_test/y_test``)
``folder:DIR``         image files under ``DIR`` (labels from sub-folder names, if any)
``noise[:SEED]``       Gaussian noise N(0, 1) in normalised space
``constant[:VALUE]``   a constant image in normalised space (0 = the data-set mean)
``tensor:FILE.npy``    an N x C x H x W float array, used exactly as given (already normalised)
=====================  ==============================================================

Every source yields normalised float32 images ``(N, C, H, W)`` and integer
labels ``(N,)`` (``-1`` where unknown).
"""

from erf.data.sources import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageSet,
    Preprocessing,
    augment_batch,
    load_source,
    preprocessing_for,
    subset_count,
    to_uint8,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ImageSet",
    "Preprocessing",
    "augment_batch",
    "load_source",
    "preprocessing_for",
    "subset_count",
    "to_uint8",
]
