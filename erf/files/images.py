"""Opening image files with bounds: the one place erf decodes an image file (data folders, mask PNGs).

:func:`open_bounded` refuses, before decoding, an image with more pixels than a cap (a decompression bomb)
and maps every decoder failure to :class:`ImageRefused`, which callers turn into their own typed errors.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ImageRefused(Exception):
    """An image file was not decoded: ``kind`` is ``"too_large"`` or ``"unreadable"``; the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@contextlib.contextmanager
def open_bounded(path: str | Path, max_pixels: int) -> Iterator[Any]:
    """The PIL image of ``path``, opened (not yet decoded) and checked to hold at most ``max_pixels`` pixels.

    Raises:
        ImageRefused: more than ``max_pixels`` pixels or a decompression bomb (``too_large``), or a file PIL
            cannot read (``unreadable``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise ImageRefused("too_large", f"{im.width} x {im.height} pixels (at most {max_pixels:,}); "
                                                    "refused before decoding (a decompression bomb?)")
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_large", f"refused: too many pixels (a decompression bomb?): {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, ZeroDivisionError) as exc:
        raise ImageRefused("unreadable", str(exc)) from None
