"""Fuzz tests (issue 9): random and mutated bytes as checkpoints and annotation files.

The only acceptable outcomes are a valid result or a typed error
(:class:`~erf.errors.ErfError` for checkpoints, :class:`~erf.errors.AnnotationError`
for annotation files) whose message names the file: never another exception,
never code execution (a pickle whose code would create a marker file is among
the mutated inputs). Inputs come from a seeded generator, so a failure is
reproducible from its case id.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from erf.checkpoints import load_checkpoint, save_checkpoint
from erf.errors import AnnotationError, ErfError
from erf.models import create_model

SEED = 20240509
CASES = 50


class _Code:
    """Pickles to ``os.makedirs(marker)``: code that a safe loader must never run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Valid files the mutations start from: erf zip checkpoint, legacy pickle, pickle with code."""
    tmp = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    model = create_model("twoconv", widths=(4, 4))
    save_checkpoint(tmp / "zip.pt", model, "twoconv", {"widths": (4, 4)})
    torch.save(model.state_dict(), tmp / "legacy.pt", _use_new_zipfile_serialization=False)
    marker = str(tmp.parent / "FUZZ_MARKER")
    torch.save({"state_dict": model.state_dict(), "x": _Code(marker)}, tmp / "code.pt")
    torch.save({"state_dict": model.state_dict(), "x": _Code(marker)}, tmp / "code_legacy.pt",
               _use_new_zipfile_serialization=False)
    return {p.stem: p.read_bytes() for p in tmp.iterdir()} | {"marker": marker.encode()}


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip, overwrite, delete or truncate a few bytes."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        if not buf:
            break
        op = int(rng.integers(0, 4))
        i = int(rng.integers(0, len(buf)))
        if op == 0:
            buf[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            buf[i] = int(rng.integers(0, 256))
        elif op == 2:
            del buf[i: i + int(rng.integers(1, 64))]
        else:
            del buf[i:]
    return bytes(buf)


def _checkpoint_case(k: int, seeds: dict[str, bytes]) -> bytes:
    rng = np.random.default_rng([SEED, k])
    kind = k % 5
    if kind == 0:  # plain random bytes
        return rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    if kind == 1:  # random bytes behind a zip or pickle magic number
        head = [b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."][k % 3]
        return head + rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    name = ["zip", "legacy", "code" if k % 2 else "code_legacy"][kind - 2]
    return _mutate(seeds[name], rng)


@pytest.mark.parametrize("k", range(CASES))
def test_fuzz_checkpoint(k: int, seeds: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / f"fuzz{k}.pt"
    path.write_bytes(_checkpoint_case(k, seeds))
    marker = Path(seeds["marker"].decode())
    try:
        loaded = load_checkpoint(path)
    except ErfError as exc:
        assert str(path) in str(exc), exc
    else:  # a mutation that kept the file valid: it must be a usable model
        assert not loaded.model.training
    assert not marker.exists(), f"case {k}: a checkpoint ran code without --trust"


def test_fuzz_checkpoint_cli(seeds: dict[str, bytes], tmp_path: Path, run_cli) -> None:
    """A sample of the cases through ``erf layers``: exit 0 or 2, never a traceback."""
    for k in range(0, CASES, 7):
        path = tmp_path / f"fuzz{k}.pt"
        path.write_bytes(_checkpoint_case(k, seeds))
        code, _, err = run_cli("layers", str(path))
        assert code in (0, 2) and "Traceback" not in err, (k, err)
        if code == 2:
            assert any(ln.startswith("erf layers: error: ") and str(path) in ln for ln in err.splitlines()), err


# ============================================================================ annotation files
COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32}],
    "annotations": [{"id": 10, "image_id": 1, "bbox": [4, 5, 20, 10], "category_id": 3, "area": 150.0,
                     "segmentation": [[4, 5, 24, 5, 24, 15]], "iscrowd": 0},
                    {"id": 11, "image_id": 2, "bbox": [0, 0, 32, 32], "category_id": 7}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}
VOC = """<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>cat</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>24</xmax><ymax>15</ymax></bndbox></object>
<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>64</xmax><ymax>48</ymax></bndbox></object>
</annotation>
"""
CSV = "image,x0,y0,x1,y1,image_w,image_h,label\na.jpg,4,5,24,15,64,48,cat\nb.jpg,0,0,32,32,32,32,dog\n"
ODD_VALUES = [None, -1, 0, 1e309, -1e309, "NaN", "x", [], {}, [1, 2], True, "", 10**30, 3.5, {"id": 1}]


def _mutate_json(doc, rng: np.random.Generator):
    """Replace one random node of the document by an odd value (or drop it)."""
    doc = json.loads(json.dumps(doc))
    node, path = doc, []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        key = list(node)[int(rng.integers(0, len(node)))] if isinstance(node, dict) else int(
            rng.integers(0, len(node)))
        path.append((node, key))
        node = node[key]
    if not path:
        return ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
    parent, key = path[-1]
    if rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
    return doc


def _annotation_case(k: int) -> tuple[str, bytes]:
    rng = np.random.default_rng([SEED, 1000 + k])
    fmt = ["coco", "voc", "csv"][k % 3]
    suffix = {"coco": ".json", "voc": ".xml", "csv": ".csv"}[fmt]
    kind = (k // 3) % 3
    if kind == 0:
        data = rng.integers(0, 256, int(rng.integers(0, 1024)), dtype=np.uint8).tobytes()
    elif fmt == "coco" and kind == 1:
        doc = COCO
        for _ in range(int(rng.integers(1, 4))):
            doc = _mutate_json(doc, rng)
        data = json.dumps(doc).replace("Infinity", "1e999").encode()
    else:
        data = _mutate({"coco": json.dumps(COCO), "voc": VOC, "csv": CSV}[fmt].encode(), rng)
    return suffix, data


def _check_boxes(result) -> None:
    for b in result.boxes:
        vals = (b.x0, b.y0, b.x1, b.y1, b.image_w, b.image_h)
        assert all(math.isfinite(v) for v in vals), b
        assert 0 <= b.x0 < b.x1 <= b.image_w and 0 <= b.y0 < b.y1 <= b.image_h, b


@pytest.mark.parametrize("k", range(CASES))
def test_fuzz_annotation_file(k: int, tmp_path: Path) -> None:
    from erf.objects import read_annotations

    suffix, data = _annotation_case(k)
    fmt = {".json": "coco", ".xml": "voc", ".csv": "csv"}[suffix]
    path = tmp_path / f"fuzz{k}{suffix}"
    path.write_bytes(data)
    for skip_bad in (False, True):
        try:
            result = read_annotations(path, fmt=fmt, skip_bad=skip_bad)
        except AnnotationError as exc:
            assert str(path) in str(exc), exc
        else:
            assert result.boxes
            _check_boxes(result)


def test_fuzz_annotation_cli(tmp_path: Path, run_cli) -> None:
    """A sample of the annotation cases through ``erf objects``: exit 0 or 2, never a traceback."""
    for k in range(0, CASES, 4):
        suffix, data = _annotation_case(k)
        path = tmp_path / f"fuzz{k}{suffix}"
        path.write_bytes(data)
        for extra in ([], ["--skip-bad"]):
            code, _, err = run_cli("objects", str(path), "--json", *extra)
            assert code in (0, 2) and "Traceback" not in err, (k, err)
            if code == 2:
                assert any(ln.startswith("erf objects: error: ") and str(path) in ln for ln in err.splitlines()), err


def test_valid_annotation_seeds_read(tmp_path: Path) -> None:
    """The unmutated seeds are valid: the fuzz cases start from files that parse."""
    from erf.objects import read_annotations

    for name, text, fmt in (("a.json", json.dumps(COCO), "coco"), ("a.xml", VOC, "voc"), ("a.csv", CSV, "csv")):
        (tmp_path / name).write_text(text)
        result = read_annotations(tmp_path / name, fmt=fmt, skip_bad=False)
        assert len(result.boxes) == 2
        _check_boxes(result)
