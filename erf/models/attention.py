"""Attention blocks: CBAM (Woo et al. 2018) and squeeze-and-excitation (Hu et al. 2018).

Attribute names follow the article's source code (``ChannelGate.mlp.1``,
``SpatialGate.spatial.conv``, ``SpatialGate.spatial.bn``) so its state dicts
load unchanged. Shapes: every block maps ``(N, C, H, W) -> (N, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 avgpool(x)))`` (global receptive field)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape, scaled per channel (squeeze-and-excitation)."""
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


ATTENTION_BLOCKS = {
    "cbam": CBAM,
    "cbam_spatial": lambda c: CBAM(c, channel=False),
    "cbam_channel": lambda c: CBAM(c, spatial=False),
    "se": SqueezeExcite,
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
                   kwargs: dict[str, Any] | None = None) -> None:
    """Register ``base`` and one attention twin per :data:`TWIN_VARIANTS` kind (``base_cbam``...), each with
    ``attention=kind`` among its constructor ``kwargs``, ``twin=base``, ``description`` followed by the kind's
    words, and its parameter count from ``params``."""
    from erf.models.registry import ModelEntry, register_model

    for attention, (suffix, words) in TWIN_VARIANTS.items():
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

    if not (has("cbam_module") or has(".attention.") or has("attention.")):
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
