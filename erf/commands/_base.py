"""What every subcommand module shares: the subcommand registry (:data:`COMMANDS`, filled by
:func:`command`), the common options (:func:`add_model_options`) and the output helpers (:func:`print_json`,
:func:`print_notes`).

Commands import this module, never :mod:`erf.cli`: the entry point imports the commands (to fill the
registry), so a command importing it back would be a cycle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {}
"""Subcommand name -> (one-line help, function adding its arguments, function running it and returning the
exit code), in registration order; the one place the command line's commands are listed."""


def command(name: str, help_text: str) -> Callable[[AddArguments], Callable[[Run], Run]]:
    """Register a subcommand: ``@command(name, help)(add_arguments)`` decorates its run function."""

    def wrap(add_arguments: AddArguments) -> Callable[[Run], Run]:
        def bind(run: Run) -> Run:
            COMMANDS[name] = (help_text, add_arguments, run)
            return run

        return bind

    return wrap


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented, key-sorted JSON on stdout."""
    print(json.dumps(obj, indent=2, sort_keys=True))


def print_notes(notes: Sequence[str]) -> None:
    """Print remarks for the user on stderr, one ``note:`` line each."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Add ``--trust`` (allow unpickling code from checkpoints) and ``--device`` (cpu, cuda, auto) to ``p``."""
    p.add_argument("--trust", action="store_true",
                   help="allow checkpoints that need arbitrary unpickling (can run code!)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


__all__ = ["COMMANDS", "add_model_options", "command", "print_json", "print_notes"]
