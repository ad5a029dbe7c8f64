"""Object-size statistics: parsers against hand-computed boxes, preprocessing arithmetic (checked
against torchvision), quantiles, malformed files, the CIFAR-10 extent estimator on controlled
canvases with known truth, and the ``erf objects`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from references import snapshot

from erf.errors import AnnotationError, InputError
from erf.objects import (
    ObjectBox,
    Preprocess,
    cdf,
    estimate_boxes,
    estimate_extents,
    estimator_error,
    object_sizes,
    read_annotations,
    rescale,
    summarize,
)
from erf.objects.estimator import _otsu

FIX = Path(__file__).resolve().parent / "fixtures" / "annotations"
SAMPLE = Path(__file__).resolve().parents[1] / "erf" / "data" / "cifar10_sample.npz"


def _boxes(ann):
    return [(b.image, b.label, b.x0, b.y0, b.x1, b.y1, b.image_w, b.image_h, b.mask_area) for b in ann.boxes]


# ----------------------------------------------------------------------------- parsers
def test_coco_boxes_are_xywh_converted_to_corners_with_class_names_and_mask_areas():
    ann = read_annotations(FIX / "coco" / "instances.json")
    assert ann.skipped == 0 and "coco" in ann.source
    assert _boxes(ann) == [
        ("street.jpg", "person", 100, 50, 140, 170, 640, 480, 3000),  # segmented: area kept
        ("street.jpg", "car", 300, 200, 500, 300, 640, 480, None),  # no segmentation: no mask area
        ("park.jpg", "person", 0, 0, 30, 60, 300, 200, 1200),
        ("park.jpg", "car", 250.5, 150, 300, 200, 300, 200, None),  # touches the right border exactly
    ]


def test_voc_corners_are_one_based_inclusive():
    ann = read_annotations(FIX / "voc")
    assert _boxes(ann) == [
        ("000001.jpg", "dog", 47, 239, 195, 371, 500, 375, None),
        ("000001.jpg", "person", 7, 11, 352, 375, 500, 375, None),
        ("000002.jpg", "cat", 0, 0, 353, 500, 353, 500, None),  # the whole image
    ]
    single = read_annotations(FIX / "voc" / "000002.xml")
    assert len(single.boxes) == 1 and single.boxes[0].width == 353


def test_yolo_normalised_centres_with_sizes_file_and_image_beside_labels():
    ann = read_annotations(FIX / "yolo", image_sizes=FIX / "yolo" / "sizes.csv")
    got = [(b.image, b.label, b.image_w, b.image_h) for b in ann.boxes]
    assert got == [("img1", "person", 640, 480), ("img1", "car", 640, 480), ("img2", "car", 100, 50)]
    # img1: 0.5 0.5 0.25 0.5 -> centre (320, 240), size 160 x 240; 0.1 0.2 0.1 0.2 -> centre (64, 96), 64 x 96
    np.testing.assert_allclose(rescale(ann.boxes), [[240, 120, 400, 360], [32, 48, 96, 144], [0, 0, 100, 50]])
    # the sizes file in the folder is found by itself; img2's size comes from images/img2.png (100 x 50)
    auto = read_annotations(FIX / "yolo")
    np.testing.assert_allclose(rescale(auto.boxes), rescale(ann.boxes))
    # a mapping works as well, and without any size the record is an error naming file and line
    mapped = read_annotations(FIX / "yolo" / "labels" / "img1.txt", "yolo", image_sizes={"img1": (640, 480)})
    assert len(mapped.boxes) == 2 and mapped.boxes[0].label == "person"
    with pytest.raises(AnnotationError, match=r"img1\.txt: line 1: image size unknown"):
        read_annotations(FIX / "yolo" / "labels" / "img1.txt", "yolo")


def test_binary_mask_components_and_label_mask_ids():
    ann = read_annotations(FIX / "masks")
    assert _boxes(ann) == [
        ("binary.png", None, 2, 1, 6, 4, 20, 10, 12),  # rows 1..3, cols 2..5
        ("binary.png", None, 10, 7, 12, 9, 20, 10, 3),  # an 8-connected L of three pixels
        ("labels.png", "1", 0, 0, 8, 4, 16, 16, 32),  # the 255 border row is VOC "void", not an object
        ("labels.png", "2", 12, 10, 16, 16, 16, 16, 24),
    ]


def test_csv_with_header_and_optional_label():
    ann = read_annotations(FIX / "boxes.csv")
    assert _boxes(ann) == [("a.jpg", "cat", 10, 20, 50, 80, 100, 100, None),
                           ("b.jpg", None, 0, 0, 32, 32, 32, 32, None)]


# ----------------------------------------------------------------------------- malformed input
@pytest.mark.parametrize("rel, message", [
    ("coco_bad/truncated.json", r"truncated\.json: not valid JSON \(line \d+"),
    ("coco_bad/missing_bbox.json", r"missing_bbox\.json: annotations\[1\] \(id 11\): missing field\(s\) bbox"),
    ("coco_bad/negative.json", r"negative\.json: annotations\[2\] \(id 12\): .*negative corner"),
    ("coco_bad/outside.json", r"outside\.json: annotations\[3\] \(id 13\): .*outside the 300x200 image"),
    ("voc_bad", r"000003\.xml: object 0 \(bird\): .*outside the 500x375 image"),
    ("yolo_bad", r"img1\.txt: line 2: expected 'class cx cy w h', got 4 field"),
    ("masks_bad", r"broken\.png: not a readable PNG"),
    ("boxes_bad.csv", r"boxes_bad\.csv: line 3: degenerate box"),
])
def test_malformed_files_name_the_file_and_record(rel, message):
    with pytest.raises(AnnotationError, match=message):
        read_annotations(FIX / rel)


@pytest.mark.parametrize("rel, kept, skipped", [
    ("coco_bad/missing_bbox.json", 3, 1),
    ("coco_bad/negative.json", 3, 1),
    ("coco_bad/outside.json", 3, 1),
    ("voc_bad", 1, 2),  # the bird outside its image + the truncated XML file
    ("yolo_bad", 1, 2),  # 4 fields + a width of 1.5
    ("boxes_bad.csv", 1, 2),  # x1 < x0 + "ten"
])
def test_skip_bad_counts_what_it_skips(rel, kept, skipped):
    ann = read_annotations(FIX / rel, skip_bad=True)
    assert (len(ann.boxes), ann.skipped) == (kept, skipped)
    assert len([n for n in ann.notes if n.startswith("skipped:")]) == skipped


def test_nothing_valid_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(AnnotationError, match=r"no valid object found .*1 malformed"):
        read_annotations(FIX / "coco_bad" / "truncated.json", skip_bad=True)
    (tmp_path / "x.unknown").write_text("?")
    with pytest.raises(AnnotationError, match="cannot guess"):
        read_annotations(tmp_path / "x.unknown")
    with pytest.raises(AnnotationError, match="no such file"):
        read_annotations(tmp_path / "missing.json")
    with pytest.raises(InputError, match="^fmt "):
        read_annotations(FIX / "boxes.csv", fmt="kitti")


def test_box_tolerance_and_degenerate_boxes(tmp_path):
    p = tmp_path / "b.csv"
    # 0.5 px beyond the border (exporter rounding) is clipped; 2 px is an error; zero width is degenerate
    p.write_text("a.jpg,-0.5,0,10.5,10,10,10\n")
    assert rescale(read_annotations(p).boxes).tolist() == [[0, 0, 10, 10]]
    p.write_text("a.jpg,0,0,12,10,10,10\n")
    with pytest.raises(AnnotationError, match=r"b\.csv: line 1: .*outside"):
        read_annotations(p)
    p.write_text("a.jpg,3,0,3,10,10,10\n")
    with pytest.raises(AnnotationError, match=r"line 1: degenerate"):
        read_annotations(p)


# ----------------------------------------------------------------------------- preprocessing
def test_resize_crop_pad_arithmetic_by_hand():
    box = ObjectBox("street.jpg", "person", 100, 50, 140, 170, 640, 480)
    pre = Preprocess(resize=256, center_crop=224, pad_to=256)
    # Resize(256): 640x480 -> 341x256 (int(256 * 640 / 480) = 341); sx = 341/640, sy = 256/480
    # CenterCrop(224): left = round((341 - 224) / 2) = round(58.5) = 58, top = round(16.0) = 16
    # pad to 256: + (256 - 224) // 2 = 16 on both axes
    x0 = max(100 * 341 / 640 - 58, 0) + 16  # 53.28 - 58 < 0: clipped to the crop's left edge
    x1 = 140 * 341 / 640 - 58 + 16
    y0 = 50 * 256 / 480 - 16 + 16
    y1 = 170 * 256 / 480 - 16 + 16
    np.testing.assert_allclose(pre.apply(box), (x0, y0, x1, y1))
    assert pre.output_size(640, 480) == (256, 256)
    # a final input size different from the steps stretches: 224 crop -> 112 input halves everything
    half = Preprocess(resize=256, center_crop=224, input_size=112)
    np.testing.assert_allclose(half.apply(box), np.array([0, y0 - 16, x1 - 16, y1 - 16]) / 2)
    # an object outside the crop keeps zero width and is dropped from the sizes
    gone = ObjectBox("street.jpg", "car", 0, 0, 60, 60, 640, 480)
    sizes = object_sizes([box, gone], pre)
    assert len(sizes) == 1 and sizes.dropped == 1


def test_crop_larger_than_image_pads_like_torchvision():
    pre = Preprocess(center_crop=16)
    box = ObjectBox("m", None, 2, 1, 6, 4, 20, 10)
    # width 20 >= 16: left = round(2.0) = 2; height 10 < 16: padded by (16 - 10) // 2 = 3 on top
    assert pre.apply(box) == (0, 4, 4, 7)
    with pytest.raises(InputError, match="^pad_to 8"):
        Preprocess(pad_to=8).apply(box)
    with pytest.raises(InputError, match="^resize "):
        Preprocess(resize=0)


@pytest.mark.parametrize("w, h, pre", [
    (640, 480, Preprocess(resize=256, center_crop=224)),
    (300, 200, Preprocess(resize=100, center_crop=90, pad_to=128)),
    (20, 10, Preprocess(center_crop=16)),
    (37, 53, Preprocess(resize=32, center_crop=40, input_size=64)),
])
def test_preprocess_matches_torchvision_on_a_drawn_box(w, h, pre):
    """Oracle: draw a box, run torchvision's transforms (nearest neighbour), find the box again."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(w)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    x1, y1 = x0 + int(rng.integers(w // 4, w // 2)), y0 + int(rng.integers(h // 4, h // 2))
    img = torch.zeros(1, h, w)
    img[0, y0:y1, x0:x1] = 1
    out = img
    if pre.resize:
        out = F.resize(out, pre.resize, interpolation=InterpolationMode.NEAREST)
    if pre.center_crop:
        out = F.center_crop(out, [pre.center_crop, pre.center_crop])
    if pre.pad_to:
        ph, pw = pre.pad_to - out.shape[1], pre.pad_to - out.shape[2]
        out = F.pad(out, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2])
    if pre.input_size and tuple(out.shape[1:]) != (pre.input_size, pre.input_size):
        out = F.resize(out, [pre.input_size, pre.input_size], interpolation=InterpolationMode.NEAREST)
    assert tuple(out.shape[1:][::-1]) == pre.output_size(w, h)
    ys, xs = np.nonzero(out[0].numpy() > 0.5)
    seen = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    got = pre.apply(ObjectBox("i", None, x0, y0, x1, y1, w, h))
    # nearest-neighbour sampling moves an edge by under one pixel per resampling step; a final stretch
    # magnifies the first step's error by its factor
    steps = pre.steps(w, h)
    atol = 1.0 + (steps[-1][1] if steps[-1][0] == "stretch" and pre.resize else 0.0)
    np.testing.assert_allclose(got, seen, atol=atol)


def test_mask_area_scales_with_the_resize():
    ann = read_annotations(FIX / "coco" / "instances.json")
    pre = Preprocess(resize=100)  # park.jpg 300x200 -> 150x100: both factors 0.5
    park = [b for b in ann.boxes if b.image == "park.jpg"]
    box_sizes = object_sizes(park, pre)
    mask_sizes = object_sizes(park, pre, area="mask")
    np.testing.assert_allclose(box_sizes.sqrt_area, [math.sqrt(15 * 30), math.sqrt(24.75 * 25)])
    # person: mask area 1200 px -> 300 px; the car has no mask: box area
    np.testing.assert_allclose(mask_sizes.sqrt_area, [math.sqrt(300), math.sqrt(24.75 * 25)])
    np.testing.assert_allclose(box_sizes.longer_side, [30, 25])
    np.testing.assert_allclose(box_sizes.relative, box_sizes.sqrt_area / math.sqrt(150 * 100))
    assert box_sizes.method == "annotations (box area)" and not box_sizes.is_estimate


# ----------------------------------------------------------------------------- statistics
def test_quantiles_mean_histogram_and_per_class():
    sides = np.arange(1, 102)  # 1..101: linear-interpolated percentile q is 1 + q
    boxes = [ObjectBox(str(i), "odd" if s % 2 else "even", 0, 0, s, s, 200, 200) for i, s in enumerate(sides)]
    s = summarize(object_sizes(boxes), bins=10)
    assert s["count"] == 101 and s["sqrt_area"]["mean"] == pytest.approx(51)
    assert s["sqrt_area"]["quantiles"] == pytest.approx({"5": 6, "25": 26, "50": 51, "75": 76, "95": 96})
    assert s["relative"]["quantiles"]["50"] == pytest.approx(51 / 200)
    assert sum(s["sqrt_area"]["histogram"]["counts"]) == 101 and len(s["sqrt_area"]["histogram"]["edges"]) == 11
    assert s["per_class"]["odd"]["count"] == 51 and s["per_class"]["even"]["count"] == 50
    assert s["per_class"]["even"]["sqrt_area"]["quantiles"]["50"] == pytest.approx(51)  # 2, 4, ..., 100
    assert s["per_class"]["odd"]["sqrt_area"]["histogram"]["edges"] == s["sqrt_area"]["histogram"]["edges"]
    json.dumps(s, allow_nan=False)


def test_cdf():
    x, f = cdf([3.0, 1.0, 2.0, 2.0])
    assert x.tolist() == [1, 2, 2, 3] and f.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 1, 500), rng.normal(30, 1, 300)])
    assert 13 < _otsu(values) < 27


# ----------------------------------------------------------------------------- estimator
def _canvases(background: str, n: int = 100, canvas: int = 64, sizes=(12, 16, 24, 32, 40), seed: int = 1):
    """Real CIFAR-10 images rescaled to s x s, pasted at known random positions (built here, independently)."""
    from PIL import Image

    x = np.load(SAMPLE)["x_test"][:n]
    rng = np.random.default_rng(seed)
    out = np.zeros((n, canvas, canvas, 3), dtype=np.uint8)
    boxes = np.zeros((n, 4))
    for i in range(n):
        s = sizes[i % len(sizes)]
        colour = rng.integers(0, 256, size=3)
        bg = np.zeros((canvas, canvas, 3)) + colour
        if background == "noise":
            bg = bg + rng.normal(0, 15, size=bg.shape)
        top, left = rng.integers(0, canvas - s + 1, size=2)
        bg[top:top + s, left:left + s] = np.asarray(Image.fromarray(x[i]).resize((s, s), Image.BILINEAR))
        out[i] = np.clip(np.round(bg), 0, 255)
        boxes[i] = (left, top, left + s, top + s)
    return out, boxes


@pytest.mark.parametrize("background", ["flat", "noise"])
def test_estimator_error_on_controlled_canvases(background):
    """Measured (seed 1, 100 images, s in 12..40 on 64 px): flat and noise backgrounds both give a median
    |error| of sqrt(area) of 0 px and a median IoU of 1.0, 90th percentile |error| <= ~3 px. Bounds below
    leave a margin; they do NOT transfer to photographs (see test_estimator_is_poor_on_photo_backgrounds)."""
    images, truth = _canvases(background)
    err = estimator_error(images, truth)
    assert err["count"] == 100
    assert err["median_abs_error_px"] <= 1.0
    assert err["median_relative_error"] <= 0.05
    assert err["median_iou"] >= 0.9
    assert err["iou_above_0.5"] >= 0.9
    assert err["p90_abs_error_px"] <= 6.0


def test_estimator_is_poor_on_photo_backgrounds():
    """Honest limitation: on a textured photo background the border-contrast estimate is far off
    (measured on the bundled images: median |error| ~10 px, median IoU ~0.24), so real CIFAR-10
    estimates are rough. Guard that the reported error says so rather than hiding it."""
    from erf.objects import controlled_check

    x = np.load(SAMPLE)["x_test"][:60]
    err = controlled_check(x, background="photo")
    assert err["median_iou"] < 0.8 and err["median_abs_error_px"] > 2


def test_study_background_is_the_controlled_experiments_own_canvas():
    """One paster for the study's canvases: ``paste_objects`` with several sizes returns exactly the images
    and boxes of one ``paste_objects`` call per size (every ``len(sizes)``-th image), so the estimator error
    reported for the ``study`` background is measured on the controlled data set itself."""
    from erf.objects import controlled_check
    from erf.pasting import paste_objects

    x = np.load(SAMPLE)["x_test"][:12]
    pasted = paste_objects(x, (12, 24), background="study", seed=3)
    canv, boxes = pasted.uint8(), pasted.boxes.numpy()
    for k, s in enumerate((12, 24)):
        made = paste_objects(x[k::2], s, 64, "study", seed=3)
        np.testing.assert_array_equal(canv[k::2], made.uint8())
        np.testing.assert_array_equal(boxes[k::2], made.boxes.numpy())
        assert np.all(boxes[k::2, 2] - boxes[k::2, 0] == s)
    err = controlled_check(x, sizes=(12, 24), background="study", seed=3)
    assert err["count"] == 12 and set(err["per_size"]) == {"12", "24"}
    with pytest.raises(InputError, match="exceeds"):
        paste_objects(x, (80,), background="study")


def test_estimate_extents_is_flagged_and_falls_back_to_full_frame():
    images, truth = _canvases("flat", n=10)
    sizes = estimate_extents(images, labels=[f"c{i % 2}" for i in range(10)])
    assert sizes.is_estimate and "estimate" in sizes.method and "border-contrast" in sizes.method
    assert len(sizes) == 10 and sizes.labels[:2] == ["c0", "c1"]
    np.testing.assert_allclose(sizes.boxes, estimate_boxes(images))
    uniform = np.full((2, 32, 32, 3), 90, dtype=np.uint8)
    flat = estimate_extents(uniform)
    assert flat.sqrt_area.tolist() == [32, 32] and "2 of 2 images" in flat.method
    padded = estimate_extents(uniform, preprocess=Preprocess(pad_to=64))
    assert padded.relative.tolist() == [0.5, 0.5]
    with pytest.raises(InputError, match="method"):
        estimate_extents(uniform, method="saliency")
    with pytest.raises(InputError, match="shape"):
        estimate_boxes(uniform[..., 0])


# ----------------------------------------------------------------------------- command line
def test_cli_json_validates_against_the_schema(run_cli, tmp_path):
    from erf.schemas import validate

    code, out, err = run_cli("objects", FIX / "coco" / "instances.json", "--resize", "100", "--json")
    assert code == 0, err
    doc = json.loads(out)
    validate(doc, "objects")
    assert doc["schema"] == "erf.objects/1" and doc["is_estimate"] is False and doc["format"] == "coco"
    assert doc["summary"]["count"] == 4 and set(doc["summary"]["per_class"]) == {"car", "person"}
    code, out, err = run_cli("objects", FIX / "voc", "--resize", "64", "--center-crop", "64", "--out", tmp_path / "o")
    assert code == 0, err
    assert "sqrt(box area) px" in out and "dog" in out  # the area kind is named
    assert set(snapshot(tmp_path / "o")) == {"objects.json", "histogram.png", "cdf.png"}
    validate(json.loads((tmp_path / "o" / "objects.json").read_text()), "objects")
    code, out, err = run_cli("objects", FIX / "voc", "--out", tmp_path / "o")
    assert code == 2 and "--force" in err


def test_cli_malformed_and_skip_bad(run_cli):
    code, out, err = run_cli("objects", FIX / "coco_bad" / "negative.json")
    assert code == 2 and "negative.json: annotations[2] (id 12)" in err
    code, out, err = run_cli("objects", FIX / "coco_bad" / "negative.json", "--skip-bad", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 1 and "skipped:" in err
    code, out, err = run_cli("objects")
    assert code == 2 and "SRC or --estimate" in err


def test_cli_estimate_says_estimate_everywhere(run_cli, tmp_path):
    from erf.schemas import validate

    code, out, err = run_cli("objects", "--estimate", "bundled", "--images", "30", "--pad-to", "64",
                             "--out", tmp_path / "e")
    assert code == 0, err
    assert "ESTIMATED" in out and "estimator error on controlled canvases" in out
    doc = json.loads((tmp_path / "e" / "objects.json").read_text())
    validate(doc, "objects")
    assert doc["is_estimate"] is True and doc["summary"]["is_estimate"] is True
    assert doc["method"].startswith("estimate:") and doc["format"] == "estimate"
    assert set(doc["estimator_error"]) == {"flat", "noise", "study", "photo"}
    assert doc["summary"]["count"] == 30 and max(doc["sizes"]["relative"]) <= 0.5  # 32 px images in a 64 canvas


def test_cli_class_table_never_cuts_labels(run_cli, tmp_path):
    label = "a_very_long_class_name_beyond_twenty_characters"
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1,image_w,image_h,label\n"
                                        f"a.jpg,1,2,11,22,100,50,{label}\nb.jpg,1,2,31,22,100,50,cat\n")
    code, out, err = run_cli("objects", tmp_path / "boxes.csv")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith((label, "cat ", "class "))]
    assert len(rows) == 3 and rows[1].split()[:2] == [label, "1"]
    assert len({len(line) for line in rows}) == 1  # one column width for every row
