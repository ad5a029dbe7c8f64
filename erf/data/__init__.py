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

Every source yields an :class:`ImageSet`: float32 images ``(N, C, H, W)`` and integer labels ``(N,)``
(``-1`` where unknown). ``bundled``, ``cifar10:`` and ``folder:`` images are *raw*, values in [0, 1] with
``raw=True`` (training augments them before normalising); ``noise``, ``constant`` and ``tensor:`` images are
already in the model's normalised input space (``raw=False``). :meth:`ImageSet.normalized` gives either kind in
the model's input space (raw images normalised, by default with CIFAR-10's mean and std).
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
