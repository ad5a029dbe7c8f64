"""CIFAR ResNet (He et al. 2016, section 4.2): ``6n + 2`` layers, 16/32/64 channels.

ResNet-20 is n = 3 (about 0.27M parameters). Shortcuts are option A of the
paper: identity, with stride-2 subsampling and zero-padded channels when the
shape changes (no parameters). Attention (CBAM or SE) is applied to the
residual branch after the second BN, before the add, as in the CBAM paper.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erf.models.attention import detect_attention, make_attention, register_twins
from erf.models.registry import register_family, variant_name


class PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::s, ::s]`` with zero channels appended up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C_out, H/s, W/s)``: subsample and zero-pad channels (option A)."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers, [attention], add, ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, attention: str | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        attn = make_attention(attention, out_channels)
        if attn is not None:
            self.attention = attn
        self.shortcut = (
            PadShortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H/s, W/s)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "attention"):
            out = self.attention(out)
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet with ``depth = 6n + 2``.

    Args:
        depth: 20, 32, 44, 56, ... (n = (depth - 2) / 6 blocks per stage).
        num_classes: output logits.
        attention: ``None``, ``"cbam"``, ``"cbam_spatial"`` or ``"se"``.
        widths: channels of the three stages.
        stages: how many of the three stages to build (fewer stages, smaller receptive field).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        attention: str | None = None,
        widths: tuple[int, int, int] = (16, 32, 64),
        stages: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        self.named_layers = {"stem": "act1"}
        in_ch = widths[0]
        for s in range(stages):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_ch, widths[s], stride, attention))
                in_ch = widths[s]
                self.named_layers[f"stage{s + 1}.block{b + 1}"] = f"layer{s + 1}.{b}"
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.named_layers[f"stage{s + 1}"] = f"layer{s + 1}"
        self.stages = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.named_layers["pool"] = "pool"
        self.named_layers["fc"] = "fc"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, classes)`` logits."""
        x = self.act1(self.bn1(self.conv1(x)))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def match_state(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """CIFAR ResNet layout (``conv1`` with 16 outputs and ``layer1.0.conv1``): blocks per stage give the depth,
    the stages' first convolutions the widths, key names the attention."""
    keys = set(state)
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys and state["conv1.weight"].shape[0] == 16:
        attention = detect_attention(keys)
        n = len({k.split(".")[1] for k in keys if k.startswith("layer1.")})
        stages = len({k.split(".")[0] for k in keys if re.match(r"layer\d\.", k)})
        widths = tuple(state[f"layer{s}.0.conv1.weight"].shape[0] for s in range(1, stages + 1))
        kwargs = dict(depth=6 * n + 2, num_classes=state["fc.weight"].shape[0], attention=attention,
                      widths=widths + (16, 32, 64)[len(widths):], stages=stages)
        return variant_name("resnet20", attention), kwargs
    return None


PARAMS = {"resnet20": 269722, "resnet20_cbam": 272995, "resnet20_cbam_spatial": 270622, "resnet20_se": 272095}
"""Parameter counts of the registered builds (``erf models`` lists them without building; a test builds them)."""

register_twins("resnet20", ResNetCifar, "resnet_cifar", "CIFAR ResNet-20 (He et al. 2016)", PARAMS, {"depth": 20})
register_family("resnet_cifar", match_state)
