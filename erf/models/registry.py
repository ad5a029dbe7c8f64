"""Model registry: ``name -> constructor`` (as timm's ``_registry``), with aliases, and the
state-dict matchers of the families (:func:`infer_family`).

Each family registers itself in its own module (``erf/models/resnext.py``...): its entries
(:func:`register_model`) and one matcher (:func:`register_family`) that recognises a raw state dict of
the family and returns the registry name and constructor arguments that rebuild it.

>>> from erf.models import create_model, list_models
>>> model = create_model("cbam_8d")          # ResNeXt-29 16x8d with CBAM
>>> list_models("resnet20*")
['resnet20', 'resnet20_cbam', 'resnet20_cbam_spatial', 'resnet20_se']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
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
        params: parameter count of the default build (``erf models`` lists it without building the model;
            checked against a build by the tests); ``None``: count by building on the meta device.
    """

    name: str
    constructor: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    attention: str | None = None
    twin: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    params: int | None = None

    def parameter_count(self) -> int:
        """:attr:`params`, or the count of a build on the meta device (shapes only, no memory)."""
        if self.params is not None:
            return self.params
        import torch

        with torch.device("meta"):
            return sum(p.numel() for p in self.build().parameters())

    def build(self, **overrides: Any) -> nn.Module:
        """Construct the model with the entry's kwargs updated by ``overrides``."""
        return self.constructor(**{**self.kwargs, **overrides})


_ENTRIES: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}

StateMatcher = Callable[[Mapping[str, Any]], "tuple[str, dict[str, Any]] | None"]
"""``matcher(state_dict) -> (registry name, constructor kwargs)`` when the keys are the family's, else ``None``.
It may raise :class:`~erf.errors.ArchitectureError` for a layout that is the family's but broken."""
_FAMILIES: dict[str, StateMatcher] = {}


def register_family(name: str, matcher: StateMatcher) -> None:
    """Register the state-dict ``matcher`` of family ``name`` (used by :func:`infer_family`)."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} registered twice")
    _FAMILIES[name] = matcher


def infer_family(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first registered family whose matcher recognises ``state``: ``(registry name, kwargs)``, or ``None``.

    ``kwargs`` hold only the arguments that differ from the entry's own (so the default build needs none).
    """
    for matcher in _FAMILIES.values():
        found = matcher(state)
        if found is not None:
            name, kwargs = found
            return name, only_differences(name, kwargs)
    return None


def only_differences(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The items of ``kwargs`` that differ from what entry ``name`` builds by default."""
    import inspect

    entry = get_entry(name)
    params = inspect.signature(entry.constructor).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in kwargs.items() if entry.kwargs.get(k, defaults.get(k)) != v}


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

    close = difflib.get_close_matches(name, [*_ENTRIES, *_ALIASES], n=4) if len(name) <= 200 else []
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `erf models`"
    shown = repr(name) if len(name) <= 200 else f"{name[:60]!r}... ({len(name):,} characters)"
    raise UnknownModelError(f"unknown model {shown}{hint}")


def is_model(name: str) -> bool:
    """True if ``name`` is a registered name or alias."""
    return name in _ENTRIES or name in _ALIASES


def variant_name(base: str, attention: str | None) -> str:
    """The registered name of ``base`` with ``attention`` (``("twoconv", "cbam")`` -> ``"twoconv_cbam"``),
    or ``base`` itself when there is no attention or no such variant is registered (a family's
    state-dict matcher then builds ``base`` with ``attention`` passed as an argument)."""
    name = base if attention is None else f"{base}_{attention}"
    return name if is_model(name) else base


def get_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name`` (canonical or alias)."""
    return _ENTRIES[canonical_name(name)]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``, randomly initialised (no weights are loaded)."""
    return get_entry(name).build(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Canonical names matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _ENTRIES if fnmatch.fnmatch(n, pattern))
