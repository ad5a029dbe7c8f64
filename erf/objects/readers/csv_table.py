"""CSV boxes: columns ``image,x0,y0,x1,y1,image_w,image_h[,label]`` in continuous px (a header row with
these names is optional).
"""

from __future__ import annotations

import csv
from pathlib import Path

from erf.errors import AnnotationError
from erf.objects.readers.registry import Reader, is_number, read_text, register_reader
from erf.objects.records import Collector

CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "image_w", "image_h", "label")


def read_csv(path: Path, col: Collector, image_sizes: object = None) -> None:
    """Feed every row of the CSV file ``path`` into ``col``."""
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the CSV file")
    text = read_text(path)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:  # a NUL byte, a field over csv.field_size_limit()
        raise AnnotationError(f"{path}: unreadable CSV ({exc})") from None
    index = {name: i for i, name in enumerate(CSV_COLUMNS)}
    start = 1
    if rows and rows[0] and len(rows[0]) > 1 and not is_number(rows[0][1].strip()):
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


register_reader(Reader("csv", read_csv, ".csv", "CSV file image,x0,y0,x1,y1,image_w,image_h[,label]",
                       lambda p: p.suffix.lower() == ".csv", reads_folders=False, priority=4))
