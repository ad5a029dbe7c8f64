"""Model specs naming code: ``file.py:Class``, ``package.module:Class``, torchvision/timm at native size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from erf.checkpoints import load_checkpoint
from erf.errors import ArchitectureError, CheckpointError

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    input_size = 40

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                                      nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def tiny():
    return Net()
'''


@pytest.fixture()
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(NET)
    return path


def test_file_class_spec_with_and_without_weights(net_file: Path, tmp_path: Path) -> None:
    plain = load_checkpoint(f"{net_file}:Net", seed=1)
    assert plain.name.endswith("mynet.py:Net") and plain.trained is False and plain.input_size == (40, 40)
    assert any("random initialisation" in n for n in plain.notes)
    again = load_checkpoint(f"{net_file}:Net", seed=1)
    assert torch.equal(again.model.head.weight, plain.model.head.weight)  # seeded init
    weights = tmp_path / "w.pt"
    torch.save(plain.model.state_dict(), weights)
    loaded = load_checkpoint(f"{net_file}:tiny@{weights}", seed=5)  # a factory function works too
    assert torch.equal(loaded.model.head.weight, plain.model.head.weight) and loaded.trained is None


def test_module_class_spec(net_file: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(net_file.parent))
    loaded = load_checkpoint("mynet:Net")
    assert loaded.name == "mynet:Net" and isinstance(loaded.model, torch.nn.Module)
    sys.modules.pop("mynet", None)


@pytest.mark.parametrize("spec, fragment", [
    ("missing_file.py:Net", "no such file"),
    ("{file}:Nope", "defines no class or function 'Nope' (modules defined there: Net)"),
    ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
])
def test_code_spec_errors_name_the_problem(spec: str, fragment: str, net_file: Path) -> None:
    with pytest.raises(CheckpointError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(spec.format(file=net_file))


def test_unknown_state_dict_suggests_a_code_spec(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"weird.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ArchitectureError, match="file.py:Class@FILE"):
        load_checkpoint(path)


def test_measure_cli_on_a_file_class_at_its_input_size(net_file: Path, tmp_path: Path, run_cli) -> None:
    code, stdout, stderr = run_cli("measure", f"{net_file}:Net", "--images", "2", "--bootstrap", "0", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    # the 32 px images are resized to the file model's own 40 px input (no canvas, no padding)
    assert doc["input_size"] == [40, 40] and doc["image_size"] == [40, 40]
    assert doc["preprocessing"]["kind"] == "resize" and doc["preprocessing"]["source_size"] == [32, 32]
    assert any("resized from 32x32 to 40x40" in n for n in doc["notes"])
    assert [layer["name"] for layer in doc["layers"]]  # layers found for a model without a naming convention


def test_torchvision_models_get_their_own_input_size_and_normalisation() -> None:
    loaded = load_checkpoint("torchvision:resnet50")
    assert loaded.input_size == (224, 224)
    assert loaded.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert load_checkpoint("torchvision:inception_v3").input_size == (299, 299)


def test_layers_cli_defaults_to_the_native_size(run_cli) -> None:
    code, stdout, stderr = run_cli("layers", "torchvision:resnet18", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["input_size"] == [224, 224]


def test_timm_spec_native_size() -> None:
    pytest.importorskip("timm")
    loaded = load_checkpoint("timm:resnet18")
    assert loaded.input_size == (224, 224) and loaded.name == "timm:resnet18" and loaded.trained is False


VIT = '''
from torchvision.models.vision_transformer import VisionTransformer


def tiny_vit():
    model = VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    model.input_size = 32
    return model
'''


def test_a_vit_measures_from_the_cli_next_to_a_cnn(tmp_path: Path, run_cli) -> None:
    """A ViT from a file spec: its stages are found, its token layers are probed at the centre patch (class token
    skipped), and its ERF sits in the same JSON schema as a CNN's on the same images."""
    path = tmp_path / "vit.py"
    path.write_text(VIT)
    code, stdout, stderr = run_cli("measure", f"{path}:tiny_vit", "--layer", "stem", "--layer", "stage1", "--images",
                                   "4", "--bootstrap", "0", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    by_name = {layer["name"]: layer for layer in doc["layers"]}
    assert "stage1" in by_name and by_name["stage1"]["trf"]["global"]
    assert "token" in by_name["stage1"]["unit_rule"] and "class token" in by_name["stage1"]["unit_rule"]
    assert by_name["stage1"]["erf"]["radius"]["50"] > 0 and by_name["stem"]["trf"]["size"] == [4, 4]
    code, stdout, stderr = run_cli("measure", "resnet20", "--layer", "stage3", "--images", "4", "--bootstrap", "0",
                                   "--json")
    assert code == 0 and json.loads(stdout)["layers"][0]["erf"]["radius"]["50"] > 0


def test_a_model_that_rejects_the_input_size_is_told_plainly(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "vit.py"
    path.write_text(VIT)
    code, _, stderr = run_cli("layers", f"{path}:tiny_vit", "--input-size", "48")
    assert code == 2 and "does not run on a 3x48x48 input" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("erf layers: error: --input-size 48x48")
