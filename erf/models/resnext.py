"""ResNeXt-29 for CIFAR (Xie et al. 2017), plain or with CBAM in every bottleneck.

This is the model family of the article (its "wideresnet"): cardinality 16,
base width d in {8, 16, 32, 64}. Module names equal those of the article's
source (pprp/pytorch-cifar-model-zoo, ``att_overfit``), so its raw state dicts
load unchanged; unlike that source, every submodule is *called* (not
``.forward``-ed), so forward hooks see every layer.

Shapes for a 32 px input: stem 64x32x32, stage 1 256x32x32, stage 2 512x16x16,
stage 3 1024x8x8, logits (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erf.errors import ArchitectureError
from erf.models.attention import detect_attention, make_attention
from erf.models.registry import ModelEntry, is_model, register_family, register_model


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce to D, 3x3 grouped conv (stride), 1x1 expand, [CBAM], add, ReLU.

    ``D = cardinality * int(base_width * out_channels / 256)``. A projection
    shortcut (1x1 conv with stride + BN) is used when the channel count changes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        cardinality: int,
        base_width: int,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        width = cardinality * int(base_width * out_channels / 256.0)
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = nn.Conv2d(
            width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module(
                "shortcut_conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            )
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))
        attn = make_attention(attention, out_channels)
        if attn is not None:
            self.cbam_module = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H/s, W/s)``."""
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        if hasattr(self, "cbam_module"):
            out = self.cbam_module(out)
        return F.relu(out + self.shortcut(x))


class ResNeXtCifar(nn.Module):
    """ResNeXt for 32 px inputs: stem, three stages of ``(depth - 2) // 9`` bottlenecks, pool, linear.

    Args:
        cardinality: groups of the 3x3 convolutions (16 in the article).
        base_width: d, the width of one group at stage 1 (8, 16, 32 or 64).
        depth: 29 gives 3 bottlenecks per stage.
        num_classes: output logits.
        attention: ``None``, ``"cbam"`` (the article), ``"cbam_spatial"`` or ``"se"``.
    """

    stage_names = ("stage_1", "stage_2", "stage_3")
    stage_1: nn.Sequential  # set with setattr in __init__
    stage_2: nn.Sequential
    stage_3: nn.Sequential

    def __init__(
        self,
        cardinality: int = 16,
        base_width: int = 8,
        depth: int = 29,
        num_classes: int = 10,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        blocks = (depth - 2) // 9
        widths = (64, 256, 512, 1024)
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        self.act_1 = nn.ReLU()
        for i, name in enumerate(self.stage_names):
            stage = nn.Sequential()
            for b in range(blocks):
                stage.add_module(
                    f"{name}_bottleneck_{b}",
                    Bottleneck(
                        widths[i] if b == 0 else widths[i + 1],
                        widths[i + 1],
                        (1 if i == 0 else 2) if b == 0 else 1,
                        cardinality,
                        base_width,
                        attention,
                    ),
                )
            setattr(self, name, stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.named_layers = {"stem": "act_1"}
        for i, name in enumerate(self.stage_names):
            self.named_layers[f"stage{i + 1}"] = name
            for b in range(blocks):
                self.named_layers[f"stage{i + 1}.block{b + 1}"] = f"{name}.{name}_bottleneck_{b}"
        self.named_layers["pool"] = "pool"
        self.named_layers["fc"] = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, classes)`` logits."""
        x = self.act_1(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def match_state(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """The article's ResNeXt layout (``conv_1_3x3.weight``): width ``d = D / cardinality`` from the first
    bottleneck's ``conv_reduce``, the cardinality from the grouped conv's shape, CBAM from key names, the depth from
    the bottlenecks per stage."""
    keys = set(state)
    if "conv_1_3x3.weight" in keys:
        attention = detect_attention(keys)
        reduce = state.get("stage_1.stage_1_bottleneck_0.conv_reduce.weight")
        grouped = state.get("stage_1.stage_1_bottleneck_0.conv_conv.weight")
        if reduce is None or grouped is None:
            raise ArchitectureError("ResNeXt layout without stage_1 bottleneck 0 weights")
        width_total = reduce.shape[0]
        cardinality = width_total // grouped.shape[1]
        base_width = width_total // cardinality
        blocks = len({k.split(".")[1] for k in keys if k.startswith("stage_1.")})
        kwargs = dict(
            cardinality=cardinality,
            base_width=base_width,
            depth=9 * blocks + 2,
            num_classes=state["fc.weight"].shape[0],
            attention=attention,
        )
        prefix = "cbam" if attention == "cbam" else "norm"
        name = f"{prefix}_{base_width}d"
        if not is_model(name) or cardinality != 16 or blocks != 3 or attention not in (None, "cbam"):
            name = "norm_8d"  # generic constructor; kwargs carry the real shape
        return name, kwargs
    return None


PARAMS = {"norm_8d": 5066058, "norm_16d": 10595146, "norm_32d": 25136970, "norm_64d": 68155210,
          "cbam_8d": 5588766, "cbam_16d": 11117854, "cbam_32d": 25659678, "cbam_64d": 68677918}
"""Parameter counts of the registered builds (``erf models`` lists them without building; a test builds them)."""

for _width in (8, 16, 32, 64):
    for _prefix, _attention in (("norm", None), ("cbam", "cbam")):
        register_model(ModelEntry(
            name=f"{_prefix}_{_width}d", constructor=ResNeXtCifar,
            kwargs=dict(cardinality=16, base_width=_width, depth=29, attention=_attention), family="resnext29",
            attention=_attention, twin=f"norm_{_width}d" if _attention else None,
            aliases=(f"{_prefix}_resnext29_16x{_width}d",),
            description=f"ResNeXt-29 16x{_width}d" + (" with CBAM in every bottleneck" if _attention else " (plain)"),
            params=PARAMS[f"{_prefix}_{_width}d"]))
register_family("resnext29", match_state)
