"""``erf objects``: object-size statistics of an annotation set (or estimated for CIFAR-10)."""

from __future__ import annotations

import argparse
from typing import Any

from erf.commands._base import command, print_json, print_notes
from erf.commands.tables import print_table as print_aligned
from erf.errors import InputError


def _args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Object sizes in the model's input pixels: quantiles, histogram and CDF of sqrt(area), longer side and "
        "relative size (object side / image side), per class. Example: "
        "`erf objects instances_val.json --resize 256 --center-crop 224 --out runs/objects` or, for CIFAR-10 "
        "(no boxes: a model-free foreground-segmentation ESTIMATE), `erf objects --estimate bundled --pad-to 64`.")
    p.add_argument("src", nargs="?", default=None,
                   help="annotation file or folder (COCO JSON, VOC XML or the devkit's .mat cache, YOLO labels, "
                        "mask PNGs, CSV)")
    from erf.objects.readers.registry import READERS, formats

    p.add_argument("--format", default="auto", choices=list(formats()),
                   help="annotation format (auto: from the suffix / folder content): "
                        + "; ".join(f"{r.name}: {r.description}" for r in READERS.values()))
    p.add_argument("--sizes", default=None, help="YOLO: image sizes file (CSV image,width,height or JSON)")
    p.add_argument("--exclude-difficult", action="store_true",
                   help="leave out objects flagged difficult (VOC XML and .mat, tables with a difficult column)")
    p.add_argument("--exclude-crowd", action="store_true",
                   help="leave out COCO crowd objects (iscrowd = 1: one box around a group); by default they are "
                        "counted and a note says how many")
    from erf.objects.readers.registry import BOX_CONVENTIONS

    p.add_argument("--box-convention", default="auto", choices=list(BOX_CONVENTIONS),
                   help="table corners: continuous px, VOC's 1-based inclusive indices, or auto (VOC for tables "
                        "with VOC's xmin..ymax and difficult columns)")
    p.add_argument("--resize", type=int, default=None, help="resize the shorter side to N px (torchvision Resize(N))")
    p.add_argument("--center-crop", type=int, default=None, help="then centre-crop N x N (torchvision CenterCrop)")
    p.add_argument("--pad-to", type=int, default=None, help="then pad to an N x N canvas, image centred")
    p.add_argument("--input-size", type=int, default=None,
                   help="model input side; the image is stretched to N x N if the steps above do not give it")
    p.add_argument("--area", default="box", choices=["box", "mask"],
                   help="sqrt(area) of the box, or of the mask where known (COCO segmentations, mask PNGs)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records/files and count them")
    p.add_argument("--estimate", default=None, metavar="SOURCE",
                   help="no annotations: estimate one object per image of SOURCE (bundled | cifar10:PATH)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="--estimate: CIFAR-10 split")
    p.add_argument("--images", type=int, default=None, help="--estimate: use the first N images")
    p.add_argument("--no-check", action="store_true",
                   help="--estimate: skip measuring the estimator's error on controlled canvases")
    p.add_argument("--bins", type=int, default=20, help="histogram bins")
    p.add_argument("--out", default=None, help="folder for objects.json, histogram.png, cdf.png")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--json", action="store_true", help="print the objects.json document")
    p.epilog = None  # the model-spec / data-source block of the other commands does not apply here


ESTIMATOR_BACKGROUNDS = ("flat", "noise", "study", "photo")
"""Canvases on which ``--estimate`` measures its estimator's error (:data:`erf.pasting.BACKGROUNDS`);
``study`` are the controlled experiment's own canvases."""


def _estimate(args: argparse.Namespace, preprocess: Any) -> tuple[Any, dict[str, Any]]:
    from erf.data import load_source
    from erf.objects import controlled_check, estimate_extents

    kind = args.estimate.split(":")[0]
    if kind not in ("bundled", "sample", "cifar10"):
        raise InputError(f"--estimate {args.estimate!r}: use bundled or cifar10:PATH")
    data = load_source(args.estimate, args.split, count=args.images)
    if not data.raw:
        raise InputError(f"--estimate {args.estimate!r}: needs raw images")
    images = data.uint8()
    labels = [data.classes[int(k)] if data.classes and int(k) >= 0 else None for k in data.labels]
    sizes = estimate_extents(images, preprocess=preprocess, labels=labels, area=args.area)
    sizes.source, sizes.format, sizes.images, sizes.notes = args.estimate, "estimate", len(images), list(data.notes)
    extra: dict[str, Any] = {"data": data.description}
    if not args.no_check:
        check_images = images[: min(len(images), 300)]
        extra["estimator_error"] = {bg: controlled_check(check_images, background=bg)
                                    for bg in ESTIMATOR_BACKGROUNDS}
    return sizes, extra


def build_document(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Read or estimate the objects of ``args`` and return ``(objects.json document, ObjectSizes)``."""
    from erf.objects import Preprocess, annotation_sizes, read_annotations

    if (args.src is None) == (args.estimate is None):
        raise InputError("give an annotation SRC or --estimate SOURCE (exactly one)")
    preprocess = Preprocess(args.resize, args.center_crop, args.pad_to, args.input_size)
    extra: dict[str, Any] = {}
    if args.estimate:
        sizes, extra = _estimate(args, preprocess)
    else:
        ann = read_annotations(args.src, args.format, skip_bad=args.skip_bad, image_sizes=args.sizes,
                               exclude_difficult=args.exclude_difficult, box_convention=args.box_convention,
                               exclude_crowd=args.exclude_crowd)
        sizes = annotation_sizes(ann, preprocess, area=args.area)
        if args.area == "mask":
            masked = sum(b.mask_area is not None for b in ann.boxes)
            sizes.notes.append(f"--area mask: sqrt(area) is the mask area's for the {masked} of {len(ann.boxes)} "
                               "objects with a mask (COCO segmentations, mask PNGs), the box area's for the others")
    return sizes.to_json(args.bins, extra), sizes


AREA_WORDS: dict[str | None, str] = {"box": "sqrt(box area)", "mask": "sqrt(mask area)"}
"""``--area`` -> the name of the first row of the table (the area kind is always said)."""


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(doc: dict[str, Any], title: str) -> None:
    """Print the quantile table (px) and per-class counts of ``sizes`` under ``title``."""
    s = doc["summary"]
    print(title)
    print(f"{'measure':<16}{'p5':>8}{'p25':>8}{'p50':>8}{'p75':>8}{'p95':>8}{'mean':>8}")
    from erf.objects.sizes import SIZE_MEASURES

    for key, name in SIZE_MEASURES:
        name = AREA_WORDS.get(doc.get("area"), "sqrt(area)") + " px" if key == "sqrt_area" else name
        d = s[key]
        q = d["quantiles"]
        digits = 3 if key == "relative" else 1
        print(f"{name:<16}" + "".join(f"{_fmt(q[k], digits):>8}" for k in ("5", "25", "50", "75", "95"))
              + f"{_fmt(d['mean'], digits):>8}")
    area = AREA_WORDS.get(doc.get("area"), "sqrt(area)")
    print_aligned(["class", "objects", f"median {area}"],  # widths from the content: labels are never cut
                  [[label, entry["count"], _fmt(entry["sqrt_area"]["quantiles"]["50"], 1)]
                   for label, entry in s["per_class"].items()])
    if doc.get("estimator_error"):
        print("estimator error on controlled canvases (objects pasted at known positions, 64 px):")
        for bg, e in doc["estimator_error"].items():
            print(f"  {bg:<6} background: median |error| of sqrt(area) {e['median_abs_error_px']:.1f} px "
                  f"({100 * e['median_relative_error']:.0f}%), median IoU {e['median_iou']:.2f}")


OBJECTS_FILES = ("objects.json", "histogram.png", "cdf.png")
"""The files ``erf objects --out`` writes (an older set's files matching these are replaced with ``--force``)."""
MAX_BINS = 10_000
"""``--bins`` at most (a histogram, not an allocation)."""


def cmd_objects(args: argparse.Namespace) -> int:
    """``erf objects``: object-size statistics from annotations or an estimate; exit code."""
    from erf.files.atomic import write_json
    from erf.files.outputs import output_set

    if not 1 <= args.bins <= MAX_BINS:
        raise InputError(f"--bins {args.bins}: must be between 1 and {MAX_BINS}")
    if args.images is not None and args.images <= 0:
        raise InputError(f"--images {args.images}: must be positive")
    with output_set(args.out, force=args.force, patterns=OBJECTS_FILES) as stage:
        doc, sizes = build_document(args)
        print_notes(doc["notes"])
        kind = "ESTIMATED object sizes (no annotations)" if doc["is_estimate"] else "object sizes"
        pre = ", ".join(f"{k}={v}" for k, v in doc["preprocess"].items() if v) or "no preprocessing"
        title = f"{kind}: {doc['summary']['count']} objects from {doc['source']}, model-input px ({pre})"
        if doc["is_estimate"]:
            title += f"\nmethod: {doc['method']}"
        if stage is not None:
            from erf.files.atomic import save_figures
            from erf.plotting import object_size_figures

            save_figures(object_size_figures(sizes, title, args.bins), stage.path)
            write_json(stage.path / "objects.json", doc)
    if args.json:
        print_json(doc)
    else:
        print_table(doc, title)
        if doc["skipped"]:
            print(f"skipped {doc['skipped']} malformed record(s)/file(s) (--skip-bad)")
        if stage is not None:
            print(f"wrote {args.out}/objects.json, histogram.png, cdf.png")
    return 0


command("objects", "object-size statistics (quantiles, histogram, CDF) in model-input px")(_args)(cmd_objects)
