"""torchvision transformers (ViT, Swin v1/v2, MaxViT): named stages; TRF == gradient support on each; global from
the first attention (MaxViT: from the squeeze-and-excitation of its first MBConv), with the reason; Swin's window
attention is conservatively global. Builders, coverage table and method: tests/zoo_torchvision.py."""

from __future__ import annotations

import pytest
import torch
from norms import randomise_norms
from zoo_torchvision import BUILT, REPRESENTATIVES, check, family


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if family(n) == "attention"])
def test_stages_and_trf_equal_gradient_support(name: str, one_thread) -> None:
    check(name)


def test_swin_window_attention_is_conservative(one_thread) -> None:
    """At 64 px swin_t's stage 1 has 16 x 16 tokens in 7 x 7 windows: the tracer says global (at the first
    window attention, with the reason), while the support of the centre unit is its window only."""
    torch.manual_seed(0)
    model = randomise_norms(BUILT["swin_t"][0]("swin_t"), open_gates=True)
    from erf.probes import gradient_support
    from erf.trf import trace_receptive_fields

    trf = trace_receptive_fields(model, (64, 64)).trf["features.1.0"]
    assert trf.is_global and "features.1.0.attn" in trf.reason and "matmul" in trf.reason
    unit = trf.central_unit()
    support = gradient_support(model, ["features.1.0"], (64, 64), index={"features.1.0": unit})["features.1.0"]
    assert support.box is not None and not support.covers_input
    y0, y1, x0, x1 = support.box
    assert (y1 - y0 + 1, x1 - x0 + 1) == (28, 28)  # one 7 x 7 window of 4 px tokens
