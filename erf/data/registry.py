"""The registry of data sources: every kind of source spec (``KIND[:ARG]``) by name, with its argument syntax,
what it is, and the function that loads it.

Plain data, no torch: the command line's help lists :data:`SOURCES`; :func:`load_source` parses a spec, finds
its kind here and imports the kind's loader only when it loads. Adding a kind is one loader function
``load(arg, spec, options) -> ImageSet`` (see :mod:`erf.data.sources`) plus one :func:`register_source` line
below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erf.errors import DataError, InputError


@dataclass(frozen=True)
class DataSource:
    """One kind of source spec.

    Attributes:
        name: the kind, the spec's part before ``:`` (``noise``).
        syntax: the spec as help texts and messages show it (``noise[:SEED]``).
        description: one line for help texts.
        load: ``"module:function"`` of its loader, ``load(arg, spec, options) -> ImageSet`` (``arg``: the spec's
            part after ``:``, ``options``: :class:`~erf.data.sources.LoadOptions`).
        aliases: other names of the kind (``sample`` for ``bundled``).
        claims: a test that claims a spec without this kind's name (a bare folder path is a ``folder:``).
        sized: its images are made or decoded at the asked ``image_size`` (the others have their own size: CIFAR-10's
            32 px, a tensor file's).
        resizes: decoding resizes the images to ``resize`` px, then centre-crops them: a model's preprocessing is
            applied as they load (folders), not afterwards.
    """

    name: str
    syntax: str
    description: str
    load: str
    aliases: tuple[str, ...] = ()
    claims: Callable[[str, str], bool] | None = None
    sized: bool = False
    resizes: bool = False

    def matches(self, kind: str, arg: str, spec: str) -> bool:
        """Whether the spec ``spec`` (``kind:arg``) is of this kind."""
        return kind in (self.name, *self.aliases) or (self.claims is not None and self.claims(arg, spec))


SOURCES: dict[str, DataSource] = {}
"""Registered kinds by name, in registration order: a spec is of the first kind that matches it (see
:meth:`DataSource.matches`), and help texts and messages list them in this order."""


def register_source(source: DataSource) -> DataSource:
    """Add ``source`` to :data:`SOURCES` (its name and aliases must be new)."""
    taken = {n for s in SOURCES.values() for n in (s.name, *s.aliases)}
    if {source.name, *source.aliases} & taken:
        raise ValueError(f"data source {source.name!r} registered twice")
    SOURCES[source.name] = source
    return source


def source_of(spec: str) -> tuple[DataSource, str] | None:
    """``(kind, argument)`` of the spec ``spec``, or ``None`` when no registered kind matches it."""
    kind, _, arg = spec.partition(":")
    source = next((s for s in SOURCES.values() if s.matches(kind, arg, spec)), None)
    return None if source is None else (source, arg)


def listing(short: bool = False) -> str:
    """The registered kinds for messages: ``"bundled, cifar10:ROOT, ... or tensor:FILE.npy"`` (``short``: the
    arguments without their file suffix, ``tensor:FILE``)."""
    names = [s.syntax.split(".")[0] if short else s.syntax for s in SOURCES.values()]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def help_lines(width: int = 26) -> list[str]:
    """One help line per registered kind: its syntax, then its description."""
    return [f"  {s.syntax:<{width}} {s.description}" for s in SOURCES.values()]


def load_source(
    spec: str = "bundled",
    split: str = "test",
    count: int | None = None,
    subset: float | int | str | None = None,
    image_size: int = 32,
    channels: int = 3,
    resize: int | None = None,
) -> Any:
    """Load the images of a source spec (a kind of :data:`SOURCES`, see :mod:`erf.data`): an
    :class:`~erf.data.ImageSet`.

    Args:
        spec: the source spec string.
        split: ``"train"`` or ``"test"`` (CIFAR-10 sources).
        count: keep the first ``count`` images (noise/constant: how many to make, default 64).
        subset: the article's subset rule (:func:`~erf.data.sources.subset_count`), applied before ``count``.
        image_size: side in pixels for folders, noise and constant images.
        channels: channels of noise/constant images.
        resize: folders: the shorter side before the centre crop to ``image_size`` (a model's
            :class:`~erf.data.Preprocessing`; default ``image_size``, no margin).

    Raises:
        DataError: missing, empty, corrupt or mis-shaped data.
        InputError: a malformed spec.
    """
    if not str(spec).strip():
        raise InputError(f"data source {spec!r}: empty; give {listing(short=True)}")
    from erf.data.sources import CIFAR10_SIZES, LoadOptions

    if split not in CIFAR10_SIZES:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if count is not None and count <= 0:
        raise InputError(f"{count}: must be positive", param="count")
    found = source_of(spec)
    if found is None:
        raise InputError(f"unknown data source {spec!r}; use {listing()}")
    source, arg = found
    module, _, attr = source.load.partition(":")
    options = LoadOptions(split, count, subset, image_size, channels, resize)
    data = getattr(importlib.import_module(module), attr)(arg, spec, options)
    if len(data) == 0:
        raise DataError(f"{spec}: no images")
    if data.images.shape[1] != channels:
        raise DataError(f"{spec}: images have {data.images.shape[1]} channels, the model expects {channels}")
    return data.head(count)


register_source(DataSource("bundled", "bundled", "300 real CIFAR-10 test images shipped with erf (default)",
                           "erf.data.sources:load_bundled", aliases=("sample",)))
register_source(DataSource("cifar10", "cifar10:ROOT", "CIFAR-10 (cifar-10-batches-py folder or .npz)",
                           "erf.data.sources:load_cifar10"))
register_source(DataSource("folder", "folder:DIR", "image files under DIR (labels from sub-folder names, if any)",
                           "erf.data.sources:load_folder", sized=True, resizes=True,
                           claims=lambda arg, spec: not arg and Path(spec).is_dir()))
register_source(DataSource("noise", "noise[:SEED]", "Gaussian noise N(0, 1) in normalised space",
                           "erf.data.sources:load_noise", sized=True))
register_source(DataSource("constant", "constant[:VALUE]", "a constant image in normalised space (0: the data-set "
                           "mean)", "erf.data.sources:load_constant", sized=True))
register_source(DataSource("tensor", "tensor:FILE.npy", "an N x C x H x W float array, used as given (normalised)",
                           "erf.data.sources:load_tensor"))
