"""Receptive-field probes, one module per probe.

* :mod:`erf.probes.theoretical`: analytic TRF of every layer (Araujo et al. 2019).
* :mod:`erf.probes.support`: gradient-support TRF, an independent check of the former.
* :mod:`erf.probes.gradient`: Luo et al.'s gradient ERF with the cropping engine.
* :mod:`erf.probes.captum_probes`: captum's neuron methods with the same output.

``PROBES`` maps probe names (``--probe``) to factories.
"""

from erf.probes.base import PROBES, Probe, Target
from erf.probes.captum_probes import CaptumProbe
from erf.probes.gradient import GradientProbe
from erf.probes.support import gradient_support
from erf.probes.theoretical import TRF, theoretical_rf, trace_receptive_fields


def make_probe(name: str, **options: object) -> Probe:
    """Build the probe registered as ``name`` (see :data:`PROBES`)."""
    from erf.errors import InputError

    try:
        factory = PROBES[name]
    except KeyError:
        raise InputError(f"--probe {name!r}: unknown; choose from {', '.join(sorted(PROBES))}") from None
    return factory(**options)


__all__ = [
    "PROBES",
    "TRF",
    "CaptumProbe",
    "GradientProbe",
    "Probe",
    "Target",
    "gradient_support",
    "make_probe",
    "theoretical_rf",
    "trace_receptive_fields",
]
