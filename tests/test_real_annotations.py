"""Real annotation sets (``../shared/data/real_boxes``: VOC 2007 test, VOC 2012 train/val, COCO 2017 subsets), read
with their own columns. Counts are the published totals recorded in ``real_boxes/PROVENANCE.md``; the VOC CSV and
the VOC XML readers are checked against each other box by box (two readers of the same records)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from erf.objects import Preprocess, annotation_sizes, read_annotations

ROOT = Path(os.environ.get("ERF_REAL_BOXES", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_boxes"))
VOC07 = ROOT / "voc2007_test" / "derived"


@pytest.fixture(scope="module")
def real() -> Path:
    if not ROOT.is_dir():
        pytest.skip(f"real annotation sets not found at {ROOT} (set ERF_REAL_BOXES)")
    return ROOT


@pytest.mark.parametrize("csv, everything, not_difficult, images", [
    ("voc2007_test/derived/voc2007_test_boxes.csv", 14976, 12032, 4952),
    ("voc2012/derived/voc2012_train_boxes.csv", 15774, 13609, 5717),
    ("voc2012/derived/voc2012_val_boxes.csv", 15787, 13841, 5823),
])
def test_voc_tables_read_with_their_own_columns(real: Path, csv: str, everything: int, not_difficult: int,
                                                images: int) -> None:
    ann = read_annotations(real / csv)
    assert ann.format == "csv" and len(ann.boxes) == everything and ann.skipped == 0
    assert any("x0 = xmin - 1" in n and "label=class" in n for n in ann.notes)  # says which mapping it used
    kept = read_annotations(real / csv, exclude_difficult=True)
    assert len(kept.boxes) == not_difficult and any(f"left out {everything - not_difficult}" in n for n in kept.notes)
    assert len({b.image for b in ann.boxes}) == images


def test_voc_table_and_xml_agree_box_by_box(real: Path) -> None:
    """The first 500 VOC 2007 test images as XML (rebuilt from the devkit cache) and as the CSV: same boxes."""
    xml = read_annotations(VOC07 / "Annotations_regenerated", exclude_difficult=True)
    images = {b.image for b in xml.boxes}
    table = [b for b in read_annotations(VOC07 / "voc2007_test_boxes.csv", exclude_difficult=True).boxes
             if b.image in images]
    key = lambda b: (b.image, b.label, b.x0, b.y0, b.x1, b.y1, b.image_w, b.image_h)  # noqa: E731
    assert len(xml.boxes) == 1183 and sorted(map(key, xml.boxes)) == sorted(map(key, table))


def test_voc_2007_at_an_imagenet_preprocessing(real: Path) -> None:
    sizes = annotation_sizes(read_annotations(VOC07 / "voc2007_test_boxes.csv", exclude_difficult=True),
                             Preprocess(resize=256, center_crop=224))
    assert len(sizes) + sizes.dropped == 12032 and sizes.images == 4952
    assert sizes.sqrt_area.max() <= 224 and (sizes.relative <= 1).all()


@pytest.mark.parametrize("subset, val, train", [("Obmutescence_COCO-MINI", 624, 739), ("zzowenzz_COCO_Tiny", 815, 705)])
def test_coco_subsets(real: Path, subset: str, val: int, train: int) -> None:
    folder = real / "coco2017" / subset / "annotations"
    for split, count in (("val", val), ("train", train)):
        ann = read_annotations(folder / f"instances_{split}2017.json", skip_bad=True)
        assert len(ann.boxes) + ann.skipped == count and ann.format == "coco"


def test_objects_cli_on_voc_2007(real: Path, run_cli, tmp_path: Path) -> None:
    code, stdout, stderr = run_cli("objects", VOC07 / "voc2007_test_boxes.csv", "--exclude-difficult", "--resize",
                                   "256", "--center-crop", "224", "--json")
    assert code == 0, stderr
    import json

    doc = json.loads(stdout)
    assert doc["summary"]["count"] + int(doc["notes"][-1].split()[0]) == 12032
    assert doc["preprocess"] == {"resize": 256, "center_crop": 224, "pad_to": None, "input_size": None}
