"""The probe registry: every ERF probe by name, with what it is and which options it takes.

Plain data, no torch: ``--probe`` choices and help come from :data:`PROBES`; :func:`make_probe` imports a
probe's implementation only when it is built. Adding a probe is one module (a class with
``batch_maps(model, targets, x)``, see :class:`erf.probes.base.Probe`) plus one :func:`register_probe`
line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from erf.errors import InputError
from erf.probes.captum_methods import CAPTUM_METHODS


@dataclass(frozen=True)
class ProbeSpec:
    """One registered probe.

    Attributes:
        name: the probe's name (``--probe``).
        factory: ``"module:attribute"`` of the class (or function) that builds it.
        description: one line for help texts.
        options: keyword options it accepts from the caller (``mode``, ``crop`` for the gradient probe).
        fixed: keyword arguments always passed to ``factory`` (e.g. which captum method).
    """

    name: str
    factory: str
    description: str
    options: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)

    def build(self, **options: Any) -> Any:
        """Import the factory and build the probe with ``options`` (each one of :attr:`options`).

        Raises:
            InputError: an option this probe does not take.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = f"takes {', '.join(self.options)}" if self.options else "takes no options"
            raise InputError(f"probe {self.name!r} {takes}, not {', '.join(unknown)}")
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)(**self.fixed, **options)


PROBES: dict[str, ProbeSpec] = {}
"""Registered probes by name, in registration order."""


def register_probe(spec: ProbeSpec) -> ProbeSpec:
    """Add ``spec`` to :data:`PROBES` (its name must be new)."""
    if spec.name in PROBES:
        raise ValueError(f"probe {spec.name!r} registered twice")
    PROBES[spec.name] = spec
    return spec


def make_probe(name: str, **options: Any) -> Any:
    """Build the probe registered as ``name`` (see :data:`PROBES`) with ``options``.

    Raises:
        InputError: an unknown probe or an option it does not take.
    """
    try:
        spec = PROBES[name]
    except KeyError:
        raise InputError(f"probe {name!r}: unknown; choose from {', '.join(PROBES)}") from None
    return spec.build(**options)


register_probe(ProbeSpec("gradient", "erf.probes.gradient:GradientProbe",
                         "Luo et al.'s input gradient of the unit, with the exact-cropping engine",
                         options=("mode", "crop")))
for _name, (_cls, _kwargs, _what) in CAPTUM_METHODS.items():
    register_probe(ProbeSpec(_name, "erf.probes.captum_probes:CaptumProbe", _what, fixed={"method": _name}))
