"""The tracer follows the spatial axes through permutes and reshapes; only position-mixing ops are global.

Each case is a small module with the expected TRF worked out by hand, most also checked against the
float64 gradient support (independent of the tracer). Issue #16: ConvNeXt was called global because a
``permute`` to channels-last was marked global and ``linear`` always was.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_oracle import compare

from erf.probes import gradient_support
from erf.trf import trace_receptive_fields


class Wrap(nn.Module):
    """``conv3x3 -> body(x) -> conv3x3`` with ``out`` marking the output; ``body`` is a function."""

    def __init__(self, body, channels: int = 4) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, channels, 3, padding=1)
        self.mid = nn.Identity()
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Identity()
        self.body = body
        self.ln = nn.LayerNorm(channels)
        self.lin = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.c2(self.mid(self.body(self, self.c1(x)))))


def _channels_last_mlp(m: Wrap, y: torch.Tensor) -> torch.Tensor:  # ConvNeXt's block: LayerNorm + MLP per position
    y = y.permute(0, 2, 3, 1)
    y = m.lin(F.gelu(m.ln(y))) * torch.ones(y.shape[-1])  # layer scale
    return y.permute(0, 3, 1, 2)


def _window_partition(m: Wrap, y: torch.Tensor) -> torch.Tensor:  # Swin's partition, per-token work, reverse
    b, c, h, w = y.shape
    t = y.permute(0, 2, 3, 1).reshape(b, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 16, c)
    t = m.lin(m.ln(t))
    t = t.view(b, h // 4, w // 4, 4, 4, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    return t.permute(0, 3, 1, 2).contiguous()


def _channel_shuffle(m: Wrap, y: torch.Tensor) -> torch.Tensor:  # ShuffleNet
    b, c, h, w = y.shape
    return y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


def _tokens_round_trip(m: Wrap, y: torch.Tensor) -> torch.Tensor:  # flatten to tokens, class token, back
    b, c, h, w = y.shape
    t = y.flatten(2).transpose(1, 2)  # (B, HW, C)
    t = torch.cat([torch.zeros(b, 1, c), t], dim=1)
    t = m.lin(m.ln(t))[:, 1:]
    return t.transpose(1, 2).reshape(b, c, h, w)


def _channel_reductions(m: Wrap, y: torch.Tensor) -> torch.Tensor:  # CBAM's spatial gate style, softmax over C
    gate = torch.sigmoid(y.mean(1, keepdim=True) + y.amax(1, keepdim=True))
    return torch.softmax(y, dim=1) * gate + F.normalize(y, dim=1)


def _inplace_and_views(m: Wrap, y: torch.Tensor) -> torch.Tensor:
    _ = y[:, :, ::2, ::2]  # a strided view: must not change y's own field (__getitem__ once did)
    y = y.clone().mul_(2.0)
    return y + F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), 3, stride=1)  # reflected pixels: in the box


LOCAL = {  # body -> (TRF side at the output, expected layout of the `mid` module's output)
    "channels-last LayerNorm + MLP (ConvNeXt)": (_channels_last_mlp, 5),
    "window partition, per-token LayerNorm/Linear, reverse (Swin, no attention)": (_window_partition, 5),
    "channel shuffle (ShuffleNet)": (_channel_shuffle, 5),
    "tokens with a class token and back (ViT hybrid)": (_tokens_round_trip, 5),
    "reductions, softmax and normalize over channels": (_channel_reductions, 5),
    "in-place ops, strided views, reflect padding": (_inplace_and_views, 7),
}


@pytest.mark.parametrize("case", sorted(LOCAL))
def test_per_position_ops_stay_local(case: str) -> None:
    body, side = LOCAL[case]
    torch.manual_seed(0)
    model = Wrap(body).eval()
    trf = trace_receptive_fields(model, (16, 16)).trf
    assert not trf["mid"].is_global, trf["mid"].reason
    assert not trf["out"].is_global and trf["out"].size == (side, side) and trf["out"].stride == (1, 1)
    verdicts = compare(model, 16, ["mid", "out"])
    assert all(v.ok for v in verdicts), verdicts


def test_minimal_convnext_case_is_5x5() -> None:
    """The issue's minimal case: Conv3x3 -> permute -> LayerNorm/Linear -> permute back -> Conv3x3 is 5x5."""
    model = Wrap(_channels_last_mlp).eval()
    t = trace_receptive_fields(model, (16, 16)).trf
    assert t["ln"].dims == (1, 2) and t["ln"].size == (3, 3) and not t["ln"].is_global  # channels-last map
    assert t["out"].size == (5, 5) and t["out"].dims == (2, 3)
    unit = t["out"].central_unit()
    support = gradient_support(model, ["out"], (16, 16), units={"out": unit})["out"]
    assert support.box == t["out"].box(unit) == (5, 9, 5, 9)


def test_torchvision_convnext_stage2_is_local_224() -> None:
    """``convnext_tiny`` at 320 px: features.3 (stage 2) is local with the 224 px the issue measured:
    stem 4 (stride 4), 3 blocks of 7x7 at jump 4 (+72), 2x2 downsample at jump 4 (+4, jump 8), 3 blocks of
    7x7 at jump 8 (+144). Narrow twin, same topology."""
    from torchvision.models import ConvNeXt
    from torchvision.models.convnext import CNBlockConfig

    model = ConvNeXt([CNBlockConfig(4, 8, 3), CNBlockConfig(8, 16, 3), CNBlockConfig(16, 32, 9),
                      CNBlockConfig(32, None, 3)])
    trf = trace_receptive_fields(model, (320, 320)).trf
    assert not any(trf[f"features.{k}"].is_global for k in range(8))
    assert trf["features.3"].size == (224, 224) and trf["features.3"].stride == (8, 8)
    assert trf["avgpool"].is_global and "avgpool" in trf["avgpool"].reason


class Attention(nn.Module):
    """Tokens from a conv, then one of the ways to mix positions."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.qkv = nn.Linear(4, 12)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.tokens = nn.Identity()
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(self.conv(x).flatten(2).transpose(1, 2))  # (B, L, 4)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        if self.kind == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v)
        elif self.kind == "matmul":
            y = torch.softmax(q @ k.mT, dim=-1) @ v  # .mT is a property: it must be followed too
        elif self.kind == "einsum":
            y = torch.einsum("bij,bjd->bid", torch.einsum("bid,bjd->bij", q, k).softmax(-1), v)
        elif self.kind == "mha":
            y, _ = self.mha(t, t, t, need_weights=False)
        elif self.kind == "token mean":
            y = t + t.mean(dim=1, keepdim=True)
        elif self.kind == "token softmax":
            y = t * torch.softmax(t, dim=1)
        else:  # "linear over tokens" (an MLP-mixer token mix)
            y = F.linear(t.transpose(1, 2), torch.ones(t.shape[1], t.shape[1], dtype=t.dtype)).transpose(1, 2)
        return self.out(t + y)


@pytest.mark.parametrize("kind", ["sdpa", "matmul", "einsum", "mha", "token mean", "token softmax",
                                  "linear over tokens"])
def test_mixing_tokens_is_global_with_the_reason(kind: str) -> None:
    torch.manual_seed(0)
    model = Attention(kind).eval()
    trf = trace_receptive_fields(model, (8, 8)).trf
    tokens, out = trf["tokens"], trf["out"]
    assert tokens.dims == (1,) and tokens.prefix == 0 and tokens.feature_size == (8, 8) and not tokens.is_global
    assert out.is_global and out.dims == (1,) and out.feature_size == (8, 8)  # still a token map: probe-able
    op = {"sdpa": "scaled_dot_product_attention", "mha": "multi_head_attention_forward", "token mean": "mean",
          "token softmax": "softmax", "linear over tokens": "linear"}.get(kind, kind)
    assert out.reason.startswith(op), out.reason
    verdicts = compare(model, 8, ["tokens", "out"], {"tokens": "tokens", "out": "tokens"})
    assert all(v.ok for v in verdicts), verdicts


def test_per_token_einsum_and_weight_matmul_stay_local() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.w = nn.Parameter(torch.randn(4, 4))
            self.out = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.einsum("bchw,oc->bohw", self.conv(x), self.w)  # a 1x1 convolution
            t = self.w @ y.flatten(2)  # (4, 4) @ (B, 4, HW): per position
            return self.out(t.view_as(y))

    trf = trace_receptive_fields(M(), (8, 8)).trf["out"]
    assert not trf.is_global and trf.size == (3, 3) and trf.dims == (2, 3)


NORMS = {
    "group_norm": (lambda y: F.group_norm(y, 2), True),
    "instance_norm": (lambda y: F.instance_norm(y), True),
    "layer_norm over C, H, W": (lambda y: F.layer_norm(y, y.shape[1:]), True),
    "batch_norm (eval)": (lambda y: F.batch_norm(y, torch.zeros(4), torch.ones(4)), False),
    "local_response_norm": (lambda y: F.local_response_norm(y, 3), False),
    "roll": (lambda y: torch.roll(y, 1, dims=3), True),
    "flip": (lambda y: torch.flip(y, dims=(2,)), True),
    "circular pad": (lambda y: F.pad(y, (1, 1, 1, 1), mode="circular")[:, :, 1:-1, 1:-1], True),
    "adaptive pool to 1": (lambda y: y * F.adaptive_avg_pool2d(y, 1), True),
    "adaptive pool, non-divisible": (lambda y: F.adaptive_avg_pool2d(y, 5), True),
    "interpolate": (lambda y: F.interpolate(y, scale_factor=2.0), True),
}


@pytest.mark.parametrize("case", sorted(NORMS))
def test_position_mixing_norms_and_shifts(case: str) -> None:
    """group/instance norm (statistics over H, W) and layer norm over the map mix positions; eval batch norm
    and local response norm (across channels) do not; roll, flip, circular padding, global pooling too."""
    fn, is_global = NORMS[case]
    model = Wrap(lambda m, y: fn(y)).eval()
    trf = trace_receptive_fields(model, (16, 16)).trf
    assert trf["mid"].is_global == is_global, trf["mid"].reason
    if is_global:
        assert " in " in trf["mid"].reason


def test_adaptive_pool_divisible_is_a_window() -> None:
    """``adaptive_avg_pool2d`` from 16 to 4 is a 4x4 window of stride 4 (PyTorch's bins are exact)."""
    model = Wrap(lambda m, y: F.adaptive_avg_pool2d(y, 4)).eval()
    trf = trace_receptive_fields(model, (16, 16)).trf
    assert not trf["mid"].is_global and trf["mid"].size == (6, 6) and trf["mid"].stride == (4, 4)
    verdicts = compare(model, 16, ["mid", "out"])
    assert all(v.ok for v in verdicts), verdicts


def test_space_to_depth_is_a_window() -> None:
    """timm's Swin patch merging: ``reshape(B, H/2, 2, W/2, 2, C).permute(...).flatten(3)`` then a Linear:
    a 2x2 window of stride 2 (checked against the gradient support)."""

    def merge(m: Wrap, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        t = y.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return F.linear(t, torch.ones(c, 4 * c, dtype=t.dtype)).permute(0, 3, 1, 2)

    model = Wrap(merge).eval()
    trf = trace_receptive_fields(model, (16, 16)).trf
    assert not trf["mid"].is_global and trf["mid"].size == (4, 4) and trf["mid"].stride == (2, 2)
    assert trf["out"].size == (8, 8)  # 4 + 2 * (3 - 1)
    verdicts = compare(model, 16, ["mid", "out"])
    assert all(v.ok for v in verdicts), verdicts


def test_class_token_selection_has_no_map() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 4, stride=4)
            self.cls = nn.Parameter(torch.zeros(1, 1, 4))
            self.seq = nn.Identity()
            self.first = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.conv(x).flatten(2).transpose(1, 2)
            t = self.seq(torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1))
            return self.first(t[:, 0])

    trf = trace_receptive_fields(M(), (16, 16)).trf
    seq = trf["seq"]
    assert seq.dims == (1,) and seq.prefix == 1 and seq.feature_size == (4, 4) and not seq.is_global
    assert seq.unit_index((2, 3)) == (slice(None), 1 + 2 * 4 + 3)
    assert seq.size == (4, 4) and seq.stride == (4, 4)
    assert trf["first"].feature_size is None and trf["first"].is_global
