"""Round two of the attacker's inputs (issue 17): the families ``test_bad_checkpoints.py`` and
``test_bad_inputs.py`` did not try yet.

Tables, each case through the library (exact error class, message naming the file or parameter) and the
command line (exit 2, one ``erf CMD: error:`` line naming the file or flag, no traceback): annotation files
(COCO nested 10^5 deep, 5000-digit numbers, list ids, non-UTF-8; YOLO, CSV and mask oddities), arguments of
``erf train`` / ``compare`` / ``objects`` / ``--distributed``, ``--resume`` from corrupt or foreign runs. Then
the guarantees that are about time and memory: the 10^7-``NONE`` checkpoint is refused without ``torch.load``
being called and without walking its opcodes, a 16-bit label mask is read in one pass, COCO annotations cost
bounded memory each; and safetensors files (never read through ``torch.load``).

Time bounds only where time is the point (a blow-up that was fixed), each relative to a baseline measured on
the same machine in the same test or module (so a machine 10x slower, or loaded, passes as well): the
``NONE`` bomb against walking 10^6 opcodes, the label mask against one pass per label, the real processes of
round three against a trivial ``erf layers twoconv`` process (``process_seconds``). Elsewhere the refusal
itself (the exact error before any work, spied loaders) is what is checked.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import references
import torch
from references import assert_cli_error, folder_link, kwargs_checkpoint, legacy_none_bomb, none_bomb, png_header
from reliability import as_from_a_terminal

from erf.checkpoints import load_checkpoint, save_checkpoint
from erf.comparison import compare
from erf.data import load_source
from erf.data.sources import subset_count
from erf.errors import AnnotationError, CheckpointError, ErfError, InputError, LayerError
from erf.models import create_model
from erf.training import Recipe, check_recipe

# ============================================================================ annotation files
COCO = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 10, "image_id": 1, "bbox": [4, 5, 20, 10], "category_id": 3}],
        "categories": [{"id": 3, "name": "cat"}]}


def _coco_text(text: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / "instances.json").write_text(text)
        return tmp / "instances.json"

    return build


def _coco_with(**annotation) -> Callable[[Path], Path]:
    doc = json.loads(json.dumps(COCO))
    doc["annotations"][0].update(annotation)
    return _coco_text(json.dumps(doc))


def _coco_bytes(data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / "instances.json").write_bytes(data)
        return tmp / "instances.json"

    return build


def _yolo(lines: str, classes: bytes | None = None, sizes: str = "a,64,48\n") -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        folder = tmp / "labels"
        folder.mkdir()
        (folder / "a.txt").write_text(lines)
        (folder / "sizes.csv").write_text(sizes)
        if classes is not None:
            (folder / "classes.txt").write_bytes(classes)
        return folder

    return build


def _csv(data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / "boxes.csv").write_bytes(data)
        return tmp / "boxes.csv"

    return build


def _mask_bomb(tmp: Path) -> Path:
    png_header(tmp / "mask.png", 30000, 30000)
    return tmp / "mask.png"


@dataclass(frozen=True)
class BadAnnotation:
    id: str
    build: Callable[[Path], Path]
    fragment: str
    fmt: str = "auto"


DEEP = "[" * 100_000 + "]" * 100_000
BAD_ANNOTATIONS = [
    BadAnnotation("COCO nested 10^5 deep", _coco_text(DEEP), "nested too deeply"),
    BadAnnotation("COCO 5000-digit integer in bbox", _coco_text(json.dumps(COCO).replace("[4, 5,", "[" + "9" * 5000
                                                                                            + ", 5,")), "digits"),
    BadAnnotation("COCO 400-digit integer in bbox", _coco_with(bbox=[10**400, 5, 20, 10]), "non-numeric bbox"),
    BadAnnotation("COCO image_id [1]", _coco_with(image_id=[1]), "image_id [1] is not an integer or a string"),
    BadAnnotation("COCO category_id [1]", _coco_with(category_id=[1]), "category_id [1] is not an integer"),
    BadAnnotation("COCO image_id {}", _coco_with(image_id={"a": 1}), "is not an integer or a string"),
    BadAnnotation("COCO not UTF-8", _coco_bytes(json.dumps(COCO).replace("a.jpg", "\xe9.jpg").encode("latin-1")),
                  "not UTF-8"),
    BadAnnotation("YOLO NaN coordinates", _yolo("0 nan 0.5 0.2 0.2\n"), "must lie in [0, 1]"),
    BadAnnotation("YOLO infinite size", _yolo("0 0.5 0.5 0.2 0.2\n", sizes="a,inf,48\n"), "non-finite"),
    BadAnnotation("YOLO 5000-digit class id", _yolo("9" * 5000 + " 0.5 0.5 0.2 0.2\n"), "non-numeric field"),
    BadAnnotation("YOLO classes.txt not UTF-8", _yolo("0 0.5 0.5 0.2 0.2\n", classes=b"\xff\xfecat\n"), "not UTF-8"),
    BadAnnotation("CSV with a NUL byte", _csv(b"image,x0,y0,x1,y1,image_w,image_h\na.jpg,1,\x00,9,9,32,32\n"),
                  "non-numeric box"),
    BadAnnotation("CSV field over the csv limit", _csv(b"a.jpg,1,1,9,9,32,32,\"" + b"x" * 200_000 + b"\"\n"),
                  "unreadable CSV"),
    BadAnnotation("CSV 1e400 corner", _csv(b"a.jpg,1e400,1,9,9,32,32\n"), "non-finite"),
    BadAnnotation("mask PNG decompression bomb", _mask_bomb, "decompression bomb"),
    BadAnnotation("/dev/zero as a CSV file", lambda tmp: Path("/dev/zero"), "not a regular file", "csv"),
    BadAnnotation("/dev/zero, format guessed", lambda tmp: Path("/dev/zero"), "not a regular file"),
]


@pytest.mark.parametrize("case", BAD_ANNOTATIONS, ids=[c.id for c in BAD_ANNOTATIONS])
def test_bad_annotation_library(case: BadAnnotation, tmp_path: Path) -> None:
    from erf.objects import read_annotations

    path = case.build(tmp_path)
    with pytest.raises(ErfError) as info:
        read_annotations(path, case.fmt)
    assert type(info.value) is AnnotationError, f"{type(info.value).__name__}: {info.value}"
    assert str(path) in str(info.value) and case.fragment in str(info.value), str(info.value)
    assert len(str(info.value)) < 600, "the message quotes the value, it does not dump it"


@pytest.mark.parametrize("case", BAD_ANNOTATIONS, ids=[c.id for c in BAD_ANNOTATIONS])
def test_bad_annotation_cli(case: BadAnnotation, tmp_path: Path, run_cli) -> None:
    path = case.build(tmp_path)
    out = tmp_path / "o"
    assert_cli_error(run_cli, ["objects", str(path), "--out", str(out)], "objects", [str(path), case.fragment])
    assert not out.exists(), "nothing is written for a refused input"
    code, _, err = run_cli("objects", str(path), "--skip-bad")  # skipping bad records: still one line or a result
    assert code in (0, 2) and "Traceback" not in err


def test_coco_with_a_byte_order_mark_loads(tmp_path: Path, run_cli) -> None:
    from erf.objects import read_annotations

    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(COCO).encode())
    ann = read_annotations(tmp_path / "bom.json")
    assert [(b.label, b.x0, b.y0, b.x1, b.y1) for b in ann.boxes] == [("cat", 4.0, 5.0, 24.0, 15.0)]
    code, _, err = run_cli("objects", str(tmp_path / "bom.json"), "--json")
    assert code == 0, err


def test_coco_annotations_cost_linear_time_and_bounded_memory(tmp_path: Path) -> None:
    """10^6 annotations (COCO train2017 has 860k) must stay bounded: the memory per annotation (traced
    allocations, deterministic) does not grow from 10^4 to 4 x 10^4 annotations and stays under 2 KB. Time is
    not asserted here (a loaded machine makes timed tests flaky; speed goals live in `erf bench`)."""
    import gc
    import tracemalloc

    from erf.objects import read_annotations

    def run(n: int) -> int:
        doc = {"images": [{"id": i, "width": 64, "height": 48} for i in range(100)],
               "annotations": [{"id": k, "image_id": k % 100, "bbox": [1, 2, 10, 12], "category_id": k % 5}
                               for k in range(n)],
               "categories": [{"id": c, "name": f"c{c}"} for c in range(5)]}
        path = tmp_path / f"coco{n}.json"
        path.write_text(json.dumps(doc))
        del doc
        gc.collect()
        tracemalloc.start()
        ann = read_annotations(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(ann.boxes) == n
        return peak // n

    small = run(10_000)
    memory = run(40_000)
    assert memory < 1.5 * small + 64, (small, memory)  # linear: no per-annotation cost that grows with n
    assert memory < 2048, f"{memory} bytes per annotation (JSON text and objects included)"


def test_a_16_bit_label_mask_is_read_in_one_pass(tmp_path: Path) -> None:
    """The bound is the point (one pass over the pixels, not one per label), so it is relative: reading the mask
    takes less than half of what one ``labels == value`` pass per label takes on this machine, measured here
    (about 1/25 of it: 0.07 s against 1.8 s on the loaded 2-core machine), whatever the machine's speed."""
    from PIL import Image

    from erf.objects import read_annotations

    labels = (np.arange(256 * 256, dtype=np.uint16).reshape(256, 256) % 4000) + 1
    Image.fromarray(labels).save(tmp_path / "labels.png")
    read_annotations(tmp_path / "labels.png", "masks")  # warm: PIL's plugins and the reader's imports
    t0 = time.perf_counter()
    for value in range(1, 4001):  # the slow way: one pass over the pixels per label
        np.nonzero(labels == value)
    per_label = time.perf_counter() - t0
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        ann = read_annotations(tmp_path / "labels.png", "masks")
        seconds.append(time.perf_counter() - t0)
    assert min(seconds) < per_label / 2, f"{min(seconds):.2f} s, one pass per label {per_label:.2f} s"
    assert len(ann.boxes) == 4000 - 1  # 255 is VOC's void label and is ignored
    for value in (1, 254, 256, 3999, 4000):  # against the per-value definition: extent and pixel count
        ys, xs = np.nonzero(labels == value)
        box = next(b for b in ann.boxes if b.label == str(value))
        assert (box.x0, box.y0, box.x1, box.y1, box.mask_area) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1,
                                                                   len(xs))


# ============================================================================ arguments of other commands
def _corrupt_last(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "last.pt").write_bytes(b"PK\x03\x04 not a zip at all")
    return [str(tmp / "run" / "last.pt")]


def _foreign_last(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    torch.save(create_model("twoconv").state_dict(), tmp / "run" / "last.pt")
    return [str(tmp / "run" / "last.pt"), "not a checkpoint written by erf train"]


def _other_models_last(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    torch.manual_seed(0)
    save_checkpoint(tmp / "run" / "last.pt", create_model("twoconv_cbam"), "twoconv_cbam",
                    extra={"optimizer": {}, "scheduler": {}, "generator": torch.Generator().get_state(), "epoch": 1,
                           "log": []})
    return [str(tmp / "run" / "last.pt"), "a run of 'twoconv_cbam', not of 'twoconv'"]


TRAIN = ["train", "twoconv", "--subset", "16", "--epochs", "1", "--batch-size", "16", "--quiet", "--device", "cpu"]


@dataclass(frozen=True)
class BadArgs:
    id: str
    command: str
    argv: list[str]  # TMP is replaced by the test's folder
    fragments: list[str]
    setup: Callable[[Path], list[str]] | None = None  # -> extra fragments (files it made)
    env: dict[str, str] | None = None


BAD_ARGS = [
    BadArgs("train --subset nan", "train", [*TRAIN, "--subset", "nan", "--out", "TMP/r"], ["--subset 'nan'"]),
    BadArgs("train --subset inf", "train", [*TRAIN, "--subset", "inf", "--out", "TMP/r"], ["--subset 'inf'"]),
    BadArgs("train --subset=-inf", "train", [*TRAIN, "--subset=-inf", "--out", "TMP/r"], ["--subset '-inf'"]),
    BadArgs("train --batch-size 0", "train", [*TRAIN, "--batch-size", "0", "--out", "TMP/r"], ["--batch-size 0"]),
    BadArgs("train --epochs 0", "train", [*TRAIN, "--epochs", "0", "--out", "TMP/r"], ["--epochs 0"]),
    BadArgs("train --lr nan", "train", [*TRAIN, "--lr", "nan", "--out", "TMP/r"], ["--lr nan"]),
    BadArgs("train --out ''", "train", [*TRAIN, "--out", ""], ["--out '': empty path"]),
    BadArgs("train --resume from a corrupt last.pt", "train", [*TRAIN, "--out", "TMP/run", "--resume"],
            ["damaged PyTorch checkpoint", "not a ZIP archive"], _corrupt_last),
    BadArgs("train --resume from a raw state dict", "train", [*TRAIN, "--out", "TMP/run", "--resume"], [],
            _foreign_last),
    BadArgs("train --resume from another model's run", "train", [*TRAIN, "--out", "TMP/run", "--resume"], [],
            _other_models_last),
    BadArgs("compare with one model", "compare", ["compare", "twoconv", "--images", "2"], ["two or more"]),
    BadArgs("compare incompatible models", "compare", ["compare", "twoconv", "resnet20", "--layer", "stage3",
                                                       "--images", "2", "--bootstrap", "0"],
            ["'stage3' is not in twoconv", "shared by all models: stem, stage1, stage2"]),
    BadArgs("compare --bootstrap 10^7", "compare", ["compare", "twoconv", "twoconv_cbam", "--images", "2",
                                                    "--bootstrap", "10000000"], ["--bootstrap 10000000"]),
    BadArgs("compare --out ''", "compare", ["compare", "twoconv", "twoconv_cbam", "--out", ""], ["--out ''"]),
    BadArgs("objects --bins 0", "objects", ["objects", "--estimate", "bundled", "--bins", "0"], ["--bins 0"]),
    BadArgs("objects --bins 10^9", "objects", ["objects", "--estimate", "bundled", "--bins", "1000000000"],
            ["--bins 1000000000"]),
    BadArgs("objects --images 0", "objects", ["objects", "--estimate", "bundled", "--images", "0"], ["--images 0"]),
    BadArgs("measure --out ''", "measure", ["measure", "twoconv", "--out", ""], ["--out '': empty path"]),
    BadArgs("study --out ''", "study", ["study", "twoconv", "--out", ""], ["--out ''"]),
    BadArgs("bench --out ''", "bench", ["bench", "--model", "twoconv", "--out", ""], ["--out ''"]),
    BadArgs("bench --images 10^9", "bench", ["bench", "--model", "twoconv", "--images", "1000000000"], ["--images"]),
    BadArgs("--distributed RANK=abc", "measure", ["measure", "twoconv", "--distributed"], ["RANK='abc'",
                                                                                          "--distributed"],
            env={"RANK": "abc", "WORLD_SIZE": "2"}),
    BadArgs("--distributed WORLD_SIZE=0", "measure", ["measure", "twoconv", "--distributed"], ["WORLD_SIZE=0"],
            env={"RANK": "0", "WORLD_SIZE": "0"}),
    BadArgs("--distributed RANK beyond WORLD_SIZE", "measure", ["measure", "twoconv", "--distributed"], ["RANK=5"],
            env={"RANK": "5", "WORLD_SIZE": "2"}),
    BadArgs("--distributed WORLD_SIZE=10^9", "measure", ["measure", "twoconv", "--distributed"],
            ["WORLD_SIZE=1000000000"], env={"RANK": "0", "WORLD_SIZE": "1000000000"}),
    BadArgs("--distributed MASTER_PORT=x", "measure", ["measure", "twoconv", "--distributed"], ["MASTER_PORT='x'"],
            env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "x"}),
    BadArgs("--distributed without MASTER_ADDR", "measure", ["measure", "twoconv", "--distributed"], ["MASTER_ADDR"],
            env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "", "MASTER_PORT": "29500"}),
    BadArgs("train --device cuda:7 without CUDA", "train", [*TRAIN, "--device", "cuda:7", "--out", "TMP/r"],
            ["--device cuda:7"]),
]


@pytest.mark.parametrize("case", BAD_ARGS, ids=[c.id for c in BAD_ARGS])
def test_bad_arguments_cli(case: BadArgs, tmp_path: Path, run_cli, monkeypatch) -> None:
    if "cuda" in case.id and torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the case is about a machine without it")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (case.env or {}).items():
        monkeypatch.setenv(key, value)
    extra = case.setup(tmp_path) if case.setup else []
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    argv = [a.replace("TMP", str(tmp_path)) for a in case.argv]
    assert_cli_error(run_cli, argv, case.command, [*case.fragments, *extra])
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before, "a refused run writes nothing and leaves no lock or staging folder"


LIBRARY_ARGS = [  # (id, call, error class, parameter named)
    ("subset nan", lambda: subset_count("nan", "train", 10), InputError, "subset"),
    ("subset inf", lambda: subset_count(float("inf"), "train", 10), InputError, "subset"),
    ("batch_size 0", lambda: check_recipe(Recipe(batch_size=0)), InputError, "batch_size"),
    ("noise count 10^9", lambda: load_source("noise:0", count=10**9), InputError, "count"),
    ("bootstrap 10^7 in compare", lambda: compare(
        [create_model("twoconv"), create_model("twoconv")], torch.zeros(2, 3, 8, 8), bootstrap=10**7),
     InputError, "bootstrap"),
]


@pytest.mark.parametrize("case", LIBRARY_ARGS, ids=[c[0] for c in LIBRARY_ARGS])
def test_bad_arguments_library(case) -> None:
    _, call, error, param = case
    with pytest.raises(ErfError) as info:
        call()
    assert type(info.value) is error and info.value.param == param and str(info.value).startswith(param + " ")


def test_distributed_environment_is_checked_by_the_library(monkeypatch) -> None:
    from erf.runtime.distributed import env_rank

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(InputError) as info:
        env_rank()
    assert info.value.param == "distributed" and "RANK='two'" in str(info.value)
    monkeypatch.setenv("RANK", "1")
    assert env_rank() == 1


def test_compare_layer_mismatch_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="shared by all models"):
        compare([create_model("twoconv"), create_model("resnet20")], torch.zeros(2, 3, 8, 8), layers=["stage3"],
                bootstrap=0)


# ============================================================================ bounded loading
def test_the_none_bomb_is_refused_early_without_torch_load(tmp_path: Path, monkeypatch) -> None:
    import erf.files.checkpoint_io as ck

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load must not see this file")

    monkeypatch.setattr(ck.torch, "load", no_load)
    # The bound is the point: the scan stops at the opcode limit instead of walking all 10^7 opcodes (torch.load
    # took 52 s and 600 MB; walking them takes about 10x the baseline below). Relative to walking 10^6 opcodes on
    # this machine, measured here (about 1 s on the loaded 2-core machine, the refusal about 0.5 s): a slower
    # machine is slower at both.
    import io
    import pickletools

    t0 = time.perf_counter()
    for _ in pickletools.genops(io.BytesIO(b"\x80\x02" + b"N" * 10**6 + b".")):
        pass
    baseline = time.perf_counter() - t0
    for build in (none_bomb, legacy_none_bomb):
        path = build(tmp_path)
        assert path.stat().st_size < 11 * 2**20
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(path)
        seconds = time.perf_counter() - t0
        assert seconds < 3 * baseline, f"{path.name}: {seconds:.2f} s, walking 10^6 opcodes {baseline:.2f} s"


def test_the_bound_admits_real_checkpoints(tmp_path: Path) -> None:
    """Every registered family's state dict and a training checkpoint with a 1000-epoch log and optimizer state
    stay far inside the opcode bound (a state dict needs about 35 opcodes per tensor)."""
    from erf.files.safeload import BASE_OPS, OPS_PER_RECORD, scan_pickle

    torch.manual_seed(0)
    model = create_model("resnet20_cbam")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    log = [{"epoch": e, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5,
            "seconds": 1.0} for e in range(1000)]
    save_checkpoint(tmp_path / "last.pt", model, "resnet20_cbam", extra={"optimizer": opt.state_dict(), "log": log})
    scan = scan_pickle(tmp_path / "last.pt")
    assert scan.format == "zip" and not scan.unsafe
    assert scan.ops < (BASE_OPS + OPS_PER_RECORD * scan.records) / 2, scan
    assert load_checkpoint(tmp_path / "last.pt").name == "resnet20_cbam"


def test_model_kwargs_are_estimated_on_the_meta_device(monkeypatch, tmp_path: Path) -> None:
    """A checkpoint asking for widths 10^6 is refused before any real allocation (no tensor is ever made)."""
    path = kwargs_checkpoint((10**6, 10**6))(tmp_path)
    import erf.checkpoints as ck

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built for real")

    monkeypatch.setattr(ck, "create_model", no_build)
    with pytest.raises(ErfError, match="9,000,045,000,012 parameters"):
        load_checkpoint(path)


# ============================================================================ safetensors
def test_safetensors_load_without_torch_load(tmp_path: Path, monkeypatch, run_cli) -> None:
    from safetensors.torch import save_file

    import erf.files.checkpoint_io as ck
    from erf.files.checkpoint_io import save_safetensors

    torch.manual_seed(0)
    model = create_model("twoconv", widths=(4, 8))
    state = model.state_dict()
    save_safetensors(tmp_path / "erf.safetensors", state, "twoconv", {"widths": (4, 8)}, {"test_accuracy": 0.5})
    save_file(dict(state), tmp_path / "raw.bin")  # no suffix: recognised by its header

    def no_load(*args, **kwargs):
        raise AssertionError("a safetensors file went through torch.load")

    monkeypatch.setattr(ck.torch, "load", no_load)
    for spec, name in ((tmp_path / "erf.safetensors", "twoconv"), (tmp_path / "raw.bin", "twoconv"),
                       (f"twoconv_cbam@{tmp_path / 'raw.bin'}", None)):
        if name is None:
            with pytest.raises(ErfError, match="missing keys"):
                load_checkpoint(spec)
            continue
        loaded = load_checkpoint(spec)
        # an erf header with a recorded accuracy is trained; raw weights do not say (None)
        assert loaded.name == name and loaded.trained is (True if "erf." in str(spec) else None)
        assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert load_checkpoint(tmp_path / "erf.safetensors").accuracy == 0.5
    assert load_checkpoint(f"twoconv@{tmp_path / 'erf.safetensors'}").kwargs == {"widths": [4, 8]}
    code, _, err = run_cli("layers", str(tmp_path / "erf.safetensors"))
    assert code == 0, err


def test_torchvision_weights_from_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = load_checkpoint("torchvision:resnet18", seed=1).model.state_dict()
    save_file({k: v.contiguous() for k, v in reference.items()}, tmp_path / "r18.safetensors")
    loaded = load_checkpoint(f"torchvision:resnet18@{tmp_path / 'r18.safetensors'}", seed=2)
    assert loaded.trained is None  # weights from a file, training not recorded
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in reference.items())


def test_train_writes_best_safetensors_beside_best_pt(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(*TRAIN, "--out", str(out), "--safetensors")
    assert code == 0, err
    assert sorted(references.snapshot(out)) == ["best.pt", "best.safetensors", "last.pt", "log.csv"]
    pt, st = load_checkpoint(out / "best.pt"), load_checkpoint(out / "best.safetensors")
    assert st.name == pt.name == "twoconv" and st.metadata["best_test_accuracy"] == pt.metadata["best_test_accuracy"]
    assert all(torch.equal(st.model.state_dict()[k], v) for k, v in pt.model.state_dict().items())


def test_symlink_to_a_system_file_does_not_leak_its_content(tmp_path: Path, run_cli) -> None:
    if not os.path.exists("/etc/passwd"):
        pytest.skip("no /etc/passwd on this system")
    argv, named = folder_link("/etc/passwd")(tmp_path)
    code, out, err = run_cli("measure", "twoconv", "--images", "2", "--bootstrap", "0", *argv)
    assert code == 2 and named in err
    first = open("/etc/passwd").readline().strip()
    assert first and first not in err and first not in out


# ============================================================================ round three (issue 25): real processes
REPO = Path(__file__).resolve().parents[1]
FAST_MEASURE = ["--images", "1", "--bootstrap", "0", "--no-plots"]


def _erf_process(argv: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str, str, float]:
    """``python -m erf ARGV`` as a real process in ``cwd``: ``(exit code, stdout, stderr, seconds)``."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "erf", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


@pytest.fixture(scope="module")
def process_seconds(tmp_path_factory) -> float:
    """Seconds a trivial ``python -m erf layers twoconv`` takes on this machine now (the best of two): the unit of
    the real-process time bounds (interpreter, torch and erf imports, a model built: 2-3 s on the quiet 2-core
    machine, 8-10 s when it was loaded), so that a bound scales with the machine's speed and load."""
    work = tmp_path_factory.mktemp("baseline")
    times = []
    for _ in range(2):
        code, _, err, seconds = _erf_process(["layers", "twoconv"], work)
        assert code == 0, err
        times.append(seconds)
    return min(times)


def _folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (hidden ones included) with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _zip_with(entries: list[tuple[str, bytes]]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        import warnings
        import zipfile

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we write on purpose
            with zipfile.ZipFile(tmp / "ck.pt", "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name, data in entries:
                    z.writestr(name, data)
        return tmp / "ck.pt"

    return build


def _real_pickle() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _many_safetensors(tmp: Path, n: int = 10**6) -> Path:
    """A valid-looking safetensors file listing ``n`` one-element float32 tensors (46 s before the error)."""
    header = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[1],"data_offsets":[{4 * i},{4 * i + 4}]}}'
                            for i in range(n)) + "}"
    data = header.encode()
    (tmp / "many.safetensors").write_bytes(len(data).to_bytes(8, "little") + data + b"\0" * (4 * n))
    return tmp / "many.safetensors"


def _study_checkpoints(test_images) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        for name in ("twoconv", "twoconv_cbam"):
            save_checkpoint(tmp / f"{name}.pt", create_model(name), name,
                            metadata={"best_test_accuracy": 0.5, "test_images": test_images})
        return ["study", "twoconv.pt", "twoconv_cbam.pt", "--images", "2", "--bootstrap", "0", "--out", "s"]

    return build


NET_PY = """
import torch.nn as nn
class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
    def forward(self, x):
        return self.c(x)
class Text(Base):
    input_size = 'abc'
class Fraction(Base):
    input_size = 32.5
class Number(Base):
    normalization = 5
"""


def _net(attr: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "net.py").write_text(NET_PY)
        return ["layers", f"net.py:{attr}"]

    return build


def _boxes(fmt: str, value: float) -> Callable[[Path], list[str]]:
    """Annotations whose image and box are ``value`` px (1e308: infinite areas; 1e-300: vanishing ones)."""
    def build(tmp: Path) -> list[str]:
        big = value > 1
        w = h = value if big else 64
        x1 = value if big else value
        if fmt == "coco":
            doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
                   "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, x1, x1]}]}
            (tmp / "a.json").write_text(json.dumps(doc))
            return ["objects", "a.json", "--out", "o"]
        if fmt == "csv":
            (tmp / "a.csv").write_text(f"a.jpg,0,0,{x1!r},{x1!r},{w!r},{h!r},dog\n")
            return ["objects", "a.csv", "--out", "o"]
        (tmp / "a.xml").write_text(f"<annotation><filename>a.jpg</filename><size><width>{w!r}</width><height>{h!r}"
                                   f"</height></size><object><name>dog</name><bndbox><xmin>0</xmin><ymin>0</ymin>"
                                   f"<xmax>{x1!r}</xmax><ymax>{x1!r}</ymax></bndbox></object></annotation>")
        return ["objects", "a.xml", "--format", "voc", "--out", "o"]

    return build


def _write(name: str, text: str, argv: list[str]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return argv

    return build


def _checkpoint_argv(builder: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["layers", builder(tmp).name, *extra]


def _protocol(proto: int) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        torch.manual_seed(0)
        torch.save(create_model("twoconv").state_dict(), tmp / f"p{proto}.pt", pickle_protocol=proto)
        return tmp / f"p{proto}.pt"

    return build


def _norm_depth(tmp: Path) -> Path:
    save_checkpoint(tmp / "deep.pt", create_model("norm_8d"), "norm_8d", {"depth": 10**7})
    return tmp / "deep.pt"


COCO_SURROGATE = ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], "annotations": '
                  '[{"id": 1, "image_id": 1, "category_id": "\\ud800x", "bbox": [1, 1, 10, 10]}]}')
NONE_FLOOD = b"\x80\x02" + b"N" * 6 * 10**7 + b"."


@dataclass
class Round3:
    id: str
    case: int  # the number
    build: Callable[[Path], list[str]]  # -> argv after `erf` (run in the folder the builder filled)
    fragments: list[str]
    # Only where the bug was a time blow-up (the case's "before"): a bound in units of the process_seconds
    # baseline, 10: the fixed runs take 0.5-2.5 baselines, the bugs 15-40+ (46-120 s against 2-3 s). None: the
    # message is the point, the time incidental.
    bound: float | None = None


ROUND3 = [
    Round3("zip with two archive/data.pkl, the first a 6e7-NONE flood (49.5 s before)", 1,
           _checkpoint_argv(_zip_with([("a/data.pkl", NONE_FLOOD), ("a/data.pkl", _real_pickle()),
                                       ("a/byteorder", b"little")])),
           ["ck.pt", "two entries named 'a/data.pkl'"], 10.0),
    Round3("the pickle named archive/DATA.PKL, a 10^7-NONE flood (54.6 s before)", 2,
           _checkpoint_argv(_zip_with([("a/DATA.PKL", b"\x80\x02" + b"N" * 10**7 + b"."),
                                       ("a/byteorder", b"little")])),
           ["ck.pt", "more than 100,000 opcodes"], 10.0),
    Round3("archive/DATA.PKL of 100 MB (past the 64 MiB bound before)", 2,
           _checkpoint_argv(_zip_with([("a/DATA.PKL", b"\x80\x02" + b"N" * 10**8 + b".")])),
           ["ck.pt", "pickle stream is 100,000,003 bytes"]),
    Round3("model_kwargs depth 10**7 for norm_8d (unbounded on the meta device before)", 3,
           _checkpoint_argv(_norm_depth), ["deep.pt", "depth=10000000", "more than 100,000 modules"], 10.0),
    Round3("safetensors listing 10^6 tensors (46 s before)", 4,
           _checkpoint_argv(_many_safetensors), ["many.safetensors", "more than 100,000 tensors"], 10.0),
    Round3("test_images 'abc' in checkpoint metadata (ValueError before)", 7, _study_checkpoints("abc"),
           ["twoconv.pt", "test_images 'abc'"]),
    Round3("test_images -5", 7, _study_checkpoints(-5), ["twoconv.pt", "test_images -5"]),
    Round3("a model spec of 10^5 characters", 8, lambda tmp: ["layers", "a" * 10**5],
           ["'aaaa", "100,000 characters"]),
    Round3("x...x.py:Net of 10^5 characters", 8, lambda tmp: ["layers", "x" * 10**5 + ".py:Net"],
           ["100,007 characters"]),
    Round3("twoconv@y...y of 10^5 characters", 8, lambda tmp: ["layers", "twoconv@" + "y" * 10**5],
           ["100,008 characters"]),
    Round3("twoconv@ a 300-character file name", 8, lambda tmp: ["layers", "twoconv@" + "y" * 300],
           ["y" * 60, "File name too long"]),
    Round3("a 300-character code spec file", 8, lambda tmp: ["layers", "y" * 300 + ".py:Net"], ["no such file"]),
    Round3("file.py:Net with input_size 'abc'", 9, _net("Text"), ["net.py:Text", "input_size 'abc'"]),
    Round3("file.py:Net with input_size 32.5", 9, _net("Fraction"), ["net.py:Fraction", "input_size 32.5"]),
    Round3("file.py:Net with normalization 5", 9, _net("Number"), ["net.py:Number", "normalization 5"]),
    Round3("--seed 2**70", 10, lambda tmp: ["measure", "twoconv", *FAST_MEASURE, "--seed", str(2**70)],
           ["--seed 1180591620717411303424", "2**64 - 1"]),
    Round3("noise: with 30 nines", 10, lambda tmp: ["measure", "twoconv", *FAST_MEASURE, "--data", "noise:" + "9" * 30],
           ["noise:999", "2**64 - 1"]),
    Round3("--device meta", 11, lambda tmp: ["measure", "twoconv", *FAST_MEASURE, "--device", "meta"],
           ["--device meta", "hold no data"]),
    *[Round3(f"{fmt} image and box of 1e308 px", 12, _boxes(fmt, 1e308), ["image size", "1..1,048,576"])
      for fmt in ("coco", "csv", "voc")],
    *[Round3(f"{fmt} box of 1e-300 px", 12, _boxes(fmt, 1e-300), ["degenerate box", "below 1e-06 px"])
      for fmt in ("coco", "csv", "voc")],
    Round3("--resize 10**300", 12,
           _write("a.json", json.dumps(COCO), ["objects", "a.json", "--resize", "1" + "0" * 300]),
           ["--resize 1000", "at most 1,048,576"]),
    Round3("COCO category_id '\\ud800x' (a lone surrogate; after publishing before)", 13,
           _write("a.json", COCO_SURROGATE, ["objects", "a.json", "--out", "o"]), ["a.json", "lone surrogate"]),
    *[Round3(f"--data constant:{v}", 16, lambda tmp, v=v: ["measure", "twoconv", *FAST_MEASURE, "--data",
                                                           f"constant:{v}"], [f"constant:{v}", "finite"])
      for v in ("nan", "inf", "1e400")],
    Round3("--data '' (measured the working folder's PNGs before)", 17,
           lambda tmp: ["measure", "twoconv", *FAST_MEASURE, "--data", ""], ["data source ''", "empty"]),
    *[Round3(f"a genuine pickle_protocol={p} state dict", 18, _checkpoint_argv(_protocol(p)),
             [f"p{p}.pt", "pickle protocol 0/1 stream", "--trust"]) for p in (0, 1)],
    # the round-three sweep's own finds (case 0): each was accepted, silent or unbounded before
    Round3("file.py:Net whose constructor raises SystemExit(0) (exit 0, no output before)", 0,
           _write("net.py", "class Exit:\n    def __init__(self):\n        raise SystemExit(0)\n",
                  ["layers", "net.py:Exit"]), ["net.py:Exit", "SystemExit(0)"]),
    Round3("objects --bins 10000 over 20,000 classes (6e8 histogram counts: past 120 s before)", 0,
           lambda tmp: _coco_categories(tmp, 20_000)[:2] + ["--bins", "10000", "--out", "o"],
           ["--bins 10000", "20,000 classes", "600,000,000 counts"], 10.0),
    Round3("COCO bbox [true, true, 10, 10] (read as 1, 1 before)", 0,
           _write("a.json", json.dumps({**COCO, "annotations": [{"id": 1, "image_id": 1, "category_id": 3,
                                                                   "bbox": [True, True, 10, 10]}]}),
                  ["objects", "a.json"]), ["a.json", "non-numeric bbox"]),
    Round3("study --objects sizes holding NaN (median 'nan px' before)", 0,
           _write("sizes.json", '{"sizes": {"sqrt_area": [NaN, 1.0], "longer_side": [1.0, 1.0]}}',
                  ["study", "twoconv", "twoconv_cbam", "--objects", "sizes.json", "--images", "2", "--bootstrap",
                   "0"]), ["sizes.json"]),
    Round3("a safetensors header naming a 10^5-character model (the whole name in the message before)", 0,
           lambda tmp: (tmp.joinpath("n.safetensors").write_bytes(__import__("safetensors.torch").torch.save(
               {"w": torch.zeros(1)}, metadata={"format": "erf.checkpoint", "model": "x" * 10**5})),
               ["layers", "n.safetensors"])[1], ["unknown model", "100,000 characters"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ROUND3, ids=[f"{c.case}: {c.id}" for c in ROUND3])
def test_round_three_is_one_line_exit_2_in_seconds(case: Round3, tmp_path: Path, request) -> None:
    """Issue 25, as a real process: exit 2, one ``erf CMD: error:`` line naming the file or argument, no traceback,
    within the bound where the case has one; nothing written or lost in the folder (no lock, staging folder or
    temporary file)."""
    work = tmp_path / "work"
    work.mkdir()
    argv = case.build(work)
    before = _folder_state(work)
    code, out, err, seconds = _erf_process(argv, work)
    lines = [ln for ln in err.splitlines() if ln.startswith(f"erf {argv[0]}: error: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert len(lines[0]) < 1000, lines[0][:300]  # a 300-character argument may be named twice
    for fragment in case.fragments:
        assert fragment in lines[0], (fragment, lines[0][:300])
    if case.bound is not None:  # the fix of a time blow-up: a bound relative to this machine's speed now
        baseline = request.getfixturevalue("process_seconds")
        assert seconds < case.bound * baseline, f"{seconds:.1f} s, baseline {baseline:.1f} s"
    assert _folder_state(work) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.slow
@pytest.mark.parametrize("proto", [0, 1])
def test_old_protocol_pickles_load_under_trust(proto: int, tmp_path: Path) -> None:
    """Issue 25 case 18: ``--trust`` did not help; protocol 0 now loads through erf's reader (torch cannot read its
    text persistent ids), protocol 1 through torch, both after the warning line."""
    from erf.files.checkpoint_io import read_checkpoint_file

    path = _protocol(proto)(tmp_path)
    torch.manual_seed(0)
    want = create_model("twoconv").state_dict()
    with pytest.warns(UserWarning, match="an old pickle protocol"):
        got = read_checkpoint_file(path, trust=True)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype
                                         for k in want)
    code, out, err, _ = _erf_process(["layers", path.name, "--trust"], tmp_path)
    assert code == 0 and err.startswith(f"warning: {path.name} may run code") and "twoconv" in out, err


def test_a_la_mask_is_read_by_its_first_channel(tmp_path: Path, run_cli) -> None:
    """Issue 25 case 14: a two-channel (LA) mask PNG was an ``IndexError``."""
    from PIL import Image

    from erf.objects import read_annotations

    a = np.zeros((20, 30, 2), np.uint8)
    a[2:6, 3:10, 0] = 1
    a[10:15, 12:20, 0] = 2
    a[..., 1] = 255  # alpha
    Image.fromarray(a, "LA").save(tmp_path / "la.png")
    boxes = read_annotations(tmp_path / "la.png").boxes
    assert sorted((b.label, b.x0, b.y0, b.x1, b.y1) for b in boxes) == [("1", 3, 2, 10, 6), ("2", 12, 10, 20, 15)]
    code, _, err = run_cli("objects", tmp_path / "la.png")
    assert code == 0 and "Traceback" not in err


def _labels_mask(tmp: Path) -> list[str]:
    from PIL import Image

    a = np.arange(1, 65537, dtype=np.int64).reshape(256, 256)
    a[a == 255] = 256  # 255 is VOC's "void": not an object
    a[a > 65533] = 0
    Image.fromarray(a.astype(np.uint16)).save(tmp / "labels.png")
    return ["objects", "labels.png", "--out", "o"]


def _coco_categories(tmp: Path, n: int = 50_000) -> list[str]:
    doc = {"images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(100)],
           "annotations": [{"id": i, "image_id": i % 100, "category_id": i, "bbox": [10, 10, 5 + i % 50, 7 + i % 30]}
                           for i in range(n)],
           "categories": [{"id": i, "name": f"c{i}"} for i in range(n)]}
    (tmp / "cats.json").write_text(json.dumps(doc))
    return ["objects", "cats.json", "--out", "o"]


def _csv_labels(tmp: Path, n: int = 50_000) -> list[str]:
    (tmp / "labels.csv").write_text("".join(f"im{i % 100},10,10,{20 + i % 50},{30 + i % 40},640,480,l{i}\n"
                                            for i in range(n)))
    return ["objects", "labels.csv", "--out", "o"]


MANY_CLASSES = [("a mask PNG with 65,533 labels (killed at 60 s before)", _labels_mask, 65532),  # 255 is void
                ("COCO with 50k category_ids (57 s before)", _coco_categories, 50_000),
                ("a CSV with 50k labels (64 s before)", _csv_labels, 50_000)]


@pytest.mark.slow
@pytest.mark.parametrize("case", MANY_CLASSES, ids=[c[0] for c in MANY_CLASSES])
def test_many_classes_are_summarised_in_seconds(case, tmp_path: Path, process_seconds: float) -> None:
    """Issue 25 case 5: per-class summaries were quadratic; end to end (read, summarise, objects.json, figures,
    table) as a real process. The bound is the point: 15 process_seconds baselines (7-12 s here, 2.5-5 baselines,
    42 s when the machine was loaded; 57 s and more before, about 20 baselines of the quiet machine)."""
    _, build, classes = case
    argv = build(tmp_path)
    code, out, err, seconds = _erf_process(argv, tmp_path)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    doc = json.loads((tmp_path / "o" / "objects.json").read_text())
    assert len(doc["summary"]["per_class"]) == classes
    assert seconds < 15 * process_seconds, f"{seconds:.1f} s, baseline {process_seconds:.1f} s"


def test_per_class_summaries_equal_each_class_summarised_alone() -> None:
    """The vectorised per-class pass gives what :func:`_describe` gives on each class alone (quantiles and
    histograms exactly, means up to rounding), classes of one object and unlabelled objects included."""
    from erf.objects.sizes import ObjectSizes, _describe, summarize

    rng = np.random.default_rng(0)
    v = rng.lognormal(2, 1, 3000)
    labels = [None if i % 13 == 0 else f"c{rng.integers(900)}" for i in range(3000)]
    sizes = ObjectSizes(v, v * 1.3, v / 100, labels, False, "m")
    summary = summarize(sizes)
    names = np.asarray(["(none)" if lab is None else lab for lab in labels], dtype=object)
    assert list(summary["per_class"]) == sorted(set(names))
    for lab, entry in summary["per_class"].items():
        sel = names == lab
        assert entry["count"] == int(sel.sum())
        for key in ("sqrt_area", "longer_side", "relative"):
            alone = _describe(getattr(sizes, key)[sel], np.asarray(summary[key]["histogram"]["edges"]))
            assert entry[key]["quantiles"] == alone["quantiles"] and entry[key]["histogram"] == alone["histogram"]
            assert entry[key]["mean"] == pytest.approx(alone["mean"], rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["a 4000x4000 image in a CIFAR npz", "--input-size 4096"])
def test_a_costly_measurement_says_so_before_any_work(what: str, tmp_path: Path, process_seconds: float) -> None:
    """Issue 25 case 6: 61 s / > 90 s without a word. The cost (counted on the meta device) is one ``warning:``
    line naming --images and --input-size, printed before the work: the bound (10 process_seconds baselines,
    the warning comes after about one) is the point, a warning after the work would come too late; Ctrl-C then
    leaves nothing behind."""
    import signal
    import subprocess
    import sys

    if what.startswith("a 4000"):
        np.savez(tmp_path / "huge.npz", x_test=np.zeros((1, 4000, 4000, 3), np.uint8), y_test=np.zeros(1, np.int64))
        argv = ["--data", "cifar10:huge.npz", "--images", "1"]
    else:
        argv = ["--input-size", "4096", "--images", "2", "--layer", "stem"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal gives it: a suite started in the background (`cmd &` in a script) inherits SIGINT
    # ignored, the child then installs no KeyboardInterrupt handler, and Ctrl-C could not be tested
    proc = subprocess.Popen([sys.executable, "-m", "erf", "measure", "twoconv", "--bootstrap", "0", *argv,
                             "--out", "o"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, preexec_fn=as_from_a_terminal)
    start, line, bound = time.monotonic(), "", 10 * process_seconds
    try:
        while proc.poll() is None and time.monotonic() - start < bound + 30:
            line = proc.stderr.readline()
            if line.startswith("warning: "):
                break
        seconds = time.monotonic() - start
        assert line.startswith("warning: this measurement needs about "), line
        assert "TFLOP" in line and "--images" in line and "--input-size" in line
        assert seconds < bound, f"{seconds:.1f} s, baseline {process_seconds:.1f} s"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.erf-*"))


def test_small_measurements_do_not_warn_about_cost(run_cli) -> None:
    code, _, err = run_cli("measure", "twoconv", "--images", "8", "--bootstrap", "0")
    assert code == 0 and "warning" not in err, err
