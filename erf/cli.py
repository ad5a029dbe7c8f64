"""The ``erf`` command line's entry point: the parser over the registered subcommands (:mod:`erf.commands`,
registered through :mod:`erf.commands._base`) and :func:`main`. Library errors (:mod:`erf.errors`) become
one-line messages and exit codes here, and only here.

Exit codes: 0 success, 1 a check failed (``erf compare --fail-on-difference``),
2 bad input (file, argument, data), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from erf.commands._base import COMMANDS
from erf.data.registry import help_lines
from erf.errors import ErfError

EPILOG_SPECS = """\
model specs (CKPT):
  resnet20_cbam              a registry name (`erf models`): bundled trained weights where shipped
  runs/norm_8d/best.pt       a checkpoint written by `erf train`
  norm_8d.pth                a raw state_dict (architecture inferred from its keys, e.g. the article's)
  torchvision:resnet50       a torchvision model at its own input size (random init; @FILE for weights)
  timm:convnext_tiny         a timm model (timm installed; random init; @FILE for weights)
  mynet.py:Net@weights.pt    your own class (or function) in a file, built without arguments
  mypkg.models:Net@w.pt      the same from an importable module
  whole_model.pt --trust     a pickled nn.Module (runs the file's code; its class must be importable)
data sources (--data):
""" + "\n".join(help_lines()) + "\n"
"""The subcommands' epilog: the model specs, then the data sources registered in :mod:`erf.data.registry`."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout; shows an option's default unless it says nothing (None, a flag's False)
    or the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text.lower():
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------- parser
def _load_subcommands() -> None:
    """Import every module of :mod:`erf.commands`: each registers its subcommands in ``COMMANDS``."""
    import importlib
    import pkgutil

    import erf.commands

    for info in sorted(pkgutil.iter_modules(erf.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"erf.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The ``erf`` argument parser with every registered subcommand."""
    _load_subcommands()
    parser = argparse.ArgumentParser(
        prog="erf",
        description="Theoretical (TRF) and effective (ERF) receptive fields of CNNs, with and "
                    "without attention.",
        epilog="Run `erf COMMAND --help` for a command's options and an example.",
    )
    from erf import __version__

    parser.add_argument("--version", action="version", version=f"erf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                           epilog=EPILOG_SPECS, formatter_class=_Formatter)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


PARAMETER_FLAGS = {"count": "--images", "units": "--unit", "fmt": "--format", "layers": "--layer"}
"""Library parameters whose flag is not ``--`` + the parameter name with dashes."""


def flag_of(param: str | None, args: argparse.Namespace) -> str | None:
    """The command-line flag of library parameter ``param`` for the parsed ``args``, or ``None`` when the
    command has no such option (the library's own wording is kept then)."""
    if not param:
        return None
    flag = PARAMETER_FLAGS.get(param, "--" + param.replace("_", "-"))
    return flag if hasattr(args, flag[2:].replace("-", "_")) else None


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Print a warning as one ``warning: ...`` line on stderr (no source location)."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``erf`` command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    import os

    # files only, no display (the library leaves the backend to its caller); set without importing matplotlib,
    # which `erf models` and other table-only commands never need (read when matplotlib is first imported)
    os.environ["MPLBACKEND"] = "Agg"
    if "matplotlib" in sys.modules:
        sys.modules["matplotlib"].use("Agg")
    previous = _on_sigterm(_terminated)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning  # restored on exit by catch_warnings
            return int(args.run(args) or 0)
    except ErfError as exc:
        print(f"erf {args.command}: error: {exc.describe(flag_of(exc.param, args))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"erf {args.command}: interrupted; --out keeps its previous content, no half-written file was left "
              "behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if previous is not None:
            _on_sigterm(previous)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a job scheduler) ends a run like Ctrl-C: the output set is rolled back."""
    raise KeyboardInterrupt


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM; return the previous one (``None`` outside the main thread)."""
    import signal

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread
        return None


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
