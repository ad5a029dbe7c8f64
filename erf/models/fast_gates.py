"""Fast CBAM gate arithmetic for low-precision training: reductions as matrix products, one-pass backwards.

PyTorch's reduction kernels upcast a bfloat16 tensor to float32 before summing (a full copy), and autograd's
backward of ``amax`` and of a broadcast product runs four to five passes over the feature map. On a CPU with bf16
units the matrix units are an order of magnitude faster than those passes, so here every reduction over the map
(mean over H x W, the gate gradients' sums) is a (batched) product with a ones vector, accumulated in float32 by
the BLAS, and the channel max's backward is one scatter.

The functions compute exactly what :class:`erf.models.attention.ChannelGate` and
:class:`~erf.models.attention.SpatialGate` compute (same values up to float rounding; the channel max's gradient
goes to one maximal channel where several tie, as ``max(dim)`` does, instead of being split); the blocks call them
only for bfloat16 / float16 maps, so float32 and float64 forward and backward passes (every measurement) run the
reference ops unchanged.

:func:`local_channel_gate` (:class:`erf.models.attention.LocalChannelGate`, the second grid's local control) is
used in **every** precision: its reference ops on a channels-first float32 map (``avg_pool2d`` with
``count_include_pad=False``, ``max_pool2d`` and its backward with indices, the MLP as two 1x1 convolutions per
pooled map) cost a 96 px patchnet more than a whole plain twin on one CPU thread. Here the poolings run on a
channels-last copy (depthwise ones-kernel sum / count map, ``max_pool2d``) and the MLP is one matrix product per
layer on ``(N H W, C)`` rows: about 3x faster forward + backward, the same values up to float rounding and the same
gradient where a window's maximum ties (float64 tests: ``tests/test_fast_gates.py``).

Shapes: ``x`` is ``(N, C, H, W)`` in any memory format (channels-last is the fast one).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["channel_gate", "local_channel_gate", "spatial_gate", "use_fast_gates"]


def use_fast_gates(x: torch.Tensor) -> bool:
    """Whether the blocks take the fast path for the map ``x``: bfloat16 or float16 maps (mixed-precision training)."""
    return x.dtype in (torch.bfloat16, torch.float16)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H*W, C)``: a view of a channels-last map (a copy otherwise)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class _ScaleChannels(torch.autograd.Function):
    """``x * a[:, :, None, None]`` for ``a`` of shape ``(N, C)``; ``a``'s gradient as one batched product."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        a = a.to(x.dtype)
        ctx.save_for_backward(x, a)
        return x * a[:, :, None, None]

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, a = ctx.saved_tensors
        gx = g * a[:, :, None, None] if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[1]:
            prod = _rows(g * x)  # (N, HW, C)
            ga = torch.bmm(prod.new_ones(prod.shape[0], 1, prod.shape[1]), prod)[:, 0]
        return gx, ga


class _ScalePositions(torch.autograd.Function):
    """``x * s`` for ``s`` of shape ``(N, 1, H, W)``; ``s``'s gradient as one matrix-vector product."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.to(x.dtype)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, s = ctx.saved_tensors
        gx = g * s if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            n, c, h, w = x.shape
            prod = _rows(g * x).reshape(-1, c)  # (N HW, C)
            gs = (prod @ prod.new_ones(c, 1)).reshape(n, h, w, 1).permute(0, 3, 1, 2)
        return gx, gs


def _add_at(rows: torch.Tensor, flat_index: torch.Tensor, values: torch.Tensor) -> None:
    """``rows.view(-1)[flat_index] += values`` in place, for *distinct* flat indices (one arg-max per pooled
    value), as a gather and a put of those few elements (``scatter_add_`` copies a low-precision tensor whole)."""
    flat = rows.view(-1)
    index = flat_index.reshape(-1)
    flat[index] = flat[index] + values.reshape(-1).to(rows.dtype)


class _PoolPositions(torch.autograd.Function):
    """``(N, C, H, W) -> (N, C)`` twice: the mean and the max over the positions (CBAM's channel-gate inputs).

    Backward in one pass: the mean's share broadcast over the positions, the max's scattered onto its arg-max.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = _rows(x)  # (N, HW, C)
        n, hw, c = rows.shape
        mean = torch.bmm(rows.new_full((n, 1, hw), 1.0 / hw), rows)[:, 0]
        top, index = F.adaptive_max_pool2d(x, 1, return_indices=True)
        ctx.save_for_backward(index.reshape(n, 1, c))
        ctx.shape = x.shape
        return mean, top.reshape(n, c)

    @staticmethod
    def backward(ctx, g_mean: torch.Tensor, g_max: torch.Tensor) -> torch.Tensor:
        (index,) = ctx.saved_tensors
        n, c, h, w = ctx.shape
        rows = (g_mean / (h * w))[:, None, :].expand(n, h * w, c).contiguous()
        batch = torch.arange(n, device=index.device)[:, None] * (h * w * c)
        _add_at(rows, batch + index[:, 0] * c + torch.arange(c, device=index.device), g_max)
        return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _PoolChannels(torch.autograd.Function):
    """``(N, C, H, W) -> (N, 2, H, W)``: the max and the mean over the channels (CBAM's spatial-gate input).

    Backward in one pass: the mean's share broadcast over the channels, the max's scattered onto its arg-max.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = _rows(x)  # (N, HW, C)
        top, index = rows.max(dim=2, keepdim=True)
        mean = rows.reshape(-1, c) @ rows.new_full((c, 1), 1.0 / c)
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        pooled = torch.cat([top, mean.reshape(n, h * w, 1)], dim=2)  # (N, HW, 2)
        return pooled.reshape(n, h, w, 2).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (index,) = ctx.saved_tensors
        n, c, h, w = ctx.shape
        g = g.permute(0, 2, 3, 1).reshape(n, h * w, 2)
        rows = (g[:, :, 1:] / c).expand(n, h * w, c).contiguous()
        _add_at(rows, torch.arange(n * h * w, device=index.device) * c + index.reshape(-1), g[:, :, 0])
        return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def channel_gate(x: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
    """CBAM's channel gate ``x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))``, fast: ``(N, C, H, W)`` -> same."""
    mean, top = _PoolPositions.apply(x)
    return _ScaleChannels.apply(x, torch.sigmoid(mlp(mean) + mlp(top)))


def spatial_gate(x: torch.Tensor, spatial: nn.Module) -> torch.Tensor:
    """CBAM's spatial gate ``x * sigmoid(spatial([max_c x, mean_c x]))``, fast: ``(N, C, H, W)`` -> same."""
    return _ScalePositions.apply(x, torch.sigmoid(spatial(_PoolChannels.apply(x))))


# ----------------------------------------------------------------------------- the local channel gate
def _window_counts(length: int, p: int, device: torch.device) -> torch.Tensor:
    """How many positions of the window ``[i - p, i + p]`` lie inside ``[0, length)``, for each ``i``: ``(length,)``."""
    i = torch.arange(length, device=device)
    return (i + p).clamp(max=length - 1) - (i - p).clamp(min=0) + 1


def local_channel_gate(x: torch.Tensor, mlp: nn.Sequential, kernel_size: int) -> torch.Tensor:
    """:class:`erf.models.attention.LocalChannelGate`'s ``x * sigmoid(mlp(avgpool_k(x)) + mlp(maxpool_k(x)))``
    (``k x k`` stride-1 poolings with padding ``k // 2``, the average over the positions inside the map; the MLP
    at every position), fast: ``(N, C, H, W)`` -> same, in either memory format.

    The poolings run on a channels-last copy of ``x`` (a no-op for a channels-last map), where the CPU kernels
    are vectorised over channels: the window sum as a depthwise convolution with a ones kernel divided by the
    precomputed count map (how many of the window's positions lie inside the map: ``count_include_pad=False``),
    the maximum as ``max_pool2d`` itself, so its gradient is ``max_pool2d``'s: where a window's maximum ties, all of
    that output's gradient goes to one position, the first maximum of the window in row-major order (the position
    its indices record), not split between the tied ones. The MLP ``Flatten - Linear(C, h) - ReLU - Linear(h, C)``
    runs as matrix products on the channels-last ``(N, H, W, C)`` views, its first layer on both pooled maps and its
    second once, on the sum of their hidden units, plus the bias twice (the same sum of two MLPs).
    """
    first, last = cast(nn.Linear, mlp[1]), cast(nn.Linear, mlp[3])  # Flatten - Linear - ReLU - Linear
    k, p = int(kernel_size), int(kernel_size) // 2
    n, c, h, w = x.shape
    xl = x.contiguous(memory_format=torch.channels_last)
    total = F.conv2d(xl, xl.new_ones(c, 1, k, k), padding=p, groups=c).permute(0, 2, 3, 1)  # (N, H, W, C)
    count = (_window_counts(h, p, x.device)[:, None] * _window_counts(w, p, x.device)[None, :])[:, :, None]
    avg = total / count.to(total.dtype)
    top = F.max_pool2d(xl, k, 1, p).permute(0, 2, 3, 1)
    hidden = F.relu(F.linear(avg, first.weight, first.bias)) + F.relu(F.linear(top, first.weight, first.bias))
    logits = F.linear(hidden, last.weight, last.bias)
    gate = torch.sigmoid(logits + last.bias.to(logits.dtype)).permute(0, 3, 1, 2)
    return x * gate.to(x.dtype)
