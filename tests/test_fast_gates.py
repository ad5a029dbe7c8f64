"""The fast CBAM gates (erf.models.fast_gates) against the reference ops of erf.models.attention.

The fast path runs for bfloat16 / float16 maps (mixed-precision training); here it is called directly in float64
so that it can be compared with the reference to rounding: outputs, input gradients, parameter gradients and the
spatial gate's batch-norm running statistics, in both memory formats, in training and eval mode. The local channel
gate (every precision takes its fast path) is compared with its reference formulation, kept here as
:func:`local_gate_reference`.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from erf.models import create_model
from erf.models.attention import CBAM, ChannelGate, LocalChannelGate, SpatialGate
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


# ----------------------------------------------------------------------------- the local channel gate
def local_gate_reference(gate: LocalChannelGate, x: torch.Tensor) -> torch.Tensor:
    """The reference formulation of :class:`LocalChannelGate` (its code before the fast path): ``avg_pool2d`` with
    ``count_include_pad=False``, ``max_pool2d``, the shared MLP as 1x1 convolutions on each pooled map."""
    k, p = gate.kernel_size, gate.kernel_size // 2
    first, last = gate.mlp[1], gate.mlp[3]

    def mlp(pooled: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(pooled, first.weight[:, :, None, None], first.bias))
        return F.conv2d(y, last.weight[:, :, None, None], last.bias)

    avg = F.avg_pool2d(x, k, 1, p, count_include_pad=False)
    return x * torch.sigmoid(mlp(avg) + mlp(F.max_pool2d(x, k, 1, p)))


def _local_run(gate: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, reference: bool):
    gate = copy.deepcopy(gate)
    x = x.detach().clone().requires_grad_()
    y = local_gate_reference(gate, x) if reference else gate(x)
    y.backward(g)
    return y.detach(), x.grad, [p.grad for p in gate.parameters()]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (8, 8)])
@pytest.mark.parametrize("kernel", [3, 5])
def test_local_gate_equals_reference_in_float64(fmt, size, kernel):
    """Tie-free random maps: output, input gradient and parameter gradients equal the reference to rounding."""
    torch.manual_seed(3)
    gate = LocalChannelGate(12, 3, kernel).double()
    x = torch.randn(3, 12, *size, dtype=torch.float64).contiguous(memory_format=fmt)
    g = torch.randn_like(x)
    ref, fast = _local_run(gate, x, g, reference=True), _local_run(gate, x, g, reference=False)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(fast[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_local_gate_ties_get_max_pool2d_gradient(fmt):
    """Integer maps (many tied maxima in a window): the gradient is still the reference's (max_pool2d's: all of it
    to the first maximum in row-major order), not split between the tied positions."""
    torch.manual_seed(4)
    gate = LocalChannelGate(8, 2, 3).double()
    x = torch.randint(-2, 3, (2, 8, 6, 5)).double().contiguous(memory_format=fmt)
    g = torch.randn_like(x)
    ref, fast = _local_run(gate, x, g, reference=True), _local_run(gate, x, g, reference=False)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-12, atol=1e-12)


def test_local_gate_keeps_its_parameters_and_needs_an_odd_kernel():
    gate = LocalChannelGate(24, 6)
    assert {k: tuple(v.shape) for k, v in gate.state_dict().items()} == {
        "mlp.1.weight": (4, 24), "mlp.1.bias": (4,), "mlp.3.weight": (24, 4), "mlp.3.bias": (24,)}
    assert gate.kernel_size == 3
    with pytest.raises(ValueError, match="odd"):
        LocalChannelGate(24, 6, kernel_size=4)


def test_local_gate_float32_and_bf16_close_to_reference():
    """float32: the reference to float32 rounding; bf16 autocast on a channels-last map (mixed-precision
    training): within bf16 rounding of the float32 reference."""
    torch.manual_seed(5)
    gate = LocalChannelGate(24, 6)
    x = torch.randn(4, 24, 12, 12)
    ref = local_gate_reference(gate, x)
    torch.testing.assert_close(gate(x), ref, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gate(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()
