"""Image sources for training and probing.

A *source spec* is a string ``KIND[:ARG]``, one of the kinds registered in :data:`erf.data.registry.SOURCES`
(``bundled``, ``cifar10:ROOT``, ``folder:DIR``, ``noise[:SEED]``, ``constant[:VALUE]``, ``tensor:FILE.npy``:
``erf --help`` lists them with what they are); :func:`load_source` loads one.

Every source yields normalised float32 images ``(N, C, H, W)`` and integer
labels ``(N,)`` (``-1`` where unknown).

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
