"""Training recipes: the :class:`Recipe` hyper-parameters, the learning-rate schedules registry and their checks.

Plain data and stdlib (no torch): ``erf train --help`` takes its ``--schedule`` choices from :data:`SCHEDULES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from erf.errors import InputError, check_seed

SCHEDULES: dict[str, str] = {
    "cosine": "cosine decay from --lr to 0 over the epochs (the article's)",
    "onecycle": "one cycle: linear warm-up from lr/25 to lr over the first 30 percent of the epochs, then cosine to 0",
    "constant": "constant --lr",
}
"""The learning-rate schedules registry (stepped once per epoch): ``--schedule`` choices and help come from here."""


@dataclass
class Recipe:
    """Training hyper-parameters (defaults: the article's recipe)."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: bool = True
    seed: int = 0


def check_recipe(recipe: Recipe) -> None:
    """Refuse hyper-parameters that cannot train (a zero batch, a NaN learning rate...).

    Raises:
        InputError: naming the field (``batch_size 0: must be an integer >= 1``).
    """
    for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{value}: must be an integer >= {low}", param=name)
    check_seed(recipe.seed)
    if recipe.schedule not in SCHEDULES:
        raise InputError(f"{recipe.schedule!r}: use one of {', '.join(SCHEDULES)}", param="schedule")
    for name in ("lr", "momentum", "weight_decay"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{value}: must be a finite number >= 0", param=name)


def onecycle_factor(epoch: int, epochs: int, warmup: float = 0.3, start: float = 1 / 25) -> float:
    """The one-cycle schedule's multiplier of the peak learning rate during ``epoch`` (0-based) of ``epochs``:
    linear from ``start`` to 1 over the first ``warmup`` fraction, then a cosine to 0 (reached after the last)."""
    ramp = max(1, round(warmup * epochs))
    if epoch < ramp:
        return start + (1 - start) * epoch / ramp
    return 0.5 * (1 + math.cos(math.pi * (epoch - ramp + 1) / (epochs - ramp + 1)))
