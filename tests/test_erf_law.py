"""Luo et al.'s closed form, measured through erf.measure() and the gradient probe (not re-derived).

For a stack of n linear k x k convolutions with uniform weights 1/k^2 (stride 1, no nonlinearity),
the gradient of the centre unit with respect to the input is the n-fold convolution of a k x k box:
separable, and per axis the n-fold convolution of a uniform distribution on k integers, whose
variance is n (k^2 - 1) / 12 exactly. The input is large enough that no border clips it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from erf.data import ImageSet
from erf.measurement import measure
from erf.metrics import gaussian_sigma


class UniformStack(nn.Module):
    """n linear k x k convolutions, one channel, weights 1/k^2, zero padding k // 2, no bias (float64)."""

    def __init__(self, n: int, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[nn.Conv2d(1, 1, k, padding=k // 2, bias=False) for _ in range(n)]).double()
        for conv in self.body:
            nn.init.constant_(conv.weight, 1.0 / (k * k))  # after .double(): 1/k^2 in float64
        self.named_layers = {"stack": "body"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _images(count: int, size: int, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 1, size, size, generator=gen, dtype=torch.float64)
    return ImageSet(x, torch.full((count,), -1), f"{count} noise images")


@pytest.mark.parametrize("n,k", [(1, 3), (2, 3), (4, 3), (3, 5), (6, 3), (2, 7), (10, 3)])
def test_variance_is_n_k2_minus_1_over_12(n: int, k: int) -> None:
    rf = n * (k - 1) + 1
    size = rf + 8 + (rf + 8) % 2 + 1  # odd, with margin: the centre unit's field is inside the input
    result = measure(UniformStack(n, k), _images(3, size), ["stack"], bootstrap=0)
    layer = result.layer("stack")
    assert layer.trf.size == (rf, rf) and not layer.trf.is_global
    expected = n * (k * k - 1) / 12
    sy, sx = layer.metrics.sigma
    assert sy * sy == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert sx * sx == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # the map itself: 3 images x the separable n-fold box convolution, all inside the TRF box
    box = np.ones(k) / k
    profile = np.array([1.0])
    for _ in range(n):
        profile = np.convolve(profile, box)
    y0, y1, x0, x1 = layer.trf.box(layer.unit)
    expected_map = np.zeros_like(layer.sum_map)
    expected_map[y0:y1 + 1, x0:x1 + 1] = 3 * np.outer(profile, profile)
    np.testing.assert_allclose(layer.sum_map, expected_map, rtol=1e-12, atol=1e-15)
    assert layer.sum_map.dtype == np.float64


def test_variance_also_through_the_unit_choice_on_even_inputs() -> None:
    """Even input: the chosen unit's field is still whole, so the law holds exactly at the chosen centre."""
    n, k = 3, 3
    result = measure(UniformStack(n, k), _images(2, 20), ["stack"], bootstrap=0)
    layer = result.layer("stack")
    sy, sx = gaussian_sigma(layer.sum_map)
    assert sy * sy == pytest.approx(n * (k * k - 1) / 12, rel=1e-10)
    # the map's mean lies at the chosen unit's TRF centre
    m = layer.sum_map / layer.sum_map.sum()
    cy = (m.sum(axis=1) * np.arange(m.shape[0])).sum()
    assert cy == pytest.approx(layer.center[0], abs=1e-9)
    assert math.isclose(layer.center[0], 9.0) or math.isclose(layer.center[0], 10.0)


@pytest.mark.parametrize("probe,options", [("gradient", {"crop": False}), ("gradient", {"mode": "relu"}),
                                           ("captum-gradient", {})])
def test_law_through_other_probe_paths(probe: str, options: dict) -> None:
    """No cropping, RepLKNet's ReLU mode (positive weights and a positive input keep every path alive) and
    captum's NeuronGradient give the same exact variance."""
    n, k = 4, 3
    data = _images(2, 23)
    data.images.abs_()  # positive inputs, so that ReLU(centre activation) is the activation itself
    result = measure(UniformStack(n, k), data, ["stack"], probe=probe, probe_options=options, bootstrap=0)
    sy, sx = result.layer("stack").metrics.sigma
    assert sy * sy == pytest.approx(n * (k * k - 1) / 12, rel=1e-10)
    assert sx * sx == pytest.approx(n * (k * k - 1) / 12, rel=1e-10)
