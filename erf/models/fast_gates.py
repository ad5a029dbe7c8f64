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

Shapes: ``x`` is ``(N, C, H, W)`` in any memory format (channels-last is the fast one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["channel_gate", "spatial_gate", "use_fast_gates"]


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
