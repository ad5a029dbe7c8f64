"""The two-convolution toy of the article: two 3x3 conv-BN-ReLU layers, optional
attention after them, global average pooling and a linear classifier.

Its theoretical receptive field is only 5 px before pooling, the case the
article suspects is too small for attention to be judged fairly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from erf.models.attention import detect_attention, make_attention, register_twins
from erf.models.registry import register_family, variant_name


class TwoConv(nn.Module):
    """``conv3x3(3->w1)-BN-ReLU, conv3x3(w1->w2)-BN-ReLU, [attention], GAP, Linear``.

    Args:
        num_classes: output logits.
        attention: ``None``, ``"cbam"``, ``"cbam_spatial"`` or ``"se"``.
        widths: channels of the two convolutions.
    """

    def __init__(
        self,
        num_classes: int = 10,
        attention: str | None = None,
        widths: tuple[int, int] = (32, 64),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[1])
        self.act2 = nn.ReLU()
        attn = make_attention(attention, widths[1])
        if attn is not None:
            self.attention = attn
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[1], num_classes)
        self.named_layers = {"stem": "act1", "stage1": "act1", "stage2": "act2"}
        if attn is not None:
            self.named_layers["attention"] = "attention"
        self.named_layers.update(pool="pool", fc="fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, classes)`` logits."""
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        if hasattr(self, "attention"):
            x = self.attention(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def match_state(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]] | None:
    """The two-convolution toy (``conv1``, ``conv2``, ``fc`` and no ``layer1``): widths from the convolutions."""
    keys = set(state)
    if {"conv1.weight", "conv2.weight", "fc.weight"} <= keys and not any("layer1" in k for k in keys):
        attention = detect_attention(keys)
        widths = (state["conv1.weight"].shape[0], state["conv2.weight"].shape[0])
        kwargs = dict(num_classes=state["fc.weight"].shape[0], attention=attention, widths=widths)
        return variant_name("twoconv", attention), kwargs
    return None


PARAMS = {"twoconv": 20138, "twoconv_cbam": 20818, "twoconv_cbam_spatial": 20238, "twoconv_se": 20718}
"""Parameter counts of the registered builds (``erf models`` lists them without building; a test builds them)."""

register_twins("twoconv", TwoConv, "twoconv", "two 3x3 conv layers", PARAMS)
register_family("twoconv", match_state)
