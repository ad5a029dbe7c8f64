"""Pascal VOC XML: a file or a folder of them (searched recursively). VOC corners are 1-based inclusive
pixel indices: ``x0 = xmin - 1``, ``x1 = xmax`` (``xmin = 0``, written by some tools, is taken as 1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from erf.objects.boxes import Collector
from erf.objects.readers.registry import DEFAULT_OPTIONS, Reader, ReadOptions, files_with_suffix, register_reader


def read_voc(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every object of the VOC XML file(s) at ``path`` into ``col``."""
    for f in files_with_suffix(path, ".xml"):
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
            if options.exclude_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                col.excluded += 1
                continue
            where = f"{f}: object {k}" + (f" ({name})" if name else "")
            bb = obj.find("bndbox")
            texts = [bb.findtext(t) if bb is not None else None for t in ("xmin", "ymin", "xmax", "ymax")]
            vals = [v for v in texts if v is not None]
            if len(vals) != 4:
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


register_reader(Reader("voc", read_voc, ".xml", "Pascal VOC XML file or folder",
                       lambda p: p.suffix.lower() == ".xml", priority=0))
