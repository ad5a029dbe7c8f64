"""YOLO txt labels: a folder of ``.txt`` files, one object per line, ``class cx cy w h`` normalised to [0, 1].

Image sizes come from ``image_sizes`` (a mapping ``image stem -> (width, height)`` or a CSV
``image,width,height`` / JSON ``{"image": [width, height]}`` file), from the images beside the labels
(same stem, in the same folder or in a sibling ``images/`` folder), or from a ``sizes.csv`` /
``sizes.json`` in the folder. Class names from a ``classes.txt`` in (or under) the folder, else the id.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from erf.errors import AnnotationError
from erf.objects.boxes import IMAGE_SUFFIXES, Collector
from erf.objects.readers.registry import (
    DEFAULT_OPTIONS,
    Reader,
    ReadOptions,
    is_number,
    load_json,
    read_text,
    register_reader,
)


def load_sizes(spec: str | Path | Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, float]]:
    """``image stem -> (width, height)`` from a mapping, CSV or JSON file."""
    if spec is None:
        return {}
    items: Iterable[tuple[Any, Any]]
    if isinstance(spec, Mapping):
        items = spec.items()
        where = "image_sizes"
    else:
        p = Path(spec)
        where = str(p)
        if not p.is_file():
            raise AnnotationError(f"{p}: image sizes file not found")
        if p.suffix.lower() == ".json":
            doc = load_json(p)
            if not isinstance(doc, dict):
                raise AnnotationError(f"{p}: expected a JSON object {{image: [width, height]}}")
            items = doc.items()
        else:
            try:
                rows = list(csv.reader(read_text(p).splitlines()))
            except csv.Error as exc:
                raise AnnotationError(f"{p}: unreadable CSV ({exc})") from None
            if rows and rows[0] and not is_number(rows[0][1] if len(rows[0]) > 1 else ""):
                rows = rows[1:]
            listed = []
            for n, row in enumerate(rows, start=2):
                if len(row) < 3:
                    raise AnnotationError(f"{p}: line {n}: expected image,width,height")
                listed.append((row[0], row[1:3]))
            items = listed
    out = {}
    for name, wh in items:
        try:
            w, h = (float(v) for v in wh)
        except (TypeError, ValueError, OverflowError):
            raise AnnotationError(f"{where}: {str(name)[:60]!r}: size must be (width, height), got "
                                  f"{repr(wh)[:60]}") from None
        out[Path(str(name)).stem] = (w, h)
    return out


def image_size_beside(label_file: Path) -> tuple[float, float] | None:
    """``(width, height)`` of the image with the label file's stem beside it (or in a sibling ``images/``)."""
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
                    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                        return None  # unreadable (or a decompression bomb): its labels count as size unknown
    return None


def read_yolo(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every label line of the YOLO file or folder ``path`` into ``col`` (sizes: see the module docstring)."""
    image_sizes = options.image_sizes
    sizes = load_sizes(image_sizes)
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
                sizes = load_sizes(cand)
                col.notes.append(f"image sizes from {cand}")
                break
    names: list[str] = []
    found = [folder / "classes.txt"] if (folder / "classes.txt").is_file() else sorted(folder.rglob("classes.txt"))
    if found:
        names = [line.strip() for line in read_text(found[0]).splitlines() if line.strip()]
    for f in files:
        wh = sizes.get(f.stem) or image_size_beside(f)
        try:
            lines = read_text(f).splitlines()
        except AnnotationError as exc:
            col.bad(str(exc))
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
                cls = int(parts[0]) if len(parts[0]) <= 18 else int("x")  # a class id, not a 5000-digit number
                cx, cy, bw, bh = (float(v) for v in parts[1:])
            except ValueError:
                col.bad(f"{where}: non-numeric field in {line.strip()[:80]!r}")
                continue
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, bw, bh)):
                col.bad(f"{where}: normalised values must lie in [0, 1], got {line.strip()[:80]!r}")
                continue
            label = names[cls] if 0 <= cls < len(names) else str(cls)
            col.add(where, f.stem, label, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                    (cy + bh / 2) * h, w, h)


register_reader(Reader("yolo", read_yolo, ".txt", "folder of YOLO .txt label files",
                       lambda p: p.suffix.lower() == ".txt" and p.name != "classes.txt", claims_folder=True,
                       priority=1, uses_image_sizes=True))
