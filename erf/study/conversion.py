"""How ERF, TRF and object sizes are put on one scale (model-input pixels).

* an ERF of mass radius ``r_q`` (the Euclidean radius around the probed unit's centre that holds a
  fraction ``q`` of the gradient mass, :func:`erf.metrics.mass_radius`) is compared with objects as the
  **diameter** ``2 r_q`` (:func:`erf_size`); an object is "below" the ERF when its size (``sqrt(area)`` or
  longer side) is ``<= 2 r_q`` (:func:`fraction_below`);
* a local TRF is its side (``max`` of height and width); a global TRF (after CBAM's channel pooling, say)
  covers every object;
* the ERF/object ratio of a pair is ``2 r50`` of the **plain** twin's last layer divided by the median
  object ``sqrt(area)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from erf.errors import StudyError

SCHEMA = "erf.study/1"
CONVERSION = (
    "ERF size = 2 x r_q, the diameter of the disc around the probed unit that holds q of the gradient mass "
    "(q = 50% and 95%); an object is below the ERF when its sqrt(area) (or longer side) is <= 2 r_q; a local TRF "
    "is its side in px, a global TRF covers every object; ERF/object ratio = 2 r50 of the plain twin's last layer "
    "/ median object sqrt(area)"
)
LEVELS = (0.5, 0.95)
"""Mass levels q of the ERF diameters 2 r_q the study reports."""


def erf_size(radius: float) -> float:
    """Size in px comparable to an object side: the diameter ``2 r`` of an ERF of mass radius ``r``."""
    return 2.0 * float(radius)


def fraction_below(values: np.ndarray | Sequence[float], threshold: float | None) -> float:
    """Fraction of ``values`` that are ``<= threshold`` (``None``: a global field, every value is below).

    Raises:
        StudyError: ``values`` is empty.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise StudyError("no objects to compare with the ERF")
    if threshold is None:
        return 1.0
    if not math.isfinite(threshold):
        return float("nan")
    return float(np.mean(v <= threshold))
