"""Receptive-field probes, one module per probe.

* :mod:`erf.probes.support`: gradient-support TRF, an independent check of the analytic TRF (:mod:`erf.trf`).
* :mod:`erf.probes.gradient`: Luo et al.'s gradient ERF with the cropping engine.
* :mod:`erf.probes.captum_probes`: captum's neuron methods with the same output.
* :mod:`erf.probes.registry`: ``PROBES`` maps probe names (``--probe``) to their specs; :func:`make_probe`.

Names are imported when first used.
"""

from __future__ import annotations

from erf._lazy import lazy_exports

_EXPORTS = {
    "PROBES": "erf.probes.registry",
    "ProbeSpec": "erf.probes.registry",
    "make_probe": "erf.probes.registry",
    "register_probe": "erf.probes.registry",
    "Probe": "erf.probes.base",
    "Target": "erf.probes.base",
    "CaptumProbe": "erf.probes.captum_probes",
    "GradientProbe": "erf.probes.gradient",
    "gradient_support": "erf.probes.support",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
