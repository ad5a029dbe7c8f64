"""Checkpoint files read and written safely: the bytes on disk, not the model built from them
(:mod:`erf.checkpoints` builds that).

* :func:`read_checkpoint_file`: what a ``.pt`` / ``.pth`` / ``.safetensors`` file holds, every failure a typed
  error naming the file. Pickle files are scanned first (:mod:`erf.files.safeload`: a bounded opcode walk that
  refuses implausibly long streams and names what a file imports), then read with
  ``torch.load(weights_only=True)`` (zip files memory-mapped); a file that needs arbitrary unpickling is refused
  with :class:`~erf.errors.UnsafeCheckpointError` unless ``trust=True``, and with ``trust=True`` a
  :class:`TrustedCodeWarning` says so before it is unpickled.
* safetensors files (:func:`read_safetensors`, :func:`save_safetensors`, :func:`checkpoint_to_safetensors`) are
  read with the ``safetensors`` package, never with ``torch.load``: the format holds tensors and strings only, so
  it cannot carry code; an erf checkpoint keeps its architecture in the header's ``__metadata__``.
* the erf checkpoint format's tag (:data:`FORMAT`, :data:`FORMAT_VERSION`) and :func:`plain_values`, which makes
  metadata loadable with ``weights_only``.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from erf.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

FORMAT = "erf.checkpoint"
FORMAT_VERSION = 1


class TrustedCodeWarning(UserWarning):
    """A file is about to be unpickled in full because of ``trust=True``: it may run code."""


def plain_values(obj: Any) -> Any:
    """Plain Python (numpy scalars/arrays -> numbers/lists, paths -> str) so ``weights_only`` can load it back."""
    import os

    import numpy as np

    if isinstance(obj, Mapping):
        return {k if isinstance(k, (str, int)) else str(k): plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_values(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)


SAFETENSORS_SUFFIX = ".safetensors"


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file: its suffix, or its header (a little-endian u64 length, then ``{``)."""
    path = Path(path)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size
    except OSError:
        return False


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """Read a safetensors file: an erf checkpoint dict when its ``__metadata__`` says ``format: erf.checkpoint``
    (``model``, ``model_kwargs`` and ``metadata`` are JSON strings there), else the plain ``{key: tensor}`` dict.

    Raises:
        CheckpointError: truncated, corrupt or not a safetensors file (the package validates header and offsets).
    """
    import json

    from safetensors import safe_open

    from erf.files.safeload import check_safetensors_header

    try:
        check_safetensors_header(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError, ValueError: the package's own checks
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({first_line(str(exc))})") from None
    if header.get("format") != FORMAT:
        return tensors
    try:
        return {"format": FORMAT, "format_version": int(header.get("format_version", FORMAT_VERSION)),
                "model": header["model"], "model_kwargs": json.loads(header.get("model_kwargs") or "{}"),
                "metadata": json.loads(header.get("metadata") or "{}"), "state_dict": tensors}
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: safetensors header of an erf checkpoint is malformed ({exc})") from None


def save_safetensors(path: str | Path, state: Mapping[str, torch.Tensor], name: str,
                     kwargs: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``state`` (a state dict) as a safetensors file, atomically, with the architecture in the header.

    Args:
        path: destination (``best.safetensors``).
        state: ``{key: tensor}``; tensors are stored contiguous, each with its own memory.
        name: registry name of the architecture.
        kwargs: its constructor overrides (JSON in the header).
        metadata: JSON-like facts (JSON in the header).
    """
    import json

    from safetensors.torch import save

    from erf.files.atomic import write_bytes

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model": name,
              "model_kwargs": json.dumps(plain_values(dict(kwargs or {})), sort_keys=True),
              "metadata": json.dumps(plain_values(dict(metadata or {})), sort_keys=True)}
    write_bytes(path, save(tensors, metadata=header))


def checkpoint_to_safetensors(source: str | Path, target: str | Path) -> None:
    """Convert the erf checkpoint ``source`` (``best.pt``) into ``target`` (``best.safetensors``).

    Raises:
        CheckpointError: ``source`` is not an erf checkpoint.
    """
    obj = read_checkpoint_file(source)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an erf checkpoint")
    save_safetensors(target, obj["state_dict"], str(obj["model"]), obj.get("model_kwargs"), obj.get("metadata"))


def read_checkpoint_file(path: str | Path, trust: bool = False) -> Any:
    """Read a checkpoint file safely, mapping every failure to a typed error naming ``path``.

    Safetensors files go to :func:`read_safetensors`. Pickle files are scanned first
    (:func:`erf.files.safeload.scan_pickle`: refused when implausibly long for their tensors), then loaded with
    ``torch.load(weights_only=True)``; zip-format files are memory-mapped, so a large file is not read into memory
    twice. With ``trust``, a file the safe loader refuses is unpickled in full after a :class:`TrustedCodeWarning`.

    Raises:
        CheckpointError: missing, empty, truncated, implausibly long or not a checkpoint.
        UnsafeCheckpointError: it needs arbitrary unpickling and ``trust`` is false (the message names what it
            imports).
    """
    from erf.files.safeload import scan_pickle

    path = Path(path)
    try:
        if not path.exists():
            raise CheckpointNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
        if not path.is_file():
            raise CheckpointError(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file")
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if is_safetensors(path):
        return read_safetensors(path)
    scan = scan_pickle(path)
    is_zip = zipfile.is_zipfile(path)
    try:
        return _torch_load(path, weights_only=True, mmap=is_zip or None)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first_line(text)})") from None
        imports = scan.unsafe if scan is not None else []
        code = bool(imports) or any(m in text for m in _CODE_MARKERS)
        # protocol 4+ streams (FRAME opcodes) are beyond the safe loader even without code; the full one reads them
        framed = scan is not None and (scan.protocol or 0) >= 4
        old = scan is not None and scan.old_protocol and not code
        if old and not trust:
            raise CheckpointError(f"{path}: a pickle protocol 0/1 stream (torch.save(..., pickle_protocol=0 or 1)), "
                                  "which the safe loader cannot read; pass --trust if you trust its author, or save "
                                  "it again with the default protocol") from None
        if not code and not (trust and (framed or old)):
            # the safe unpickler stopped on a malformed stream (random bytes, JSON, text), not on code
            detail = next((ln for ln in text.splitlines() if re.match(r"(Unsupported operand|String is too|"
                                                                       r"Can only|unsupported persistent)", ln)),
                          "malformed pickle stream")
            hint = (f"; it is a pickle protocol {scan.protocol} stream, which only --trust can read"
                    if framed and scan is not None else "")
            raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({detail.strip()}){hint}") from None
        what = f" (it imports {', '.join(imports[:3])}{', ...' if len(imports) > 3 else ''})" if imports else ""
        if not trust:
            raise UnsafeCheckpointError(
                f"{path}: needs arbitrary unpickling, which can run code{what}; refused "
                "(pass --trust only if you trust its author)"
            ) from None
        why = " (an old pickle protocol)" if old else ""
        warnings.warn(TrustedCodeWarning(f"{path} may run code when loaded (--trust): the safe loader refused it"
                                         f"{why}{what}; unpickling it in full"), stacklevel=2)
        try:
            if old and is_zip:
                return _load_protocol0(path)
            if old:
                raise CheckpointError("a legacy-format (torch < 1.6) file in pickle protocol 0/1, which torch "
                                      "itself cannot read back (its storage ids are text); save it again as a zip "
                                      "checkpoint with the default protocol")
            return _torch_load(path, weights_only=False, mmap=None)
        except Exception as exc2:
            raise CheckpointError(f"{path}: failed to load with --trust ({type(exc2).__name__}: "
                                  f"{first_line(str(exc2))})") from None


_PROTOCOL0_STORAGE = re.compile(r"^\('storage', <class 'torch\.(\w+)'>, '([^']*)', '([^']*)', (\d+)\)$")
"""A persistent id as a protocol-0 ``torch.save`` writes it: ``str()`` of the tuple (torch's own loader, which
expects the tuple, cannot read these files back)."""


def _load_protocol0(path: Path) -> Any:
    """Unpickle a zip checkpoint saved with ``pickle_protocol=0`` or ``1`` in full (only under ``--trust``: it is
    the plain unpickler), reading its storages from the archive by the persistent ids that protocol 0 writes as
    text.

    Raises:
        Exception: whatever the stream or archive makes the unpickler raise (the caller words it).
    """
    import io

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.lower() == "data.pkl" or n.lower().endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid: Any) -> Any:
                if isinstance(pid, str):
                    m = _PROTOCOL0_STORAGE.match(pid)
                    if m is None:
                        raise pickle.UnpicklingError(f"unsupported persistent id {pid[:80]!r}")
                    storage_type, key, _, _ = m.groups()
                else:
                    _, storage_type, key, _, _ = pid
                    storage_type = getattr(storage_type, "__name__", str(storage_type))
                dtype = getattr(torch, storage_type).dtype
                data = bytearray(z.read(f"{prefix}data/{key}"))
                untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage()
                return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Unpickler(io.BytesIO(z.read(pkl))).load()


def _torch_load(path: Path, weights_only: bool, mmap: bool | None) -> Any:
    """``torch.load`` onto the CPU with every failure but an unpickling refusal mapped to :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError:
        raise
    except (ModuleNotFoundError, AttributeError) as exc:
        if weights_only:
            raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({type(exc).__name__}: "
                                  f"{first_line(str(exc))})") from None
        raise CheckpointError(
            f"{path}: a pickled model whose class cannot be found ({first_line(str(exc))}): put the folder of the "
            "module that defines it on PYTHONPATH, or load its state dict with file.py:Class@FILE") from None
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        what, _ = _unreadable(path)
        raise CheckpointError(f"{path}: {what} ({type(exc).__name__}: {first_line(str(exc))})") from None
    except Exception as exc:  # anything a hostile file can make the unpickler raise
        what, container = _unreadable(path)
        what = "corrupt or not a PyTorch checkpoint" if container else what
        raise CheckpointError(
            f"{path}: {what} ({type(exc).__name__}: {first_line(str(exc))})"
        ) from None


_CODE_MARKERS = ("GLOBAL ", "unrecognized function", "Can only create new object", "Can only build")
"""Phrases of torch's weights-only unpickler that mean the file asks to import or call code."""


def _unreadable(path: Path) -> tuple[str, bool]:
    """What a (non-empty) file that ``torch.load`` could not read looks like from its first bytes, and whether
    it is a checkpoint's container at all (a zip archive or a pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "unreadable", False
    if head.startswith(b"PK"):
        return "truncated or damaged PyTorch checkpoint (a broken zip archive)", True
    if head[:1] == b"\x80":
        return "truncated or damaged pickle, not a readable PyTorch checkpoint", True
    return f"not a PyTorch checkpoint (it starts with {head!r}: neither a zip archive nor a pickle)", False


def first_line(text: str) -> str:
    """The first sentence of the first line of an exception's text, at most 200 characters."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line.split(". ", 1)[0][:200]
