"""erf: theoretical and effective receptive fields of CNNs, with and without attention.

The public API is flat and small:

>>> import erf
>>> model = erf.load_checkpoint("resnet20_cbam").model        # or any torch.nn.Module
>>> images = erf.load_source("bundled", count=16)             # or a tensor (N, C, H, W) of model input
>>> result = erf.measure(model, images, ["stage3"])           # TRF + ERF per layer
>>> result.layer("stage3").metrics.radius[0.95]               # px holding 95 % of the gradient mass
>>> erf.theoretical_rf(model)["stage3"].side                  # analytic TRF side in px (None: global)
>>> erf.compare([plain, cbam], images)                        # paired comparison, layer by layer

* models: :func:`create_model`, :func:`list_models`, :func:`register_model`, :func:`load_checkpoint`,
  :func:`save_checkpoint`
* data: :func:`load_source`, :class:`ImageSet`
* receptive fields: :func:`theoretical_rf` (analytic TRF per layer, :class:`TRF`), :func:`measure`
  (TRF + gradient ERF with metrics and bootstrap CIs: :class:`Measurement`, :class:`LayerERF`,
  :class:`ERFMetrics`), :func:`compare` (:class:`Comparison`, :class:`Difference`)
* object sizes and the hypothesis-2 study: :mod:`erf.objects` (:class:`ObjectSizes`), :mod:`erf.study`
* errors: :class:`ErfError` and its subclasses in :mod:`erf.errors`

Names are imported when first used (``import erf`` itself does not import torch). The command line
(``erf`` / ``python -m erf``) is in :mod:`erf.cli` and :mod:`erf.commands`.
"""

from __future__ import annotations

from erf._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ErfError": "erf.errors",
    "LoadedModel": "erf.checkpoints",
    "load_checkpoint": "erf.checkpoints",
    "save_checkpoint": "erf.checkpoints",
    "ImageSet": "erf.data.sources",
    "load_source": "erf.data.registry",
    "create_model": "erf.models.registry",
    "list_models": "erf.models.registry",
    "register_model": "erf.models.registry",
    "TRF": "erf.trf.field",
    "theoretical_rf": "erf.trf.named",
    "ERFMetrics": "erf.metrics",
    "LayerERF": "erf.measurement_result",
    "Measurement": "erf.measurement_result",
    "measure": "erf.measurement",
    "Comparison": "erf.comparison",
    "Difference": "erf.comparison",
    "compare": "erf.comparison",
    "ObjectSizes": "erf.objects.sizes",
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
