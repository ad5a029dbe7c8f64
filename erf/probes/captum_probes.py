"""ERF maps from captum's neuron attribution methods, with the same output as the gradient probe.

Each method attributes the target unit (its activation summed over channels,
selected by a callable neuron selector) to the input pixels; the map is the
absolute attribution summed over input channels, per image. ``NeuronGradient``
gives exactly the gradient probe's map (tested to float tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from erf.probes.base import Target, frozen_parameters
from erf.probes.captum_methods import CAPTUM_METHODS
from erf.trf.field import TRF


def _selector(unit: tuple[int, int], trf: TRF | None = None) -> Any:
    i, j = unit
    index = trf.unit_index(unit) if trf is not None else (slice(None), slice(None), i, j)

    def select(output: torch.Tensor) -> torch.Tensor:
        act = output[index]
        return act.reshape(act.shape[0], -1).sum(dim=1)

    return select


class CaptumProbe:
    """A captum neuron method, layer by layer (one attribution call per layer).

    Args:
        method: a key of :data:`CAPTUM_METHODS`.
    """

    def __init__(self, method: str = "captum-gradient") -> None:
        self.name = method
        self.class_name, self.options, _ = CAPTUM_METHODS[method]
        self.on_map: Callable[[str, int], None] | None = None
        """Called ``(layer name, images)`` after each layer's maps (progress bars)."""

    def batch_maps(self, model: nn.Module, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{target name: (B, H, W) float64}`` absolute attributions summed over channels."""
        import captum.attr

        cls = getattr(captum.attr, self.class_name)
        out: dict[str, torch.Tensor] = {}
        with frozen_parameters(model), torch.enable_grad():
            for t in targets:
                method = cls(model, t.module)
                xin = x.detach().clone().requires_grad_(True)
                attr = method.attribute(xin, neuron_selector=_selector(t.unit, t.trf), **self.options)
                out[t.name] = attr.detach().abs().sum(dim=1, dtype=torch.float64)
                if self.on_map is not None:
                    self.on_map(t.name, x.shape[0])
        return out

