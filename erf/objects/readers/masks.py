"""Mask PNGs: a file or a folder of them. A mask with one non-zero value is *binary*: each 8-connected
component is one object (label ``None``). A mask with several non-zero values is a *label* mask: each value
is one object (label = the value; 255 is VOC's "void" border and is ignored). Box = pixel extent,
``mask_area`` = pixel count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from erf.files.images import ImageRefused, open_bounded
from erf.objects.boxes import Collector
from erf.objects.readers.registry import DEFAULT_OPTIONS, Reader, ReadOptions, files_with_suffix, register_reader

if TYPE_CHECKING:
    import numpy as np

MAX_MASK_PIXELS = 64 * 2**20
"""Pixels of one mask PNG at most (64 Mpx); larger ones are refused before they are decoded."""


def mask_boxes(mask: np.ndarray) -> list[tuple[str | None, float, float, float, float, float]]:
    """Objects of one mask array ``(H, W)`` (see ``masks`` in :func:`read_annotations`).

    Returns:
        ``[(label, x0, y0, x1, y1, pixel_area), ...]`` in continuous px.
    """
    import numpy as np
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] <= 2:  # L / LA (PIL's "LA", "PA"): the value is the first channel
        mask = mask[..., 0]
    if mask.ndim == 3:  # RGB(A) mask: each distinct colour is one value
        rgb = mask[..., :3].astype(np.int64)
        if (rgb == rgb[..., :1]).all():
            mask = rgb[..., 0]
        else:
            flat = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
            _, inv = np.unique(flat, return_inverse=True)
            mask = inv.reshape(flat.shape)  # colour index, 0 = the darkest (black) colour
    uniq, inverse = np.unique(mask, return_inverse=True)
    values = [int(v) for v in uniq if v != 0]
    out: list[tuple[str | None, float, float, float, float, float]] = []
    if len(values) == 1:
        comps, n = ndimage.label(mask != 0, structure=np.ones((3, 3), dtype=bool))
        slices = ndimage.find_objects(comps)
        areas = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, n + 1))
        for sl, area in zip(slices, areas):
            out.append((None, float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop),
                        float(area)))
        return out
    # one pass over the pixels for every value (a 16-bit mask may hold 65535 of them)
    index = inverse.reshape(mask.shape)
    slices = ndimage.find_objects(index + 1)
    counts = np.bincount(index.ravel(), minlength=len(uniq))
    for k, v in enumerate(int(u) for u in uniq):
        if v in (0, 255) or slices[k] is None:
            continue
        sy, sx = slices[k]
        out.append((str(v), float(sx.start), float(sy.start), float(sx.stop), float(sy.stop), float(counts[k])))
    return out


def read_masks(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every object of the mask PNG(s) at ``path`` into ``col``."""
    import numpy as np  # here, not at import: listing the formats (``erf objects --help``) needs no numpy

    files = files_with_suffix(path, ".png")
    for f in files:
        try:
            with open_bounded(f, MAX_MASK_PIXELS) as im:
                mask = np.array(im)
        except ImageRefused as exc:
            col.bad(f"{f}: {exc}" if exc.kind == "too_large" else f"{f}: not a readable PNG ({exc})")
            continue
        if mask.ndim not in (2, 3) or mask.size == 0 or (mask.ndim == 3 and mask.shape[2] > 4):
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
