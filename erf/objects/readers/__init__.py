"""Reading annotation sets: :func:`read_annotations` dispatches to the format readers registered in
:data:`~erf.objects.readers.registry.READERS` (one module per format: COCO, VOC, YOLO, masks, CSV).

Adding a format is one module here (a reader function and its :class:`Reader` entry, registered with
:func:`register_reader`) plus its import below; ``--format``'s choices and the format guess follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from erf.errors import AnnotationError, InputError

# isort: off
# each module registers its format; this order is the order formats are listed in help texts and messages
from erf.objects.readers import coco, voc, voc_mat, yolo, masks, csv_table  # noqa: F401
# isort: on
from erf.objects.boxes import Annotations, Collector
from erf.objects.readers.masks import mask_boxes
from erf.objects.readers.registry import (
    BOX_CONVENTIONS,
    READERS,
    Reader,
    ReadOptions,
    formats,
    guess_format,
    register_reader,
)

__all__ = ["BOX_CONVENTIONS", "READERS", "ReadOptions", "Reader", "formats", "guess_format", "mask_boxes",
           "read_annotations", "register_reader"]


def read_annotations(path: str | Path, fmt: str = "auto", skip_bad: bool = False,
                     image_sizes: str | Path | Mapping[str, Sequence[float]] | None = None,
                     exclude_difficult: bool = False, box_convention: str = "auto",
                     exclude_crowd: bool = False) -> Annotations:
    """Read every object box of an annotation set.

    Args:
        path: a file or folder:

            * ``coco``: a COCO *instances* JSON (``images`` with ``width``/``height``,
              ``annotations`` with ``bbox = [x, y, w, h]``, optional ``categories``);
              ``area`` is kept as the mask area of segmented objects.
            * ``voc``: a Pascal VOC XML file or a folder of them (searched recursively).
              VOC corners are 1-based inclusive pixel indices: ``x0 = xmin - 1``,
              ``x1 = xmax`` (``xmin = 0``, written by some tools, is taken as 1).
            * ``voc-mat``: the official VOC devkit's annotation cache, a MATLAB ``.mat`` file holding
              ``recs`` (``test_anno.mat``, ``recs_train.mat``), read with scipy; corners as in VOC XML.
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
              continuous px (a header row with these names is optional), or a header naming them
              in a common way (``filename``/``image_id``, ``xmin``..``ymax``, ``width``/``height``,
              ``class``/``label``/``category``, ``difficult``); a note says which mapping was used.
        fmt: one of ``auto, coco, voc, voc-mat, yolo, masks, csv``; ``auto`` guesses from the
            file suffix or the folder content.
        skip_bad: skip malformed records or files and count them in
            :attr:`Annotations.skipped` instead of raising.
        image_sizes: YOLO only: a mapping ``image stem -> (width, height)`` or a
            CSV (``image,width,height``) / JSON (``{"image": [width, height]}``) file.
        exclude_difficult: leave out objects flagged ``difficult`` (VOC XML; tables with a ``difficult``
            column); a note counts them.
        box_convention: how table corners are read, one of :data:`~erf.objects.readers.registry.BOX_CONVENTIONS`.
        exclude_crowd: leave out COCO crowd objects (``iscrowd = 1``); by default they are kept and a note
            counts them.

    Raises:
        AnnotationError: a malformed file or record (message names the file and
            the record index / id / line), or no valid object at all.
        InputError: an unknown ``fmt``.
    """
    path = Path(path)
    if fmt not in formats():
        raise InputError(f"{fmt!r}: use one of {', '.join(formats())}", param="fmt")
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    if not path.is_file() and not path.is_dir():
        raise AnnotationError(f"{path}: not a regular file or folder (a device, a FIFO?)")
    if fmt == "auto":
        fmt = guess_format(path)
    if box_convention not in BOX_CONVENTIONS:
        raise InputError(f"{box_convention!r}: use one of {', '.join(BOX_CONVENTIONS)}", param="box_convention")
    col = Collector(skip_bad)
    reader = READERS[fmt]
    if image_sizes is not None and not reader.uses_image_sizes:
        col.notes.append(f"image sizes are only used for YOLO labels; ignored for {fmt}")
        image_sizes = None
    if exclude_crowd and fmt != "coco":
        col.notes.append(f"crowd objects exist in COCO files only; exclude_crowd ignored for {fmt}")
    reader.read(path, col, ReadOptions(image_sizes, exclude_difficult, box_convention, exclude_crowd))
    if col.excluded:
        col.notes.append(f"left out {col.excluded} object(s) flagged difficult")
    if col.crowd:
        col.notes.append(f"counted {col.crowd} COCO crowd object(s) (iscrowd = 1: one box around a group of "
                         "objects, box area only); --exclude-crowd leaves them out")
    if col.crowd_excluded:
        col.notes.append(f"left out {col.crowd_excluded} COCO crowd object(s) (iscrowd = 1, --exclude-crowd)")
    if not col.boxes:
        raise AnnotationError(f"{path}: no valid object found ({fmt} format, {col.skipped} malformed record(s) "
                              "skipped)" if col.skipped else f"{path}: no object found ({fmt} format)")
    return Annotations(col.boxes, col.skipped, f"{path} ({fmt})", col.notes, fmt)
