"""Mask PNGs: a file or a folder of them. A mask with one non-zero value is *binary*: each 8-connected
component is one object (label ``None``). A mask with several non-zero values is a *label* mask: each value
is one object (label = the value; 255 is VOC's "void" border and is ignored). Box = pixel extent,
``mask_area`` = pixel count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erf.objects.readers.registry import DEFAULT_OPTIONS, Reader, ReadOptions, files_with_suffix, register_reader
from erf.objects.records import Collector


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


def read_masks(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every object of the mask PNG(s) at ``path`` into ``col``."""
    from PIL import Image

    files = files_with_suffix(path, ".png")
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


register_reader(Reader("masks", read_masks, ".png", "binary or label mask PNG file or folder",
                       lambda p: p.suffix.lower() == ".png", priority=2))
