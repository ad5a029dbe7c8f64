"""Reliability under bad inputs (issues 9 and 17): a table-driven suite.

Every bad data source or argument of ``erf measure`` asserts the EXACT error class and that the message names
the offending file or argument, once through the library (``load_source`` + ``measure``, the parameter named)
and once through the command line (exit code 2, ``erf CMD: error: ...`` on stderr, never a traceback); odd but
legal inputs (images smaller than the TRF, a model in train mode) are measured with a note. Shared helpers:
tests/reliability.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from references import (
    assert_cli_error,
    folder_link,
    png_header,
)
from reliability import FAST

from erf.data import ImageSet, load_source
from erf.errors import (
    DataError,
    DataNotFoundError,
    ErfError,
    InputError,
    LayerNotFoundError,
    UndefinedERFError,
)
from erf.measurement import measure
from erf.models import create_model


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
