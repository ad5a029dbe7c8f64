"""Checkpoints: erf format round trip, the article's raw state dicts, safety, clear errors."""

from __future__ import annotations

import os
import shlex

import pytest
import torch
from norms import randomise_norms
from torch import nn

from erf.checkpoints import bundled_weights, infer_architecture, load_checkpoint, save_checkpoint
from erf.errors import ArchitectureError, CheckpointError, UnknownModelError, UnsafeCheckpointError
from erf.files.checkpoint_io import TrustedCodeWarning, read_checkpoint_file
from erf.models import create_model, list_models


def _model(name: str, seed: int = 0, **kw) -> nn.Module:
    """Non-trivial BN buffers (and 7 batches tracked) so that a lost buffer changes the outputs or the state."""
    torch.manual_seed(seed)
    return randomise_norms(create_model(name, **kw), seed, batches_tracked=7)


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(123))


def _out(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


# ----------------------------------------------------------------------------- erf format
def test_round_trip_identical_outputs_and_metadata(tmp_path):
    model = _model("resnet20_cbam")
    path = tmp_path / "ck.pt"
    meta = {"data": "cifar10:x.npz", "subset": "0.1", "epochs": 3, "best_test_accuracy": 0.42}
    save_checkpoint(path, model, "resnet20_cbam", metadata=meta)
    loaded = load_checkpoint(path)
    assert loaded.name == "resnet20_cbam" and loaded.trained
    assert not loaded.model.training
    assert torch.equal(_out(loaded.model), _out(model))
    for k, v in meta.items():
        assert loaded.metadata[k] == v
    assert loaded.metadata["library_versions"]["torch"] == torch.__version__
    sd = loaded.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_round_trip_keeps_constructor_kwargs(tmp_path):
    model = _model("twoconv", widths=(8, 12))
    save_checkpoint(tmp_path / "t.pt", model, "twoconv", kwargs={"widths": (8, 12)})
    loaded = load_checkpoint(tmp_path / "t.pt")
    assert loaded.model.conv1.out_channels == 8 and loaded.model.conv2.out_channels == 12
    assert torch.equal(_out(loaded.model), _out(model))


def test_half_stores_fp16_and_loads_as_float32(tmp_path):
    model = _model("resnet20")
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(full, model, "resnet20")
    save_checkpoint(half, model, "resnet20", half=True)
    raw = read_checkpoint_file(half)
    floats = [v for v in raw["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert raw["state_dict"]["bn1.num_batches_tracked"].dtype == torch.int64
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    # equals the fp16-rounded weights exactly, and the original closely
    rounded = create_model("resnet20")
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    torch.testing.assert_close(_out(loaded.model), _out(rounded), rtol=0, atol=0)
    torch.testing.assert_close(_out(loaded.model), _out(model), rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- the article's raw state dicts
@pytest.mark.parametrize("name", ["norm_8d", "cbam_8d"])
def test_raw_source_state_dict_loads_with_inferred_architecture(tmp_path, name):
    model = _model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)  # what the source's training script writes
    loaded = load_checkpoint(path)
    assert loaded.name == name and loaded.kwargs == {}
    assert any("inferred" in n for n in loaded.notes)
    torch.testing.assert_close(_out(loaded.model), _out(model), rtol=0, atol=0)


@pytest.mark.parametrize("name,dtype", [("cbam_8d", torch.float16), ("norm_8d", torch.float16),
                                        ("cbam_8d", torch.bfloat16)])
def test_raw_half_precision_source_state_dict_loads(tmp_path, name, dtype):
    model = _model(name)
    path = tmp_path / f"{name}_half.pth"
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    loaded = load_checkpoint(path)
    assert loaded.name == name
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert any(str(dtype).replace("torch.", "") in n for n in loaded.notes)
    torch.testing.assert_close(_out(loaded.model), _out(model), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith(("dilnet_", "patchnet_"))])
def test_architecture_inferred_from_keys_and_shapes(name):
    with torch.device("meta"):
        state = create_model(name).state_dict()
    assert infer_architecture(state) == (name, {})


def test_dilation_twins_cannot_be_told_apart_by_their_weights():
    """The dilation twins share every key and shape (that is their point), so a raw state dict cannot name its d;
    they are left out of shape inference and load from erf checkpoints, which carry the registry name."""
    with torch.device("meta"):
        states = [create_model(f"dilnet_d{d}").state_dict() for d in (1, 2, 4)]
    shapes = [{k: tuple(v.shape) for k, v in s.items()} for s in states]
    assert shapes[0] == shapes[1] == shapes[2]


def test_inference_uses_shapes_not_names():
    with torch.device("meta"):
        twoconv = create_model("twoconv", widths=(8, 24)).state_dict()
        ten = create_model("norm_16d", num_classes=100).state_dict()
    assert infer_architecture(twoconv) == ("twoconv", {"widths": (8, 24)})
    assert infer_architecture(ten) == ("norm_16d", {"num_classes": 100})
    for attention in ("se", "cbam_spatial"):  # unregistered ResNeXt variants: generic name, real kwargs
        with torch.device("meta"):
            state = create_model("norm_8d", attention=attention).state_dict()
        assert infer_architecture(state) == ("norm_8d", {"attention": attention})


@pytest.mark.parametrize("prefix", ["module.", "module.module."])
def test_dataparallel_prefix_stripped(tmp_path, prefix):
    model = _model("resnet20_se")
    path = tmp_path / "dp.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    loaded = load_checkpoint(path)
    assert loaded.name == "resnet20_se"
    assert any("prefix" in n for n in loaded.notes)
    assert torch.equal(_out(loaded.model), _out(model))


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path, wrapper):
    model = _model("twoconv_cbam")
    path = tmp_path / "w.pth"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(X).sum().backward()
    opt.step()  # a training script's typical wrapper also holds the optimizer state
    torch.save({wrapper: {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 12,
                "best_acc": 0.5, "optimizer": opt.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.name == "twoconv_cbam"
    assert loaded.metadata == {"epoch": 12, "best_acc": 0.5}
    assert torch.equal(_out(loaded.model), _out(model))


def test_legacy_non_zip_serialization(tmp_path):
    model = _model("twoconv")
    path = tmp_path / "legacy.pth"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    assert torch.equal(_out(load_checkpoint(path).model), _out(model))


# ----------------------------------------------------------------------------- safety
class _Evil:
    """Unpickling this runs a shell command (creates ``marker``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_unsafe_pickle_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _model("twoconv").state_dict(), "hook": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="--trust") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)
    assert not marker.exists(), "the refused pickle ran code"
    # trusting the author: it loads (and, as promised, unpickling ran the payload)
    with pytest.warns(TrustedCodeWarning, match="may run code"):
        loaded = load_checkpoint(path, trust=True)
    assert loaded.name == "twoconv"
    assert marker.exists()


def test_pickled_whole_module_needs_trust(tmp_path):
    model = _model("twoconv")
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    with pytest.warns(TrustedCodeWarning, match="may run code"):
        loaded = load_checkpoint(path, trust=True)
    assert loaded.name == "custom"
    assert torch.equal(_out(loaded.model), _out(model))


def test_cli_refuses_unsafe_file_with_one_line(tmp_path, run_cli):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(_Evil(marker), path)
    code, out, err = run_cli("evaluate", path, "--images", "4")
    assert code == 2 and not marker.exists()
    assert err.startswith("erf evaluate: error:") and str(path) in err and "--trust" in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- errors name the file
def test_wrong_architecture_names_file_and_key(tmp_path):
    path = tmp_path / "wrong.pt"
    save_checkpoint(path, _model("twoconv"), "resnet20")  # erf format claiming the wrong model
    with pytest.raises(ArchitectureError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert str(path) in msg and "missing" in msg and "unexpected" in msg and "\n" not in msg


def test_norm_weights_into_cbam_model_refused(tmp_path):
    path = tmp_path / "mix.pt"
    save_checkpoint(path, _model("twoconv"), "twoconv_cbam")
    with pytest.raises(ArchitectureError, match="missing keys.*cbam|attention") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


def test_shape_mismatch_names_the_tensor(tmp_path):
    state = _model("resnet20").state_dict()
    state["layer3.2.conv2.weight"] = state["layer3.2.conv2.weight"][:, :32]
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(ArchitectureError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "layer3.2.conv2.weight" in str(exc.value)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ArchitectureError, match="unknown architecture") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing", "list"])
def test_broken_files_give_checkpoint_error_naming_file(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    good = tmp_path / "good.pt"
    save_checkpoint(good, _model("twoconv"), "twoconv")
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_newer_format_version_refused(tmp_path):
    path = tmp_path / "future.pt"
    save_checkpoint(path, _model("twoconv"), "twoconv", extra={"format_version": 99})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- other specs
def test_registry_name_spec():
    name = "twoconv_se"
    a, b = load_checkpoint(name, seed=3), load_checkpoint(name, seed=3)
    if bundled_weights(name) is None:
        assert not a.trained and any("random" in n for n in a.notes)
        assert torch.equal(_out(a.model), _out(b.model))
        assert not torch.equal(_out(a.model), _out(load_checkpoint(name, seed=4).model))
    else:
        assert a.trained
    assert load_checkpoint("twoconv_resnext29_16x8d".replace("twoconv", "norm")).name == "norm_8d"
    with pytest.raises(UnknownModelError, match="did you mean"):
        load_checkpoint("resnet2O")


def test_torchvision_spec_with_local_weights(tmp_path):
    spec = load_checkpoint("torchvision:resnet18")
    assert spec.name == "torchvision:resnet18" and not spec.trained
    path = tmp_path / "r18.pth"
    torch.save(spec.model.state_dict(), path)
    loaded = load_checkpoint(f"torchvision:resnet18@{path}")
    assert loaded.trained is None and loaded.state == "weights from file"  # weights, but no record of training
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), spec.model(X), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no model"):
        load_checkpoint("torchvision:not_a_net")


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint("runs/none/best.pt")
