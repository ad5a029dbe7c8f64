"""Bounded, explained loading: what a checkpoint file asks for, read before ``torch.load`` runs it.

``torch.load(weights_only=True)`` never runs code, but its unpickler is pure Python and trusts the stream's
length: a 10 KB zip whose ``data.pkl`` is ten million ``NONE`` opcodes takes about 50 s and 600 MB, a 195 KB one
a quarter of an hour. So before anything is unpickled, :func:`scan_pickle` walks the opcode stream with
:func:`pickletools.genops` (which decodes opcodes without building objects: about 1 microsecond each) under
hard bounds, and refuses a stream that is implausibly long for the tensors it holds:

* a state dict needs about 35 opcodes per tensor (key, storage record, size and stride tuples); the stream may
  have :data:`BASE_OPS` plus :data:`OPS_PER_RECORD` per tensor record, and never more than :data:`MAX_OPS`
  (the worst admitted stream unpickles in about 5 s); the scan stops at the first opcode over the bound, so
  refusing the 10^7-``NONE`` file takes well under a second;
* the pickle itself may be at most :data:`MAX_PICKLE_BYTES` (read from the zip directory before reading it),
  and no single string or bytes object in it more than :data:`MAX_PICKLE_OBJECT_BYTES`;
* a legacy (non-zip) file may not claim more storage elements than it has bytes (its storages follow the
  pickles, so a claim beyond the file size is a lie that would allocate memory).

Bounding the load in time instead (a watchdog thread, a subprocess) was rejected: a thread cannot interrupt the
unpickler's C and Python loop portably, and a subprocess per checkpoint would double load time and memory.
The scan is also what explains a refusal: it collects every ``GLOBAL``/``STACK_GLOBAL``/``INST`` name, so a file
asking for ``builtins.eval`` is reported as needing arbitrary unpickling (naming what it imports) even where
``torch.load`` stops earlier for another reason (protocol 4's ``FRAME`` opcode: "Unsupported operand 149").
The security boundary stays ``torch.load(weights_only=True)``: the scan only refuses and explains.

:data:`MAX_PARAMETERS` caps what a checkpoint's ``model_kwargs`` (or the shapes it holds) may ask a model to
allocate, estimated on the meta device before anything is allocated (:func:`estimate_parameters`).
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from erf.errors import CheckpointError

BASE_OPS = 100_000
"""Opcodes any checkpoint may use besides its tensors (metadata, a training log, optimizer settings)."""
OPS_PER_RECORD = 100
"""Further opcodes allowed per tensor record (a state dict uses about 35)."""
MAX_OPS = 1_000_000
"""Opcodes at most, whatever the record count (about 5 s of ``torch.load``'s unpickler)."""
MAX_PICKLE_BYTES = 64 * 2**20
"""Bytes of the pickle stream (``data.pkl``) at most."""
MAX_PICKLE_OBJECT_BYTES = 16 * 2**20
"""Bytes of one string or bytes object inside the pickle at most."""
MAX_PARAMETERS = 2_000_000_000
"""Parameters (tensor elements) a checkpoint may ask for: 8 GB of float32."""
MAX_ZIP_ENTRIES = 1_000_000
"""Entries of a zip checkpoint at most (one per tensor storage, plus a few)."""
MAX_SAFETENSORS = 100_000
"""Tensors of a safetensors file at most (a large language model has a few thousand); its header is counted before
any tensor is read."""
MAX_SAFETENSORS_HEADER = 100 * 2**20
"""Bytes of a safetensors JSON header at most (the ``safetensors`` package's own limit)."""
MAX_MODULES = 100_000
"""Modules and parameters a checkpoint's ``model_kwargs`` may make a registry model build (counted as they are
registered on the meta device: a ResNet-152 has about 500; ``depth 10**7`` would build for minutes)."""
LEGACY_PICKLES = 5
"""A legacy ``torch.save`` file starts with five pickles: magic number, protocol, system info, the object, and
the storage keys."""

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}


@dataclass
class PickleScan:
    """What :func:`scan_pickle` found.

    Attributes:
        format: ``"zip"`` (torch >= 1.6) or ``"legacy"``.
        records: tensor storage records (zip entries under ``data/``; legacy: persistent ids).
        ops: opcodes scanned.
        protocol: pickle protocol of the main stream (``None`` when it has no ``PROTO`` opcode).
        opcode_protocol: the newest protocol any of its opcodes belongs to (``pickletools``' ``proto``).
        imports: every ``module.name`` the stream imports, in order of appearance, without repeats.
        unsafe: those that ``torch.load(weights_only=True)`` does not allow (code the full unpickler would run).
    """

    format: str
    records: int = 0
    ops: int = 0
    protocol: int | None = None
    imports: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    opcode_protocol: int = 0

    @property
    def old_protocol(self) -> bool:
        """A protocol 0 or 1 stream (``torch.save(..., pickle_protocol=0/1)``: no ``PROTO`` opcode, and no opcode
        newer than protocol 1), which ``torch.load(weights_only=True)`` cannot read."""
        return self.protocol is None and self.ops > 0 and self.opcode_protocol < 2


def _allowed_globals() -> set[str]:
    """``module.name`` of every global ``torch.load(weights_only=True)`` allows (its own allowlist and the
    user's ``torch.serialization.add_safe_globals``); empty if this torch hides them."""
    try:
        from torch import _weights_only_unpickler as w

        return set(w._get_allowed_globals()) | set(w._get_user_allowed_globals())
    except Exception:  # a private API: without it every import counts as unsafe, which only changes messages
        return set()


def _python3_name(module: str, attr: str) -> str:
    """``module.attr`` as Python 3 spells it (protocol 0-2 pickles say ``__builtin__.set``; ``fix_imports``)."""
    import _compat_pickle

    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def _is_allowed(name: str, allowed: set[str]) -> bool:
    module, _, attr = name.rpartition(".")
    return name in allowed or (module == "torch" and attr.endswith("Storage"))


class _Bounded:
    """A read-only stream for :func:`pickletools.genops` that refuses any single read over ``limit`` bytes."""

    def __init__(self, f: IO[bytes], limit: int, where: str) -> None:
        self.f, self.limit, self.where = f, limit, where

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.limit:
            raise CheckpointError(f"{self.where}: refused: an object of {n} bytes inside the pickle stream "
                                  f"(at most {self.limit})")
        return self.f.read(n)

    def readline(self) -> bytes:
        line = self.f.readline(self.limit + 1)
        if len(line) > self.limit:
            raise CheckpointError(f"{self.where}: refused: a pickle text argument longer than {self.limit} bytes")
        return line

    def tell(self) -> int:
        return self.f.tell()


def _walk(stream: _Bounded, scan: PickleScan, allowed: set[str], where: str, count_persids: bool) -> int:
    """Scan one pickle (up to its ``STOP``) into ``scan``; return the storage elements its persistent ids claim.

    The opcode bound is ``min(MAX_OPS, BASE_OPS + OPS_PER_RECORD * scan.records)``, checked at every opcode (with
    ``count_persids``, each persistent id counts as a record as it is seen: legacy files).

    Raises:
        CheckpointError: over the opcode bound, or an object over :data:`MAX_PICKLE_OBJECT_BYTES`.
        Exception: not a pickle stream (unknown opcode, truncated argument: ``pickletools``' errors).
    """
    recent: list[Any] = []  # values pushed, as far as strings and ints go (None for anything else)
    memo: dict[Any, Any] = {}
    claimed = 0
    arg: Any  # the opcode's argument: its type depends on the opcode
    for opcode, arg, _ in pickletools.genops(cast(IO[bytes], stream)):  # _Bounded: a read-only stream
        scan.ops += 1
        limit = min(MAX_OPS, BASE_OPS + OPS_PER_RECORD * scan.records)
        if scan.ops > limit:
            raise CheckpointError(
                f"{where}: refused: its pickle stream has more than {limit:,} opcodes for {scan.records} tensor "
                f"records (a checkpoint needs about 35 per tensor); unpickling it would take minutes")
        name = opcode.name
        scan.opcode_protocol = max(scan.opcode_protocol, opcode.proto)
        if name == "PROTO":
            scan.protocol = int(arg)
        elif name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1", "replace"))
        elif name in _INT_OPS:
            recent.append(int(arg) if isinstance(arg, int) and not isinstance(arg, bool) else None)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = recent[-1] if recent else None
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(arg))
        elif name in ("GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"):
            if name == "STACK_GLOBAL":
                module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                full = _python3_name(module, attr) if isinstance(module, str) and isinstance(attr, str) \
                    else "(hidden name)"
            elif name.startswith("EXT"):
                full = f"(copyreg extension {arg})"
            else:
                module, _, attr = str(arg).partition(" ")
                full = _python3_name(module, attr)
            if full not in scan.imports:
                scan.imports.append(full)
                if not _is_allowed(full, allowed):
                    scan.unsafe.append(full)
            recent.append(None)
        elif name in ("BINPERSID", "PERSID"):
            if count_persids:
                scan.records += 1
                ints = [v for v in recent[-8:] if isinstance(v, int)]
                claimed += max(0, ints[-1]) if ints else 0
            recent.append(None)
        else:
            recent.append(None)
        if len(recent) > 64:
            del recent[:-16]
    return claimed


def scan_pickle(path: str | Path) -> PickleScan | None:
    """Scan the pickle stream(s) of a ``torch.save`` file under the module's bounds.

    Returns:
        The :class:`PickleScan`; ``None`` when the file is not a readable zip checkpoint or pickle stream
        (``torch.load`` then reports what is wrong with it). A stream that breaks off after some imports is
        returned as far as it was read (its imports explain a refusal).

    Raises:
        CheckpointError: the stream is implausibly long (or large) for its tensors: refused before loading.
    """
    path = Path(path)
    where = str(path)
    allowed = _allowed_globals()
    scan = PickleScan("zip")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                # torch's reader (miniz) looks entries up case-insensitively and takes the first of equal names:
                # a second "archive/data.pkl" or an "archive/DATA.PKL" would walk around a scan of one exact name
                names = [i.filename.lower() for i in infos]
                if len(infos) > MAX_ZIP_ENTRIES:
                    raise CheckpointError(f"{where}: refused: its zip archive has {len(infos):,} entries (at most "
                                          f"{MAX_ZIP_ENTRIES:,})")
                if len(set(names)) != len(names):
                    twice = next(n for k, n in enumerate(names) if n in names[:k])
                    raise CheckpointError(f"{where}: refused: its zip archive holds two entries named {twice!r:.80} "
                                          "(ignoring case); which one a reader takes is undefined")
                pkl = [i for i, n in zip(infos, names) if n == "data.pkl" or n.endswith("/data.pkl")]
                if not pkl:
                    return None
                scan.records = sum("/data/" in n for n in names)
                for entry in pkl:  # every entry torch could read as the pickle, each under the bounds
                    if entry.file_size > MAX_PICKLE_BYTES:
                        raise CheckpointError(f"{where}: refused: its pickle stream is {entry.file_size:,} bytes "
                                              f"(at most {MAX_PICKLE_BYTES:,})")
                    scan.ops = 0
                    with z.open(entry) as f:
                        _walk(_Bounded(f, MAX_PICKLE_OBJECT_BYTES, where), scan, allowed, where, False)
            return scan
        scan.format = "legacy"
        size = path.stat().st_size
        claimed = 0
        with open(path, "rb") as f:
            stream = _Bounded(f, MAX_PICKLE_OBJECT_BYTES, where)
            for _ in range(LEGACY_PICKLES):
                if not f.peek(1):
                    break
                claimed += _walk(stream, scan, allowed, where, True)
        if claimed > size:
            raise CheckpointError(f"{where}: refused: its storages claim {claimed:,} elements but the file has "
                                  f"{size:,} bytes")
        return scan
    except CheckpointError:
        raise
    except Exception:  # not a pickle (pickletools: unknown opcode, truncated argument), unreadable zip
        return scan if scan.imports else None


class TooManyModules(Exception):
    """A build registered more than :data:`MAX_MODULES` modules and parameters (raised inside the build)."""


def estimate_parameters(build: Any, max_modules: int = MAX_MODULES) -> int:
    """Parameters and buffers of the module ``build()`` returns, built on the meta device (shapes only, no memory).

    Every module, parameter and buffer registered during the build is counted as it is registered (global
    registration hooks), and the build is stopped at ``max_modules``: building on the meta device costs no memory
    per element but still costs time per module.

    Raises:
        TooManyModules: the build registered more than ``max_modules`` modules, parameters and buffers.
        Exception: whatever ``build`` raises for bad arguments (the caller words it).
    """
    import torch
    from torch.nn.modules import module as nn_module

    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1
        if seen[0] > max_modules:
            raise TooManyModules(f"more than {max_modules:,} modules and parameters")

    handles = [nn_module.register_module_module_registration_hook(count),
               nn_module.register_module_parameter_registration_hook(count),
               nn_module.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            module = build()
    finally:
        for h in handles:
            h.remove()
    return sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers())


def check_safetensors_header(path: str | Path) -> int:
    """The number of tensors a safetensors file's header lists, read from the header alone.

    Raises:
        CheckpointError: a header over :data:`MAX_SAFETENSORS_HEADER` bytes or listing more than
            :data:`MAX_SAFETENSORS` tensors (the package would read them all first: 46 s for 10^6).
    """
    import json

    where = str(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return 0  # too short to be one: the package's own check words it
        size = int.from_bytes(head, "little")
        if size > MAX_SAFETENSORS_HEADER:
            raise CheckpointError(f"{where}: refused: its safetensors header claims {size:,} bytes (at most "
                                  f"{MAX_SAFETENSORS_HEADER:,})")
        text = f.read(size)
    # count top-level keys without building a million dicts first: a cheap upper bound, then the exact count
    if text.count(b'"dtype"') > MAX_SAFETENSORS:
        raise CheckpointError(f"{where}: refused: its safetensors header lists more than {MAX_SAFETENSORS:,} "
                              "tensors")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        return 0  # malformed: the package's own check words it
    count = len([k for k in header if k != "__metadata__"]) if isinstance(header, dict) else 0
    if count > MAX_SAFETENSORS:
        raise CheckpointError(f"{where}: refused: its safetensors header lists {count:,} tensors (at most "
                              f"{MAX_SAFETENSORS:,})")
    return count
