"""The fast CBAM gates (erf.models.fast_gates) against the reference ops of erf.models.attention.

The fast path runs for bfloat16 / float16 maps (mixed-precision training); here it is called directly in float64
so that it can be compared with the reference to rounding: outputs, input gradients, parameter gradients and the
spatial gate's batch-norm running statistics, in both memory formats, in training and eval mode.
"""

from __future__ import annotations

import copy

import pytest
import torch

from erf.models import create_model
from erf.models.attention import CBAM, ChannelGate, SpatialGate
from erf.models.fast_gates import channel_gate, spatial_gate, use_fast_gates


def _run(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, fast: bool):
    module = copy.deepcopy(module)
    x = x.detach().clone().requires_grad_()
    if fast:
        y = x
        if hasattr(module, "ChannelGate"):
            y = channel_gate(y, module.ChannelGate.mlp)
        if hasattr(module, "SpatialGate"):
            y = spatial_gate(y, module.SpatialGate.spatial)
    else:
        y = module(x)
    y.backward(g)
    stats = [b.clone() for b in module.buffers()]
    return y.detach(), x.grad, [p.grad for p in module.parameters()], stats


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("parts", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("training", [True, False])
def test_fast_gates_equal_reference_in_float64(fmt, parts, training):
    torch.manual_seed(0)
    block = CBAM(48, channel=parts[0], spatial=parts[1]).double().train(training)
    x = torch.randn(3, 48, 9, 7, dtype=torch.float64).contiguous(memory_format=fmt)
    g = torch.randn_like(x)
    ref, fast = _run(block, x, g, fast=False), _run(block, x, g, fast=True)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-10, atol=1e-12)
    for a, b in zip(fast[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(fast[3], ref[3]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fast_path_only_for_low_precision_maps():
    assert use_fast_gates(torch.zeros(1, dtype=torch.bfloat16))
    assert use_fast_gates(torch.zeros(1, dtype=torch.float16))
    assert not use_fast_gates(torch.zeros(1))
    assert not use_fast_gates(torch.zeros(1, dtype=torch.float64))


def test_float32_gates_are_the_reference_ops_bit_for_bit():
    """float32 maps (every measurement) take the reference path: the module output equals the formula."""
    torch.manual_seed(1)
    gate = ChannelGate(32)
    spatial = SpatialGate().eval()
    x = torch.randn(2, 32, 6, 6)
    logits = gate.mlp(torch.nn.functional.adaptive_avg_pool2d(x, 1)) + gate.mlp(
        torch.nn.functional.adaptive_max_pool2d(x, 1))
    assert torch.equal(gate(x), x * torch.sigmoid(logits)[:, :, None, None])
    pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    assert torch.equal(spatial(x), x * torch.sigmoid(spatial.spatial(pooled)))


def test_bf16_training_step_matches_reference_to_bf16_rounding():
    """A whole cbam model under bf16 autocast: the fast gates' loss and gradients equal the reference ops' up to
    bf16 rounding (relative gradient error of the order of bf16's 2^-8, checked loosely)."""
    import erf.models.attention as attention

    torch.manual_seed(2)
    model = create_model("resnet20_cbam").to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    grads = []
    for fast in (False, True):
        m = copy.deepcopy(model)
        original = attention.use_fast_gates
        attention.use_fast_gates = (lambda t, fast=fast: fast)  # the switch the blocks consult
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = m(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
        finally:
            attention.use_fast_gates = original
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in m.parameters()])))
    (l0, g0), (l1, g1) = grads
    assert abs(l0 - l1) < 0.02 * abs(l0)
    assert (g0 - g1).norm() < 0.1 * g0.norm()
