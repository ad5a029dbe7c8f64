"""Print one of the two quick-start commands from README.md (``main`` or ``test``).

The README's first fenced ``bash`` block holds exactly two lines: the main job on
bundled defaults, then the test command. CI runs the latter from here, and
tests/test_readme.py checks the block's shape, so README and CI cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def quickstart(readme: Path) -> list[str]:
    """The lines of the first ```bash block of ``readme``."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"```bash\n(.*?)\n```", text, flags=re.S)
    if not match:
        raise SystemExit(f"{readme}: no ```bash block")
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


if __name__ == "__main__":
    lines = quickstart(Path(__file__).resolve().parents[1] / "README.md")
    if len(lines) != 2:
        raise SystemExit(f"README.md: the first bash block must hold 2 commands, found {len(lines)}")
    print(lines[{"main": 0, "test": 1}[sys.argv[1]]])
