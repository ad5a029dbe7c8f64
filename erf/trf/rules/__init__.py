"""Op rules of the TRF tracer, one module per op family, each rule registered in :data:`RULES` by
:func:`~erf.trf.rules.registry.register_rule`:

* :mod:`~erf.trf.rules.windows`: convolutions, pooling, adaptive pooling, padding;
* :mod:`~erf.trf.rules.resampling`: upsampling, pixel (un)shuffle, unfold / fold;
* :mod:`~erf.trf.rules.linear`: ``linear``, ``matmul``, ``einsum``, attention;
* :mod:`~erf.trf.rules.reductions`: reductions, ops along a dim, shifts, normalisations;
* :mod:`~erf.trf.rules.shape`: dim moves, reshapes, concatenation, splits, indexing;
* :mod:`~erf.trf.rules.writes`: writes into tensors and views, index reads and writes, creation, mixing ops;
* :mod:`~erf.trf.rules.pointwise`: the known pointwise ops (the default for an op without a rule).

Importing this package fills the registry.
"""

from __future__ import annotations

from erf.trf.rules import linear, pointwise, reductions, resampling, shape, windows, writes  # noqa: F401
from erf.trf.rules.registry import RULES, Call, Rule, bind, register_rule

__all__ = ["RULES", "Call", "Rule", "bind", "register_rule"]
