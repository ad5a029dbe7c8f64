"""Typed errors raised by the library.

Library code raises these; only the command line (:mod:`erf.cli`) turns them
into one-line messages and exit codes. Every error carries the offending
file, argument or record in its message.

An error about an argument names the library's parameter (``batch_size 0: must be an integer >= 1``)
and records it in :attr:`ErfError.param`; the command line names its own flag instead
(``--batch-size 0: ...``, :meth:`ErfError.describe`).

Every error is also the built-in exception it is a case of, so that callers who do not know `erf` catch it
the usual way: a bad value (:class:`InputError`, :class:`DataError`, :class:`CheckpointError`,
:class:`LayerError`, :class:`StudyError`) is a ``ValueError``; an unknown name (:class:`UnknownNameError`:
a model, a layer) is a ``KeyError`` (a ``LookupError``); a checkpoint or data file that does not exist
(:class:`CheckpointNotFoundError`, :class:`DataNotFoundError`) is a ``FileNotFoundError`` (an ``OSError``).
``str()`` is the message in every case (``KeyError`` alone would quote it). The command line's concerns,
:attr:`ErfError.exit_code` and :meth:`ErfError.describe`, stay on :class:`ErfError`.
"""

from __future__ import annotations

import errno
import os


class ErfError(Exception):
    """Base class of every error `erf` raises on purpose.

    Args:
        message: what is wrong; with ``param``, the text after the parameter's name (its value first).
        param: the library parameter the error is about (``batch_size``), or ``None``.
    """

    exit_code: int = 2

    def __init__(self, message: str = "", param: str | None = None) -> None:
        self.param = param
        self.detail = message
        super().__init__(f"{param} {message}" if param else message)

    def __str__(self) -> str:
        # the message as given: KeyError's own __str__ would quote it
        return str(self.args[0]) if self.args else ""

    def describe(self, flag: str | None = None) -> str:
        """The message with ``flag`` (a command-line flag such as ``--batch-size``) in place of the parameter."""
        if self.param and flag:
            return f"{flag} {self.detail}"
        return str(self)


class UnknownNameError(ErfError, KeyError):
    """A name is not known (a model, a layer); also a ``KeyError``, so ``except KeyError`` / ``LookupError``
    catches it."""


class _NotFound:
    """Mixin of the ``FileNotFoundError`` errors: sets ``errno`` to ``ENOENT`` (and ``strerror``)."""

    errno: int | None
    strerror: str | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.errno = errno.ENOENT
        self.strerror = os.strerror(errno.ENOENT)


class CheckpointError(ErfError, ValueError):
    """A checkpoint file cannot be read or does not match a known architecture."""


class CheckpointNotFoundError(_NotFound, CheckpointError, FileNotFoundError):
    """No checkpoint file (or registered model) of that name; also a ``FileNotFoundError``."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary unpickling (it may run code); refused without ``trust=True``."""


class ArchitectureError(CheckpointError):
    """The weights do not fit the architecture (missing, unexpected or mis-shaped keys)."""


class UnknownModelError(UnknownNameError):
    """A model name is not in the registry."""


class LayerError(ErfError, ValueError):
    """A layer name does not exist, never ran, or has no defined ERF."""


class LayerNotFoundError(LayerError, UnknownNameError):
    """No layer of that name; the message lists the nearest valid names."""


class LayerDidNotRunError(LayerError):
    """The layer's forward hook never fired (e.g. the model calls ``module.forward`` directly)."""


class UndefinedERFError(LayerError):
    """The layer has no spatial map (it comes after global pooling / flattening)."""


class DataError(ErfError, ValueError):
    """A data source is missing, empty, corrupt or of the wrong shape."""


class DataNotFoundError(_NotFound, DataError, FileNotFoundError):
    """A data file or folder does not exist; also a ``FileNotFoundError``."""


class AnnotationError(DataError):
    """An annotation file or record is malformed."""


class OutputError(ErfError):
    """An output path cannot be written (read-only file system, no permission, a name too long, empty)."""


class OutputExistsError(OutputError):
    """An output path exists and ``force`` was not given."""


class OutputBusyError(OutputError):
    """Another `erf` run is writing the same output path (it holds its lock)."""


class InputError(ErfError, ValueError):
    """An argument value is invalid (sizes, units, options)."""


class StudyError(ErfError, ValueError):
    """The study cannot be carried out with the given checkpoints or data."""


MAX_SEED = 2**64 - 1
"""Largest seed torch's generators take (``torch.manual_seed``: an unsigned 64-bit integer)."""


def check_seed(seed: object, param: str = "seed") -> int:
    """``seed`` if it is an integer in ``0..MAX_SEED`` (what every generator of torch and numpy accepts).

    Raises:
        InputError: naming ``param`` (``seed 1180591620717411303424: must be an integer in 0..2**64 - 1``).
    """
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        shown = f"{seed!r:.40}" if not isinstance(seed, int) or len(str(seed)) < 40 else f"{str(seed)[:20]}..."
        raise InputError(f"{shown}: must be an integer in 0..2**64 - 1", param=param)
    return int(seed)
