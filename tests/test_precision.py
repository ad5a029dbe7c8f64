"""Measurement in bf16 (issue 22): offered because the bench showed it pays; it must agree with fp32 in the
metrics a user reads and say which precision ran."""

from __future__ import annotations

import json

import pytest
import torch

import erf
from erf.errors import InputError
from erf.models import create_model


def test_bf16_measurement_agrees_with_fp32_on_the_metrics():
    torch.manual_seed(0)
    model = create_model("resnet20")
    images = torch.randn(8, 3, 32, 32)
    ref = erf.measure(model, images, ["stage2", "stage3"], bootstrap=0)
    low = erf.measure(model, images, ["stage2", "stage3"], bootstrap=0, precision="bf16")
    assert ref.settings["precision"] == "fp32" and low.settings["precision"] == "bf16"
    for a, b in zip(ref.layers, low.layers):
        for q in (0.5, 0.95):
            assert abs(a.metrics.radius[q] - b.metrics.radius[q]) <= 1.0  # px, on a 32 px map
        for sa, sb in zip(a.metrics.sigma, b.metrics.sigma):
            assert abs(sa - sb) <= 0.03 * sa
        # not the same computation: the maps differ in their low bits
        assert not torch.equal(torch.as_tensor(a.sum_map), torch.as_tensor(b.sum_map))
    with pytest.raises(InputError, match="precision"):
        erf.measure(model, images, ["stage3"], precision="fp16")


def test_cli_precision_is_recorded_in_the_json(run_cli):
    code, out, _ = run_cli("measure", "twoconv", "--images", "4", "--bootstrap", "0", "--precision", "bf16", "--json")
    assert code == 0
    assert json.loads(out)["settings"]["precision"] == "bf16"
    code, out, _ = run_cli("measure", "twoconv", "--images", "4", "--bootstrap", "0", "--json")
    assert json.loads(out)["settings"]["precision"] == "fp32"
