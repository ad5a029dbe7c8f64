"""Output sets that are whole or not at all, and one writer per output path.

Every command that writes a folder (``--out DIR``) writes through an :class:`OutputSet`:

* **before any work**: the path is checked (not empty, not a file, not the root, writable: the lock
  file is created beside it, which fails on a read-only file system, under ``/proc`` or ``/sys`` or for a
  name that is too long) and a non-empty folder is refused without ``force``;
* **one writer**: an exclusive ``fcntl.flock`` on ``.OUT.erf-lock`` beside ``OUT``; a second run into the
  same ``OUT`` gets :class:`~erf.errors.OutputBusyError` naming the first run's pid. The kernel drops the
  lock when its process dies (Ctrl-C, SIGKILL, a crash), so a dead run can never leave it stuck; the file is
  removed at the end of a run (a killed run leaves it behind, harmless and reused);
* **staging**: everything is written into ``.OUT.erf-staging-PID`` beside ``OUT`` (same file system);
* **the manifest**: every published set holds ``OUT/.erf-manifest.json``, the list of the files erf wrote into
  it with their size and SHA-256. Only a file the previous set's manifest lists, still holding the bytes erf
  wrote (same size and hash, a regular file), counts as erf's: it is replaced or removed. Every other file
  of ``OUT`` is the user's and is kept, whatever its name (a user's ``maps/mine.npy`` beside erf's maps
  included); a folder without a manifest (a user's folder, a set of an erf before the manifest) holds no
  erf file, so ``--force`` only adds and overwrites the new set's own names there;
* **the swap** (:meth:`OutputSet.publish`): when ``OUT`` does not exist the staging folder is renamed to it;
  otherwise the files of ``OUT`` that are not erf's (not in the new set and not in the old manifest) are
  hard-linked into the staging folder, which then *exchanges* places with ``OUT`` in one
  ``renameat2(RENAME_EXCHANGE)`` system call: an observer sees the old set or the new one, never a mix, and
  the old set (now in the staging folder) is deleted. The old set's erf files that the new run did not write
  (heatmaps of layers not measured again) go with it: the set is replaced whole;
* **a symbolic link** as ``OUT`` is followed (one ``warning:`` line names its target; the set is written
  there and the link kept); a loop of links is refused before any work;
* **fallback** (no ``renameat2``, a file system without exchange, ``OUT`` is the working folder or holds
  more than :data:`MAX_LINKED` foreign files, or a mount point / a read-only parent where the staging folder
  lives inside ``OUT`` as ``OUT/.erf-staging-PID``): a journal listing the new files and the stale ones is
  written into the complete staging folder first, then files are moved in one by one (each ``os.replace``
  atomic). A crash during those moves (milliseconds) leaves a mix *with its journal*; the next run into
  ``OUT`` rolls it forward to the new set before doing anything else;
* **interruption**: Ctrl-C or an error before the swap deletes the staging folder (``OUT`` keeps the old set,
  or the last published one); SIGKILL leaves the staging folder beside ``OUT`` (never inside it, except in the
  fallback above) and the next run into ``OUT`` deletes it. SIGINT and SIGTERM are held back during the swap
  itself so it is never cut in half.

Long runs (``erf train`` after every epoch, the controlled study after every cell) call
:meth:`OutputSet.publish` repeatedly: each call publishes the set as it stands, atomically, and the staging
folder is re-seeded with hard links of what was published so the run continues where it was. A crashed
training therefore keeps the ``last.pt`` of its last finished epoch in ``OUT``.

``ERF_TEST_PAUSE=POINT:SECONDS`` (``write``: before every file written through :mod:`erf.files.atomic`; ``swap``:
after the exchange or the first file moved) slows a run down so tests can send real signals mid-write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from erf.errors import ErfError, OutputBusyError, OutputError, OutputExistsError
from erf.files.atomic import pause_for_tests, write_text

LOCK = ".erf-lock"
STAGING = ".erf-staging-"
JOURNAL = ".erf-commit.json"
MANIFEST = ".erf-manifest.json"
"""The list of the files erf wrote into a set (with size and SHA-256), inside the set."""
MANIFEST_SCHEMA = "erf.manifest/1"
MAX_LINKED = 10_000
"""Foreign entries of ``OUT`` hard-linked into the new set at most; beyond, the per-file fallback is used."""

_EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBUSY, errno.EPERM, errno.EACCES,
                         errno.ENOTSUP, errno.EOPNOTSUPP}


class OutputLinkWarning(UserWarning):
    """``--out`` is a symbolic link: the set is written into its target."""


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""``errno`` values of a full disk or quota: the write failed for want of space, wherever it happened."""


def _cannot(display: str, exc: OSError, what: str = "cannot write there") -> OutputError:
    reason = exc.strerror or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename and os.fspath(exc.filename) != display else ""
    return OutputError(f"{display}: {what} ({where}{reason})", param="out")


def _renameat2_exchange(a: Path, b: Path) -> None:
    """Atomically exchange the paths ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``).

    Raises:
        OSError: with ``ENOSYS`` where the call does not exist, or the kernel's error.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the duration of the block (delivered after it)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _internal(rel: str) -> bool:
    """Whether ``rel`` (a path inside ``OUT``) is one of erf's own bookkeeping entries."""
    head = rel.split("/", 1)[0]
    return head == LOCK or head.startswith(STAGING) or head in (JOURNAL, MANIFEST) or head.startswith(".erf-probe-")


def _digest(path: Path) -> str:
    """SHA-256 of the file ``path`` (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(root: Path, files: Sequence[str]) -> dict[str, Any]:
    """The manifest document of ``files`` (relative POSIX paths under ``root``): size and SHA-256 of each."""
    return {"schema": MANIFEST_SCHEMA,
            "files": {rel: {"size": (root / rel).lstat().st_size, "sha256": _digest(root / rel)}
                      for rel in sorted(files) if (root / rel).is_file() and not (root / rel).is_symlink()}}


def _erf_files(root: Path) -> list[str]:
    """Files of ``root`` that its manifest lists and that still hold what erf wrote (a regular file of the
    recorded size and SHA-256); ``[]`` without a readable manifest. Entries that leave ``root`` are ignored."""
    try:
        listed = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"]
        listed = dict(listed) if isinstance(listed, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    found = []
    for rel, facts in listed.items():
        parts = rel.split("/") if isinstance(rel, str) else [""]
        if not all(parts) or ".." in parts or "." in parts or rel.startswith("/") or _internal(rel) \
                or not isinstance(facts, dict):
            continue
        path = root / rel
        try:
            if Path(os.path.realpath(path.parent)) != Path(os.path.realpath(root)).joinpath(*parts[:-1]):
                continue  # a folder of the path is a link out of the set: not erf's file
            info = path.lstat()
            if not path.is_file() or path.is_symlink() or info.st_size != facts.get("size") \
                    or _digest(path) != facts.get("sha256"):
                continue
        except OSError:
            continue
        found.append(rel)
    return sorted(found)


def _files(root: Path) -> list[str]:
    """Relative POSIX paths of every file and symlink under ``root`` (symlinks are not followed), sorted."""
    out = []
    for folder, dirs, names in os.walk(root):
        base = Path(folder)
        for name in names + [d for d in dirs if (base / d).is_symlink()]:
            out.append((base / name).relative_to(root).as_posix())
    return sorted(out)


def _empty_dirs(root: Path) -> list[str]:
    return sorted(Path(f).relative_to(root).as_posix() for f, dirs, names in os.walk(root)
                  if not dirs and not names and Path(f) != root)


class Lock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created if needed), released by :meth:`release`
    or by the kernel when the process dies.

    Raises:
        OutputBusyError: another process holds it (its pid, written into the file, is named).
        OSError: the file cannot be created (read-only file system, no permission, ...).
    """

    def __init__(self, path: Path, display: str) -> None:
        import fcntl

        self.path = path
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputBusyError(f"{display}: another erf run is writing it (pid {pid}); wait for it to finish "
                                      "or choose another --out", param="out") from None
            try:  # the previous holder may have removed the file between our open and our lock: retry then
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file (while still holding it) and drop the lock."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _validate_path(out: str | os.PathLike) -> tuple[str, Path]:
    display = os.fspath(out)
    if not display.strip():
        raise OutputError(f"{display!r}: empty path", param="out")
    if "\0" in display:
        raise OutputError(f"{display!r}: contains a NUL byte", param="out")
    absolute = os.path.abspath(display)
    try:
        real = Path(os.path.realpath(absolute, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"{display}: a loop of symbolic links; refused before any work", param="out") from None
        real = Path(os.path.realpath(absolute))  # not there yet (created), or an error creating it reports
    if real.parent == real:
        raise OutputError(f"{display}: is the root folder", param="out")
    return display, real


class OutputSet:
    """Stage a command's whole output folder and swap it in at the end (see the module docstring).

    Args:
        out: the ``--out`` folder as given (messages name it so).
        force: replace a non-empty folder (its files that are not erf's are kept).
        patterns: shell patterns (relative POSIX paths) of the files this command writes. Informative only: which
            files of the old set are erf's is decided by its manifest alone (never by name, which would take a
            user's file that happens to match for erf's).
        seed: patterns of files of the existing folder that the staging folder starts with (hard links), for runs
            that continue from them (``--resume``: ``last.pt``; the controlled study: ``cells.json``).
        resume: the folder may be non-empty without ``force`` (continuing a run).

    Use as ``with OutputSet(out, ...) as stage: write(stage.path / "x.json")``; on a clean exit the set is
    published, on an exception (Ctrl-C included) the staging folder is deleted and ``out`` is left as it was.

    Raises:
        OutputError: empty path, the root, a path that cannot be written (the message says why).
        OutputExistsError: ``out`` is a file, or a non-empty folder without ``force``/``resume``.
        OutputBusyError: another erf run is writing ``out``.
    """

    def __init__(self, out: str | os.PathLike, force: bool = False, patterns: Sequence[str] = (),
                 seed: Sequence[str] = (), resume: bool = False) -> None:
        self.display, self.real = _validate_path(out)
        if os.path.islink(os.path.abspath(self.display)):
            warnings.warn(OutputLinkWarning(f"--out {self.display} is a symbolic link: the set is written into its "
                                            f"target {self.real}"), stacklevel=2)
        self.force, self.resume = force, resume
        self.patterns, self.seed = tuple(patterns), tuple(seed)
        self.inside = False
        self.lock: Lock | None = None
        self.path = self.real  # the staging folder once entered

    # ------------------------------------------------------------------ entering
    def __enter__(self) -> OutputSet:
        try:
            self._open()
        except BaseException:
            self._discard()
            self._release()
            raise
        return self

    def _open(self) -> None:
        real, display = self.real, self.display
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            exists = real.exists()
            if exists and not real.is_dir():
                raise OutputExistsError(f"{display}: exists and is not a folder", param="out")
        except OSError as exc:
            raise _cannot(display, exc) from None
        try:
            self.inside = exists and os.path.ismount(real)
            self.lock = Lock(self._lock_path(), display)
        except OSError as exc:
            if not exists or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise _cannot(display, exc) from None
            self.inside = True  # the parent is read-only but the folder may not be: stage inside it
            try:
                self.lock = Lock(self._lock_path(), display)
            except OSError as exc2:
                raise _cannot(display, exc2) from None
        try:
            self._recover()
            if real.is_dir():
                entries = [p for p in real.iterdir() if not _internal(p.name)]
                if entries and not (self.force or self.resume):
                    raise OutputExistsError(f"{display}: exists and is not empty (pass --force to overwrite)",
                                            param="out")
                probe = real / f".erf-probe-{os.getpid()}"  # the fallback moves files into it: must be writable
                probe.touch()
                probe.unlink()
            self.path = self._staging_path()
            self.path.mkdir()
            self._seed(self._files_matching(self.seed))
        except OSError as exc:
            raise _cannot(display, exc) from None

    def _lock_path(self) -> Path:
        return self.real / LOCK if self.inside else self.real.parent / f".{self.real.name}{LOCK}"

    def _staging_path(self) -> Path:
        if self.inside:
            return self.real / f"{STAGING}{os.getpid()}"
        return self.real.parent / f".{self.real.name}{STAGING}{os.getpid()}"

    def _leftovers(self) -> list[Path]:
        """Staging folders of earlier runs into this ``OUT`` (their runs are dead: we hold the lock)."""
        found = []
        beside = re.compile(rf"^\.{re.escape(self.real.name)}{re.escape(STAGING)}\d+$")
        found += [p for p in self.real.parent.iterdir() if beside.match(p.name) and p.is_dir()]
        if self.real.is_dir():
            found += [p for p in self.real.iterdir() if re.match(rf"^{re.escape(STAGING)}\d+$", p.name)
                      or p.name.startswith(".erf-probe-")]
        return found

    def _recover(self) -> None:
        """Finish the interrupted swap of a crashed run (roll forward), delete other leftovers."""
        for left in self._leftovers():
            journal = left / JOURNAL
            if left.is_dir() and journal.is_file():
                files: list[str] | None
                stale: list[str] | None
                try:
                    plan = json.loads(journal.read_text())
                    files, stale = list(plan["files"]), list(plan["remove"])
                except (OSError, ValueError, KeyError, TypeError):
                    files = stale = None
                if files is not None and stale is not None:
                    self._move_in(left, files, stale)
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    left.unlink()

    # ------------------------------------------------------------------ which files are whose
    def _files_matching(self, patterns: Sequence[str]) -> list[str]:
        if not patterns or not self.real.is_dir():
            return []
        return [f for f in _files(self.real) if not _internal(f) and any(fnmatch.fnmatch(f, p) for p in patterns)]

    def _seed(self, files: list[str]) -> None:
        """Hard-link ``files`` of ``OUT`` into the staging folder (copy where links are impossible)."""
        for rel in files:
            src, dst = self.real / rel, self.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)

    # ------------------------------------------------------------------ publishing
    def publish(self, final: bool = False) -> None:
        """Make the staging folder's content the set in ``OUT`` atomically (see the module docstring).

        Args:
            final: the run is over (the staging folder is not re-created).
        """
        with _signals_held():
            try:
                written = [f for f in _files(self.path) if not _internal(f)]
                write_text(self.path / MANIFEST, json.dumps(_manifest(self.path, written), indent=1) + "\n")
                new = written + [MANIFEST]
                self._swap(new)
            except OSError as exc:
                raise _cannot(self.display, exc, "cannot publish the new output set") from None
            _fsync_dir(self.real.parent)
            if not final:
                try:
                    self.path.mkdir()
                    self._seed(written)
                except OSError as exc:
                    raise _cannot(self.display, exc) from None

    def _swap(self, new: list[str]) -> None:
        real, stage = self.real, self.path
        if not self.inside and not real.exists():
            try:
                os.rename(stage, real)
                pause_for_tests("swap")
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        keep = set(new)
        stale = [f for f in _erf_files(real) if f not in keep]
        if not self.inside and self._exchange(new, stale):
            return
        self._journaled(new, stale)

    def _exchange(self, new: list[str], stale: list[str]) -> bool:
        """Link the foreign entries of ``OUT`` into the staging folder and exchange the two; False: not possible
        here (nothing changed in ``OUT``)."""
        real, stage = self.real, self.path
        try:
            cwd = Path.cwd().resolve()
        except OSError:
            cwd = Path("/")
        if cwd == real or real in cwd.parents:  # exchanging the working folder would strand the user's shell
            return False
        dropped = set(new) | set(stale)
        foreign = [f for f in _files(real) if f not in dropped and not _internal(f)]
        empty = [d for d in _empty_dirs(real) if not _internal(d)]
        if len(foreign) + len(empty) > MAX_LINKED:
            return False
        made: list[Path] = []
        try:
            for rel in foreign:
                dst = stage / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(real / rel, dst, follow_symlinks=False)
                made.append(dst)
            for rel in empty:
                (stage / rel).mkdir(parents=True, exist_ok=True)
            os.chmod(stage, real.stat().st_mode & 0o7777)
            _renameat2_exchange(stage, real)
        except OSError as exc:
            if exc.errno not in _EXCHANGE_UNSUPPORTED | {errno.EMLINK}:
                raise
            for dst in made:  # back to the new set alone for the fallback
                with contextlib.suppress(OSError):
                    dst.unlink()
            for rel in empty:
                with contextlib.suppress(OSError):
                    (stage / rel).rmdir()
            return False
        pause_for_tests("swap")
        shutil.rmtree(stage, ignore_errors=True)  # the old set
        return True

    def _journaled(self, new: list[str], stale: list[str]) -> None:
        write_text(self.path / JOURNAL, json.dumps({"out": str(self.real), "files": new, "remove": stale}))
        self._move_in(self.path, new, stale)
        shutil.rmtree(self.path, ignore_errors=True)

    def _move_in(self, stage: Path, files: list[str], stale: list[str]) -> None:
        """Move ``files`` from ``stage`` into ``OUT`` (those already moved are skipped), then remove ``stale``."""
        for k, rel in enumerate(files):
            src = stage / rel
            if not os.path.lexists(src):
                continue
            dst = self.real / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            if k == 0:
                pause_for_tests("swap")
        for rel in stale:
            with contextlib.suppress(FileNotFoundError):
                (self.real / rel).unlink()
            parent = (self.real / rel).parent
            while parent != self.real:  # folders the stale files leave empty (heatmaps/ of an old run)
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    # ------------------------------------------------------------------ leaving
    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        try:
            if exc_type is None:
                try:
                    self.publish(final=True)
                except BaseException:
                    self._discard()
                    raise
            else:
                self._discard()
        finally:
            self._release()
        if isinstance(exc, OSError) and not isinstance(exc, ErfError) and (self._ours(exc) or exc.errno in _FULL):
            what = "out of space; the previous set is kept" if exc.errno in _FULL else "cannot write there"
            raise _cannot(self.display, exc, what) from None  # a full disk: the write names no file (np.save)
        return False

    def _discard(self) -> None:
        """Delete the staging folder, unless its journal says a swap is half done (the next run finishes it)."""
        if self.path != self.real and self.path.is_dir() and not (self.path / JOURNAL).exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def _ours(self, exc: OSError) -> bool:
        name = os.fspath(exc.filename) if exc.filename is not None else ""
        return bool(name) and (name.startswith(str(self.path)) or name.startswith(str(self.real)))

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class OutputFile:
    """One output file (``erf bench --out FILE``): the same checks and lock as :class:`OutputSet`; the file itself is
    written atomically by :mod:`erf.files.atomic` (write to :attr:`path`).

    Raises:
        OutputError, OutputExistsError, OutputBusyError: as :class:`OutputSet`.
    """

    def __init__(self, out: str | os.PathLike, force: bool = False) -> None:
        self.display, self.path = _validate_path(out)
        self.force = force
        self.lock: Lock | None = None

    def __enter__(self) -> OutputFile:
        path, display = self.path, self.display
        try:
            if path.is_dir():
                raise OutputExistsError(f"{display}: is a folder, not a file", param="out")
            if path.exists() and not self.force:
                raise OutputExistsError(f"{display}: exists; add --force to overwrite it", param="out")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.lock = Lock(path.parent / f".{path.name}{LOCK}", display)
            pattern = re.compile(rf"^\.{re.escape(path.name)}\..+\.tmp$")  # atomic writes of a killed run
            for left in path.parent.iterdir():
                if pattern.match(left.name):
                    with contextlib.suppress(OSError):
                        left.unlink()
        except OSError as exc:
            if self.lock is not None:
                self.lock.release()
            raise _cannot(display, exc) from None
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if isinstance(exc, OSError) and (exc.errno in _FULL or exc.filename is not None and
                                         os.fspath(exc.filename).startswith(str(self.path.parent))):
            raise _cannot(self.display, exc) from None
        return False


@contextlib.contextmanager
def output_set(out: str | os.PathLike | None, force: bool = False, patterns: Sequence[str] = (),
               seed: Sequence[str] = (), resume: bool = False) -> Iterator[OutputSet | None]:
    """:class:`OutputSet` for ``out``, or ``None`` (nothing to write) when ``out`` is ``None``."""
    if out is None:
        yield None
        return
    with OutputSet(out, force=force, patterns=patterns, seed=seed, resume=resume) as stage:
        yield stage
