"""The registry of annotation formats: one :class:`Reader` per format, registered by its own module.

A reader is a function ``read(path, collector, options)`` that feeds every box it finds into a
:class:`~erf.objects.boxes.Collector`; its :class:`Reader` entry also says how to recognise the
format (a file suffix, which files of a folder belong to it), so :func:`guess_format` and the command
line's ``--format`` choices come from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erf.errors import AnnotationError
from erf.objects.boxes import Collector

BOX_CONVENTIONS = ("auto", "continuous", "voc")
"""How corner columns of table formats are read: ``continuous`` (``x0 <= x < x1`` in px, erf's own), ``voc``
(1-based inclusive pixel indices: ``x0 = xmin - 1``, ``x1 = xmax``), ``auto`` (``voc`` for tables with VOC's
``difficult`` column, else ``continuous``)."""


@dataclass(frozen=True)
class ReadOptions:
    """Options of the readers (each reader uses the ones that apply to its format).

    Attributes:
        image_sizes: YOLO only: ``image stem -> (width, height)`` mapping, or a CSV/JSON file of them.
        exclude_difficult: drop objects flagged ``difficult`` (VOC XML, tables with a ``difficult`` column).
        box_convention: one of :data:`BOX_CONVENTIONS` (tables).
        exclude_crowd: drop COCO ``iscrowd`` objects (one box around a group of objects); kept and counted by
            default.
    """

    image_sizes: Any = None
    exclude_difficult: bool = False
    box_convention: str = "auto"
    exclude_crowd: bool = False


DEFAULT_OPTIONS = ReadOptions()
"""The readers' default options."""


@dataclass(frozen=True)
class Reader:
    """One annotation format.

    Attributes:
        name: the format's name (``coco``), the value of ``--format``.
        read: ``read(path, collector, options)``: feed the boxes of ``path`` into ``collector``
            (``options``: :class:`ReadOptions`).
        suffix: file suffix that identifies a single file of this format (``.json``).
        description: one line for help texts.
        folder_file: whether a file found in a folder belongs to this format (for guessing a folder's format).
        reads_folders: a folder of such files can be read (False: the reader wants the file itself).
        claims_folder: a folder with any file of this format is read as this format (YOLO: its folders also
            hold images and size files).
        priority: tie-break when a folder holds equally many files of several formats (lower wins).
        uses_image_sizes: the reader takes the ``image_sizes`` argument (YOLO).
    """

    name: str
    read: Callable[[Path, Collector, ReadOptions], None]
    suffix: str
    description: str
    folder_file: Callable[[Path], bool]
    reads_folders: bool = True
    claims_folder: bool = False
    priority: int = 100
    uses_image_sizes: bool = False


READERS: dict[str, Reader] = {}
"""Registered formats by name, in registration order."""


def register_reader(reader: Reader) -> Reader:
    """Add ``reader`` to :data:`READERS` (its name must be new)."""
    if reader.name in READERS or reader.name == "auto":
        raise ValueError(f"annotation format {reader.name!r} registered twice")
    READERS[reader.name] = reader
    return reader


def formats() -> tuple[str, ...]:
    """``("auto", *registered names)``: the accepted values of ``fmt`` / ``--format``."""
    return ("auto", *READERS)


def guess_format(path: Path) -> str:
    """The format of a file (from its suffix) or a folder (from the files it holds).

    Raises:
        AnnotationError: no format matches, or a folder of a format that must be given as a file.
    """
    if path.is_file():
        suffix = path.suffix.lower()
        guess = next((r.name for r in READERS.values() if r.suffix == suffix), None)
        if guess is None:
            raise AnnotationError(f"{path}: cannot guess the annotation format from {suffix!r}; pass --format")
        return guess
    files = [p for p in path.rglob("*") if p.is_file()]
    counts = {r.name: sum(r.folder_file(p) for p in files) for r in sorted(READERS.values(), key=lambda r: r.priority)}
    for r in READERS.values():
        if r.claims_folder and counts[r.name]:
            return r.name
    best = max(counts, key=lambda k: counts[k])
    if counts[best] == 0:
        suffixes = ", ".join(r.suffix for r in READERS.values())
        raise AnnotationError(f"{path}: no annotation files ({suffixes}) found")
    if not READERS[best].reads_folders:
        raise AnnotationError(f"{path}: a folder of {best} files; pass the file itself")
    return best


MAX_ANNOTATION_BYTES = 4 * 2**30
"""Bytes of one annotation file at most (COCO train2017's instances file is 0.45 GB)."""


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped).

    Raises:
        AnnotationError: unreadable, over :data:`MAX_ANNOTATION_BYTES`, or not UTF-8 (naming the byte offset).
    """
    try:
        if not path.is_file():  # /dev/zero, a FIFO: reading would never end
            raise AnnotationError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_ANNOTATION_BYTES:
            raise AnnotationError(f"{path}: {size:,} bytes (at most {MAX_ANNOTATION_BYTES:,})")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                              "save it as UTF-8") from None
    except OSError as exc:
        raise AnnotationError(f"{path}: unreadable ({exc.strerror or exc})") from None


def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed or unreadable files raise :class:`AnnotationError` naming the position."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply to be an annotation file") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int_max_str_digits)
        raise AnnotationError(f"{path}: unreadable JSON value ({_short(str(exc))})") from None


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


def files_with_suffix(path: Path, suffix: str) -> list[Path]:
    """``[path]`` for a file, else every file under the folder ``path`` with ``suffix`` (sorted, recursive).

    Raises:
        AnnotationError: a folder without such files.
    """
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == suffix)
    if not files:
        raise AnnotationError(f"{path}: no {suffix} files")
    return files


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (header detection in CSV-like files)."""
    try:
        float(text)
        return True
    except ValueError:
        return False
