"""Hypothesis-2 study: does attention help when the ERF is smaller than the objects?

Two parts, one module per concept:

* the **real-data study** (:func:`study_models`, :mod:`erf.study.real`): for each model, the ERF of its last
  spatial layers against an object-size distribution, and the attention gain of
  every (plain, attention) twin pair against the ratio ERF size / object size;
* the **controlled experiment** (:func:`run_controlled`, :mod:`erf.study.controlled`): twins trained on
  canvases (:func:`erf.canvas.paste_objects`) whose object size ``s`` is set by construction, for
  several sizes and seeds, with a regression of the gain on ``log2(ERF / s)``.

Size conventions (all in model-input pixels):

* an ERF of mass radius ``r_q`` (the Euclidean radius around the probed unit's
  centre that holds a fraction ``q`` of the gradient mass, :func:`erf.metrics.mass_radius`)
  is compared with objects as the **diameter** ``2 r_q``; an object is "below" the
  ERF when its size (``sqrt(area)`` or longer side) is ``<= 2 r_q``;
* a local TRF is its side (``max`` of height and width); a global TRF (after
  CBAM's channel pooling, say) covers every object;
* the ERF/object ratio of a pair is ``2 r50`` of the **plain** twin's last layer
  divided by the median object ``sqrt(area)``. The hypothesis predicts a gain
  that is large for ratios below 1 and falls as the ratio grows (a negative slope
  of gain on ``log2`` ratio).

Modules: :mod:`~erf.study.conversion` (sizes on one scale), :mod:`~erf.study.records` (a model's ERFs and
accuracy), :mod:`~erf.study.pairing` (twins and gains), :mod:`~erf.study.verdicts`, :mod:`~erf.study.real`,
:mod:`~erf.study.budgets` (registries of pairs and budgets), :mod:`~erf.study.controlled`,
:mod:`~erf.study.figures`. Library functions return documents and figures; ``erf study`` writes them.

Uncertainty: ERF radii carry the bootstrap CIs of :func:`erf.measure`;
fractions are given at the CI's ends too; a gain's CI is a paired bootstrap over
test images when both twins were evaluated on the same images, else a normal
approximation from the two accuracies and test-set sizes (metadata); the slope's
CI is a t interval of ordinary least squares (:func:`scipy.stats.linregress`).
"""

from __future__ import annotations

from erf._lazy import lazy_exports

_EXPORTS = {
    "CONVERSION": "erf.study.conversion",
    "LEVELS": "erf.study.conversion",
    "SCHEMA": "erf.study.conversion",
    "erf_size": "erf.study.conversion",
    "fraction_below": "erf.study.conversion",
    "CHANCE_MARGIN": "erf.study.records",
    "Accuracy": "erf.study.records",
    "ModelERF": "erf.study.records",
    "measure_model": "erf.study.records",
    "model_json": "erf.study.records",
    "near_chance": "erf.study.records",
    "gain": "erf.study.pairing",
    "pair_models": "erf.study.pairing",
    "pair_rows": "erf.study.pairing",
    "twin_of": "erf.study.pairing",
    "controlled_verdict": "erf.study.verdicts",
    "fit_gain": "erf.study.verdicts",
    "fit_text": "erf.study.verdicts",
    "verdict": "erf.study.verdicts",
    "correctness": "erf.study.real",
    "fraction_text": "erf.study.real",
    "load_objects": "erf.study.real",
    "objects_summary": "erf.study.real",
    "study_models": "erf.study.real",
    "BUDGETS": "erf.study.budgets",
    "PAIRS": "erf.study.budgets",
    "Budget": "erf.study.budgets",
    "PairSpec": "erf.study.budgets",
    "cell_key": "erf.study.controlled",
    "cells_to_models": "erf.study.controlled",
    "controlled_report": "erf.study.controlled",
    "default_controlled_source": "erf.study.controlled",
    "resolve_budget": "erf.study.controlled",
    "resumable_cells": "erf.study.controlled",
    "run_cell": "erf.study.controlled",
    "run_controlled": "erf.study.controlled",
    "source_splits": "erf.study.controlled",
    "controlled_figures": "erf.study.figures",
    "plot_cdf": "erf.study.figures",
    "plot_gain": "erf.study.figures",
    "real_study_figures": "erf.study.figures",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
