"""Object sizes of a data set, in the pixels the model sees.

Three steps, each usable alone:

1. **Read** boxes (and masks) from an annotation set: :func:`read_annotations`
   understands COCO instances JSON, Pascal VOC XML, YOLO txt labels, binary or
   label mask PNGs and a plain CSV. Every box becomes an :class:`ObjectBox` in
   *continuous* pixel coordinates of the original image: ``x0, y0`` is the
   top-left corner, ``x1, y1`` the bottom-right corner, so a box covering pixel
   columns 3..5 has ``x0 = 3, x1 = 6`` and width 3.
2. **Rescale** each box through the preprocessing the model sees
   (:class:`Preprocess`: resize shorter side, centre crop, pad, final input
   size) into model-input pixels.
3. **Summarise** the sizes (:func:`object_sizes`, :func:`summarize`,
   :func:`cdf`): sqrt(area), longer side and relative size (object side / image
   side), with quantiles, histograms and per-class breakdowns.

CIFAR-10 has no boxes. :func:`estimate_extents` estimates each image's object
extent with a model-free foreground segmentation (method ``"border-contrast"``,
documented in :func:`estimate_masks`); its results are always flagged
``is_estimate=True``. :func:`estimator_error` measures its error where the truth
is known (objects pasted at known positions, :func:`controlled_check`).
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from erf.errors import AnnotationError, InputError

FORMATS = ("auto", "coco", "voc", "yolo", "masks", "csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: boxes may overshoot the image border by this many pixels (rounding in exporters); they are clipped.
BORDER_TOLERANCE = 1.0
QUANTILES = (5, 25, 50, 75, 95)

__all__ = [
    "Annotations", "ObjectBox", "ObjectSizes", "Preprocess", "box_iou", "cdf", "controlled_check",
    "estimate_boxes", "estimate_extents", "estimate_masks", "estimator_error", "mask_boxes", "object_sizes",
    "paste_canvases", "read_annotations", "rescale", "summarize",
]


# ============================================================================ records
@dataclass
class ObjectBox:
    """One object in original-image pixels (continuous coordinates, see module docstring).

    Attributes:
        image: image identifier (file name, or the record's image id).
        label: class name (or id as text); ``None`` when unknown.
        x0, y0, x1, y1: box corners in px, ``0 <= x0 < x1 <= image_w``.
        image_w, image_h: original image size in px.
        mask_area: pixel area of the object's mask when known (COCO ``area`` of a
            segmented object, mask PNGs), else ``None``.
    """

    image: str
    label: str | None
    x0: float
    y0: float
    x1: float
    y1: float
    image_w: float
    image_h: float
    mask_area: float | None = None

    @property
    def width(self) -> float:
        """Box width ``x1 - x0`` in original image px."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Box height ``y1 - y0`` in original image px."""
        return self.y1 - self.y0


@dataclass
class Annotations:
    """What :func:`read_annotations` found.

    Attributes:
        boxes: the valid objects.
        skipped: malformed records (and unreadable files) skipped under ``skip_bad``.
        source: the path that was read and its format, for reports.
        notes: remarks for the user (one per skipped record, empty masks, ...).
    """

    boxes: list[ObjectBox]
    skipped: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)


class _Collector:
    """Collect boxes; turn record errors into skips (``skip_bad``) or raise them."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.boxes: list[ObjectBox] = []
        self.skipped = 0
        self.notes: list[str] = []

    def bad(self, message: str) -> None:
        if not self.skip_bad:
            raise AnnotationError(message)
        self.skipped += 1
        if len(self.notes) < 20:
            self.notes.append(f"skipped: {message}")
        elif len(self.notes) == 20:
            self.notes.append("skipped: ... (further skipped records not listed)")

    def add(self, where: str, image: str, label: str | None, x0: Any, y0: Any, x1: Any, y1: Any,
            image_w: Any, image_h: Any, mask_area: Any = None) -> None:
        """Validate and append one box; ``where`` names the file and record for messages."""
        try:
            vals = [float(v) for v in (x0, y0, x1, y1, image_w, image_h)]
        except (TypeError, ValueError):
            self.bad(f"{where}: non-numeric box or image size {[x0, y0, x1, y1, image_w, image_h]!r}")
            return
        x0f, y0f, x1f, y1f, w, h = vals
        problem = _box_problem(x0f, y0f, x1f, y1f, w, h)
        if problem:
            self.bad(f"{where}: {problem}")
            return
        area = None
        if mask_area is not None:
            try:
                area = float(mask_area)
            except (TypeError, ValueError):
                self.bad(f"{where}: non-numeric area {mask_area!r}")
                return
            if not math.isfinite(area) or area <= 0:
                self.bad(f"{where}: area {mask_area!r} is not positive")
                return
        self.boxes.append(ObjectBox(image, label, max(0.0, x0f), max(0.0, y0f), min(w, x1f), min(h, y1f),
                                    w, h, area))


def _box_problem(x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> str | None:
    """Why a box is invalid, or ``None``."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, w, h)):
        return f"non-finite value in box ({x0}, {y0}, {x1}, {y1}) or image size {w}x{h}"
    if w <= 0 or h <= 0:
        return f"image size {w:g}x{h:g} is not positive"
    if x0 < -BORDER_TOLERANCE or y0 < -BORDER_TOLERANCE:
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has a negative corner"
    if x1 > w + BORDER_TOLERANCE or y1 > h + BORDER_TOLERANCE:
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w:g}x{h:g} image"
    if x1 <= x0 or y1 <= y0:
        return f"degenerate box ({x0:g}, {y0:g}, {x1:g}, {y1:g}): zero or negative width/height"
    if min(x1, w) <= max(x0, 0.0) or min(y1, h) <= max(y0, 0.0):
        return f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area inside the {w:g}x{h:g} image"
    return None


# ============================================================================ reading
def read_annotations(path: str | Path, fmt: str = "auto", skip_bad: bool = False,
                     image_sizes: str | Path | Mapping[str, Sequence[float]] | None = None) -> Annotations:
    """Read every object box of an annotation set.

    Args:
        path: a file or folder:

            * ``coco``: a COCO *instances* JSON (``images`` with ``width``/``height``,
              ``annotations`` with ``bbox = [x, y, w, h]``, optional ``categories``);
              ``area`` is kept as the mask area of segmented objects.
            * ``voc``: a Pascal VOC XML file or a folder of them (searched recursively).
              VOC corners are 1-based inclusive pixel indices: ``x0 = xmin - 1``,
              ``x1 = xmax`` (``xmin = 0``, written by some tools, is taken as 1).
            * ``yolo``: a folder of ``.txt`` label files, one object per line,
              ``class cx cy w h`` normalised to [0, 1]. Image sizes come from
              ``image_sizes`` or from the images beside the labels (same stem, in the
              same folder or in a sibling ``images/`` folder), or from a
              ``sizes.csv`` / ``sizes.json`` in the folder. Class names from a
              ``classes.txt`` in (or under) the folder, else the class id.
            * ``masks``: a PNG mask or a folder of them. A mask with one non-zero
              value is *binary*: each 8-connected component is one object
              (label ``None``). A mask with several non-zero values is a *label*
              mask: each value is one object (label = the value; 255 is VOC's
              "void" border and is ignored). Box = pixel extent, ``mask_area`` =
              pixel count.
            * ``csv``: columns ``image,x0,y0,x1,y1,image_w,image_h[,label]`` in
              continuous px (a header row with these names is optional).
        fmt: one of ``auto, coco, voc, yolo, masks, csv``; ``auto`` guesses from the
            file suffix or the folder content.
        skip_bad: skip malformed records or files and count them in
            :attr:`Annotations.skipped` instead of raising.
        image_sizes: YOLO only: a mapping ``image stem -> (width, height)`` or a
            CSV (``image,width,height``) / JSON (``{"image": [width, height]}``) file.

    Raises:
        AnnotationError: a malformed file or record (message names the file and
            the record index / id / line), or no valid object at all.
        InputError: an unknown ``fmt``.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    if fmt == "auto":
        fmt = _guess_format(path)
    col = _Collector(skip_bad)
    readers = {"coco": _read_coco, "voc": _read_voc, "yolo": _read_yolo, "masks": _read_masks, "csv": _read_csv}
    if fmt == "yolo":
        _read_yolo(path, col, image_sizes)
    else:
        if image_sizes is not None:
            col.notes.append(f"image sizes are only used for YOLO labels; ignored for {fmt}")
        readers[fmt](path, col)
    if not col.boxes:
        raise AnnotationError(f"{path}: no valid object found ({fmt} format, {col.skipped} malformed record(s) "
                              "skipped)" if col.skipped else f"{path}: no object found ({fmt} format)")
    return Annotations(col.boxes, col.skipped, f"{path} ({fmt})", col.notes)


def _guess_format(path: Path) -> str:
    if path.is_file():
        suffix = path.suffix.lower()
        guess = {".json": "coco", ".xml": "voc", ".csv": "csv", ".png": "masks", ".txt": "yolo"}.get(suffix)
        if guess is None:
            raise AnnotationError(f"{path}: cannot guess the annotation format from {suffix!r}; pass --format")
        return guess
    files = [p for p in path.rglob("*") if p.is_file()]
    counts = {
        "voc": sum(p.suffix.lower() == ".xml" for p in files),
        "yolo": sum(p.suffix.lower() == ".txt" and p.name != "classes.txt" for p in files),
        "masks": sum(p.suffix.lower() == ".png" for p in files),
        "coco": sum(p.suffix.lower() == ".json" for p in files),
        "csv": sum(p.suffix.lower() == ".csv" for p in files),
    }
    if counts["yolo"]:  # YOLO folders hold images (maybe PNG) and a sizes file beside the labels
        return "yolo"
    best = max(counts, key=lambda k: counts[k])
    if counts[best] == 0:
        raise AnnotationError(f"{path}: no annotation files (.json, .xml, .txt, .png, .csv) found")
    if best in ("coco", "csv"):
        raise AnnotationError(f"{path}: a folder of {best} files; pass the file itself")
    return best


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: unreadable ({exc})") from None


def _read_coco(path: Path, col: _Collector) -> None:
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the COCO instances JSON file")
    try:
        doc = _load_json(path)
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
        images[im["id"]] = im
    cats = {}
    for c in doc.get("categories") or []:
        if isinstance(c, dict) and "id" in c:
            cats[c["id"]] = str(c.get("name", c["id"]))
    for i, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            col.bad(f"{where}: not an object")
            continue
        if "id" in ann:
            where += f" (id {ann['id']})"
        missing = [k for k in ("image_id", "bbox") if k not in ann]
        if missing:
            col.bad(f"{where}: missing field(s) {', '.join(missing)}")
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
            col.bad(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
            continue
        try:
            x, y, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError):
            col.bad(f"{where}: non-numeric bbox {bbox!r}")
            continue
        if bw <= 0 or bh <= 0:
            col.bad(f"{where}: degenerate bbox {bbox!r}: width and height must be positive")
            continue
        cat = ann.get("category_id")
        label = cats.get(cat, None if cat is None else str(cat))
        area = ann.get("area") if ann.get("segmentation") and not ann.get("iscrowd") else None
        col.add(where, str(im.get("file_name", im["id"])), label, x, y, x + bw, y + bh,
                im["width"], im["height"], area)


def _xml_files(path: Path, suffix: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == suffix)
    if not files:
        raise AnnotationError(f"{path}: no {suffix} files")
    return files


def _read_voc(path: Path, col: _Collector) -> None:
    for f in _xml_files(path, ".xml"):
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            col.bad(f"{f}: not valid XML ({exc})")
            continue
        except OSError as exc:
            col.bad(f"{f}: unreadable ({exc})")
            continue
        if root.tag != "annotation":
            col.bad(f"{f}: root element is <{root.tag}>, expected <annotation>")
            continue
        image = (root.findtext("filename") or f.stem).strip()
        size = root.find("size")
        w = size.findtext("width") if size is not None else None
        h = size.findtext("height") if size is not None else None
        objects = root.findall("object")
        if w is None or h is None:
            for k in range(max(1, len(objects))):
                col.bad(f"{f}: object {k}: <size> with <width> and <height> is missing")
            continue
        for k, obj in enumerate(objects):
            name = (obj.findtext("name") or "").strip() or None
            where = f"{f}: object {k}" + (f" ({name})" if name else "")
            bb = obj.find("bndbox")
            vals = [bb.findtext(t) if bb is not None else None for t in ("xmin", "ymin", "xmax", "ymax")]
            if any(v is None for v in vals):
                col.bad(f"{where}: <bndbox> needs xmin, ymin, xmax, ymax")
                continue
            try:
                xmin, ymin, xmax, ymax = (float(v) for v in vals)
            except ValueError:
                col.bad(f"{where}: non-numeric <bndbox> {vals!r}")
                continue
            if xmin < 0 or ymin < 0:
                col.bad(f"{where}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has a negative corner")
                continue
            col.add(where, image, name, max(xmin, 1.0) - 1.0, max(ymin, 1.0) - 1.0, xmax, ymax, w, h)


def _load_sizes(spec: str | Path | Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, float]]:
    """``image stem -> (width, height)`` from a mapping, CSV or JSON file."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = spec.items()
        where = "image_sizes"
    else:
        p = Path(spec)
        where = str(p)
        if not p.is_file():
            raise AnnotationError(f"{p}: image sizes file not found")
        if p.suffix.lower() == ".json":
            doc = _load_json(p)
            if not isinstance(doc, dict):
                raise AnnotationError(f"{p}: expected a JSON object {{image: [width, height]}}")
            items = doc.items()
        else:
            rows = list(csv.reader(p.read_text(encoding="utf-8").splitlines()))
            if rows and rows[0] and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
                rows = rows[1:]
            items = []
            for n, row in enumerate(rows, start=2):
                if len(row) < 3:
                    raise AnnotationError(f"{p}: line {n}: expected image,width,height")
                items.append((row[0], row[1:3]))
    out = {}
    for name, wh in items:
        try:
            w, h = (float(v) for v in wh)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: {name!r}: size must be (width, height), got {wh!r}") from None
        out[Path(str(name)).stem] = (w, h)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _image_size_beside(label_file: Path) -> tuple[float, float] | None:
    from PIL import Image

    folders = [label_file.parent]
    if label_file.parent.name == "labels":
        folders.append(label_file.parent.parent / "images")
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for cand in (folder / (label_file.stem + suffix), folder / (label_file.stem + suffix.upper())):
                if cand.is_file():
                    try:
                        with Image.open(cand) as im:
                            return float(im.width), float(im.height)
                    except OSError:
                        return None
    return None


def _read_yolo(path: Path, col: _Collector, image_sizes: Any) -> None:
    sizes = _load_sizes(image_sizes)
    if path.is_file():
        files = [path]
        folder = path.parent
    else:
        folder = path
        files = sorted(p for p in path.rglob("*.txt") if p.is_file() and p.name != "classes.txt")
        if not files:
            raise AnnotationError(f"{path}: no YOLO .txt label files")
    if image_sizes is None:
        for cand in (folder / "sizes.csv", folder / "sizes.json"):
            if cand.is_file():
                sizes = _load_sizes(cand)
                col.notes.append(f"image sizes from {cand}")
                break
    names: list[str] = []
    found = [folder / "classes.txt"] if (folder / "classes.txt").is_file() else sorted(folder.rglob("classes.txt"))
    if found:
        names = [line.strip() for line in found[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    for f in files:
        wh = sizes.get(f.stem) or _image_size_beside(f)
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            col.bad(f"{f}: unreadable ({exc})")
            continue
        if wh is None:
            for n, line in enumerate(lines, start=1):
                if line.strip():
                    col.bad(f"{f}: line {n}: image size unknown (no entry in the sizes file, no image "
                            f"{f.stem}.* beside the labels)")
            continue
        w, h = wh
        for n, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{f}: line {n}"
            if len(parts) != 5:
                col.bad(f"{where}: expected 'class cx cy w h', got {len(parts)} field(s)")
                continue
            try:
                cls = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:])
            except ValueError:
                col.bad(f"{where}: non-numeric field in {line.strip()!r}")
                continue
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, bw, bh)):
                col.bad(f"{where}: normalised values must lie in [0, 1], got {line.strip()!r}")
                continue
            label = names[cls] if 0 <= cls < len(names) else str(cls)
            col.add(where, f.stem, label, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                    (cy + bh / 2) * h, w, h)


def mask_boxes(mask: np.ndarray) -> list[tuple[str | None, float, float, float, float, float]]:
    """Objects of one mask array ``(H, W)`` (see ``masks`` in :func:`read_annotations`).

    Returns:
        ``[(label, x0, y0, x1, y1, pixel_area), ...]`` in continuous px.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim == 3:  # RGB(A) mask: each distinct colour is one value
        rgb = mask[..., :3].astype(np.int64)
        if (rgb == rgb[..., :1]).all():
            mask = rgb[..., 0]
        else:
            flat = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
            _, inv = np.unique(flat, return_inverse=True)
            mask = inv.reshape(flat.shape)  # colour index, 0 = the darkest (black) colour
    values = [int(v) for v in np.unique(mask) if v != 0]
    out: list[tuple[str | None, float, float, float, float, float]] = []
    if len(values) == 1:
        comps, n = ndimage.label(mask != 0, structure=np.ones((3, 3), dtype=bool))
        slices = ndimage.find_objects(comps)
        areas = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, n + 1))
        for sl, area in zip(slices, areas):
            out.append((None, float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop),
                        float(area)))
        return out
    for v in values:
        if v == 255:
            continue
        ys, xs = np.nonzero(mask == v)
        out.append((str(v), float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1),
                    float(len(xs))))
    return out


def _read_masks(path: Path, col: _Collector) -> None:
    from PIL import Image

    files = _xml_files(path, ".png")
    for f in files:
        try:
            with Image.open(f) as im:
                mask = np.array(im)
        except OSError as exc:
            col.bad(f"{f}: not a readable PNG ({exc})")
            continue
        if mask.ndim not in (2, 3) or mask.size == 0:
            col.bad(f"{f}: mask of shape {mask.shape} is not an image")
            continue
        h, w = mask.shape[:2]
        objs = mask_boxes(mask)
        if not objs:
            col.notes.append(f"{f}: empty mask (no object)")
        for k, (label, x0, y0, x1, y1, area) in enumerate(objs):
            col.add(f"{f}: object {k}", f.name, label, x0, y0, x1, y1, w, h, area)


CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "image_w", "image_h", "label")


def _read_csv(path: Path, col: _Collector) -> None:
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the CSV file")
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"{path}: unreadable CSV ({exc})") from None
    index = {name: i for i, name in enumerate(CSV_COLUMNS)}
    start = 1
    if rows and rows[0] and len(rows[0]) > 1 and not _is_number(rows[0][1].strip()):
        header = [c.strip().lower() for c in rows[0]]
        missing = [c for c in CSV_COLUMNS[:7] if c not in header]
        if missing:
            raise AnnotationError(f"{path}: line 1: header lacks column(s) {', '.join(missing)} "
                                  f"(expected {','.join(CSV_COLUMNS)})")
        index = {name: header.index(name) for name in CSV_COLUMNS if name in header}
        rows, start = rows[1:], 2
    for n, row in enumerate(rows, start=start):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}: line {n}"
        if len(row) < 7 or any(index[c] >= len(row) for c in CSV_COLUMNS[:7]):
            col.bad(f"{where}: expected image,x0,y0,x1,y1,image_w,image_h[,label], got {len(row)} field(s)")
            continue
        label = row[index["label"]].strip() if "label" in index and index["label"] < len(row) else None
        col.add(where, row[index["image"]].strip(), label or None,
                *(row[index[c]].strip() for c in ("x0", "y0", "x1", "y1", "image_w", "image_h")))


# ============================================================================ preprocessing
@dataclass
class Preprocess:
    """The geometric preprocessing between an original image and the model input.

    Steps, in this order (each optional):

    1. ``resize = R``: as torchvision ``Resize(R)``: the shorter side becomes ``R``,
       the longer one ``int(R * long / short)`` (truncated, like torchvision). A
       point ``(x, y)`` maps to ``(x * W' / W, y * H' / H)``.
    2. ``center_crop = C``: as torchvision ``CenterCrop(C)``: offset
       ``left = int(round((W' - C) / 2))`` (same for ``top``); when ``C`` exceeds a
       side, that side is first zero-padded by ``(C - W') // 2`` on the left/top, so
       the offset is ``-((C - W') // 2)``. ``x -> x - left``.
    3. ``pad_to = P``: the image is placed at the centre of a ``P x P`` canvas, like
       :func:`erf.measure.embed`: ``x -> x + (P - W) // 2``; a side larger than ``P``
       is an error.
    4. ``input_size = S``: the model's input side. When the steps above do not end
       at ``S x S``, the image is finally stretched to ``S x S``
       (``Resize((S, S))``: ``x -> x * S / W``).

    After every step the box is clipped to the current image; an object cut away
    entirely (by the crop) ends with zero width or height.
    """

    resize: int | None = None
    center_crop: int | None = None
    pad_to: int | None = None
    input_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("resize", "center_crop", "pad_to", "input_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0):
                raise InputError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")

    def steps(self, image_w: float, image_h: float) -> list[tuple[str, float, float, float, float, float, float]]:
        """The affine steps for one image size: ``[(name, sx, sy, dx, dy, W_after, H_after), ...]``.

        A point maps as ``x -> x * sx + dx``, ``y -> y * sy + dy``; then it is
        clipped to ``[0, W_after] x [0, H_after]``.
        """
        w, h = float(image_w), float(image_h)
        out = []
        if self.resize:
            r = self.resize
            if w <= h:
                nw, nh = float(r), float(int(r * h / w))
            else:
                nw, nh = float(int(r * w / h)), float(r)
            out.append(("resize", nw / w, nh / h, 0.0, 0.0, nw, nh))
            w, h = nw, nh
        if self.center_crop:
            c = self.center_crop
            left = int(round((w - c) / 2.0)) if w >= c else -((c - int(w)) // 2)
            top = int(round((h - c) / 2.0)) if h >= c else -((c - int(h)) // 2)
            out.append(("center_crop", 1.0, 1.0, -float(left), -float(top), float(c), float(c)))
            w, h = float(c), float(c)
        if self.pad_to:
            p = self.pad_to
            if w > p or h > p:
                raise InputError(f"--pad-to {p}: the image is already {int(w)}x{int(h)} px at that step")
            out.append(("pad_to", 1.0, 1.0, float((p - int(w)) // 2), float((p - int(h)) // 2), float(p), float(p)))
            w, h = float(p), float(p)
        if self.input_size and (w, h) != (self.input_size, self.input_size):
            s = float(self.input_size)
            out.append(("stretch", s / w, s / h, 0.0, 0.0, s, s))
        return out

    def output_size(self, image_w: float, image_h: float) -> tuple[float, float]:
        """``(W, H)`` of the model input for an original image of ``image_w x image_h``."""
        steps = self.steps(image_w, image_h)
        return (steps[-1][5], steps[-1][6]) if steps else (float(image_w), float(image_h))

    def apply(self, box: ObjectBox) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of ``box`` in model-input px, clipped to the input."""
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
        for _, sx, sy, dx, dy, w, h in self.steps(box.image_w, box.image_h):
            x0, x1 = (min(max(v * sx + dx, 0.0), w) for v in (x0, x1))
            y0, y1 = (min(max(v * sy + dy, 0.0), h) for v in (y0, y1))
        return (x0, y0, x1, y1)

    def to_json(self) -> dict[str, int | None]:
        """The preprocessing as a JSON-ready dict."""
        return {"resize": self.resize, "center_crop": self.center_crop, "pad_to": self.pad_to,
                "input_size": self.input_size}


def rescale(boxes: Sequence[ObjectBox], preprocess: Preprocess | None = None) -> np.ndarray:
    """Boxes in model-input px: float64 ``(N, 4)`` of ``x0, y0, x1, y1`` (clipped)."""
    preprocess = preprocess or Preprocess()
    if not boxes:
        return np.zeros((0, 4))
    return np.asarray([preprocess.apply(b) for b in boxes], dtype=np.float64)


# ============================================================================ sizes
SIZE_MEASURES = (("sqrt_area", "sqrt(area) px"), ("longer_side", "longer side px"), ("relative", "relative size"))
"""The size measures of :class:`ObjectSizes`: attribute and label (px in model input; relative: side / image side)."""


@dataclass
class ObjectSizes:
    """Object sizes in model-input px, one entry per object.

    Attributes:
        sqrt_area: sqrt of the object's area in px (box area, or mask area with
            ``area="mask"`` where known), ``(N,)`` float64.
        longer_side: the box's longer side in px, ``(N,)``.
        relative: ``sqrt_area / sqrt(input W * input H)``: object side over image side, ``(N,)``.
        labels: class name per object (``None`` where unknown).
        is_estimate: True when the sizes are estimated (no annotations), e.g. CIFAR-10.
        method: how the sizes were obtained (``"annotations (box area)"``, ``"border-contrast"``, ...).
        boxes: ``(N, 4)`` boxes in model-input px.
        dropped: objects cut away entirely by the preprocessing (not in the arrays).
    """

    sqrt_area: np.ndarray
    longer_side: np.ndarray
    relative: np.ndarray
    labels: list[str | None]
    is_estimate: bool
    method: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    dropped: int = 0

    def __len__(self) -> int:
        return int(len(self.sqrt_area))


def object_sizes(boxes: Sequence[ObjectBox], preprocess: Preprocess | None = None, area: str = "box",
                 is_estimate: bool = False, method: str | None = None) -> ObjectSizes:
    """Sizes of annotated objects in the model's input pixels.

    Args:
        boxes: objects in original-image px.
        preprocess: the model's preprocessing (default: none, original px).
        area: ``"box"`` (box width x height) or ``"mask"`` (the mask area where
            known, scaled by the resize factors and by the fraction of the box that
            survives the crop; box area elsewhere).
        is_estimate, method: recorded in the result (defaults: False, ``"annotations (<area> area)"``).
    """
    if area not in ("box", "mask"):
        raise InputError(f"area {area!r}: use 'box' or 'mask'")
    preprocess = preprocess or Preprocess()
    keep_sqrt, keep_long, keep_rel, labels, kept = [], [], [], [], []
    dropped = 0
    for b in boxes:
        x0, y0, x1, y1 = preprocess.apply(b)
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            dropped += 1
            continue
        a = w * h
        if area == "mask" and b.mask_area is not None:
            sx = sy = 1.0
            for _, ax, ay, *_ in preprocess.steps(b.image_w, b.image_h):
                sx, sy = sx * ax, sy * ay
            a = b.mask_area * sx * sy * (a / (b.width * b.height * sx * sy))
        iw, ih = preprocess.output_size(b.image_w, b.image_h)
        keep_sqrt.append(math.sqrt(a))
        keep_long.append(max(w, h))
        keep_rel.append(math.sqrt(a) / math.sqrt(iw * ih))
        labels.append(b.label)
        kept.append((x0, y0, x1, y1))
    return ObjectSizes(np.asarray(keep_sqrt, dtype=np.float64), np.asarray(keep_long, dtype=np.float64),
                       np.asarray(keep_rel, dtype=np.float64), labels, is_estimate,
                       method or f"annotations ({area} area)",
                       np.asarray(kept, dtype=np.float64).reshape(-1, 4), dropped)


def cdf(values: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF: sorted ``x`` and ``F(x) = (rank + 1) / N`` (fraction of values <= x)."""
    x = np.sort(np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64))
    return x, np.arange(1, len(x) + 1, dtype=np.float64) / max(len(x), 1)


def _describe(values: np.ndarray, bins: int | np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"count": 0, "mean": None, "quantiles": {str(q): None for q in QUANTILES},
                "histogram": {"edges": [], "counts": []}}
    counts, edges = np.histogram(values, bins=bins)
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.percentile(values, QUANTILES))},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def summarize(sizes: ObjectSizes, bins: int = 20) -> dict[str, Any]:
    """Quantiles (5/25/50/75/95, linear interpolation), mean, count and histogram of each
    size measure, overall and per class (labels ``None`` are grouped as ``"(none)"``).

    Returns:
        ``{"count", "is_estimate", "method", "dropped", "sqrt_area": {...}, "longer_side": {...},
        "relative": {...}, "per_class": {label: {"count", "sqrt_area", "longer_side", "relative"}}}``
        where each measure is ``{"count", "mean", "quantiles": {"5": ..}, "histogram": {"edges", "counts"}}``.
        Per-class histograms share the overall bin edges.
    """
    out: dict[str, Any] = {"count": len(sizes), "is_estimate": bool(sizes.is_estimate), "method": sizes.method,
                           "dropped": int(sizes.dropped)}
    edges = {}
    for key in ("sqrt_area", "longer_side", "relative"):
        out[key] = _describe(getattr(sizes, key), bins)
        edges[key] = np.asarray(out[key]["histogram"]["edges"]) if len(sizes) else bins
    labels = np.asarray(["(none)" if lab is None else str(lab) for lab in sizes.labels], dtype=object)
    per_class = {}
    for lab in sorted(set(labels.tolist())):
        sel = labels == lab
        entry: dict[str, Any] = {"count": int(sel.sum())}
        for key in ("sqrt_area", "longer_side", "relative"):
            entry[key] = _describe(getattr(sizes, key)[sel], edges[key])
        per_class[lab] = entry
    out["per_class"] = per_class
    return out


# ============================================================================ estimation (no boxes)
ESTIMATE_METHODS = ("border-contrast",)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D ``values``: maximises the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    k = int(np.argmax(between[:-1])) if len(between) > 1 else 0
    return float(edges[k + 1])


def _border_distance(image: np.ndarray, band: int, smooth: float) -> np.ndarray:
    """Mahalanobis distance ``(H, W)`` of each smoothed pixel colour to the border colours."""
    from scipy import ndimage

    img = image.astype(np.float64)
    if smooth > 0:
        img = ndimage.gaussian_filter(img, sigma=(smooth, smooth, 0))
    border = np.ones(img.shape[:2], dtype=bool)
    border[band:-band, band:-band] = False
    colours = img[border]
    centre = np.median(colours, axis=0)
    cov = np.cov(colours, rowvar=False) + np.eye(3) * 25.0  # 5 grey levels of slack: flat borders
    inv = np.linalg.inv(cov)
    diff = img - centre
    return np.sqrt(np.einsum("hwi,ij,hwj->hw", diff, inv, diff))


def estimate_masks(images: np.ndarray, method: str = "border-contrast", band: int | None = None,
                   smooth: float = 1.0, min_distance: float = 3.0, min_fraction: float = 0.02) -> np.ndarray:
    """Model-free foreground masks ``(N, H, W)`` bool of uint8 images ``(N, H, W, 3)``.

    ``"border-contrast"`` (per image, uses nothing but its pixels):

    1. smooth the image with a Gaussian (``smooth`` px) against pixel noise;
    2. the background model is the colour distribution of a border band
       (``band`` px, default ``max(1, min(H, W) // 16)``): its median and
       covariance (+ 25 grey levels^2 on the diagonal);
    3. each pixel's Mahalanobis distance to it; threshold with Otsu's method,
       but never below ``min_distance`` (a uniform image has no foreground);
    4. 3x3 binary opening against specks; 8-connected components;
    5. keep the component with the largest area among those touching the central
       half of the image (the object of a photograph is roughly centred), or the
       largest one when none touches it; merge every other component of at least
       a quarter of its area whose box overlaps its box; fill holes.

    An image where nothing stands out gets an all-true mask (the object is
    assumed to fill the frame) — biased high, never silent: see
    :func:`estimate_extents`' ``method`` text.
    """
    from scipy import ndimage

    if method not in ESTIMATE_METHODS:
        raise InputError(f"estimate method {method!r}: use one of {', '.join(ESTIMATE_METHODS)}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
    n, h, w, _ = images.shape
    band = band or max(1, min(h, w) // 16)
    eight = np.ones((3, 3), dtype=bool)
    masks = np.zeros((n, h, w), dtype=bool)
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4: h - h // 4, w // 4: w - w // 4] = True
    for i in range(n):
        d = _border_distance(images[i], band, smooth)
        t = max(_otsu(d), min_distance)
        fg = ndimage.binary_opening(d > t, structure=eight)
        fg = fg | ndimage.binary_closing(fg, structure=eight)  # bridge one-pixel gaps
        comps, count = ndimage.label(fg, structure=eight)
        if count == 0:
            masks[i] = True
            continue
        areas = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, count + 1))
        central = np.unique(comps[centre & (comps > 0)])
        pool = central if len(central) else np.arange(1, count + 1)
        best = int(pool[np.argmax(areas[pool - 1])])
        keep = np.zeros(count + 1, dtype=bool)
        keep[best] = True
        # every other central component of at least min_fraction of the image belongs to the object too
        for k in central:
            if areas[k - 1] >= min_fraction * h * w:
                keep[k] = True
        masks[i] = ndimage.binary_fill_holes(keep[comps])
    return masks


def estimate_boxes(images: np.ndarray, method: str = "border-contrast", **options: Any) -> np.ndarray:
    """Estimated object boxes ``(N, 4)`` float64 ``x0, y0, x1, y1`` (continuous px of the images)."""
    masks = estimate_masks(images, method, **options)
    out = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def estimate_extents(images: np.ndarray, method: str = "border-contrast", preprocess: Preprocess | None = None,
                     labels: Sequence[str | None] | None = None, area: str = "box",
                     **options: Any) -> ObjectSizes:
    """Estimated object sizes of images without annotations (one object per image).

    Args:
        images: uint8 ``(N, H, W, 3)``.
        method: ``"border-contrast"`` (see :func:`estimate_masks`).
        preprocess: the model's preprocessing of these images (default none).
        labels: a class name per image (kept per object), optional.
        area: ``"box"`` (estimated box area) or ``"mask"`` (estimated mask area).

    Returns:
        :class:`ObjectSizes` with ``is_estimate=True``.
    """
    images = np.asarray(images)
    masks = estimate_masks(images, method, **options)
    n, h, w = masks.shape
    boxes = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes.append(ObjectBox(str(i), None if labels is None else labels[i], float(xs.min()), float(ys.min()),
                               float(xs.max() + 1), float(ys.max() + 1), float(w), float(h), float(m.sum())))
    full = int(sum(m.all() for m in masks))
    text = (f"estimate: {method} foreground segmentation ({area} area; "
            f"{full} of {n} images without a detected object counted as full-frame)")
    return object_sizes(boxes, preprocess, area=area, is_estimate=True, method=text)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes ``(N, 4)`` and ``(N, 4)`` -> ``(N,)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def estimator_error(images_uint8: np.ndarray, true_boxes: np.ndarray, method: str = "border-contrast",
                    **options: Any) -> dict[str, Any]:
    """Error of :func:`estimate_boxes` against known boxes (controlled canvases).

    Args:
        images_uint8: ``(N, H, W, 3)`` uint8.
        true_boxes: ``(N, 4)`` true ``x0, y0, x1, y1`` in px.

    Returns:
        ``{"count", "method", "median_abs_error_px", "p90_abs_error_px", "median_signed_error_px"
        (estimate - truth of sqrt(box area)), "median_relative_error" (|error| / true sqrt area),
        "mean_iou", "median_iou", "iou_above_0.5" (fraction)}``.
    """
    true_boxes = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    if len(true_boxes) != len(images_uint8):
        raise InputError(f"{len(images_uint8)} images but {len(true_boxes)} true boxes")
    est = estimate_boxes(images_uint8, method, **options)
    s_est = np.sqrt((est[:, 2] - est[:, 0]) * (est[:, 3] - est[:, 1]))
    s_true = np.sqrt((true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]))
    err = s_est - s_true
    iou = box_iou(est, true_boxes)
    return {
        "count": int(len(err)),
        "method": method,
        "median_abs_error_px": float(np.median(np.abs(err))),
        "p90_abs_error_px": float(np.percentile(np.abs(err), 90)),
        "median_signed_error_px": float(np.median(err)),
        "median_relative_error": float(np.median(np.abs(err) / s_true)),
        "mean_iou": float(iou.mean()),
        "median_iou": float(np.median(iou)),
        "iou_above_0.5": float((iou > 0.5).mean()),
    }


def paste_canvases(images: np.ndarray, sizes: Sequence[int], canvas: int = 64, background: str = "noise",
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Controlled canvases with known boxes: each uint8 image ``(N, h, w, 3)`` is
    resized (bilinear) to ``s x s`` (``s`` cycling through ``sizes``) and pasted at a
    uniformly random position of a ``canvas x canvas`` background.

    ``background``: ``"flat"`` (one random colour per canvas), ``"noise"`` (a random
    mean colour plus Gaussian pixel noise, std 20 grey levels), ``"gray"`` (128), or
    ``"photo"`` (another of the images, enlarged to the canvas: a natural, textured
    background, the hard case), or ``"study"``: the canvases of the controlled
    experiment themselves (:func:`erf.controlled.make_controlled`: smooth-noise
    background; images of size ``sizes[k]`` are every ``len(sizes)``-th image from ``k``).

    Returns:
        ``(canvases (N, canvas, canvas, 3) uint8, boxes (N, 4) float64 x0, y0, x1, y1)``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = np.asarray(images, dtype=np.uint8)
    n = len(images)
    out = np.zeros((n, canvas, canvas, 3), dtype=np.uint8)
    boxes = np.zeros((n, 4))
    if background == "study":
        from erf.controlled import make_controlled

        for k, s in enumerate(sizes):
            idx = np.arange(k, n, len(sizes))
            if int(s) > canvas:
                raise InputError(f"object size {s} exceeds the {canvas} px canvas")
            if idx.size:
                made = make_controlled(images[idx], np.zeros(idx.size, dtype=np.int64), int(s), canvas, seed)
                out[idx], boxes[idx] = made.uint8(), made.boxes
        return out, boxes
    for i in range(n):
        s = int(sizes[i % len(sizes)])
        if s > canvas:
            raise InputError(f"object size {s} exceeds the {canvas} px canvas")
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        if background == "gray":
            bg = np.full((canvas, canvas, 3), 128.0)
        elif background == "flat":
            bg = np.broadcast_to(colour, (canvas, canvas, 3)).copy()
        elif background == "noise":
            bg = colour + rng.normal(0.0, 20.0, size=(canvas, canvas, 3))
        elif background == "photo":
            other = images[(i + 1 + int(rng.integers(0, max(n - 1, 1)))) % n]
            bg = np.asarray(Image.fromarray(other).resize((canvas, canvas), Image.BILINEAR), dtype=np.float64)
        else:
            raise InputError(f"background {background!r}: use flat, noise, gray, photo or study")
        obj = np.asarray(Image.fromarray(images[i]).resize((s, s), Image.BILINEAR), dtype=np.float64)
        y, x = (int(v) for v in rng.integers(0, canvas - s + 1, size=2))
        bg[y: y + s, x: x + s] = obj
        out[i] = np.clip(np.round(bg), 0, 255).astype(np.uint8)
        boxes[i] = (x, y, x + s, y + s)
    return out, boxes


def controlled_check(images: np.ndarray, sizes: Sequence[int] = (12, 16, 24, 32, 40), canvas: int = 64,
                     background: str = "noise", seed: int = 0, method: str = "border-contrast") -> dict[str, Any]:
    """:func:`estimator_error` on :func:`paste_canvases` of ``images`` (overall and per size ``s``)."""
    canv, boxes = paste_canvases(images, sizes, canvas, background, seed)
    out = estimator_error(canv, boxes, method)
    out.update({"canvas": canvas, "background": background, "sizes": [int(s) for s in sizes], "seed": seed})
    per = {}
    side = boxes[:, 2] - boxes[:, 0]
    for s in sizes:
        sel = side == s
        if sel.any():
            per[str(int(s))] = estimator_error(canv[sel], boxes[sel], method)
    out["per_size"] = per
    return out
