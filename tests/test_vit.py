"""Vision transformers measured like CNNs: token layers probed at the patch token over the input centre.

The reference here is independent of the engine and of the tracer's layout: one image at a time, full
forward, plain autograd, the token index written by hand (``1 + i * grid + j`` for torchvision's ViT,
whose class token comes first).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from norms import randomise_norms
from references import reference_map
from torch import nn
from torchvision.models import VisionTransformer

from erf.data import ImageSet
from erf.layers import named_layers, resolve_layer
from erf.measurement import erf_defined, make_targets, measure
from erf.models import create_model


def _vit(image: int = 32, patch: int = 4, layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image, patch_size=patch, num_layers=layers, num_heads=2, hidden_dim=16,
                              mlp_dim=32)
    # non-trivial LayerNorm gains (unit gains would make the summed final norm constant)
    return randomise_norms(model)


def _images(count: int, size: int = 32, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randn(count, 3, size, size, generator=gen), torch.full((count,), -1), f"{count} noise")


def test_vit_layers_measured_at_the_centre_patch_token() -> None:
    model = _vit()
    data = _images(5)
    result = measure(model, data, None, batch_size=2, bootstrap=0)  # default layers: stem + every block
    assert [layer.name for layer in result.layers] == ["stem", "stage1.block1", "stage1.block2"]
    stem, block = result.layer("stem"), result.layer("stage1.block2")
    # the stem is the patch convolution: a local 4 x 4 patch, stride 4
    assert not stem.trf.is_global and stem.trf.size == (4, 4) and stem.trf.dims == (2, 3)
    # blocks: a (N, 65, 16) token sequence, global after the first attention, with the reason
    assert block.trf.is_global and block.trf.dims == (1,) and block.trf.prefix == 1
    assert block.trf.reason.startswith("multi_head_attention_forward") and "encoder_layer_0" in block.trf.reason
    assert block.unit == (3, 3) and "token 1 + 8 i + j" in block.unit_rule and "class token skipped" in block.unit_rule
    grid = 8
    for layer in result.layers:
        i, j = layer.unit
        index = (slice(None), i, j) if layer.name == "stem" else (1 + i * grid + j, slice(None))
        ref = reference_map(model, layer.path, None, data.images, index=index)
        scale = ref.max()
        assert scale > 0
        np.testing.assert_allclose(layer.group_maps, ref, rtol=0, atol=1e-5 * scale, err_msg=layer.name)
    # the ERF of a global token layer reaches the far corners (every patch attends to every other)
    assert block.sum_map[0, 0] > 0 and block.sum_map[-1, -1] > 0
    assert stem.sum_map[0, 0] == 0  # the stem sees its own patch only


def test_token_layers_are_defined_and_their_unit_rule_is_said() -> None:
    model = _vit(image=24, patch=8)
    targets, rules = make_targets(model, ["stage1", "stem"], (24, 24))
    by_name = {t.name: t for t in targets}
    t = by_name["stage1"]
    assert erf_defined(t.module, t.trf) and t.trf.feature_size == (3, 3) and t.unit == (1, 1)
    assert t.trf.unit_index(t.unit) == (slice(None), 1 + 3 + 1)
    assert "token 1 + 3 i + j" in rules["stage1"] and rules["stem"] == "nearest-centre"


def test_timm_vit_measures_with_derived_names() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              embed_dim=16, num_heads=2).eval()
    names = named_layers(model)
    assert names["stem"] == "patch_embed" and names["stage1.block2"] == "blocks.1"
    data = _images(4)
    result = measure(model, data, ["stem", "stage1.block1", "stage1"], batch_size=4, bootstrap=0)
    stem, block = result.layer("stem"), result.layer("stage1.block1")
    assert stem.trf.is_tokens and stem.trf.prefix == 0 and not stem.trf.is_global  # timm's patch embed: tokens
    assert block.trf.is_tokens and block.trf.prefix == 1 and block.trf.is_global
    assert "scaled_dot_product_attention" in block.trf.reason or "matmul" in block.trf.reason
    i, j = block.unit
    ref = reference_map(model, "blocks.0", None, data.images, index=(1 + 4 * i + j, slice(None)))
    np.testing.assert_allclose(block.group_maps, ref, rtol=0, atol=1e-5 * ref.max())
    i, j = stem.unit
    ref = reference_map(model, "patch_embed", None, data.images, index=(4 * i + j, slice(None)))
    np.testing.assert_allclose(stem.group_maps, ref, rtol=0, atol=1e-5 * ref.max())


def test_swin_channels_last_stage_measured() -> None:
    """Swin's stages are channels-last ``(N, H, W, C)`` maps: probed at ``[:, i, j, :]``."""
    from torchvision.models import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer([4, 4], 8, [2, 2], [2, 2], [4, 4], stochastic_depth_prob=0.0).eval()
    data = _images(3)
    result = measure(model, data, ["stem", "stage1"], batch_size=3, bootstrap=0)
    for layer in result.layers:
        assert layer.trf.dims == (1, 2)
        i, j = layer.unit
        ref = reference_map(model, layer.path, None, data.images, index=(i, j, slice(None)))
        np.testing.assert_allclose(layer.group_maps, ref, rtol=0, atol=1e-5 * ref.max(), err_msg=layer.name)
    assert result.layer("stage1").trf.is_global and not result.layer("stem").trf.is_global


def test_captum_gradient_agrees_on_token_layers() -> None:
    model = _vit(image=16, patch=4)
    data = _images(2, size=16)
    ours = measure(model, data, ["stage1.block2"], bootstrap=0).layer("stage1.block2")
    theirs = measure(model, data, ["stage1.block2"], probe="captum-gradient", bootstrap=0).layer("stage1.block2")
    np.testing.assert_allclose(ours.sum_map, theirs.sum_map, rtol=0, atol=1e-5 * ours.sum_map.max())


def test_vit_next_to_a_cnn_on_the_same_images() -> None:
    """The point of the feature: a ViT's ERF beside a CNN's, same images and metrics. On 32 px noise the
    untrained ViT's block (global: every patch attends to every other) and resnet20's stage 3 (local, 39 px
    TRF clipped by the input) both give a finite 50 % radius within the input."""
    data = _images(8)
    vit = measure(_vit(), data, ["stage1.block2"], bootstrap=0).layer("stage1.block2")
    torch.manual_seed(0)
    cnn = measure(create_model("resnet20").eval(), data, ["stage3"], bootstrap=0).layer("stage3")
    assert vit.trf.is_global and not cnn.trf.is_global
    for layer in (vit, cnn):
        r50 = layer.metrics.radius[0.5]
        assert np.isfinite(r50) and 0 < r50 < 32 * 2**0.5
    assert resolve_layer(_vit(), "stage1.block2").path == "encoder.layers.encoder_layer_1"
