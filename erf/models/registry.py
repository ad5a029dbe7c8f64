"""Model registry: ``name -> constructor`` (as timm's ``_registry``), with aliases.

>>> from erf.models import create_model, list_models
>>> model = create_model("cbam_8d")          # ResNeXt-29 16x8d with CBAM
>>> list_models("resnet20*")
['resnet20', 'resnet20_cbam', 'resnet20_cbam_spatial', 'resnet20_se']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from erf.errors import UnknownModelError


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Attributes:
        name: canonical registry name (``norm_8d``).
        constructor: class or function building the module.
        kwargs: keyword arguments passed to ``constructor``.
        family: architecture family (``resnext29``, ``resnet_cifar``, ``twoconv``).
        attention: attention kind (``None`` for the plain twin).
        twin: the plain twin's name for an attention model, else ``None``.
        aliases: other accepted names (``norm_resnext29_16x8d``).
        description: one line for ``erf models``.
    """

    name: str
    constructor: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    attention: str | None = None
    twin: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""

    def build(self, **overrides: Any) -> nn.Module:
        """Construct the model with the entry's kwargs updated by ``overrides``."""
        return self.constructor(**{**self.kwargs, **overrides})


_ENTRIES: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to the registry (its name and aliases must be new)."""
    for key in (entry.name, *entry.aliases):
        if key in _ENTRIES or key in _ALIASES:
            raise ValueError(f"model name {key!r} registered twice")
    _ENTRIES[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


def canonical_name(name: str) -> str:
    """Return the canonical registry name of ``name`` (itself or an alias's target)."""
    if name in _ENTRIES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    import difflib

    close = difflib.get_close_matches(name, [*_ENTRIES, *_ALIASES], n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `erf models`"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def is_model(name: str) -> bool:
    """True if ``name`` is a registered name or alias."""
    return name in _ENTRIES or name in _ALIASES


def get_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name`` (canonical or alias)."""
    return _ENTRIES[canonical_name(name)]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``, randomly initialised (no weights are loaded)."""
    return get_entry(name).build(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Canonical names matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _ENTRIES if fnmatch.fnmatch(n, pattern))
