"""Dilation twins: one small residual CNN whose ERF is set by the dilation of its last stage.

Built for the controlled hypothesis-2 experiment (:mod:`erf.study.grid`) on 64 px canvases:

* ``stem``: ``conv3x3(3 -> w1, stride 2)-BN-ReLU`` (64 -> 32 px, cheap);
* ``stage1``: ``blocks[0]`` residual blocks of width ``w1`` at 32 px (dilation 1);
* ``stage2``: ``blocks[1]`` blocks of width ``w2`` at 16 px, **without shortcuts** by default; the
  first block's first convolution has stride 2 (not dilated), **every other 3x3 convolution of the
  stage has dilation ``d`` and padding ``d``**. No shortcut: with residual shortcuts in stage 2 the
  trained networks bypassed the dilated convolutions (pilot, 10 epochs, 16 px objects: object-centred
  ``2 r50`` 12.2 / 16.1 / 15.2 px for d = 1 / 2 / 4, against 14.6 / 24.4 / 38.0 px at initialisation),
  so dilation did not set the trained ERF; without them it does (16.0 px for d = 1, 36.8 px for d = 4
  after 6 epochs);
* global average pooling and a linear classifier.

Strides, widths and kernels do not depend on ``d``, so every ``d`` has the same parameter
count and the same FLOPs (a dilated 3x3 kernel still has 9 taps; zero padding ``d`` keeps the
map size); only the spatial spread of the taps, hence the receptive field, grows with ``d``.

Attention (``attention=``: ``cbam``, ``se``, ``cbam_spatial``, ``localgate``, see
:mod:`erf.models.attention`) sits where CBAM sits in its paper and in the article: on the residual
branch of **every** block, after the second BN and before the add (before the ReLU in a block
without shortcut).

Shapes: ``(N, 3, H, W)`` normalised images (``H, W`` multiples of 4; 64 in the study) ->
``(N, classes)`` logits; ``stage1`` is ``(N, w1, H/2, W/2)``, ``stage2`` ``(N, w2, H/4, W/4)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from erf.models.attention import CBAM, LocalCBAM, SqueezeExcite, make_attention, register_twins


class DilatedBlock(nn.Module):
    """``conv3x3(stride s)-BN-ReLU, conv3x3(dilation d)-BN, [attention], [+ shortcut], ReLU``.

    Args:
        in_channels, out_channels: widths.
        stride: stride of the first convolution (1 or 2; that convolution is dilated only when ``stride == 1``).
        dilation: dilation (= padding) of the block's other 3x3 convolutions.
        attention: attention kind on the residual branch, or ``None``.
        residual: add a shortcut (identity, or 1x1 conv + BN when the shape changes).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 attention: str | None = None, residual: bool = True) -> None:
        super().__init__()
        self.residual = bool(residual)
        d1 = 1 if stride != 1 else dilation
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        attn = make_attention(attention, out_channels)
        if attn is not None:
            self.attention = attn
        self.shortcut: nn.Module | None
        if not residual:
            self.shortcut = None
        elif stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, H / stride, W / stride)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "attention"):
            out = self.attention(out)
        return F.relu(out + self.shortcut(x)) if self.shortcut is not None else F.relu(out)


class DilatedNet(nn.Module):
    """The dilation-twin network (see the module docstring).

    Args:
        num_classes: output logits.
        attention: attention kind in every block, or ``None`` (the plain twin).
        dilation: dilation ``d`` of stage 2's 3x3 convolutions (except the strided one).
        widths: ``(w1, w2)`` channels of stage 1 and stage 2 (the stem has ``w1``).
        blocks: blocks per stage.
        residual: ``(stage 1, stage 2)``: whether the blocks of each stage have shortcuts.
    """

    layer1: nn.Sequential  # set with setattr in __init__
    layer2: nn.Sequential

    def __init__(self, num_classes: int = 10, attention: str | None = None, dilation: int = 1,
                 widths: tuple[int, int] = (16, 32), blocks: tuple[int, int] = (1, 2),
                 residual: tuple[bool, bool] = (True, False)) -> None:
        super().__init__()
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.dilation = int(dilation)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        self.named_layers = {"stem": "act1"}
        in_ch = widths[0]
        for s, (width, count) in enumerate(zip(widths, blocks)):
            layer = []
            for b in range(count):
                stride = 2 if (s == 1 and b == 0) else 1
                layer.append(DilatedBlock(in_ch, width, stride, dilation if s == 1 else 1, attention, residual[s]))
                in_ch = width
                self.named_layers[f"stage{s + 1}.block{b + 1}"] = f"layer{s + 1}.{b}"
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
            self.named_layers[f"stage{s + 1}"] = f"layer{s + 1}"
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.named_layers.update(pool="pool", fc="fc")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, classes)`` logits."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


DILATIONS = (1, 2, 4)
"""Dilations of the registered dilation twins ``dilnet_d{d}`` (the controlled study's grid)."""
DILNET_VARIANTS: dict[str | None, tuple[str, str]] = {
    None: ("", "(plain)"),
    "cbam": ("_cbam", "with CBAM in every block"),
    "se": ("_se", "with squeeze-and-excitation in every block"),
    "cbam_spatial": ("_spatial", "with CBAM's spatial gate only in every block (local)"),
    "localgate": ("_localgate", "with CBAM whose channel gate pools locally (3x3; same parameters, no global path)"),
}
"""The dilation twins' gates (see :func:`~erf.models.attention.register_twins`): kind -> (name suffix, words)."""
DILNET_GATES = {kind: suffix for kind, (suffix, _) in DILNET_VARIANTS.items()}
"""Attention kind -> name suffix of the dilation twins."""
PARAMS = {None: 37978, "cbam": 38651, "se": 38351, "cbam_spatial": 38278, "localgate": 38651}
"""Parameter counts per gate, the same for every dilation (``erf models`` lists them; a test builds them)."""

# No state-dict matcher: the twins of every dilation share every tensor shape, so a raw state dict cannot say
# which dilation it was trained with (load them with their registry name or an erf checkpoint).
for _d in DILATIONS:
    register_twins(f"dilnet_d{_d}", DilatedNet, "dilnet", f"dilation twin d={_d} (stage-2 3x3 convs dilated {_d})",
                   {f"dilnet_d{_d}{suffix}": PARAMS[kind] for kind, (suffix, _) in DILNET_VARIANTS.items()},
                   {"dilation": _d}, variants=DILNET_VARIANTS)



# ----------------------------------------------------------------------------- the second grid's twins (issue #24)
GATE_HIDDEN_MIN = 4
"""The second grid's gates: the channel MLP has at least this many hidden units (reduction from the width)."""
SCHEDULES: dict[int, tuple[int, int, int]] = {1: (1, 1, 1), 2: (1, 2, 3), 3: (1, 3, 9)}
"""ERF levels of :class:`PatchDilatedNet`: level -> dilations of its three 3x3 convolutions. Each schedule's
offset sums cover every integer in ``[-sum, sum]`` (no gridding holes: (1, 3, 9) is balanced ternary), and
the 4 px patch stem tiles the 4 px step, so the TRF is a full square of ``4 + 8 sum(d)`` px: 28, 52, 108."""


def gate_reduction(width: int, hidden_min: int = GATE_HIDDEN_MIN) -> int:
    """The CBAM / SE reduction for ``width`` channels giving at least ``hidden_min`` hidden units (at most 16,
    the registered default): ``width // reduction >= hidden_min``."""
    return max(1, min(16, width // hidden_min))


def make_gate(kind: str | None, channels: int, reduction: int) -> nn.Module | None:
    """:func:`erf.models.attention.make_attention` with an explicit channel-MLP ``reduction`` (same classes and
    parameter names; the registered blocks fix it at 16)."""
    if kind is None:
        return None
    factories = {"cbam": lambda: CBAM(channels, reduction), "cbam_spatial": lambda: CBAM(channels, reduction,
                                                                                       channel=False),
                 "localgate": lambda: LocalCBAM(channels, reduction), "se": lambda: SqueezeExcite(channels, reduction)}
    if kind not in factories:
        raise ValueError(f"unknown gate {kind!r}; known: {sorted(factories)}")
    return factories[kind]()


class PatchDilatedNet(nn.Module):
    """The second grid's twin: a 4 px patch stem and three dilated 3x3 convolutions, no shortcuts.

    * ``stem``: ``conv4x4(3 -> width, stride 4)-BN-ReLU`` (96 px canvas -> 24 px map);
    * ``stage1..3``: ``conv3x3(dilation d_i, padding d_i)-BN-[gate]-ReLU`` with ``d`` from :data:`SCHEDULES`
      (``level``); the gate (``attention``) sits where CBAM sits in a block without shortcut;
    * ``stage3`` is the last spatial layer (its ERF is the network's); global average pooling, linear.

    Every level has the same parameters and FLOPs (a dilated kernel still has 9 taps); only the spread of the
    taps differs. ``reduction`` ``None``: :func:`gate_reduction` of the width.

    Shapes: ``(N, 3, H, W)`` normalised images (``H, W`` multiples of 4) -> ``(N, classes)`` logits;
    ``stage1..3`` are ``(N, width, H/4, W/4)``.
    """

    def __init__(self, num_classes: int = 10, attention: str | None = None, level: int = 1, width: int = 32,
                 reduction: int | None = None) -> None:
        super().__init__()
        if level not in SCHEDULES:
            raise ValueError(f"level must be one of {sorted(SCHEDULES)}, got {level}")
        self.level, self.schedule = int(level), SCHEDULES[level]
        red = gate_reduction(width) if reduction is None else int(reduction)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, 4, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks = []
        for d in self.schedule:
            parts = [nn.Conv2d(width, width, 3, 1, padding=d, dilation=d, bias=False), nn.BatchNorm2d(width)]
            gate = make_gate(attention, width, red)
            if gate is not None:
                parts.append(gate)
            parts.append(nn.ReLU())
            blocks.append(nn.Sequential(*parts))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.named_layers = {"stem": "stem", **{f"stage{i + 1}": f"blocks.{i}" for i in range(len(blocks))},
                             "pool": "pool", "fc": "fc"}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, classes)`` logits."""
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


PATCHNET_PARAMS = {None: 29770, "cbam": 30946, "se": 30646, "cbam_spatial": 30070, "localgate": 30946}
"""Parameter counts per gate of ``patchnet_l{level}`` at width 32 (reduction 8: 4 hidden units), equal for every
level (a test builds them)."""
for _lv in SCHEDULES:
    register_twins(f"patchnet_l{_lv}", PatchDilatedNet, "patchnet",
                   f"patch-stem dilation twin, ERF level {_lv} (3x3 dilations {SCHEDULES[_lv]})",
                   {f"patchnet_l{_lv}{suffix}": PATCHNET_PARAMS[kind] for kind, (suffix, _) in DILNET_VARIANTS.items()},
                   {"level": _lv}, variants=DILNET_VARIANTS)

__all__ = ["DILATIONS", "DILNET_GATES", "DILNET_VARIANTS", "GATE_HIDDEN_MIN", "PATCHNET_PARAMS", "SCHEDULES",
           "DilatedBlock", "DilatedNet", "PatchDilatedNet", "gate_reduction", "make_gate"]
