"""Stable names for any model (erf.stages): stem, stageN, stageN.blockM from the resolution changes.

Existing conventions (erf's own models, torchvision ResNets) are unchanged and take precedence; models
without one get derived names; ``theoretical_rf(model)`` returns every named layer.
"""

from __future__ import annotations

import torch
from references import tiny_model
from torch import nn

from erf.layers import default_layers, named_layers, resolve_layer
from erf.models import list_models
from erf.stages import derive_stages, derived_layers, stage_trace
from erf.trf import theoretical_rf, trace_receptive_fields


def _plain_cnn() -> nn.Sequential:
    """conv (r1) -> conv s2 (r2) -> conv s2 (r4) -> pool -> linear: a plain custom Sequential."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


class Block(nn.Module):
    def __init__(self, c: int, stride: int = 1) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, stride, 1)
        self.b = nn.Conv2d(c, c, 3, 1, 1)
        self.skip = nn.Conv2d(c, c, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(torch.relu(self.a(x))) + self.skip(x))


class Custom(nn.Module):
    """A custom module with a conv-bn-act stem, a body of two stages of blocks and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(nn.Sequential(Block(4), Block(4)), nn.Sequential(Block(4, 2), Block(4), Block(4)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.body(self.stem(x))), 1))


def test_plain_sequential_gets_stages_and_theoretical_rf_lists_them() -> None:
    model = _plain_cnn()
    assert named_layers(model) == {"stem": "1", "stage1": "3", "stage2": "5"}
    trf = theoretical_rf(model, input_size=(32, 32))  # no layers: every named layer (as its docstring says)
    assert list(trf) == ["stem", "stage1", "stage2"]
    assert [(t.size, t.stride) for t in trf.values()] == [((3, 3), (1, 1)), ((5, 5), (2, 2)), ((9, 9), (4, 4))]
    assert default_layers(model) == ["stem", "stage1", "stage2"]  # no blocks: every stage


def test_custom_module_stages_and_blocks() -> None:
    model = Custom()
    names = named_layers(model)
    assert names == {
        "stem": "stem", "stage1": "body.0", "stage1.block1": "body.0.0", "stage1.block2": "body.0.1",
        "stage2": "body.1", "stage2.block1": "body.1.0", "stage2.block2": "body.1.1", "stage2.block3": "body.1.2",
        "pool": "pool", "classifier": "classifier",
    }
    assert default_layers(model) == ["stem", "stage1.block1", "stage1.block2", "stage2.block1", "stage2.block2",
                                     "stage2.block3"]
    trf = theoretical_rf(model, input_size=(32, 32))
    assert set(trf) == set(names) and trf["pool"].is_global and trf["classifier"].feature_size is None
    assert resolve_layer(model, "body.1.2").name == "stage2.block3"  # a path resolves to its stable name


def test_no_reduction_first_and_last_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    assert named_layers(model) == {"stem": "0", "stage1": "3"}


def test_conventions_unchanged_and_first() -> None:
    """erf's registered models keep their ``named_layers``; torchvision ResNets their mapping, which the
    derivation reproduces."""
    for name in list_models():
        model = tiny_model(name)
        assert named_layers(model) == model.named_layers, name
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    names = named_layers(resnet)
    assert names["stem"] == "relu" and names["stage4"] == "layer4" and names["stage2.block2"] == "layer2.1"
    assert list(names)[-2:] == ["avgpool", "fc"]
    derived = derive_stages(resnet)
    assert derived == {k: v for k, v in names.items() if k not in ("avgpool", "fc")}


def test_names_do_not_depend_on_the_input_size() -> None:
    model = Custom()
    small = derive_stages(model, trace=trace_receptive_fields(model, (32, 32)))
    large = derive_stages(model, trace=trace_receptive_fields(model, (160, 160)))
    assert small == large == {k: v for k, v in named_layers(model).items() if k not in ("pool", "classifier")}


def test_cached_until_the_modules_change(monkeypatch) -> None:
    import erf.stages as stages

    calls = []
    real = stages.stage_trace
    monkeypatch.setattr(stages, "stage_trace", lambda m: calls.append(1) or real(m))
    model = _plain_cnn()
    derived_layers(model)
    derived_layers(model)
    named_layers(model)
    assert len(calls) == 1
    model.append(nn.Identity())
    derived_layers(model)
    assert len(calls) == 2


def test_untraceable_model_has_no_stages() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("needs a second input")

    assert stage_trace(Broken()) is None
    assert named_layers(Broken()) == {"fc": "fc"}


def test_model_with_a_fixed_input_size_is_traced_at_it() -> None:
    """torchvision's ViT accepts only its ``image_size``: the derivation traces there."""
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=40, patch_size=8, num_layers=3, num_heads=2, hidden_dim=8, mlp_dim=8)
    assert stage_trace(vit).input_size == (40, 40)
    names = named_layers(vit)
    assert names["stem"] == "conv_proj" and names["stage1"] == "encoder.layers"
    assert [names[f"stage1.block{b}"] for b in (1, 2, 3)] == [f"encoder.layers.encoder_layer_{b}" for b in range(3)]


def test_erf_layers_lists_stages_by_default(run_cli) -> None:
    """``erf layers torchvision:convnext_tiny`` (the issue's example): stages listed by default, local; only the
    head is global. ``--modules`` adds every other module after them."""
    code, out, _ = run_cli("layers", "torchvision:convnext_tiny", "--input-size", "96", "--modules")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    first = {r[0]: " ".join(r) for r in rows[:30]}
    assert list(first)[:5] == ["stem", "stage1", "stage2", "stage3", "stage4"]  # stages first, then their blocks
    assert "stage1.block1" in first
    assert {"stage2", "stage3", "stage4", "avgpool", "classifier"} <= set(first)
    assert not any("global" in first[n] for n in ("stem", "stage1", "stage2", "stage3", "stage4"))
    assert "global" in first["avgpool"]
    assert "features.1.0.block.3" in "\n".join(out.splitlines()[32:])  # a module path, listed with --modules
