"""Hypothesis-2 study: does attention help when the ERF is smaller than the objects?

Two parts, one module per concept:

* the **real-data study** (:func:`study_models`, :mod:`erf.study.real`): for each model, the ERF of its last
  spatial layers against an object-size distribution, and the attention gain of
  every (plain, attention) twin pair against the ratio ERF size / object size;
* the **controlled experiment** (:func:`run_grid`, :mod:`erf.study.grid`): dilation twins (same parameters and
  FLOPs, only the ERF differs) trained on canvases whose object size ``s`` is set by construction
  (:mod:`erf.study.canvases`), with gating controls and a positive control
  (:mod:`erf.study.positive_control`), ERFs at the unit over each object (:mod:`erf.study.object_centred`), and
  a verdict by the pre-registered rule of :mod:`erf.study.preregistered`.

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
:mod:`~erf.study.figures`; :mod:`~erf.study.budgets` (the grid sizes), :mod:`~erf.study.grid`,
:mod:`~erf.study.canvases`, :mod:`~erf.study.positive_control`, :mod:`~erf.study.object_centred`,
:mod:`~erf.study.preregistered`, :mod:`~erf.study.grid_figures`. Library functions return documents and
figures; ``erf study`` writes them.

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
    "fit_gain": "erf.study.verdicts",
    "verdict": "erf.study.verdicts",
    "correctness": "erf.study.real",
    "fraction_text": "erf.study.real",
    "load_objects": "erf.study.real",
    "objects_summary": "erf.study.real",
    "study_models": "erf.study.real",
    "plot_cdf": "erf.study.figures",
    "plot_gain": "erf.study.figures",
    "real_study_figures": "erf.study.figures",
    "BUDGETS": "erf.study.budgets",
    "Budget": "erf.study.budgets",
    "default_controlled_source": "erf.study.budgets",
    "grid_report": "erf.study.grid",
    "model_facts": "erf.study.grid",
    "plan": "erf.study.grid",
    "run_cell": "erf.study.grid",
    "run_grid": "erf.study.grid",
    "RULE": "erf.study.preregistered",
    "analyse": "erf.study.preregistered",
    "capacity_guard": "erf.study.preregistered",
    "fixed_effects_fit": "erf.uncertainty",
    "tost": "erf.uncertainty",
    "EpochCanvases": "erf.study.canvases",
    "fixed_canvases": "erf.study.canvases",
    "EpochMarks": "erf.study.positive_control",
    "fixed_marks": "erf.study.positive_control",
    "object_centred_erf": "erf.study.object_centred",
    "cell_table": "erf.study.grid_figures",
    "figures": "erf.study.grid_figures",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
