"""Attention blocks: CBAM (Woo et al. 2018), squeeze-and-excitation (Hu et al. 2018) and a local CBAM control.

Attribute names follow the article's source code (``ChannelGate.mlp.1``,
``SpatialGate.spatial.conv``, ``SpatialGate.spatial.bn``) so its state dicts
load unchanged. Shapes: every block maps ``(N, C, H, W) -> (N, C, H, W)``. CBAM's gates run the reference ops on
float32 / float64 maps (every measurement) and :mod:`erf.models.fast_gates` on bfloat16 / float16 maps
(mixed-precision training): the same function, with the reductions on the matrix units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erf.models.fast_gates import channel_gate, local_channel_gate, spatial_gate, use_fast_gates


class ChannelGate(nn.Module):
    """CBAM channel gate: ``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``.

    The pooled vectors pass through one shared MLP ``Linear(C, C/r) - ReLU -
    Linear(C/r, C)``. The gate mixes all spatial positions (its receptive field is global).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, scaled per channel by the gate in (0, 1)."""
        if use_fast_gates(x):  # bf16 / fp16 training: the same gate with matrix-unit reductions
            return channel_gate(x, self.mlp)
        logits = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(logits)[:, :, None, None]


class ConvBN(nn.Module):
    """``Conv2d`` (no bias) followed by ``BatchNorm2d(eps=1e-5, momentum=0.01)``, as in CBAM's source."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``: convolution then batch norm."""
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """CBAM spatial gate: ``x * sigmoid(BN(conv7x7([max_c x, mean_c x])))``.

    Local: it widens the receptive field by ``kernel_size - 1`` input-stride units.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.spatial = ConvBN(2, 1, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, scaled per position by the 7x7 gate in (0, 1)."""
        if use_fast_gates(x):
            return spatial_gate(x, self.spatial)
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate, then spatial gate.

    Args:
        channels: number of input (= output) channels C.
        reduction: MLP reduction ratio of the channel gate (default 16).
        channel: use the channel gate (global); ``False`` leaves a purely local block.
        spatial: use the spatial gate (7x7, local).
    """

    def __init__(
        self, channels: int, reduction: int = 16, channel: bool = True, spatial: bool = True
    ) -> None:
        super().__init__()
        if channel:
            self.ChannelGate = ChannelGate(channels, reduction)
        if spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape: channel gate, then spatial gate."""
        if hasattr(self, "ChannelGate"):
            x = self.ChannelGate(x)
        if hasattr(self, "SpatialGate"):
            x = self.SpatialGate(x)
        return x


class LocalChannelGate(nn.Module):
    """CBAM's channel gate fed by *local* pooling: no global path, the same parameters.

    ``x * sigmoid(MLP(avgpool_k(x)) + MLP(maxpool_k(x)))`` where ``avgpool_k`` / ``maxpool_k`` are
    ``k x k`` stride-1 poolings (padding ``k // 2``; the average ignores the padding) and the shared
    MLP ``Linear(C, C/r) - ReLU - Linear(C/r, C)`` (attribute ``mlp``, the same shapes as
    :class:`ChannelGate`'s) is applied at every position. The gate is multiplicative like CBAM's but
    sees only a ``k x k`` neighbourhood, so its receptive field stays local (it widens it by
    ``k - 1`` input-stride units): it separates "multiplicative gating" from "global context".

    Every precision runs :func:`erf.models.fast_gates.local_channel_gate` (channels-last poolings, the MLP as
    matrix products): the reference ``F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)`` /
    ``F.max_pool2d(x, k, 1, k // 2)`` / per-position MLP formulation to float rounding, with ``max_pool2d``'s
    gradient where a window's maximum ties (all of it to the first maximum of the window in row-major order, not
    split). ``kernel_size`` must be odd (the map keeps its size).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, scaled per channel and position by the local gate in (0, 1)."""
        return local_channel_gate(x, self.mlp, self.kernel_size)


class LocalCBAM(nn.Module):
    """CBAM with its channel gate made local (:class:`LocalChannelGate`), then CBAM's spatial gate.

    Exactly CBAM's parameters (same shapes, same names ``ChannelGate.mlp``, ``SpatialGate``), no global path.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 3) -> None:
        super().__init__()
        self.ChannelGate = LocalChannelGate(channels, reduction, kernel_size)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape: local channel gate, then spatial gate."""
        return self.SpatialGate(self.ChannelGate(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 avgpool(x)))`` (global receptive field)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, scaled per channel (squeeze-and-excitation)."""
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


ATTENTION_BLOCKS: dict[str, Callable[[int], nn.Module]] = {
    "cbam": CBAM,
    "cbam_spatial": lambda c: CBAM(c, channel=False),
    "cbam_channel": lambda c: CBAM(c, spatial=False),
    "se": SqueezeExcite,
    "localgate": LocalCBAM,
}
"""Attention kinds by name: ``kind -> constructor(channels) -> nn.Module``."""


TWIN_VARIANTS: dict[str | None, tuple[str, str]] = {
    None: ("", "(plain)"),
    "cbam": ("_cbam", "with CBAM"),
    "cbam_spatial": ("_cbam_spatial", "with CBAM's spatial gate only (local attention)"),
    "se": ("_se", "with squeeze-and-excitation"),
}
"""The attention variants the CIFAR families register: kind -> (name suffix, description words)."""


def register_twins(base: str, constructor: Any, family: str, description: str, params: dict[str, int],
                   kwargs: dict[str, Any] | None = None,
                   variants: dict[str | None, tuple[str, str]] = TWIN_VARIANTS) -> None:
    """Register ``base`` and one attention twin per kind of ``variants`` (default :data:`TWIN_VARIANTS`:
    ``base_cbam``...), each with ``attention=kind`` among its constructor ``kwargs``, ``twin=base``,
    ``description`` followed by the kind's words, and its parameter count from ``params`` (by name)."""
    from erf.models.registry import ModelEntry, register_model

    for attention, (suffix, words) in variants.items():
        register_model(ModelEntry(
            name=f"{base}{suffix}", constructor=constructor, kwargs={**(kwargs or {}), "attention": attention},
            family=family, attention=attention, twin=base if attention else None,
            description=f"{description} {words}", params=params[f"{base}{suffix}"]))


def detect_attention(keys: Iterable[str]) -> str | None:
    """The attention kind of a state dict from its key names (``ChannelGate``/``SpatialGate`` of CBAM,
    ``attention.fc`` of SE, under ``cbam_module`` in the article's source or ``attention`` here), or ``None``."""
    keys = list(keys)

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    if not (has("cbam_module") or has("attention.")):
        return None
    if has("ChannelGate") and has("SpatialGate"):
        return "cbam"
    if has("SpatialGate"):
        return "cbam_spatial"
    if has("ChannelGate"):
        return "cbam_channel"
    if has("attention.fc") or has("cbam_module.fc"):
        return "se"
    return None


def make_attention(kind: str | None, channels: int) -> nn.Module | None:
    """Build the attention block ``kind`` for ``channels`` channels, or ``None`` for no attention."""
    if kind is None:
        return None
    try:
        return ATTENTION_BLOCKS[kind](channels)
    except KeyError:
        raise ValueError(f"unknown attention {kind!r}; known: {sorted(ATTENTION_BLOCKS)}") from None
