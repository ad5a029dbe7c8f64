"""Theoretical receptive fields (TRF), from the real graph of a model.

* :mod:`erf.trf.field`: :class:`TRF`, the receptive field of one layer (box, jump, global, where the map lies);
* :mod:`erf.trf.layout`: where the spatial axes of a tensor are (the per-dim layout algebra);
* :mod:`erf.trf.state`: what the tracer knows of each tensor while it runs, and the helpers rules share;
* :mod:`erf.trf.rules`: the op rules, one module per op family, in one registry;
* :mod:`erf.trf.tracer`: the tracer (:func:`trace_receptive_fields`: the TRF of every module);
* :mod:`erf.trf.named`: :func:`theoretical_rf`, the TRF of named layers (``stem``, ``stage2``...).

Below :mod:`erf.stages` and :mod:`erf.layers` in the layering, except :mod:`erf.trf.named`, which reads them.
Names are imported when first used.
"""

from __future__ import annotations

from erf._lazy import lazy_exports

_EXPORTS = {
    "TRF": "erf.trf.field",
    "TRFTrace": "erf.trf.tracer",
    "trace_receptive_fields": "erf.trf.tracer",
    "theoretical_rf": "erf.trf.named",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
