"""COCO instances JSON: ``images`` with ``width``/``height``, ``annotations`` with ``bbox = [x, y, w, h]``,
optional ``categories``; ``area`` is kept as the mask area of segmented (non-crowd) objects. Crowd objects
(``iscrowd = 1``: one box around a group of objects) are kept and counted, or left out with ``exclude_crowd``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from erf.errors import AnnotationError
from erf.objects.boxes import Collector
from erf.objects.readers.registry import DEFAULT_OPTIONS, Reader, ReadOptions, load_json, register_reader


def _is_id(value: Any) -> bool:
    """COCO ids are integers (strings are tolerated); lists, objects, floats and bools are not ids."""
    kind = type(value)
    return kind is int or kind is str or (kind is not bool and isinstance(value, (int, str)))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_coco(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every annotation of the COCO instances file ``path`` into ``col``."""
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the COCO instances JSON file")
    try:
        doc = load_json(path)
    except AnnotationError as exc:
        col.bad(str(exc))
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) \
            or not isinstance(doc.get("images"), list):
        raise AnnotationError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    images: dict[Any, dict] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im:
            col.bad(f"{path}: images[{i}]: missing 'id'")
            continue
        if not _is_id(im["id"]):
            col.bad(f"{path}: images[{i}]: id {_show(im['id'])} is not an integer or a string")
            continue
        images[im["id"]] = im
    cats = {}
    categories = doc.get("categories") or []
    for c in categories if isinstance(categories, list) else []:
        if isinstance(c, dict) and "id" in c and _is_id(c["id"]):
            cats[c["id"]] = str(c.get("name", c["id"]))[:200]
    for i, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            col.bad(f"{where}: not an object")
            continue
        if "id" in ann:
            where += f" (id {_show(ann['id'])})"
        missing = [k for k in ("image_id", "bbox") if k not in ann]
        if missing:
            col.bad(f"{where}: missing field(s) {', '.join(missing)}")
            continue
        if not _is_id(ann["image_id"]):
            col.bad(f"{where}: image_id {_show(ann['image_id'])} is not an integer or a string")
            continue
        im = images.get(ann["image_id"])
        if im is None:
            col.bad(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
            continue
        if "width" not in im or "height" not in im:
            col.bad(f"{where}: image {ann['image_id']!r} has no width/height")
            continue
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            col.bad(f"{where}: bbox must be [x, y, width, height], got {_show(bbox)}")
            continue
        try:
            x, y, bw, bh = (float(v) if not isinstance(v, bool) else float("x") for v in bbox)  # true is no number
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond a float (1e400)
            col.bad(f"{where}: non-numeric bbox {_show(bbox)}")
            continue
        if bw <= 0 or bh <= 0:
            col.bad(f"{where}: degenerate bbox {_show(bbox)}: width and height must be positive")
            continue
        cat = ann.get("category_id")
        if cat is not None and not _is_id(cat):
            col.bad(f"{where}: category_id {_show(cat)} is not an integer or a string")
            continue
        label = cats.get(cat, None if cat is None else str(cat))
        crowd = bool(ann.get("iscrowd"))
        if crowd and options.exclude_crowd:
            col.crowd_excluded += 1
            continue
        col.crowd += crowd
        area = ann.get("area") if ann.get("segmentation") and not crowd else None
        col.add(where, str(im.get("file_name", im["id"])), label, x, y, x + bw, y + bh,
                im["width"], im["height"], area)


register_reader(Reader("coco", read_coco, ".json", "COCO instances JSON file",
                       lambda p: p.suffix.lower() == ".json", reads_folders=False, priority=3))
