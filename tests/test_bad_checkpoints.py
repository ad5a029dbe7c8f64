"""Reliability under bad checkpoints (issues 9 and 17): a table-driven suite.

Every bad checkpoint asserts the EXACT error class and that the message names the offending file, once through
the library (``load_checkpoint``) and once through the command line (``erf.cli.main``: exit code 2,
``erf CMD: error: ...`` on stderr, never a traceback); code in a pickle runs only with ``--trust``; checkpoints
that load do so with a note (casts, DataParallel prefixes, non-finite weights). Shared helpers:
tests/reliability.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from references import (
    assert_cli_error,
    kwargs_checkpoint,
    legacy_none_bomb,
    none_bomb,
)
from reliability import FAST, model_state, nan_checkpoint

from erf.checkpoints import NonFiniteWeightsWarning, load_checkpoint, save_checkpoint
from erf.data import load_source
from erf.errors import (
    ArchitectureError,
    CheckpointError,
    CheckpointNotFoundError,
    ErfError,
    UndefinedERFError,
    UnknownModelError,
    UnsafeCheckpointError,
)
from erf.files.checkpoint_io import TrustedCodeWarning
from erf.measurement import measure
from erf.models import create_model


# ============================================================================ checkpoints
class _Code:
    """Pickles to ``os.makedirs(marker)``: loading it with full unpickling runs code (creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _valid(tmp: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp / "valid.pt", create_model("twoconv"), "twoconv")
    return tmp / "valid.pt"


def _truncated(tmp: Path) -> Path:
    data = _valid(tmp).read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.pt"


def _truncated_head(tmp: Path) -> Path:
    data = _valid(tmp).read_bytes()
    (tmp / "head.pt").write_bytes(data[:200])
    return tmp / "head.pt"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.pt").write_bytes(b"")
    return tmp / "empty.pt"


def _text(tmp: Path) -> Path:
    (tmp / "notes.pt").write_text("these are not weights\n")
    return tmp / "notes.pt"


def _random(tmp: Path) -> Path:
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return tmp / "random.pt"


def _json(tmp: Path) -> Path:
    (tmp / "weights.json").write_text(json.dumps({"conv1.weight": [[1.0, 2.0]], "fc.bias": [0.0]}))
    return tmp / "weights.json"


def _code(tmp: Path) -> Path:
    torch.save({"state_dict": model_state(), "hook": _Code(tmp / "MARKER")}, tmp / "code.pt")
    return tmp / "code.pt"


def _code_legacy(tmp: Path) -> Path:
    """Pre-1.6 (non-zip) serialisation, which goes through a different loader path."""
    torch.save({"state_dict": model_state(), "hook": _Code(tmp / "MARKER")}, tmp / "legacy.pt",
               _use_new_zipfile_serialization=False)
    return tmp / "legacy.pt"


def _wrong_architecture(tmp: Path) -> Path:
    """A ResNet-20 state_dict in an erf checkpoint that claims to be ``twoconv``."""
    torch.manual_seed(0)
    save_checkpoint(tmp / "claims_twoconv.pt", create_model("resnet20"), "twoconv")
    return tmp / "claims_twoconv.pt"


def _wrong_shapes(tmp: Path) -> Path:
    """A raw ResNet-20 state_dict with one 5x5 kernel where the model has 3x3."""
    state = model_state("resnet20")
    state["layer1.0.conv2.weight"] = torch.zeros(16, 16, 5, 5)
    torch.save(state, tmp / "shapes.pth")
    return tmp / "shapes.pth"


def _unknown_layout(tmp: Path) -> Path:
    torch.save({"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}, tmp / "other.pth")
    return tmp / "other.pth"


def _not_a_dict(tmp: Path) -> Path:
    torch.save([torch.zeros(3), torch.ones(2)], tmp / "list.pt")
    return tmp / "list.pt"


def _folder(tmp: Path) -> Path:
    (tmp / "ckpt_dir").mkdir()
    return tmp / "ckpt_dir"


def _missing(tmp: Path) -> Path:
    return tmp / "no_such_file.pt"


# ---------------------------------------------------------------- round two (issue 17)
class _Eval:
    """Pickles to ``eval(...)`` that creates ``marker``: a protocol-4 payload torch's safe loader calls corrupt."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"__import__('os').makedirs({self.marker!r})",))


def _eval_protocol4(tmp: Path) -> Path:
    torch.save({"state_dict": model_state(), "x": _Eval(tmp / "MARKER")}, tmp / "eval4.pt", pickle_protocol=4)
    return tmp / "eval4.pt"


def _without_fc(tmp: Path) -> Path:
    state = model_state("resnet20")
    del state["fc.weight"]
    torch.save(state, tmp / "no_fc.pth")
    return tmp / "no_fc.pth"


def _scalar_weight(tmp: Path) -> Path:
    state = model_state()
    state["conv1.weight"] = torch.tensor(1.0)
    torch.save(state, tmp / "scalar.pth")
    return tmp / "scalar.pth"


def _kwargs_not_a_mapping(tmp: Path) -> Path:
    torch.save({"format": "erf.checkpoint", "format_version": 1, "model": "twoconv", "model_kwargs": [1, 2],
                "state_dict": model_state()}, tmp / "kwargs_list.pt")
    return tmp / "kwargs_list.pt"


def _dtype(dtype: torch.dtype) -> Callable[[Path], Path]:
    """A builder of a state dict whose floating-point tensors are cast to ``dtype`` (refused or loaded with a note)."""

    def build(tmp: Path) -> Path:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model_state().items()}
        torch.save(state, tmp / "typed.pth")
        return tmp / "typed.pth"

    return build


def _expanded(tmp: Path) -> Path:
    """One stored element viewed as 10^5 x 10^5 (stride 0): tiny file, 10^10 elements once materialised."""
    state = model_state()
    state["conv1.weight"] = torch.zeros(1).expand(10**5, 10**5)
    torch.save(state, tmp / "expanded.pth")
    return tmp / "expanded.pth"


def _safetensors_truncated(tmp: Path) -> Path:
    from safetensors.torch import save_file

    save_file(model_state(), tmp / "w.safetensors")
    data = (tmp / "w.safetensors").read_bytes()
    (tmp / "w.safetensors").write_bytes(data[: len(data) // 2])
    return tmp / "w.safetensors"


def _safetensors_bad_header(tmp: Path) -> Path:
    (tmp / "bad.safetensors").write_bytes((40).to_bytes(8, "little") + b"{not json at all" + b" " * 24 + b"x" * 64)
    return tmp / "bad.safetensors"


@dataclass(frozen=True)
class BadCheckpoint:
    id: str
    build: Callable[[Path], Path]
    error: type[ErfError]
    fragment: str  # besides the file name


BAD_CHECKPOINTS = [
    BadCheckpoint("truncated zip", _truncated, CheckpointError, "truncated"),
    BadCheckpoint("first 200 bytes of a zip", _truncated_head, CheckpointError, "damaged PyTorch checkpoint"),
    BadCheckpoint("empty file", _empty, CheckpointError, "empty"),
    BadCheckpoint("text file", _text, CheckpointError, "not a PyTorch checkpoint"),
    BadCheckpoint("random bytes", _random, CheckpointError, "not a PyTorch checkpoint"),
    BadCheckpoint("JSON file", _json, CheckpointError, "not a PyTorch checkpoint"),
    BadCheckpoint("pickle that runs code", _code, UnsafeCheckpointError, "--trust"),
    BadCheckpoint("legacy pickle that runs code", _code_legacy, UnsafeCheckpointError, "--trust"),
    BadCheckpoint("architecture mismatch", _wrong_architecture, ArchitectureError, "missing keys"),
    BadCheckpoint("wrong kernel shape", _wrong_shapes, ArchitectureError, "layer1.0.conv2.weight"),
    BadCheckpoint("unknown layout", _unknown_layout, ArchitectureError, "unknown architecture"),
    BadCheckpoint("a pickled list", _not_a_dict, CheckpointError, "list"),
    BadCheckpoint("a folder", _folder, CheckpointError, "folder"),
    BadCheckpoint("missing file", _missing, CheckpointNotFoundError, "no such file"),
    # round two (issue 17)
    BadCheckpoint("10^7 NONE opcodes in a 10 KB zip", none_bomb, CheckpointError, "opcodes for 0 tensor records"),
    BadCheckpoint("10^7 NONE opcodes, legacy pickle", legacy_none_bomb, CheckpointError, "refused"),
    BadCheckpoint("protocol-4 pickle calling eval", _eval_protocol4, UnsafeCheckpointError, "builtins.eval"),
    BadCheckpoint("state_dict without fc.weight", _without_fc, ArchitectureError, "missing key 'fc.weight'"),
    BadCheckpoint("0-d weight", _scalar_weight, ArchitectureError, "conv1.weight is a 0-d tensor"),
    BadCheckpoint("model_kwargs widths 10^6 (36 TB)", kwargs_checkpoint((10**6, 10**6)), ArchitectureError,
                  "ask for 9,000,045,000,012 parameters"),
    BadCheckpoint("model_kwargs widths -1", kwargs_checkpoint((-1, 8)), ArchitectureError, "negative dimension"),
    BadCheckpoint("model_kwargs not a mapping", _kwargs_not_a_mapping, CheckpointError, "model_kwargs is a list"),
    BadCheckpoint("int64 weights", _dtype(torch.int64), ArchitectureError, "int64 values where the model has float32"),
    BadCheckpoint("bool weights", _dtype(torch.bool), ArchitectureError, "bool values"),
    BadCheckpoint("complex weights", _dtype(torch.complex64), CheckpointError, "complex weights are refused"),
    BadCheckpoint("stride-0 view of 10^10 elements", _expanded, CheckpointError, "weight elements"),
    BadCheckpoint("truncated safetensors", _safetensors_truncated, CheckpointError, "safetensors"),
    BadCheckpoint("safetensors with a garbage header", _safetensors_bad_header, CheckpointError, "safetensors"),
    BadCheckpoint("/dev/zero (torch.load would read forever)", lambda tmp: Path("/dev/zero"), CheckpointError,
                  "not a regular file"),
]


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=[c.id for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_library(case: BadCheckpoint, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    with pytest.raises(ErfError) as info:
        load_checkpoint(path)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert str(path) in str(info.value)
    assert case.fragment in str(info.value)
    assert not (tmp_path / "MARKER").exists(), "the checkpoint ran code without --trust"


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=[c.id for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_cli(case: BadCheckpoint, tmp_path: Path, run_cli) -> None:
    path = case.build(tmp_path)
    assert_cli_error(run_cli, ["layers", str(path)], "layers", [str(path), case.fragment])
    assert_cli_error(run_cli, ["measure", str(path), *FAST], "measure", [str(path)])
    assert not (tmp_path / "MARKER").exists(), "the checkpoint ran code without --trust"


@pytest.mark.parametrize("build", [_code, _code_legacy], ids=["zip", "legacy"])
def test_code_runs_only_with_trust(build: Callable[[Path], Path], tmp_path: Path, run_cli) -> None:
    path = build(tmp_path)
    marker = tmp_path / "MARKER"
    assert not marker.exists()
    with pytest.warns(TrustedCodeWarning, match="may run code when loaded") as record:
        loaded = load_checkpoint(path, trust=True)
    assert marker.exists(), "--trust must really unpickle the file (the oracle: its code ran)"
    assert str(path) in str(record[0].message) and "os.makedirs" in str(record[0].message)
    assert loaded.name == "twoconv" and loaded.trained is None  # a raw state dict: training not recorded
    os.rmdir(marker)
    code, _, err = run_cli("layers", str(path), "--trust")
    assert code == 0, err
    assert marker.exists()
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert len(warned) == 1 and f"{path} may run code when loaded (--trust)" in warned[0], err


def test_trust_warns_before_the_payload_runs(tmp_path: Path, run_cli) -> None:
    """The issue's case: under --trust a payload ran and nothing said so. The warning line comes first."""
    class Loud:
        def __reduce__(self):
            return (eval, ("__import__('sys').stderr.write('PAYLOAD RAN\\n')",))

    torch.save({"state_dict": model_state(), "x": Loud()}, tmp_path / "loud.pt", pickle_protocol=4)
    code, _, err = run_cli("layers", str(tmp_path / "loud.pt"), "--trust")
    lines = err.splitlines()
    assert code == 0 and "PAYLOAD RAN" in lines, err
    first = next(k for k, ln in enumerate(lines) if ln.startswith("warning: "))
    assert first < lines.index("PAYLOAD RAN") and "builtins.eval" in lines[first]
    code, _, err = run_cli("layers", str(_valid(tmp_path)), "--trust")  # nothing to warn about: safe to load
    assert code == 0 and "warning:" not in err


def test_usage_errors_are_one_line(run_cli) -> None:
    """Malformed option values are refused by argparse in the same ``erf CMD: error:`` form (exit 2)."""
    code, _, err = run_cli("measure", "twoconv", "--images", "many")  # argparse's SystemExit(2), as exit code 2
    assert code == 2
    assert "erf measure: error: argument --images" in err and "'many'" in err and "Traceback" not in err


def test_unknown_registry_name(run_cli) -> None:
    with pytest.raises(UnknownModelError) as info:
        load_checkpoint("resnet2O")
    assert "resnet2O" in str(info.value)
    assert_cli_error(run_cli, ["layers", "resnet2O"], "layers", ["resnet2O"])


# ---------------------------------------------------------------- checkpoints that load, with a note
def _data_parallel(tmp: Path) -> Path:
    torch.save({"state_dict": {f"module.{k}": v for k, v in model_state().items()}, "epoch": 3}, tmp / "dp.pth")
    return tmp / "dp.pth"


def _erf_half(tmp: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp / "half.pt", create_model("twoconv"), "twoconv", half=True)
    return tmp / "half.pt"


def _expected_state(kind: str) -> dict[str, torch.Tensor]:
    state = model_state()
    if kind in ("float16", "bfloat16"):
        dtype = getattr(torch, kind)
        return {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in state.items()}
    return state


LOADS_WITH_NOTE = [
    ("float16 state_dict", _dtype(torch.float16), "cast float16 tensors to float32", "float16"),
    ("bfloat16 state_dict", _dtype(torch.bfloat16), "cast bfloat16 tensors to float32", "bfloat16"),
    ("float64 state_dict", _dtype(torch.float64), "cast float64 tensors to float32", "float32"),
    ("DataParallel module. prefix", _data_parallel, "stripped a DataParallel", "float32"),
    ("erf checkpoint saved with half=True", _erf_half, "cast float16 tensors to float32", "float16"),
]


@pytest.mark.parametrize("case", LOADS_WITH_NOTE, ids=[c[0] for c in LOADS_WITH_NOTE])
def test_checkpoint_loads_with_note(case, tmp_path: Path, run_cli) -> None:
    _, build, note, kind = case
    path = build(tmp_path)
    loaded = load_checkpoint(path)
    assert any(note in n for n in loaded.notes), loaded.notes
    assert loaded.name == "twoconv"
    got = loaded.model.state_dict()
    for key, value in _expected_state(kind).items():
        assert got[key].dtype == value.dtype
        assert torch.equal(got[key], value), key
    code, _, err = run_cli("layers", str(path))
    assert code == 0 and f"note: {note}" in err


def test_non_finite_weights_warn_and_are_reported(tmp_path: Path, run_cli) -> None:
    path = nan_checkpoint(tmp_path)
    with pytest.warns(NonFiniteWeightsWarning, match="non-finite") as record:
        loaded = load_checkpoint(path)
    assert str(path) in str(record[0].message) and "2 tensors" in str(record[0].message)
    assert any("NaN/Inf" in n and str(path) in n for n in loaded.notes)
    with pytest.raises(UndefinedERFError, match="'stem'.*NaN/Inf.*undefined"):
        measure(loaded.model, load_source("bundled", count=2), ["stem"], bootstrap=0)
    line = assert_cli_error(run_cli, ["measure", str(path), "--json", *FAST], "measure", ["NaN/Inf", "undefined"])
    assert "layer 'stem'" in line


def test_own_checkpoints_with_numpy_metadata_load_without_trust(tmp_path: Path) -> None:
    """save_checkpoint stores plain Python, so erf never writes a file its safe loader would refuse."""
    torch.manual_seed(0)
    model = create_model("twoconv", widths=(4, 6))
    meta = {"best_test_accuracy": np.float32(0.625), "epochs": np.int64(3), "curve": np.array([0.5, 0.625]),
            "data": tmp_path / "cifar.npz", "ok": np.bool_(True)}
    save_checkpoint(tmp_path / "np.pt", model, "twoconv", {"widths": (4, 6)}, meta)
    loaded = load_checkpoint(tmp_path / "np.pt")
    assert loaded.metadata["best_test_accuracy"] == 0.625 and type(loaded.metadata["epochs"]) is int
    assert loaded.metadata["curve"] == [0.5, 0.625] and loaded.metadata["data"] == str(tmp_path / "cifar.npz")
    assert loaded.metadata["ok"] is True and loaded.kwargs == {"widths": (4, 6)}
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))


def test_library_specs_with_bad_weights(tmp_path: Path, run_cli) -> None:
    bad = _random(tmp_path)
    for spec, error, named in ((f"torchvision:resnet18@{bad}", CheckpointError, str(bad)),
                               ("torchvision:resnet_nope", CheckpointError, "resnet_nope")):
        with pytest.raises(ErfError) as info:
            load_checkpoint(spec)
        assert type(info.value) is error and named in str(info.value)
        assert_cli_error(run_cli, ["layers", spec], "layers", [named])


def test_zip_checkpoints_are_memory_mapped(tmp_path: Path, monkeypatch) -> None:
    """A large file must not be read into memory twice: torch.load(mmap=True) for zip checkpoints."""
    import erf.files.checkpoint_io as ck

    calls: list[dict] = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ck.torch, "load", spy)
    load_checkpoint(_valid(tmp_path))
    assert calls[-1]["mmap"] is True and calls[-1]["weights_only"] is True
    legacy = tmp_path / "legacy_ok.pt"
    torch.save(model_state(), legacy, _use_new_zipfile_serialization=False)
    load_checkpoint(legacy)
    assert not calls[-1]["mmap"] and calls[-1]["weights_only"] is True  # mmap needs the zip format
