"""erf: theoretical and effective receptive fields of CNNs, with and without attention.

The public API is small:

* models: :func:`create_model`, :func:`list_models`, :func:`load_checkpoint`, :func:`save_checkpoint`
* data: :func:`load_source`
* probes: :func:`theoretical_rf` (analytic TRF per layer), :func:`erf.measure.measure` (TRF +
  gradient ERF with metrics and bootstrap CIs)
* analysis: :func:`erf.compare.compare` (paired comparison of models), :mod:`erf.metrics`,
  :mod:`erf.objects`, :mod:`erf.study`

(``measure`` and ``compare`` stay in their modules so that ``erf.measure`` and ``erf.compare``
remain the modules.)

The command line (``erf`` / ``python -m erf``) is in :mod:`erf.cli` and :mod:`erf.commands`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from erf.checkpoints import LoadedModel, load_checkpoint, save_checkpoint
from erf.data import load_source
from erf.errors import ErfError
from erf.models import create_model, list_models
from erf.probes import theoretical_rf

__all__ = [
    "ErfError",
    "LoadedModel",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_source",
    "save_checkpoint",
    "theoretical_rf",
]
