"""The official PASCAL VOC devkit's annotation cache: a MATLAB ``.mat`` file (``test_anno.mat``, ``recs_train.mat``)
holding ``recs``, one struct per image as the devkit's ``PASreadrecord.m`` parsed it from ``Annotations/*.xml``:
``filename``, ``size.width``/``size.height`` and ``objects`` with ``class``, ``bbox = [xmin ymin xmax ymax]``
(1-based inclusive pixel indices, as in the XML: ``x0 = xmin - 1``, ``x1 = xmax``) and ``difficult``.

Read with :func:`scipy.io.loadmat` (a data format: no code runs), after a size check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from erf.errors import AnnotationError
from erf.objects.boxes import Collector
from erf.objects.readers.registry import (
    DEFAULT_OPTIONS,
    MAX_ANNOTATION_BYTES,
    Reader,
    ReadOptions,
    register_reader,
)


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` of a MATLAB struct (``None`` when absent)."""
    return getattr(obj, name, None)


def _structs(value: Any) -> list[Any]:
    """A struct array (or one struct, or an empty array) as a list of structs."""
    import numpy as np

    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def read_voc_mat(path: Path, col: Collector, options: ReadOptions = DEFAULT_OPTIONS) -> None:
    """Feed every object of the VOC devkit cache ``path`` (``recs``) into ``col``."""
    import numpy as np
    import scipy.io

    if path.is_dir():
        raise AnnotationError(f"{path}: a folder; pass the devkit's .mat file itself (e.g. test_anno.mat)")
    if not path.is_file():
        raise AnnotationError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_ANNOTATION_BYTES:
        raise AnnotationError(f"{path}: {size:,} bytes (at most {MAX_ANNOTATION_BYTES:,})")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False, variable_names=["recs"])
    except NotImplementedError:  # MATLAB v7.3 (HDF5), which scipy does not read
        raise AnnotationError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 or convert it to XML/CSV") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... for files that are not .mat
        raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    if "recs" not in mat:
        raise AnnotationError(f"{path}: a .mat file without 'recs' (not a VOC devkit annotation cache)")
    for i, rec in enumerate(_structs(mat["recs"])):
        where = f"{path}: recs({i + 1})"
        image = _field(rec, "filename")
        dims = _field(rec, "size")
        w, h = _field(dims, "width"), _field(dims, "height")
        if not isinstance(image, str) or w is None or h is None:
            col.bad(f"{where}: needs filename and size.width / size.height")
            continue
        where = f"{path}: {image}"
        for k, obj in enumerate(_structs(_field(rec, "objects"))):
            label = _field(obj, "class")
            label = (str(label).strip() or None) if label is not None else None
            if options.exclude_difficult and int(_field(obj, "difficult") or 0) == 1:
                col.excluded += 1
                continue
            what = f"{where} object {k + 1}" + (f" ({label})" if label else "")
            bbox = np.asarray(_field(obj, "bbox") if _field(obj, "bbox") is not None else [], dtype=object).ravel()
            if bbox.size != 4:
                col.bad(f"{what}: bbox must be [xmin ymin xmax ymax], got {bbox.tolist()!r}"[:300])
                continue
            try:
                xmin, ymin, xmax, ymax = (float(v) for v in bbox)
            except (TypeError, ValueError, OverflowError):
                col.bad(f"{what}: non-numeric bbox {bbox.tolist()!r}"[:300])
                continue
            if xmin < 0 or ymin < 0:
                col.bad(f"{what}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has a negative corner")
                continue
            col.add(what, image, label, max(xmin, 1.0) - 1.0, max(ymin, 1.0) - 1.0, xmax, ymax, w, h)


register_reader(Reader("voc-mat", read_voc_mat, ".mat",
                       "the PASCAL VOC devkit's annotation cache (.mat with recs: test_anno.mat, recs_train.mat)",
                       lambda p: p.suffix.lower() == ".mat", reads_folders=False, priority=4))
