"""``python -m erf`` works like the ``erf`` command."""

from erf.cli import entry_point

if __name__ == "__main__":
    entry_point()
