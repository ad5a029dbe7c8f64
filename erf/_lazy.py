"""Lazy package exports (PEP 562): a package lists ``name -> defining module`` and imports a module
only when one of its names is first used, so that ``import erf`` (and the command line's ``--help``)
does not pay for torch until a name that needs it is touched."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]) -> tuple[Callable[[str], Any],
                                                                                  Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose globals are ``namespace``.

    Args:
        namespace: the package's ``globals()`` (resolved names are cached there).
        exports: ``{public name: absolute module name that defines it}``.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
