"""The torchvision zoo for the oracle tests (test_zoo_torchvision_*.py): one narrow builder per name.

Every torchvision classification architecture: named stages, and TRF == float64 gradient support on them.

For each name of ``torchvision.models.list_models(module=torchvision.models)`` the test builds the model
(random init, eval mode) and checks, on ``stem``, every ``stageK`` and the first block of stage 1
(names from :func:`erf.layers.named_layers`, derived by :mod:`erf.stages` except for ResNets):
local layers have exactly the gradient-support box of the centre unit and of unit (0, 0) (clipped to the
input); global layers have a support covering the input. See ``tests/zoo_oracle.py`` for the oracle and
for what is done against exact-zero gradients.

Built narrow, same topology. Builders that cannot be narrowed by a keyword are called with their private
helper (``torchvision.models.resnet._resnet`` ...) patched to return its arguments, so the twin gets the
architecture's own block counts, kernels, strides, groups, patch and window sizes, at fewer channels
(:data:`BUILT`). A TRF depends on the topology only, not on channel counts: names whose twins differ in
channel counts alone (:data:`SAME_TOPOLOGY`, e.g. ``convnext_base`` and ``convnext_small``) are checked once,
as their representative.

Coverage (all 80 names; none excluded):

================================  ===============================================  =====  ================
family (names)                    built as                                         input  global where
================================  ===============================================  =====  ================
alexnet                           full features, classifier replaced (no TRF)      96     head only
convnext_tiny/small/base/large    ConvNeXt, own depths, channels / 16              64     head only
densenet121/161/169/201           DenseNet, own block_config, growth 4, init 8     64     head only
efficientnet_b0..b7               own setting (width, depth mult), channels / 8    64     SE: from stage1
efficientnet_v2_s/m/l             own setting, channels / 8                        64     SE: from stage4
googlenet                         full, aux_logits=False                           64     head only
inception_v3                      full, aux_logits=False                           96     head only
maxvit_t                          MaxVit, own layers/partition, channels 8..64     224    SE (MBConv) in stage1
mnasnet0_5/0_75/1_0/1_3           full                                             64     head only
mobilenet_v2                      width_mult=0.25                                  64     head only
mobilenet_v3_large/small          width_mult=0.25                                  64     SE: stage3 / stage1
regnet_x_* (7), regnet_y_* (8)    RegNet, own depths/strides, widths 8..64         64     y: SE from stage1
resnet18..152, resnext, wide      ResNet, own blocks/groups, planes / 4            64     head only
shufflenet_v2_x0_5..x2_0          full                                             64     head only
squeezenet1_0/1_1                 full                                             64     head only
swin_t/s/b, swin_v2_t/s/b         SwinTransformer, own depths/window, embed 8      28/32  first attention
vgg11..19 (_bn)                   own cfg, channels / 16, classifier replaced      64     head only
vit_b_16/b_32/l_16/l_32/h_14      VisionTransformer, own patch/depth, width 16     4 p    first attention
================================  ===============================================  =====  ================

Swin is checked at an input whose every stage is one attention window (28 px, v2 32 px), where window
attention really mixes every position; at larger inputs the tracer still says global at the first window
attention, which is conservative (the support is the window): test_zoo_torchvision_attention.py.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any
from unittest import mock

import torch
import torchvision
from norms import randomise_norms
from torch import nn
from torchvision import models as tvm
from zoo_oracle import compare, covering_size, probe_layers, report, topology

from erf.layers import named_layers
from erf.trf import TRFTrace

NAMES = torchvision.models.list_models(module=torchvision.models)


def _captured(module: Any, helper: str, name: str) -> dict[str, Any]:
    """The arguments (by parameter name) the builder ``name`` passes to ``module.helper``: its architecture.

    Nothing is built; extra keyword arguments are under ``"kwargs"``."""
    signature = inspect.signature(getattr(module, helper))
    with mock.patch.object(module, helper, lambda *a, **k: signature.bind(*a, **k).arguments):
        return dict(getattr(tvm, name)(weights=None))


class _NarrowResNet(tvm.ResNet):
    """torchvision's ResNet with every stage's planes divided by :attr:`divisor` (block counts, strides, groups
    kept; 8, or 4 for grouped convolutions, whose group width would be 0 else)."""

    divisor = 8

    def _make_layer(self, block: Any, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        return super()._make_layer(block, planes // self.divisor, blocks, stride, dilate)


def _resnet(name: str) -> nn.Module:
    arch = _captured(tvm.resnet, "_resnet", name)
    block, kwargs = arch["block"], arch.get("kwargs", {})
    cls = type("_NarrowResNet", (_NarrowResNet,), {"divisor": 4 if kwargs.get("groups", 1) > 1 else 8})
    model = cls(block, arch["layers"], **kwargs)
    model.fc = nn.Linear(512 // cls.divisor * block.expansion, 10)
    return model


def _vgg(name: str) -> nn.Module:
    arch = _captured(tvm.vgg, "_vgg", name)
    layers = [v if v == "M" else v // 16 for v in tvm.vgg.cfgs[arch["cfg"]]]
    model = tvm.VGG.__new__(tvm.VGG)  # the classifier of VGG.__init__ alone is 120 M parameters
    nn.Module.__init__(model)
    model.features = tvm.vgg.make_layers(layers, batch_norm=arch["batch_norm"])
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = nn.Linear(layers[-2] * 49, 10)
    return model


def _densenet(name: str) -> nn.Module:
    arch = _captured(tvm.densenet, "_densenet", name)
    return tvm.DenseNet(growth_rate=4, block_config=arch["block_config"], num_init_features=8, bn_size=2)


def _efficientnet(name: str) -> nn.Module:
    arch = _captured(tvm.efficientnet, "_efficientnet", name)
    setting, last = arch["inverted_residual_setting"], arch["last_channel"]
    for cfg in setting:
        cfg.input_channels, cfg.out_channels = _thin(cfg.input_channels), _thin(cfg.out_channels)
    return tvm.EfficientNet(setting, arch["dropout"], stochastic_depth_prob=0.0, last_channel=last and _thin(last))


def _thin(channels: int) -> int:
    """Channels of a thin twin: a sixteenth, at least 4."""
    return max(4, channels // 16)


def _convnext(name: str) -> nn.Module:
    setting = _captured(tvm.convnext, "_convnext", name)["block_setting"]
    for cfg in setting:
        cfg.input_channels = _thin(cfg.input_channels)
        cfg.out_channels = _thin(cfg.out_channels) if cfg.out_channels else None
    return tvm.ConvNeXt(setting, stochastic_depth_prob=0.0)


def _swin(name: str) -> nn.Module:
    arch = _captured(tvm.swin_transformer, "_swin_transformer", name)
    return tvm.SwinTransformer(arch["patch_size"], 8, arch["depths"], [2, 2, 2, 2], arch["window_size"],
                               stochastic_depth_prob=0.0, **arch.get("kwargs", {}))


def _vit(name: str) -> nn.Module:
    arch = _captured(tvm.vision_transformer, "_vision_transformer", name)
    patch = arch["patch_size"]
    return tvm.VisionTransformer(image_size=3 * patch, patch_size=patch, num_layers=arch["num_layers"], num_heads=2,
                                 hidden_dim=8, mlp_dim=8)


def _maxvit(name: str) -> nn.Module:
    arch = _captured(tvm.maxvit, "_maxvit", name)
    return tvm.MaxVit(input_size=(224, 224), stem_channels=4, partition_size=arch["partition_size"],
                      block_channels=[4, 8, 8, 8], block_layers=arch["block_layers"], head_dim=4,
                      stochastic_depth_prob=0.0)


def _regnet(name: str) -> nn.Module:
    arch = _captured(tvm.regnet, "_regnet", name)
    params = arch["block_params"]
    narrow = tvm.regnet.BlockParams(params.depths, [8, 16, 16, 16], [8] * 4, params.bottleneck_multipliers,
                                    params.strides, params.se_ratio)
    return tvm.RegNet(narrow, stem_width=8)


def _full(name: str, **kwargs: Any) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return tvm.get_model(name, weights=None, **kwargs)


def _alexnet(name: str) -> nn.Module:
    model = _full(name)
    model.classifier = nn.Linear(256 * 36, 10)  # a head (no spatial map): 55 M parameters less to copy
    return model


BUILT: dict[str, tuple[Any, int, dict[str, Any]]] = {}
"""name -> (builder, input size, options): ``layouts`` of non-NCHW layers and ``prefix`` (class tokens)."""
for _name in NAMES:
    if _name.startswith(("resnet", "resnext", "wide_resnet")):
        BUILT[_name] = (_resnet, 64, {})
    elif _name.startswith("vgg"):
        BUILT[_name] = (_vgg, 64, {})
    elif _name.startswith("densenet"):
        BUILT[_name] = (_densenet, 64, {})
    elif _name.startswith("efficientnet"):
        BUILT[_name] = (_efficientnet, 48, {})
    elif _name.startswith("convnext"):
        BUILT[_name] = (_convnext, 64, {})
    elif _name.startswith("swin"):
        BUILT[_name] = (_swin, 32 if "v2" in _name else 28, {"layouts": "nhwc"})
    elif _name.startswith("vit"):
        BUILT[_name] = (_vit, 0, {"layouts": "tokens", "prefix": 1})
    elif _name.startswith("maxvit"):
        BUILT[_name] = (_maxvit, 224, {})
    elif _name.startswith("regnet"):
        BUILT[_name] = (_regnet, 48, {})
    elif _name.startswith("mobilenet"):
        BUILT[_name] = (lambda n: _full(n, width_mult=0.25), 64, {})
    elif _name == "alexnet":
        BUILT[_name] = (_alexnet, 96, {})
    elif _name == "googlenet":
        BUILT[_name] = (lambda n: tvm.GoogLeNet(aux_logits=False, init_weights=False), 64, {})
    elif _name == "inception_v3":
        BUILT[_name] = (lambda n: tvm.Inception3(aux_logits=False, init_weights=False), 96, {})
    else:  # mnasnet, shufflenet_v2, squeezenet: small at full width
        BUILT[_name] = (_full, 64, {})


def family(name: str) -> str:
    """The test file a name is checked in: ``cnn``, ``se`` (EfficientNet, RegNet) or ``attention``."""
    if name.startswith(("efficientnet", "regnet")):
        return "se"
    if name.startswith(("swin", "vit", "maxvit")):
        return "attention"
    return "cnn"


SAME_TOPOLOGY: dict[str, str] = {
    "convnext_base": "convnext_small", "convnext_large": "convnext_small",
    "efficientnet_b2": "efficientnet_b1",
    "mnasnet0_75": "mnasnet0_5", "mnasnet1_0": "mnasnet0_5", "mnasnet1_3": "mnasnet0_5",
    "wide_resnet50_2": "resnet50", "wide_resnet101_2": "resnet101",
    "resnext101_64x4d": "resnext101_32x8d",
    "shufflenet_v2_x1_0": "shufflenet_v2_x0_5", "shufflenet_v2_x1_5": "shufflenet_v2_x0_5",
    "shufflenet_v2_x2_0": "shufflenet_v2_x0_5",
    "swin_b": "swin_s", "swin_v2_b": "swin_v2_s",
}
"""duplicate -> representative: names whose twins have the same :func:`signature` (module tree, window
geometry, probed stage modules and input size: channel counts only differ), so the oracle of the
representative checks them too. Found by computing the signature of every name; kept true by
``test_zoo_torchvision_cnn.py::test_same_topology_table_is_exact``."""

REPRESENTATIVES = [n for n in NAMES if n not in SAME_TOPOLOGY]
"""The names the oracle checks, each once (whatever the order or ``-k`` selection)."""


def prepared(name: str) -> tuple[nn.Module, int, TRFTrace]:
    """``name``'s twin (norms randomised, float64, eval), the input size it is checked at and its trace.

    Asserts the stage names: ``stem`` and ``stage1..N`` without gaps."""
    torch.manual_seed(0)
    builder, size, _ = BUILT[name]
    model = randomise_norms(builder(name), open_gates=True).double()  # probed in place by the float64 oracle
    names = named_layers(model)
    stages = [n for n in names if n.startswith("stage") and "." not in n]
    assert "stem" in names and len(stages) >= 1, names
    assert all(names[f"stage{k + 1}"] for k in range(len(stages)))  # numbered 1..N without gaps
    # the first size from the nominal one whose every module reaches the border (see zoo_oracle.uncovered)
    size, trace = covering_size(model, size or model.image_size, tries=1 if not size else 12)
    return model, size, trace


def signature(model: nn.Module, size: int) -> tuple:
    """What the oracle's verdict depends on, channel counts aside: the topology, the probed modules, the size."""
    names = named_layers(model)
    return topology(model), tuple(names[n] for n in probe_layers(model)), size


def check(name: str) -> None:
    """Build ``name``'s twin, derive its stages and compare their TRFs with the gradient support."""
    assert name not in SAME_TOPOLOGY, f"{name} is checked as {SAME_TOPOLOGY.get(name)}"
    model, size, trace = prepared(name)
    options = BUILT[name][2]
    layers = probe_layers(model)
    layouts = {}
    if options.get("layouts") == "nhwc":  # Swin: channels-last from the stem on
        layouts = {n: "nhwc" for n in layers}
    elif options.get("layouts") == "tokens":  # ViT: the stem is the patch conv, the encoder holds tokens
        layouts = {n: "tokens" for n in layers if n != "stem"}
    verdicts = compare(model, size, layers, layouts, prefix=options.get("prefix", 0), trace=trace)
    assert all(v.ok for v in verdicts), f"{name} at {size} px\n{report(verdicts)}"
    for v in verdicts:  # global layers name the op and module that made them so
        if v.trf.is_global:
            assert v.trf.reason and " in " in v.trf.reason, v
