"""CSV boxes, one object per row: erf's own columns ``image,x0,y0,x1,y1,image_w,image_h[,label]`` in continuous
px (a header row with these names is optional), or any header naming the fields in a common way
(:data:`COLUMN_NAMES`: ``filename``, ``xmin``..``ymax``, ``width``/``height``, ``class``, ``difficult``...),
such as the VOC devkit's box tables.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from erf.errors import AnnotationError
from erf.objects.boxes import Collector
from erf.objects.readers.registry import DEFAULT_OPTIONS, Reader, ReadOptions, is_number, read_text, register_reader

CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "image_w", "image_h", "label")
"""erf's own columns, in the order of a header-less file."""
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "image": ("image", "filename", "file_name", "file", "image_path", "path", "image_id", "img"),
    "x0": ("x0", "xmin", "x_min", "left"),
    "y0": ("y0", "ymin", "y_min", "top"),
    "x1": ("x1", "xmax", "x_max", "right"),
    "y1": ("y1", "ymax", "y_max", "bottom"),
    "image_w": ("image_w", "width", "image_width", "img_width", "img_w"),
    "image_h": ("image_h", "height", "image_height", "img_height", "img_h"),
    "label": ("label", "class", "category", "category_name", "class_name", "name"),
    "difficult": ("difficult", "is_difficult"),
}
"""Header names read for each field, in order of preference (the first present wins: ``filename`` before
``image_id``)."""
_VOC_NAMES = {"xmin", "ymin", "xmax", "ymax"}


def column_mapping(header: Sequence[str]) -> dict[str, int]:
    """``{field: column index}`` for a header row (names compared in lower case, see :data:`COLUMN_NAMES`)."""
    names = [c.strip().lower().lstrip("\ufeff") for c in header]
    out = {}
    for field, aliases in COLUMN_NAMES.items():
        found = next((a for a in aliases if a in names), None)
        if found is not None:
            out[field] = names.index(found)
    return out


def read_csv(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every row of the CSV file ``path`` into ``col``.

    Without a header the columns are :data:`CSV_COLUMNS`. With one, the fields are found by name
    (:func:`column_mapping`) and a note says which column gave which field and how corners were read
    (``options.box_convention``; ``auto`` reads a table with VOC's ``xmin``..``ymax`` and ``difficult``
    columns, as the VOC devkit exports it, as 1-based inclusive pixel indices).
    """
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the CSV file")
    text = read_text(path)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # a NUL byte, a field over csv.field_size_limit()
        raise AnnotationError(f"{path}: unreadable CSV ({exc})") from None
    index = {name: i for i, name in enumerate(CSV_COLUMNS)}
    start = 1
    voc = options.box_convention == "voc"
    if rows and rows[0] and len(rows[0]) > 1 and not is_number(rows[0][1].strip()):
        header = [c.strip() for c in rows[0]]
        index = column_mapping(header)
        missing = [c for c in CSV_COLUMNS[:7] if c not in index]
        if missing:
            accepted = "; ".join(f"{c}: {'/'.join(COLUMN_NAMES[c])}" for c in missing)
            raise AnnotationError(f"{path}: line 1: header lacks column(s) for {', '.join(missing)} "
                                  f"(accepted names: {accepted})")
        lower = {h.lower() for h in header}
        if options.box_convention == "auto":
            voc = _VOC_NAMES <= lower and "difficult" in index
        if [header[index[c]].lower() for c in CSV_COLUMNS if c in index] != [c for c in CSV_COLUMNS if c in index]:
            used = ", ".join(f"{field}={header[k]}" for field, k in index.items())
            corners = ("VOC 1-based inclusive pixel indices (x0 = xmin - 1, x1 = xmax)" if voc
                       else "continuous px corners")
            col.notes.append(f"{path}: columns read as {used}; corners as {corners}")
        rows, start = rows[1:], 2
    if options.exclude_difficult and "difficult" not in index:
        col.notes.append(f"{path}: no difficult column; nothing excluded")
    fields = ("x0", "y0", "x1", "y1", "image_w", "image_h")
    for n, row in enumerate(rows, start=start):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}: line {n}"
        if len(row) < 7 or any(index[c] >= len(row) for c in CSV_COLUMNS[:7]):
            col.bad(f"{where}: expected {len(index)} fields ({', '.join(index)}), got {len(row)}")
            continue
        if options.exclude_difficult and "difficult" in index and row[index["difficult"]].strip() in ("1", "true"):
            col.excluded += 1
            continue
        label = row[index["label"]].strip() if "label" in index and index["label"] < len(row) else None
        x0: str | float
        y0: str | float
        x0, y0, x1, y1, w, h = (row[index[c]].strip() for c in fields)
        if voc:
            try:
                x0, y0 = max(float(x0), 1.0) - 1.0, max(float(y0), 1.0) - 1.0
            except ValueError:
                pass  # non-numeric: the collector reports it
        col.add(where, row[index["image"]].strip(), label or None, x0, y0, x1, y1, w, h)


register_reader(Reader("csv", read_csv, ".csv", "CSV file image,x0,y0,x1,y1,image_w,image_h[,label]",
                       lambda p: p.suffix.lower() == ".csv", reads_folders=False, priority=4))
