"""Aligned text tables for the terminal: column widths come from the content, so no name is ever cut."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None,
                 gap: int = 2) -> list[str]:
    """Lines of a table whose columns are as wide as their widest cell.

    Args:
        header: column titles.
        rows: cells (converted with ``str``); a row may be shorter than the header (trailing cells empty).
        align: one character per column, ``l`` (left) or ``r`` (right); default: first column left, others right.
        gap: spaces between columns.
    """
    align = align or "l" + "r" * (len(header) - 1)
    cells = [[str(c) for c in header]] + [[str(c) for c in row] + [""] * (len(header) - len(row)) for row in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    lines = []
    for r in cells:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append((" " * gap).join(parts).rstrip())
    return lines


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None,
                gap: int = 2) -> None:
    """Print :func:`format_table`."""
    for line in format_table(header, rows, align, gap):
        print(line)
