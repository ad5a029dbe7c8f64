"""Reliability and safety under bad input (issues 9 and 17): a table-driven suite.

Every bad-input case asserts the EXACT error class and that the message names
the offending file or argument, once through the library and once through the
command line (``erf.cli.main``: exit code 2, ``erf CMD: error: ...`` on stderr,
never a traceback). Output cases check ``--out``/``--force``, atomic writes and
Ctrl-C; reproducibility checks byte-identical ``measure.json`` and maps.

Everything runs on CPU with the 20k-parameter ``twoconv`` or ``resnet20``, a few
images and fixed seeds.
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
    assert_no_temporaries,
    folder_link,
    kwargs_checkpoint,
    legacy_none_bomb,
    none_bomb,
    png_header,
    snapshot,
)

from erf.checkpoints import NonFiniteWeightsWarning, load_checkpoint, save_checkpoint
from erf.data import ImageSet, load_source
from erf.errors import (
    ArchitectureError,
    CheckpointError,
    CheckpointNotFoundError,
    DataError,
    DataNotFoundError,
    ErfError,
    InputError,
    LayerNotFoundError,
    OutputExistsError,
    UndefinedERFError,
    UnknownModelError,
    UnsafeCheckpointError,
)
from erf.files import atomic
from erf.files.checkpoint_io import TrustedCodeWarning
from erf.files.outputs import OutputSet
from erf.measurement import measure
from erf.models import create_model

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "erf" / "schemas" / "measure.schema.json"
FAST = ["--images", "4", "--bootstrap", "0", "--no-plots"]


# ============================================================================ checkpoints
class _Code:
    """Pickles to ``os.makedirs(marker)``: loading it with full unpickling runs code (creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _state(name: str = "twoconv", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(name).state_dict()


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
    torch.save({"state_dict": _state(), "hook": _Code(tmp / "MARKER")}, tmp / "code.pt")
    return tmp / "code.pt"


def _code_legacy(tmp: Path) -> Path:
    """Pre-1.6 (non-zip) serialisation, which goes through a different loader path."""
    torch.save({"state_dict": _state(), "hook": _Code(tmp / "MARKER")}, tmp / "legacy.pt",
               _use_new_zipfile_serialization=False)
    return tmp / "legacy.pt"


def _wrong_architecture(tmp: Path) -> Path:
    """A ResNet-20 state_dict in an erf checkpoint that claims to be ``twoconv``."""
    torch.manual_seed(0)
    save_checkpoint(tmp / "claims_twoconv.pt", create_model("resnet20"), "twoconv")
    return tmp / "claims_twoconv.pt"


def _wrong_shapes(tmp: Path) -> Path:
    """A raw ResNet-20 state_dict with one 5x5 kernel where the model has 3x3."""
    state = _state("resnet20")
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
    torch.save({"state_dict": _state(), "x": _Eval(tmp / "MARKER")}, tmp / "eval4.pt", pickle_protocol=4)
    return tmp / "eval4.pt"


def _without_fc(tmp: Path) -> Path:
    state = _state("resnet20")
    del state["fc.weight"]
    torch.save(state, tmp / "no_fc.pth")
    return tmp / "no_fc.pth"


def _scalar_weight(tmp: Path) -> Path:
    state = _state()
    state["conv1.weight"] = torch.tensor(1.0)
    torch.save(state, tmp / "scalar.pth")
    return tmp / "scalar.pth"


def _kwargs_not_a_mapping(tmp: Path) -> Path:
    torch.save({"format": "erf.checkpoint", "format_version": 1, "model": "twoconv", "model_kwargs": [1, 2],
                "state_dict": _state()}, tmp / "kwargs_list.pt")
    return tmp / "kwargs_list.pt"


def _dtype(dtype: torch.dtype) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in _state().items()}, tmp / "typed.pth")
        return tmp / "typed.pth"

    return build


def _expanded(tmp: Path) -> Path:
    """One stored element viewed as 10^5 x 10^5 (stride 0): tiny file, 10^10 elements once materialised."""
    state = _state()
    state["conv1.weight"] = torch.zeros(1).expand(10**5, 10**5)
    torch.save(state, tmp / "expanded.pth")
    return tmp / "expanded.pth"


def _safetensors_truncated(tmp: Path) -> Path:
    from safetensors.torch import save_file

    save_file(_state(), tmp / "w.safetensors")
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

    torch.save({"state_dict": _state(), "x": Loud()}, tmp_path / "loud.pt", pickle_protocol=4)
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
def _nan(tmp: Path) -> Path:
    state = _state()
    state["conv1.weight"] = state["conv1.weight"].clone()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"] = state["fc.bias"].clone()
    state["fc.bias"][1] = float("inf")
    torch.save(state, tmp / "nan.pth")
    return tmp / "nan.pth"


def _cast(dtype: torch.dtype) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in _state().items()}, tmp / "half.pth")
        return tmp / "half.pth"

    return build


def _data_parallel(tmp: Path) -> Path:
    torch.save({"state_dict": {f"module.{k}": v for k, v in _state().items()}, "epoch": 3}, tmp / "dp.pth")
    return tmp / "dp.pth"


def _erf_half(tmp: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp / "half.pt", create_model("twoconv"), "twoconv", half=True)
    return tmp / "half.pt"


def _expected_state(kind: str) -> dict[str, torch.Tensor]:
    state = _state()
    if kind in ("float16", "bfloat16"):
        dtype = getattr(torch, kind)
        return {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in state.items()}
    return state


LOADS_WITH_NOTE = [
    ("float16 state_dict", _cast(torch.float16), "cast float16 tensors to float32", "float16"),
    ("bfloat16 state_dict", _cast(torch.bfloat16), "cast bfloat16 tensors to float32", "bfloat16"),
    ("float64 state_dict", _cast(torch.float64), "cast float64 tensors to float32", "float32"),
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
    path = _nan(tmp_path)
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
    torch.save(_state(), legacy, _use_new_zipfile_serialization=False)
    load_checkpoint(legacy)
    assert not calls[-1]["mmap"] and calls[-1]["weights_only"] is True  # mmap needs the zip format


# ============================================================================ inputs
def _bad_channels(tmp: Path):
    np.save(tmp / "gray.npy", np.zeros((2, 1, 32, 32), np.float32))
    return ["--data", f"tensor:{tmp / 'gray.npy'}"], str(tmp / "gray.npy")


def _empty_folder(tmp: Path):
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "readme.txt").write_text("no pictures here")
    return ["--data", f"folder:{tmp / 'no_images'}"], str(tmp / "no_images")


def _corrupt_image(tmp: Path):
    from PIL import Image

    folder = tmp / "imgs" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return ["--data", f"folder:{tmp / 'imgs'}"], str(folder / "broken.png")


def _missing_tensor(tmp: Path):
    return ["--data", f"tensor:{tmp / 'nope.npy'}"], str(tmp / "nope.npy")


def _nan_tensor(tmp: Path):
    a = np.zeros((2, 3, 8, 8), np.float32)
    a[0, 0, 0, 0] = np.nan
    np.save(tmp / "nan.npy", a)
    return ["--data", f"tensor:{tmp / 'nan.npy'}"], str(tmp / "nan.npy")


def _npz_tensor(tmp: Path):
    np.savez(tmp / "images.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    return ["--data", f"tensor:{tmp / 'images.npz'}"], str(tmp / "images.npz")


def _garbage_tensor(tmp: Path):
    (tmp / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00" + bytes(range(200)))
    return ["--data", f"tensor:{tmp / 'garbage.npy'}"], str(tmp / "garbage.npy")


def _args(*argv: str):
    return lambda tmp: (list(argv), argv[-1])


# ---------------------------------------------------------------- round two (issue 17)
def _bomb_folder(width: int) -> Callable[[Path], tuple[list[str], str]]:
    def build(tmp: Path):
        folder = tmp / "imgs"
        folder.mkdir()
        png_header(folder / "bomb.png", width, width)
        return ["--data", f"folder:{folder}"], str(folder / "bomb.png")

    return build


def _npz(**arrays) -> Callable[[Path], tuple[list[str], str]]:
    def build(tmp: Path):
        np.savez(tmp / "cifar.npz", **arrays)
        return ["--data", f"cifar10:{tmp / 'cifar.npz'}"], str(tmp / "cifar.npz")

    return build


def _npz_claiming_terabytes(tmp: Path):
    """An .npz whose x_test header claims 6 GB (a deflated member could expand to that): refused from the header."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                "shape": (2_000_000, 32, 32, 3)})
    with zipfile.ZipFile(tmp / "cifar.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_test.npy", b"\x93NUMPY\x01\x00" + head.getvalue()[8:] + b"\x00" * 4096)
        buf = io.BytesIO()
        np.save(buf, np.zeros(2, np.int64))
        z.writestr("y_test.npy", buf.getvalue())
    return ["--data", f"cifar10:{tmp / 'cifar.npz'}"], str(tmp / "cifar.npz")


def _npy_header_only(shape: tuple[int, ...], name: str):
    def build(tmp: Path):
        import io

        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
        (tmp / name).write_bytes(b"\x93NUMPY\x01\x00" + head.getvalue()[8:] + b"\x00" * 64)
        return ["--data", f"tensor:{tmp / name}"], str(tmp / name)

    return build


def _cuda(device: str):
    def build(tmp: Path):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA; the case is about a machine without it")
        return ["--device", device], device

    return build


@dataclass(frozen=True)
class BadInput:
    id: str
    build: Callable[[Path], tuple[list[str], str]]  # -> (extra CLI args, text the message must name)
    error: type[ErfError]
    fragment: str


BAD_INPUTS = [
    BadInput("1-channel tensor into a 3-channel model", _bad_channels, DataError, "1 channels"),
    BadInput("empty data folder", _empty_folder, DataError, "no image files"),
    BadInput("corrupt image in folder", _corrupt_image, DataError, "corrupt"),
    BadInput("missing tensor file", _missing_tensor, DataNotFoundError, "no such file"),
    BadInput("NaN in tensor file", _nan_tensor, DataError, "NaN"),
    BadInput("an .npz where an .npy is expected", _npz_tensor, DataError, "not a .npy array"),
    BadInput("corrupt .npy header", _garbage_tensor, DataError, "not a .npy array"),
    BadInput("unknown data source", _args("--data", "imagenet:/x"), InputError, "unknown data source"),
    BadInput("huge --input-size", _args("--input-size", "100000"), InputError, "--input-size"),
    BadInput("--input-size beyond memory", _args("--images", "64", "--input-size", "3000"), InputError, "GiB"),
    BadInput("--input-size below the image", _args("--input-size", "16"), InputError, "--input-size"),
    BadInput("--input-size not a number", _args("--input-size", "big"), InputError, "--input-size"),
    BadInput("non-existent layer", _args("--layer", "stag2"), LayerNotFoundError, "nearest valid names: stage2"),
    BadInput("layer after global pooling: pool", _args("--layer", "pool"), UndefinedERFError, "undefined"),
    BadInput("layer after global pooling: fc", _args("--layer", "fc"), UndefinedERFError, "undefined"),
    BadInput("unit outside the map", _args("--layer", "stage2", "--unit", "99,0"), InputError, "--unit"),
    BadInput("malformed unit", _args("--layer", "stage2", "--unit", "a,b"), InputError, "--unit"),
    BadInput("negative image count", _args("--images", "-3"), InputError, "--images"),
    BadInput("unknown device", _args("--device", "tpu"), InputError, "--device"),
    BadInput("zero batch size", _args("--batch-size", "0"), InputError, "--batch-size"),
    BadInput("negative batch size (silently measured nothing)", _args("--batch-size", "-4"), InputError,
             "--batch-size"),
    BadInput("negative bootstrap", _args("--bootstrap", "-1"), InputError, "--bootstrap"),
    BadInput("negative --tol", _args("--tol", "-1"), InputError, "--tol"),
    BadInput("NaN --tol", _args("--tol", "nan"), InputError, "--tol"),
    BadInput("negative seed", _args("--seed", "-1"), InputError, "--seed"),
    BadInput("CUDA device that does not exist", _args("--device", "cuda:99"), InputError, "--device"),
    # round two (issue 17)
    BadInput("--images 10^9 of noise (12 TB)", _args("--data", "noise:0", "--images", "1000000000"), InputError,
             "--images"),
    BadInput("--bootstrap 10^7", _args("--bootstrap", "10000000"), InputError, "--bootstrap"),
    BadInput("--tol 0", _args("--tol", "0"), InputError, "--tol"),
    BadInput("--device cuda without CUDA", _cuda("cuda"), InputError, "--device"),
    BadInput("--device cuda:7 without CUDA", _cuda("cuda:7"), InputError, "--device"),
    BadInput("folder: decompression-bomb PNG (900 Mpx)", _bomb_folder(30000), DataError, "decompression bomb"),
    BadInput("folder: PNG over 64 Mpx", _bomb_folder(9000), DataError, "refused before decoding"),
    BadInput("folder: symlink to a system file", folder_link("/etc/passwd"), DataError, "corrupt or unreadable"),
    BadInput("folder: symlink to a device", folder_link("/dev/zero"), DataError, "not a regular image file"),
    BadInput("cifar10 .npz: float pixels", _npz(x_test=np.zeros((2, 32, 32, 3)), y_test=np.zeros(2, int)), DataError,
             "uint8"),
    BadInput("cifar10 .npz: label 10", _npz(x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.array([0, 10])),
             DataError, "labels outside 0..9"),
    BadInput("cifar10 .npz: no labels", _npz(x_test=np.zeros((2, 32, 32, 3), np.uint8)), DataError, "y_test"),
    BadInput("cifar10 .npz: 3 labels for 2 images", _npz(x_test=np.zeros((2, 32, 32, 3), np.uint8),
                                                         y_test=np.zeros(3, int)), DataError, "N labels"),
    BadInput("cifar10 .npz: channels first", _npz(x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.zeros(2, int)),
             DataError, "N x H x W x 3"),
    BadInput("cifar10 .npz: object array", _npz(x_test=np.array([None, 1], dtype=object), y_test=np.zeros(2, int)),
             DataError, "not a readable npz"),
    BadInput("cifar10 .npz: a member claiming 6 GB", _npz_claiming_terabytes, DataError, "GiB"),
    BadInput("tensor .npy claiming 10^12 elements", _npy_header_only((10**6, 3, 1000, 333), "huge.npy"), DataError,
             "GiB"),
    BadInput("tensor:/dev/zero", lambda tmp: (["--data", "tensor:/dev/zero"], "/dev/zero"), DataError,
             "not a regular file"),
    BadInput("tensor .npy shorter than its header", _npy_header_only((64, 3, 32, 32), "short.npy"), DataError,
             "truncated"),
]


LIBRARY_PARAMETERS = {"--images": "count", "--unit": "units"}
"""Flags whose library parameter is not the flag's name with underscores."""


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_cli(case: BadInput, tmp_path: Path, run_cli) -> None:
    argv, named = case.build(tmp_path)
    line = assert_cli_error(run_cli, ["measure", "twoconv", *FAST, *argv], "measure", [named, case.fragment])
    assert case.error.__name__  # the class is checked through the library below
    assert line


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_library(case: BadInput, tmp_path: Path) -> None:
    """The same cases through ``load_source`` + ``measure``, checking the exact error class."""
    import argparse

    from erf.cli import build_parser
    from erf.commands.measure import parse_size, parse_unit
    from erf.runtime.devices import pick_device

    argv, named = case.build(tmp_path)
    args = build_parser().parse_args(["measure", "twoconv", *FAST, *argv])
    assert isinstance(args, argparse.Namespace)
    torch.manual_seed(0)
    model = create_model("twoconv")
    try:  # the command line's own parsing of --input-size and --unit names the flags
        size = parse_size(args.input_size)
        unit = parse_unit(args.unit)
    except InputError as exc:
        assert case.error is InputError and named in str(exc) and case.fragment in str(exc)
        return
    with pytest.raises(ErfError) as info:
        data = load_source(args.data, count=args.images)
        measure(model, data, args.layer, input_size=size, bootstrap=args.bootstrap, device=pick_device(args.device),
                batch_size=args.batch_size, tol=args.tol, seed=args.seed,
                units={name: unit for name in args.layer} if unit else None)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    # the library names its parameter where the command line names its flag (--batch-size -> batch_size)
    fragment = LIBRARY_PARAMETERS.get(case.fragment, case.fragment[2:].replace("-", "_")) \
        if case.fragment.startswith("--") else case.fragment
    assert named in str(info.value) and fragment in str(info.value)
    if case.fragment.startswith("--"):
        assert info.value.param == fragment and "--" not in str(info.value)


def test_wrong_channels_reach_measure_directly() -> None:
    """An ImageSet built in code (not via load_source) with 1 channel: DataError, not a torch RuntimeError."""
    data = ImageSet(torch.zeros(2, 1, 32, 32), torch.full((2,), -1), "two gray images")
    with pytest.raises(DataError, match="two gray images.*1 channels.*expects 3"):
        measure(create_model("twoconv"), data, None, bootstrap=0)


@pytest.mark.parametrize("side", [1, 4])
def test_images_smaller_than_the_trf(side: int, tmp_path: Path, run_cli) -> None:
    """Tiny images are measured (the ERF is clipped by the border) and every clipped layer is named in the note."""
    torch.manual_seed(0)
    model = create_model("resnet20")
    data = ImageSet(torch.rand(2, 3, side, side), torch.full((2,), -1), f"{side}px images", raw=True)
    result = measure(model, data, ["stage1.block1", "stage3"], bootstrap=0)
    note = next(n for n in result.notes if n.startswith("bounded by the frame"))
    for layer in result.layers:
        assert layer.trust.frame_bound and layer.name in note
        assert np.isfinite(layer.sum_map).all()
        assert layer.metrics.radius[0.95] <= np.hypot(side, side)
    np.save(tmp_path / "tiny.npy", data.normalized().numpy())
    code, _, err = run_cli("measure", "resnet20", "--data", f"tensor:{tmp_path / 'tiny.npy'}", *FAST)
    assert code == 0, err
    assert f"reaches the border of the {side}x{side} input" in err


def test_train_mode_is_switched_to_eval_with_a_note() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_source("bundled", count=4)
    result = measure(model, data, ["stage1"], bootstrap=0)
    assert any("train mode" in n and "eval" in n for n in result.notes)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "batch-norm statistics changed"
    quiet = measure(model.eval(), data, ["stage1"], bootstrap=0)
    assert not any("train mode" in n for n in quiet.notes)
    np.testing.assert_array_equal(result.layers[0].sum_map, quiet.layers[0].sum_map)


# ============================================================================ outputs
def _validate(doc: dict) -> None:
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"{SCHEMA_FILE} not written yet")
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(doc)


def test_existing_out_is_not_overwritten_without_force(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "measure.json").write_text('{"old": true}\n')
    (out / "maps").mkdir()
    (out / "maps" / "stem.npy").write_bytes(b"precious")
    before = snapshot(out)
    with pytest.raises(OutputExistsError, match="--force") as info:
        with OutputSet(out):
            pass
    assert str(out) in str(info.value)
    assert_cli_error(run_cli, ["measure", "twoconv", *FAST, "--out", str(out)], "measure", [str(out), "--force"])
    assert snapshot(out) == before
    code, _, err = run_cli("measure", "twoconv", *FAST, "--out", str(out), "--force")
    assert code == 0, err
    doc = json.loads((out / "measure.json").read_text())
    assert doc["schema"] == "erf.measure/1" and "old" not in doc
    assert np.load(out / "maps" / "stem.npy").ndim == 2
    assert_no_temporaries(out)
    _validate(doc)


OUT_COMMANDS = [  # argv (before --out) of every command that writes an output folder or file
    ("measure", ["measure", "twoconv", *FAST]),
    ("compare", ["compare", "twoconv", "twoconv_cbam", "--images", "2", "--bootstrap", "0"]),
    ("objects", ["objects", "ANNOTATIONS"]),
    ("study", ["study", "twoconv", "--images", "2"]),
    ("train", ["train", "twoconv", "--epochs", "1", "--subset", "8"]),
]


@pytest.mark.parametrize("command,argv", OUT_COMMANDS, ids=[c[0] for c in OUT_COMMANDS])
def test_every_command_keeps_a_non_empty_out(command: str, argv: list[str], tmp_path: Path, run_cli) -> None:
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\na.jpg,1,1,9,9,32,32\n")
    argv = [str(tmp_path / "a.csv") if a == "ANNOTATIONS" else a for a in argv]
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.json").write_text('{"precious": 1}')
    assert_cli_error(run_cli, [*argv, "--out", str(out)], command, [str(out), "--force"])
    assert snapshot(out) == {"keep.json": b'{"precious": 1}'}


def test_bench_keeps_an_existing_out_file(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "bench.json"
    target.write_text("old")
    assert_cli_error(run_cli, ["bench", "--model", "twoconv", "--images", "2", "--out", str(target)], "bench",
                      [str(target), "--force"])
    assert target.read_text() == "old"


def test_bench_reports_the_workers_own_error(run_cli) -> None:
    """An error inside a bench subprocess reaches the user as that error's message, not as a subprocess failure."""
    line = assert_cli_error(run_cli, ["bench", "--model", "nosuch", "--images", "2", "--quiet"], "bench",
                            ["unknown model 'nosuch'", "erf models"])
    assert "subprocess" not in line and "UnknownModelError" not in line
    assert_cli_error(run_cli, ["bench", "--model", "twoconv", "--layers", "nosuch", "--images", "2", "--quiet"],
                     "bench", ["no layer 'nosuch'"])


def test_out_that_is_a_file_is_refused(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert_cli_error(run_cli, ["measure", "twoconv", *FAST, "--out", str(target), "--force"], "measure",
                      [str(target), "not a folder"])
    assert target.read_text() == "keep me"


def test_atomic_writes_leave_target_untouched_on_interrupt(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "doc.json"
    atomic.write_json(target, {"a": 1})
    before = target.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    for write in (lambda: atomic.write_json(target, {"a": 2}), lambda: atomic.write_npy(target, np.zeros(3))):
        with pytest.raises(KeyboardInterrupt):
            write()
        assert target.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
    monkeypatch.undo()
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        atomic.write_json(target, {"a": float("nan")})
    assert target.read_bytes() == before


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    """The temporary file is private (mkstemp: 0600); the renamed result must not be."""
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    atomic.write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    os.chmod(tmp_path / "atomic.txt", 0o640)
    atomic.write_text(tmp_path / "atomic.txt", "y")  # an existing file keeps its mode
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == 0o640


def test_ctrl_c_during_measure(tmp_path: Path, run_cli, monkeypatch) -> None:
    import erf.measurement

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(erf.measurement, "measure", interrupted)
    out = tmp_path / "run"
    code, out_text, err = run_cli("measure", "twoconv", *FAST, "--out", str(out))
    assert code == 130
    assert "erf measure: interrupted" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))


def test_ctrl_c_while_writing_keeps_old_results(tmp_path: Path, run_cli, monkeypatch) -> None:
    """Interrupt the last write (measure.json) of a --force re-run: no temp file, no half-written file."""
    out = tmp_path / "run"
    code, _, err = run_cli("measure", "twoconv", *FAST, "--seed", "1", "--out", str(out))
    assert code == 0, err
    before = snapshot(out)
    real = atomic.write_bytes

    def write_bytes(path, data):
        if Path(path).name == "measure.json":
            with atomic.atomic_path(path) as tmp:
                Path(tmp).write_bytes(data[: len(data) // 2])  # half written when Ctrl-C arrives
                raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    code, _, err = run_cli("measure", "twoconv", *FAST, "--images", "3", "--seed", "1", "--out", str(out),
                           "--force")
    assert code == 130 and "Traceback" not in err
    assert_no_temporaries(out)
    assert (out / "measure.json").read_bytes() == before["measure.json"]
    json.loads((out / "measure.json").read_text())
    for p in out.rglob("*.npy"):
        assert np.load(p).shape == (32, 32)
    # issue 17: the maps written before the interrupt must not replace the old ones either (no mixed set)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder, no lock left


def test_measure_json_validates_even_for_a_dead_model(tmp_path: Path, run_cli) -> None:
    """All-zero weights give all-zero gradient maps: metrics stay finite and the JSON still validates."""
    torch.manual_seed(0)
    model = create_model("twoconv")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    save_checkpoint(tmp_path / "dead.pt", model, "twoconv")
    code, out, err = run_cli("measure", str(tmp_path / "dead.pt"), *FAST, "--bootstrap", "20", "--json",
                             "--out", str(tmp_path / "run"))
    assert code == 0, err
    doc = json.loads(out)
    assert json.loads((tmp_path / "run" / "measure.json").read_text())["layers"] == doc["layers"]
    _validate(doc)


ODD_RUNS = [  # unusual but legal settings: the document must still validate
    ("1 px images, global CBAM layers", "resnet20_cbam", ["--data", "tensor:TINY"]),
    ("non-square 5x7 images", "resnet20", ["--data", "tensor:RECT", "--layer", "stage2"]),
    ("constant images", "twoconv", ["--data", "constant:0"]),
    ("RepLKNet variant on a 40x48 canvas", "twoconv", ["--replknet", "--input-size", "40x48", "--fill", "mean"]),
    ("integrated gradients", "twoconv", ["--probe", "integrated-gradients", "--layer", "stage2"]),
]


@pytest.mark.parametrize("case", ODD_RUNS, ids=[c[0] for c in ODD_RUNS])
def test_measure_json_validates_for_odd_settings(case, tmp_path: Path, run_cli) -> None:
    _, model, extra = case
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tiny.npy", rng.random((3, 3, 1, 1), dtype=np.float32))
    np.save(tmp_path / "rect.npy", rng.random((3, 3, 5, 7), dtype=np.float32))
    extra = [{"tensor:TINY": f"tensor:{tmp_path / 'tiny.npy'}",
              "tensor:RECT": f"tensor:{tmp_path / 'rect.npy'}"}.get(a, a) for a in extra]
    code, out, err = run_cli("measure", model, "--images", "3", "--bootstrap", "10", "--no-plots", "--json",
                             "--out", str(tmp_path / "run"), *extra)
    assert code == 0, err
    doc = json.loads((tmp_path / "run" / "measure.json").read_text())
    assert doc["layers"] == json.loads(out)["layers"]
    _validate(doc)


# ============================================================================ reproducibility
def test_same_command_same_bytes(tmp_path: Path, run_cli) -> None:
    outputs = []
    for name in ("a", "b"):
        argv = ["measure", "resnet20", "--layer", "stem", "--layer", "stage2", "--images", "6", "--bootstrap", "30",
                "--seed", "3", "--json", "--no-plots", "--out", str(tmp_path / name)]
        code, out, err = run_cli(*argv)
        assert code == 0, err
        outputs.append(out)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert sorted(a) == ["maps/stage2.npy", "maps/stem.npy", "measure.json"]
    assert a == b
    assert outputs[0] == outputs[1]
    _validate(json.loads(a["measure.json"]))


def test_measure_uses_deterministic_cudnn_kernels(monkeypatch) -> None:
    """On a GPU, cuDNN's default backward kernels are not deterministic (two identical runs on an H200 gave
    different maps); measure runs its probes with ``cudnn.deterministic`` on and restores the flags after."""
    from erf.probes.gradient import GradientProbe

    seen = []
    real = GradientProbe.batch_maps

    def spy(self, *args, **kwargs):
        seen.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GradientProbe, "batch_maps", spy)
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    measure(create_model("twoconv"), load_source("bundled", count=3), ["stage2"], batch_size=2, bootstrap=0)
    assert seen == [(True, False), (True, False)]
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before


REPRO_COMMANDS = [  # other commands that write JSON (and figures) into --out
    ("measure with figures", ["measure", "twoconv", "--images", "4", "--bootstrap", "20", "--seed", "5"]),
    ("compare", ["compare", "twoconv", "twoconv_cbam", "--images", "4", "--bootstrap", "20"]),
    ("objects", ["objects", "ANNOTATIONS"]),
    ("study", ["study", "twoconv", "twoconv_cbam", "--images", "4", "--bootstrap", "20"]),
]


@pytest.mark.parametrize("case", REPRO_COMMANDS, ids=[c[0] for c in REPRO_COMMANDS])
def test_same_command_same_bytes_other_commands(case, tmp_path: Path, run_cli) -> None:
    _, argv = case
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h,label\n"
                                    "a.jpg,1,1,9,9,32,32,cat\nb.jpg,2,3,30,20,32,32,dog\n")
    argv = [str(tmp_path / "a.csv") if a == "ANNOTATIONS" else a for a in argv]
    runs = []
    for name in ("a", "b"):
        code, out, err = run_cli(*argv, "--json", "--out", str(tmp_path / name))
        assert code == 0, err
        runs.append((out, snapshot(tmp_path / name)))
    assert any(k.endswith(".json") for k in runs[0][1])
    assert runs[0][1] == runs[1][1]
    assert runs[0][0] == runs[1][0]


def test_cli_never_prints_python_warnings_as_tracebacks(tmp_path: Path, run_cli) -> None:
    """Warnings reach the user as one ``warning:`` line (the CLI's format), never with source lines."""
    path = _nan(tmp_path)
    code, _, err = run_cli("layers", str(path))
    assert code == 0
    warning_lines = [ln for ln in err.splitlines() if "NaN/Inf" in ln and ln.startswith("warning:")]
    assert len(warning_lines) == 1, err
