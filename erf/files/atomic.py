"""Atomic writes: every file `erf` produces is written to a temporary file in
the same folder and renamed into place, so an interrupted run never leaves a
half-written file behind."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files: give the result the mode a plain open() would (or the old file's)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def pause_for_tests(point: str) -> None:
    """Sleep when the environment variable ``ERF_TEST_PAUSE`` is ``POINT:SECONDS`` (a hook for tests that send real
    signals mid-write, see :mod:`erf.files.outputs`; unset in normal use)."""
    name, _, seconds = os.environ.get("ERF_TEST_PAUSE", "").partition(":")
    if name == point and seconds:
        with contextlib.suppress(ValueError):
            time.sleep(float(seconds))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    pause_for_tests("write")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


JSON_INDENT_DEPTH = 3
"""Nesting levels :func:`json_text` lays out one item a line; deeper values, and lists without a mapping in them
(numbers, boxes) at any level, are written on one line."""


def json_text(obj: Any, level: int = 0) -> str:
    """``obj`` as key-sorted JSON, indented by two spaces down to :data:`JSON_INDENT_DEPTH` levels.

    Python's indenting encoder is pure Python (about 3 us a value: 70 s for the 20 million values of a
    65,535-class ``objects.json``); here everything below the laid-out levels goes through the C encoder in one
    call, so a document of any size costs about what ``json.dumps`` without ``indent`` costs. Byte-identical for
    equal input; refuses NaN and Inf (``ValueError``) like ``json.dumps(allow_nan=False)``.
    """
    pad = "  " * (level + 1)
    if level < JSON_INDENT_DEPTH and isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj):
        body = ",\n".join(f"{pad}{json.dumps(k)}: {json_text(v, level + 1)}" for k, v in sorted(obj.items()))
        return "{\n" + body + "\n" + "  " * level + "}"
    if level < JSON_INDENT_DEPTH and isinstance(obj, (list, tuple)) and any(isinstance(v, dict) for v in obj):
        return "[\n" + ",\n".join(pad + json_text(v, level + 1) for v in obj) + "\n" + "  " * level + "]"
    return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(", ", ": "))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as key-sorted JSON laid out by :func:`json_text` (byte-identical for equal input)."""
    write_text(path, json_text(obj) + "\n")


def json_ready(obj: Any) -> Any:
    """``obj`` made strict-JSON-ready: non-finite floats become ``None``, tuples lists, numpy scalars numbers,
    mapping keys strings (JSON has no NaN, and :func:`write_json` refuses it)."""
    import numpy as np

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_ready(obj.item())
    return obj


def write_npy(path: str | os.PathLike, array: Any) -> None:
    """Write a numpy array in ``.npy`` format atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def save_figure(fig: Any, path: str | os.PathLike, close: bool = True, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix of ``path``; resolution the figure's own),
    then close it unless ``close`` is False."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    write_bytes(path, buf.getvalue())
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)


def save_figures(figures: dict[str, Any], folder: str | os.PathLike, **kwargs: Any) -> None:
    """:func:`save_figure` each of ``figures`` (``{file name: figure}``) into ``folder``."""
    for name, fig in figures.items():
        save_figure(fig, Path(folder) / name, **kwargs)
