"""Image sources for training and probing.

A *source spec* is a string ``KIND[:ARG]``, one of the kinds registered in :data:`erf.data.registry.SOURCES`
(``bundled``, ``cifar10:ROOT``, ``folder:DIR``, ``noise[:SEED]``, ``constant[:VALUE]``, ``tensor:FILE.npy``:
``erf --help`` lists them with what they are); :func:`load_source` loads one.

Every source yields an :class:`ImageSet`: float32 images ``(N, C, H, W)`` and integer labels ``(N,)``
(``-1`` where unknown). ``bundled``, ``cifar10:`` and ``folder:`` images are *raw*, values in [0, 1] with
``raw=True`` (training augments them before normalising); ``noise``, ``constant`` and ``tensor:`` images are
already in the model's normalised input space (``raw=False``). :meth:`ImageSet.normalized` gives either kind in
the model's input space (raw images normalised, by default with CIFAR-10's mean and std).

Names are imported when first used (the registry needs no torch: the command line's help lists the kinds
without it).
"""

from __future__ import annotations

from erf._lazy import lazy_exports

_EXPORTS = {
    "CIFAR10_MEAN": "erf.data.sources",
    "CIFAR10_STD": "erf.data.sources",
    "ImageSet": "erf.data.sources",
    "Preprocessing": "erf.data.sources",
    "load_source": "erf.data.registry",
    "preprocessing_for": "erf.data.sources",
    "subset_count": "erf.data.sources",
    "to_uint8": "erf.data.sources",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
