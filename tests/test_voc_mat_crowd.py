"""Issue 23's annotation items: the VOC devkit's ``.mat`` cache read by its own reader (checked box by box against
the CSV derived from the same file by ``real_boxes/derive.py``, and against PROVENANCE's counts), COCO crowd
objects counted and said (or left out), the area kind stated, ``objects`` / ``models`` help without the model-spec
block."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from erf.errors import AnnotationError
from erf.objects import read_annotations

ROOT = Path(os.environ.get("ERF_REAL_BOXES", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_boxes"))
MAT07 = ROOT / "voc2007_test" / "devkit_cache" / "local" / "VOC2007" / "test_anno.mat"
CSV07 = ROOT / "voc2007_test" / "derived" / "voc2007_test_boxes.csv"
COCO = ROOT / "coco2017" / "zzowenzz_COCO_Tiny" / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="module")
def real() -> Path:
    if not MAT07.is_file():
        pytest.skip(f"real annotation sets not found at {ROOT} (set ERF_REAL_BOXES)")
    return ROOT


def _key(b) -> tuple:
    return (Path(b.image).stem, b.label, b.x0, b.y0, b.x1, b.y1, b.image_w, b.image_h)


def test_voc_devkit_mat_equals_its_derived_csv(real: Path) -> None:
    mat = read_annotations(MAT07)  # the format is guessed from .mat
    assert mat.format == "voc-mat" and mat.skipped == 0
    assert len(mat.boxes) == 14976 and len({b.image for b in mat.boxes}) == 4952  # PROVENANCE.md
    table = read_annotations(CSV07)
    assert Counter(map(_key, mat.boxes)) == Counter(map(_key, table.boxes))
    hard = read_annotations(MAT07, exclude_difficult=True)
    assert len(hard.boxes) == 12032 and any("left out 2944" in n for n in hard.notes)


def test_voc_mat_corner_convention_and_bad_files(tmp_path: Path) -> None:
    """VOC's 1-based inclusive corners, on a hand-made cache: bbox [1 1 10 20] covers pixels 0..9 x 0..19."""
    obj = {"class": "cat", "bbox": np.array([1.0, 1.0, 10.0, 20.0]), "difficult": 0}
    rec = {"filename": "a.jpg", "size": {"width": 50.0, "height": 40.0, "depth": 3.0}, "objects": obj}
    path = tmp_path / "anno.mat"
    scipy.io.savemat(path, {"recs": np.array([rec], dtype=object)})
    (box,) = read_annotations(path).boxes
    assert (box.image, box.label, box.x0, box.y0, box.x1, box.y1, box.image_w, box.image_h) == (
        "a.jpg", "cat", 0.0, 0.0, 10.0, 20.0, 50.0, 40.0)
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(AnnotationError, match="without 'recs'"):
        read_annotations(tmp_path / "other.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(AnnotationError, match="not a readable MATLAB .mat file"):
        read_annotations(tmp_path / "junk.mat")


def test_coco_crowd_objects_are_counted_and_can_be_left_out(real: Path, run_cli) -> None:
    doc = json.loads(COCO.read_text())
    crowd = sum(bool(a.get("iscrowd")) for a in doc["annotations"])
    assert crowd > 0
    every = read_annotations(COCO)
    assert len(every.boxes) == len(doc["annotations"])
    assert any(f"counted {crowd} COCO crowd object(s)" in n for n in every.notes)
    kept = read_annotations(COCO, exclude_crowd=True)
    assert len(kept.boxes) == len(doc["annotations"]) - crowd
    assert any(f"left out {crowd} COCO crowd" in n for n in kept.notes)
    code, stdout, stderr = run_cli("objects", COCO, "--exclude-crowd", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["count"] == len(doc["annotations"]) - crowd


def test_the_area_kind_is_stated(real: Path, run_cli) -> None:
    code, stdout, stderr = run_cli("objects", COCO, "--area", "mask")
    assert code == 0, stderr
    assert "sqrt(mask area) px" in stdout and "median sqrt(mask area)" in stdout
    doc = json.loads(COCO.read_text())
    masked = sum(bool(a.get("segmentation")) and not a.get("iscrowd") for a in doc["annotations"])
    assert f"mask area's for the {masked} of {len(doc['annotations'])} objects" in stderr
    code, stdout, _ = run_cli("objects", COCO)
    assert "sqrt(box area) px" in stdout


@pytest.mark.parametrize("name", ["objects", "models"])
def test_help_without_the_model_spec_block(name: str, run_cli) -> None:
    code, stdout, _ = run_cli(name, "--help")
    assert code == 0 and "model specs (CKPT)" not in stdout and "data sources (--data)" not in stdout
    code, stdout, _ = run_cli("measure", "--help")
    assert "model specs (CKPT)" in stdout


# ----------------------------------------------------------------------------- erf models without torch
def test_model_catalog_is_current_and_equals_the_registry() -> None:
    from erf.catalog import CATALOG, build_catalog, read_catalog

    rows = read_catalog()
    assert rows is not None, (f"{CATALOG} is stale (erf/models/*.py changed): regenerate it with "
                              "`python -m erf.catalog` and commit it")
    assert rows == build_catalog()["models"]


def test_the_catalog_sees_the_same_bundled_weights_as_the_loader() -> None:
    """``erf models`` (torch-free) and the loader agree on which models ship weights, whatever their suffix (the
    16x8d twins are .safetensors, resnet20 a .pt)."""
    from erf.catalog import has_bundled_weights
    from erf.checkpoints import bundled_weights
    from erf.models import list_models

    names = list_models()
    seen = {name for name in names if has_bundled_weights(name)}
    assert seen == {name for name in names if bundled_weights(name) is not None}
    assert {"norm_8d", "cbam_8d", "resnet20"} <= seen


def test_a_stale_catalog_is_not_used(tmp_path: Path, monkeypatch, run_cli) -> None:
    import erf.catalog as catalog

    stale = json.loads(catalog.CATALOG.read_text())
    stale["fingerprint"] = "0" * 64
    stale["models"][0]["description"] = "A STALE DESCRIPTION"
    (tmp_path / "catalog.json").write_text(json.dumps(stale))
    monkeypatch.setattr(catalog, "CATALOG", tmp_path / "catalog.json")
    assert catalog.read_catalog() is None
    code, stdout, _ = run_cli("models")
    assert code == 0 and "A STALE DESCRIPTION" not in stdout and "resnet20_cbam" in stdout


def test_erf_models_does_not_import_torch_or_matplotlib() -> None:
    import subprocess
    import sys

    code = ("import sys, erf.cli; erf.cli.main(['models', 'resnet20*']); "
            "print('HEAVY', sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    assert "resnet20_cbam" in out.stdout and "HEAVY []" in out.stdout
