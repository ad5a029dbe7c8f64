"""What every ERF probe shares: the layer targets it probes, the :class:`Probe` protocol and frozen parameters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from erf.trf.field import TRF


@dataclass(frozen=True)
class Target:
    """One layer to probe.

    Attributes:
        name: stable name (``stage3``) or module path.
        path: module path inside the model.
        module: the module whose output is probed.
        unit: ``(i, j)`` feature-map unit whose gradient is taken.
        trf: the layer's theoretical receptive field at the probe's input size.
    """

    name: str
    path: str
    module: nn.Module
    unit: tuple[int, int]
    trf: TRF


class Probe(Protocol):
    """A probe maps a batch of inputs to one ERF map per image and layer.

    ``batch_maps(model, targets, x)`` takes ``x`` of shape ``(B, C, H, W)`` (model
    input space) and returns ``{target.name: (B, H, W) float64 tensor}``, each map
    the per-image contribution of the input pixels to the target unit (summed
    over input channels), non-negative.
    """

    name: str

    def batch_maps(self, model: nn.Module, targets: list[Target], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer name: (N, H, W) map}`` for a batch ``x`` of ``(N, C, H, W)`` inputs."""
        ...


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter (no parameter gradients), restore after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
