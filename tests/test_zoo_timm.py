"""timm models: named stages from timm's own ``feature_info``, and TRF == float64 gradient support on them.

Families (narrow, random init, eval mode; ``pretrained=False``):

=======================================  ===========================================  =====  =====================
model                                    built as                                     input  global where
=======================================  ===========================================  =====  =====================
resnet18, resnet50                       ``channels=(8, 16, 32, 64)``                 64     head only
convnext_tiny                            ``dims=(8, 16, 32, 64), depths=(1, 1, 2, 1)``  64     head only
efficientnet_b0, tf_efficientnet_b0      ``_gen_efficientnet(channel_multiplier=.25)``  64     SE from stage1
                                         (tf_: TensorFlow "same" padding, asymmetric)
vit_tiny_patch16_224                     ``img_size=48, depth=2, embed_dim=8``        48     first attention
deit_tiny_distilled_patch16_224          same, 2 prefix tokens (class + distillation)  48     first attention
swin_tiny_patch4_window7_224             ``img_size=28, embed_dim=8``, one window      28     first attention
=======================================  ===========================================  =====  =====================

Layouts the test expects (stated here, not read from the tracer): timm's ViT patch embedding gives tokens
without class token, its blocks tokens after 1 (DeiT distilled: 2) prefix tokens; timm's Swin is
channels-last ``(N, H, W, C)`` from the patch embedding on (its patch merging is a space-to-depth reshape,
read as a 2 x 2 window). ResNets keep erf's torchvision convention (``stem`` = ``conv1``, ``stageN`` =
``layerN``), which takes precedence over the derivation.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from norms import randomise_norms
from zoo_oracle import compare, covering_size, probe_layers, report

from erf.layers import named_layers

timm = pytest.importorskip("timm")


def _efficientnet(variant: str) -> Any:
    from timm.models.efficientnet import _gen_efficientnet

    return _gen_efficientnet(variant, channel_multiplier=0.25, pretrained=False)


MODELS: dict[str, tuple[Any, int, dict[str, str]]] = {
    "resnet18": (lambda: timm.create_model("resnet18", pretrained=False, channels=(8, 16, 32, 64)), 64, {}),
    "resnet50": (lambda: timm.create_model("resnet50", pretrained=False, channels=(8, 16, 32, 64)), 64, {}),
    "convnext_tiny": (lambda: timm.create_model("convnext_tiny", pretrained=False, dims=(8, 16, 32, 64),
                                                depths=(1, 1, 2, 1)), 64, {}),
    "efficientnet_b0": (lambda: _efficientnet("efficientnet_b0"), 64, {}),
    "tf_efficientnet_b0": (lambda: _efficientnet("tf_efficientnet_b0"), 64, {}),
    "vit_tiny_patch16_224": (lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48,
                                                       depth=2, embed_dim=8, num_heads=2), 48,
                             {"stem": "tokens0", "*": "tokens1"}),
    "deit_tiny_distilled_patch16_224": (lambda: timm.create_model("deit_tiny_distilled_patch16_224",
                                                                  pretrained=False, img_size=48, depth=2,
                                                                  embed_dim=8, num_heads=2), 48,
                                        {"stem": "tokens0", "*": "tokens2"}),
    "swin_tiny_patch4_window7_224": (lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                                                               img_size=28, embed_dim=8, num_heads=(2, 2, 2, 2)),
                                     28, {"*": "nhwc"}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_stages_and_trf_equal_gradient_support(name: str, one_thread) -> None:
    torch.manual_seed(0)
    build, size, layout = MODELS[name]
    model = randomise_norms(build(), open_gates=True).double()
    names = named_layers(model)
    stages = [n for n in names if n.startswith("stage") and "." not in n]
    assert "stem" in names and stages, names
    if not name.startswith("resnet"):  # timm's feature_info names the stages (ResNets: erf's convention)
        last_per_reduction = {f["reduction"]: f["module"] for f in model.feature_info}  # the last one wins
        assert [names[s] for s in stages] == list(last_per_reduction.values()), (names, model.feature_info)
    size, trace = covering_size(model, size, tries=1 if layout else 12)
    layers = probe_layers(model)
    layouts = {n: layout.get(n, layout.get("*", "nchw")) for n in layers}
    verdicts = compare(model, size, layers, layouts, trace=trace)
    assert all(v.ok for v in verdicts), f"{name} at {size} px\n{report(verdicts)}"
    for v in verdicts:
        if v.trf.is_global:
            assert v.trf.reason and " in " in v.trf.reason, v
    if name.startswith(("vit", "deit", "swin")):  # global from the first attention on, never before
        assert not trace.trf[names["stem"]].is_global
        assert all(trace.trf[names[s]].is_global and "attn" in trace.trf[names[s]].reason for s in stages)
    if name.startswith(("resnet", "convnext")):  # no position-mixing op before the head
        assert not any(v.trf.is_global for v in verdicts)


def test_timm_feature_info_names_the_stages() -> None:
    """The stages are timm's own features (module per reduction), the stem the layer before them."""
    model = timm.create_model("convnext_tiny", pretrained=False, dims=(8, 16, 32, 64), depths=(1, 1, 2, 1))
    names = named_layers(model)
    assert names["stem"] == "stem"
    assert [names[f"stage{k}"] for k in range(1, 5)] == [f["module"] for f in model.feature_info]
    assert names["stage3.block2"] == "stages.2.blocks.1"
    eff = _efficientnet("efficientnet_b0")
    names = named_layers(eff)
    assert names["stem"] == "bn1"
    assert [names[f"stage{k}"] for k in range(1, 6)] == [f["module"] for f in eff.feature_info]
