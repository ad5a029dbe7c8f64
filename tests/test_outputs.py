"""Output sets (issue 17): whole or not at all, one writer per ``--out``, checked before any work.

Concurrent and interrupted runs are real processes receiving real signals: a small writer that uses
:class:`erf.files.outputs.OutputSet` the way every command does (it starts in a fraction of a second), and the
``erf objects`` command itself for the issue's own cases (two runs into one ``--out``; Ctrl-C mid-write).
``ERF_TEST_PAUSE=write:S`` makes every file write sleep ``S`` seconds, so a signal lands mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from references import assert_no_temporaries, snapshot
from reliability import as_from_a_terminal

from erf.errors import ErfError, OutputBusyError, OutputError, OutputExistsError
from erf.files import outputs
from erf.files.atomic import write_text
from erf.files.outputs import JOURNAL, OutputFile, OutputSet

REPO = Path(__file__).resolve().parents[1]
PATTERNS = ("part*.txt", "sub/*.txt")

WRITER = """
import sys
from erf.files.atomic import write_text
from erf.errors import ErfError
from erf.files.outputs import OutputSet

out, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with OutputSet(out, force=True, patterns=("part*.txt", "sub/*.txt")) as s:
        for k in range(n):
            write_text(s.path / f"part{k}.txt", f"{tag} {k}\\n")
        write_text(s.path / "sub" / "last.txt", tag)
except ErfError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
except KeyboardInterrupt:
    sys.exit(130)
print("done")
"""


def _env(pause: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("ERF_TEST_PAUSE", None)
    if pause:
        env["ERF_TEST_PAUSE"] = pause
    return env


def _writer(out: Path, tag: str, n: int = 4, pause: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), tag, str(n)], env=_env(pause),
                            cwd=cwd or out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _erf(*argv: str, pause: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "erf", *argv], env=_env(pause), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)


def _expected(tag: str, n: int = 4) -> dict[str, bytes]:
    return {**{f"part{k}.txt": f"{tag} {k}\n".encode() for k in range(n)}, "sub/last.txt": tag.encode()}


def _stagings(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.erf-staging-*")) + sorted(out.glob(".erf-staging-*"))


def _wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the writer")
        time.sleep(0.02)


def _mid_write(out: Path) -> bool:
    """Some file is already in the staging folder (so a signal now lands mid-set)."""
    return any(any(p.is_file() and not p.name.endswith(".tmp") for p in s.rglob("*")) for s in _stagings(out))


def _old_set(out: Path) -> dict[str, bytes]:
    proc = _writer(out, "old")
    assert proc.wait(60) == 0, proc.stderr.read()
    return snapshot(out)


# ============================================================================ real processes, real signals
@pytest.mark.slow
def test_two_writers_into_one_out_the_second_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    first = _writer(out, "first", pause="write:1.0")
    _wait_for(lambda: _mid_write(out))
    second = _writer(out, "second")
    assert second.wait(60) == 2
    err = second.stderr.read()
    assert f"another erf run is writing it (pid {first.pid})" in err and str(out) in err, err
    assert first.wait(60) == 0, first.stderr.read()
    assert snapshot(out) == _expected("first")
    assert not _stagings(out) and not (tmp_path / ".o.erf-lock").exists()


@pytest.mark.slow
def test_sigkill_mid_write_leaves_the_old_set_and_no_stuck_lock(tmp_path: Path) -> None:
    out = tmp_path / "o"
    before = _old_set(out)
    proc = _writer(out, "new", pause="write:0.4")
    _wait_for(lambda: _mid_write(out))
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert snapshot(out) == before  # every file of the old set, byte-identical
    assert_no_temporaries(out, erf_internal=True)
    assert _stagings(out), "the killed run's staging folder lies beside --out (not in it)"
    again = _writer(out, "again")  # the lock died with its process; the leftover is cleaned
    assert again.wait(60) == 0, again.stderr.read()
    assert snapshot(out) == _expected("again") and not _stagings(out)


@pytest.mark.slow
def test_sigkill_after_the_swap_leaves_the_new_set_whole(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _old_set(out)
    proc = _writer(out, "new", n=2, pause="swap:30")
    _wait_for(lambda: (out / "part0.txt").exists() and (out / "part0.txt").read_text().startswith("new"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert snapshot(out) == _expected("new", 2)  # the old set's part2/part3 went with it: replaced whole
    assert_no_temporaries(out, erf_internal=True)
    again = _writer(out, "again", n=1)
    assert again.wait(60) == 0 and not _stagings(out)


@pytest.mark.slow
def test_sigkill_during_the_journaled_fallback_is_rolled_forward(tmp_path: Path) -> None:
    """``--out .`` (the working folder) is never exchanged: files move in one by one after a journal is written.
    A run killed between two moves leaves a mix *with its journal*; the next run finishes it before anything."""
    out = tmp_path / "o"
    _old_set(out)
    proc = _writer(Path("."), "new", pause="swap:30", cwd=out)
    _wait_for(lambda: (out / "part0.txt").read_text().startswith("new"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert (out / "part1.txt").read_text().startswith("old"), "the kill landed between two moves"
    journals = [s / JOURNAL for s in _stagings(out) if (s / JOURNAL).exists()]
    assert len(journals) == 1 and json.loads(journals[0].read_text())["files"]
    stage = OutputSet(out, force=True, patterns=PATTERNS).__enter__()  # entering recovers
    try:
        assert snapshot(out) == _expected("new")
    finally:
        stage.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)  # leave without publishing
    assert snapshot(out) == _expected("new") and not _stagings(out)


@pytest.mark.slow
def test_cli_two_runs_into_one_out(tmp_path: Path) -> None:
    """The issue's case: the second run is refused with one line and exit 2; the first one's set is whole."""
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\na.jpg,1,1,9,9,32,32\n")
    (tmp_path / "b.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\nb.jpg,2,2,30,30,32,32\n")
    out = tmp_path / "o"
    first = _erf("objects", str(tmp_path / "a.csv"), "--out", str(out), pause="write:2.0")
    _wait_for(lambda: _mid_write(out))
    second = _erf("objects", str(tmp_path / "b.csv"), "--out", str(out), "--force")
    assert second.wait(120) == 2
    err = second.stderr.read()
    assert err.strip().splitlines() == [f"erf objects: error: --out {out}: another erf run is writing it (pid "
                                        f"{first.pid}); wait for it to finish or choose another --out"], err
    assert first.wait(120) == 0, first.stderr.read()
    assert f"wrote {out}/objects.json" in first.stdout.read()
    assert sorted(snapshot(out)) == ["cdf.png", "histogram.png", "objects.json"]
    assert "a.csv" in json.loads((out / "objects.json").read_text())["source"]


@pytest.mark.slow
def test_cli_ctrl_c_mid_write_keeps_the_old_set(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\na.jpg,1,1,9,9,32,32\n")
    (tmp_path / "b.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\nb.jpg,2,2,30,30,32,32\n")
    out = tmp_path / "o"
    assert _erf("objects", str(tmp_path / "a.csv"), "--out", str(out)).wait(120) == 0
    before = snapshot(out)
    proc = _erf("objects", str(tmp_path / "b.csv"), "--out", str(out), "--force", pause="write:1.5")
    _wait_for(lambda: _mid_write(out))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    err = proc.stderr.read()
    assert "erf objects: interrupted" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert_no_temporaries(out, erf_internal=True)
    assert not _stagings(out) and not (tmp_path / ".o.erf-lock").exists()


# ============================================================================ in-process
def test_force_replaces_the_old_set_whole_and_keeps_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with OutputSet(out, patterns=PATTERNS) as s:
        for name in ("part0.txt", "part1.txt", "sub/last.txt"):
            write_text(s.path / name, "old")
    write_text(out / "notes.md", "mine")
    write_text(out / "sub" / "mine.txt.bak", "mine too")
    (out / "empty").mkdir()
    os.symlink("notes.md", out / "link")
    os.chmod(out, 0o750)
    with pytest.raises(OutputExistsError, match="--force"):
        OutputSet(out, patterns=PATTERNS).__enter__()
    with OutputSet(out, force=True, patterns=PATTERNS) as s:
        write_text(s.path / "part0.txt", "new")
    assert snapshot(out) == {"link": b"mine", "notes.md": b"mine", "part0.txt": b"new",
                              "sub/mine.txt.bak": b"mine too"}
    assert (out / "empty").is_dir() and os.readlink(out / "link") == "notes.md"
    assert out.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no lock, no staging left


def test_without_exchange_the_journaled_fallback_gives_the_same_set(tmp_path: Path, monkeypatch) -> None:
    def unsupported(a, b):
        raise OSError(errno.ENOSYS, "renameat2 is not available")

    monkeypatch.setattr(outputs, "_renameat2_exchange", unsupported)
    out = tmp_path / "o"
    with OutputSet(out, patterns=PATTERNS) as s:
        write_text(s.path / "part0.txt", "old")
        write_text(s.path / "part1.txt", "old")
    write_text(out / "notes.md", "mine")
    with OutputSet(out, force=True, patterns=PATTERNS) as s:
        write_text(s.path / "part0.txt", "new")
    assert snapshot(out) == {"notes.md": b"mine", "part0.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_an_error_inside_leaves_the_old_set_and_publish_mid_run_is_whole(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with OutputSet(out, patterns=PATTERNS) as s:
        write_text(s.path / "part0.txt", "old")
    with pytest.raises(RuntimeError), OutputSet(out, force=True, patterns=PATTERNS) as s:
        write_text(s.path / "part0.txt", "new")
        raise RuntimeError("the run failed")
    assert snapshot(out) == {"part0.txt": b"old"}
    with pytest.raises(KeyboardInterrupt), OutputSet(out, force=True, patterns=PATTERNS, seed=("part0.txt",)) as s:
        assert (s.path / "part0.txt").read_text() == "old"  # seeded for a run that continues (--resume)
        write_text(s.path / "part1.txt", "epoch 1")
        s.publish()
        assert snapshot(out) == {"part0.txt": b"old", "part1.txt": b"epoch 1"}
        write_text(s.path / "part1.txt", "epoch 2 (never finished)")
        raise KeyboardInterrupt
    assert snapshot(out) == {"part0.txt": b"old", "part1.txt": b"epoch 1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_second_writer_in_the_same_process_is_refused(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "o"
    with OutputSet(out):
        with pytest.raises(OutputBusyError) as info:
            OutputSet(out).__enter__()
        assert info.value.param == "out" and f"pid {os.getpid()}" in str(info.value)
        code, _, err = run_cli("measure", "twoconv", "--images", "2", "--bootstrap", "0", "--out", str(out))
        assert code == 2 and f"error: --out {out}: another erf run is writing it" in err
    target = tmp_path / "bench.json"
    with OutputFile(target):
        code, _, err = run_cli("bench", "--model", "twoconv", "--images", "2", "--parts", "erf", "--out", str(target))
        assert code == 2 and "another erf run is writing it" in err and not target.exists()


def _read_only_mount(path: Path) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


BAD_OUTS = [  # (id, --out as given, fragment of the one-line message)
    ("empty path", "", "--out '': empty path"),
    ("the root folder", "/", "is the root folder"),
    ("under /proc", "/proc/erf-no-such/out", "cannot write there"),
    ("under /sys", "/sys/erf-no-such-out", "cannot write there"),
    ("a name too long", "TMP/" + "n" * 300, "File name too long"),
    ("a file", "TMP/file.txt", "not a folder"),
    ("inside a file", "TMP/file.txt/out", "cannot write there"),
]


@pytest.mark.parametrize("case", BAD_OUTS, ids=[c[0] for c in BAD_OUTS])
def test_bad_out_is_refused_before_any_work(case, tmp_path: Path, run_cli, monkeypatch) -> None:
    _, given, fragment = case
    given = given.replace("TMP", str(tmp_path))
    (tmp_path / "file.txt").write_text("keep")
    with pytest.raises(OutputError) as info:
        OutputSet(given).__enter__()
    assert info.value.param == "out"
    import erf.checkpoints

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(erf.checkpoints, "load_checkpoint", no_work)
    code, _, err = run_cli("measure", "twoconv", "--images", "2", "--bootstrap", "0", "--out", given, "--force")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("erf measure: error: --out ") and fragment in lines[0], lines[0]
    assert (tmp_path / "file.txt").read_text() == "keep"


def test_read_only_file_system_is_refused_before_any_work(tmp_path: Path, run_cli, monkeypatch) -> None:
    mount = tmp_path / "ro"
    if not _read_only_mount(mount):
        pytest.skip("cannot mount a read-only tmpfs here (needs root); the EROFS path is covered below by a fake")
    try:
        import erf.checkpoints

        monkeypatch.setattr(erf.checkpoints, "load_checkpoint",
                            lambda *a, **k: (_ for _ in ()).throw(AssertionError("work before the check")))
        code, _, err = run_cli("measure", "twoconv", "--out", str(mount / "o"))
        assert code == 2 and "Read-only file system" in err and "Traceback" not in err, err
        code, _, err = run_cli("measure", "twoconv", "--out", str(mount), "--force")
        assert code == 2 and "Read-only file system" in err, err
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=20)


def test_read_only_error_is_one_line_even_without_a_mount(tmp_path: Path, monkeypatch) -> None:
    """The same refusal with ``os.open`` failing as on a read-only file system (runs everywhere)."""
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(outputs.os, "open", read_only)
    with pytest.raises(OutputError, match="Read-only file system"):
        OutputSet(tmp_path / "o").__enter__()
    assert not (tmp_path / "o").exists()


def test_a_crashed_training_keeps_its_last_finished_epoch(tmp_path: Path, run_cli, monkeypatch) -> None:
    import csv

    import erf.training

    real = erf.training.train

    def crashing(*args, on_epoch=None, **kwargs):
        def hook(epoch: int) -> None:
            on_epoch(epoch)
            if epoch == 1:
                raise KeyboardInterrupt  # Ctrl-C during epoch 2

        return real(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(erf.training, "train", crashing)
    out = tmp_path / "run"
    argv = ["train", "twoconv", "--subset", "16", "--epochs", "2", "--batch-size", "16", "--quiet", "--device", "cpu",
            "--out", str(out)]
    code, _, err = run_cli(*argv)
    assert code == 130 and "interrupted" in err
    assert sorted(snapshot(out)) == ["best.pt", "last.pt", "log.csv"]
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 1
    monkeypatch.setattr(erf.training, "train", real)
    code, _, err = run_cli(*argv, "--resume")
    assert code == 0, err
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_errors_are_erf_errors() -> None:
    assert issubclass(OutputBusyError, OutputError) and issubclass(OutputExistsError, OutputError)
    assert issubclass(OutputError, ErfError)


# ============================================================================ issue 25: manifest, links, full disk
def _measure(out: Path, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erf", "measure", "twoconv", "--images", "2", "--bootstrap", "0",
                           "--no-plots", "--out", str(out), *extra], env=_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_force_through_a_symlink_keeps_the_users_files_that_match_erfs_names(tmp_path: Path) -> None:
    """Issue 25 case 20: ``--out LINK --force``, LINK -> a user's folder holding ``maps/mine.npy`` (it was deleted,
    matching erf's ``maps/*.npy``). Only the previous set's manifest decides what is erf's."""
    user = tmp_path / "user"
    (user / "maps").mkdir(parents=True)
    (user / "maps" / "mine.npy").write_bytes(b"the user's own array")
    (user / "notes.md").write_text("mine")
    os.symlink("user", tmp_path / "LINK")
    done = _measure(tmp_path / "LINK", "--force", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning: --out " in done.stderr and "symbolic link" in done.stderr and str(user) in done.stderr
    files = snapshot(user)
    assert files["maps/mine.npy"] == b"the user's own array" and files["notes.md"] == b"mine"
    assert {"measure.json", "maps/stem.npy", "maps/stage1.npy", "maps/stage2.npy"} <= set(files)
    manifest = json.loads((user / ".erf-manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(f for f in files if f not in ("maps/mine.npy", "notes.md"))
    assert os.readlink(tmp_path / "LINK") == "user"  # the link itself is kept
    # a second run of fewer layers: erf's stale maps go, the user's file stays; an erf file the user edited stays
    (user / "maps" / "stem.npy").write_bytes(b"edited by the user")
    done = _measure(tmp_path / "LINK", "--force", "--layer", "stage1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = snapshot(user)
    assert sorted(files) == ["maps/mine.npy", "maps/stage1.npy", "maps/stem.npy", "measure.json", "notes.md"]
    assert files["maps/stem.npy"] == b"edited by the user" and files["maps/mine.npy"] == b"the user's own array"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LINK", "user"]  # no lock, no staging left
    assert_no_temporaries(user, erf_internal=True)


def test_a_forged_manifest_cannot_delete_files_outside_the_set(tmp_path: Path) -> None:
    out, victim = tmp_path / "o", tmp_path / "victim.txt"
    victim.write_text("keep")
    with OutputSet(out) as s:
        write_text(s.path / "a.txt", "erf")
    (out / "sub").symlink_to(tmp_path)
    digest = __import__("hashlib").sha256(b"keep").hexdigest()
    forged = {"schema": "erf.manifest/1", "files": {p: {"size": 4, "sha256": digest}
                                                    for p in ("../victim.txt", "/" + str(victim), "sub/victim.txt")}}
    (out / ".erf-manifest.json").write_text(json.dumps(forged))
    with OutputSet(out, force=True) as s:
        write_text(s.path / "b.txt", "erf")
    assert victim.read_text() == "keep" and (out / "a.txt").read_text() == "erf" and (out / "b.txt").exists()


def test_a_symlink_loop_as_out_is_refused_before_any_work(tmp_path: Path, run_cli, monkeypatch) -> None:
    """Issue 25 case 19: ``--out a`` with ``a -> b -> a`` was refused only after the measurement."""
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    import erf.checkpoints

    monkeypatch.setattr(erf.checkpoints, "load_checkpoint",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("work before the check")))
    code, _, err = run_cli("measure", "twoconv", "--out", str(tmp_path / "a"), "--force")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "loop of symbolic links" in lines[0] and str(tmp_path / "a") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _small_mount(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_old_set(tmp_path: Path) -> None:
    """Issue 25 case 15: a real, nearly full tmpfs (ENOSPC mid-write) was a traceback; the old set stayed."""
    disk = tmp_path / "disk"
    if not _small_mount(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root); ENOSPC is faked in test_enospc_without_a_mount")
    try:
        done = _measure(disk / "o")
        assert done.returncode == 0, done.stderr
        old = snapshot(disk / "o", manifest=True)
        filler = disk / "filler"
        st = os.statvfs(disk)  # fill the disk but for 4 KB: the new maps (8 KB each) cannot be written
        with contextlib.suppress(OSError):
            filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 4096))
        done = subprocess.run([sys.executable, "-m", "erf", "measure", "twoconv", "--images", "2", "--bootstrap",
                               "0", "--out", str(disk / "o"), "--force"], env=_env(), capture_output=True, text=True,
                              timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert lines[-1].startswith(f"erf measure: error: --out {disk / 'o'}: out of space"), lines
        assert "No space left on device" in lines[-1] and len(lines[-1]) < 400
        assert snapshot(disk / "o", manifest=True) == old
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "o"]  # no staging folder, no lock
        assert_no_temporaries(disk / "o", erf_internal=True)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=20)


def test_enospc_without_a_mount(tmp_path: Path, monkeypatch) -> None:
    """The same refusal where no tmpfs can be mounted: a write failing with ENOSPC and no file name (np.save)."""
    out = tmp_path / "o"
    with OutputSet(out) as s:
        write_text(s.path / "a.txt", "old")
    with pytest.raises(OutputError, match="out of space; the previous set is kept") as info:
        with OutputSet(out, force=True) as s:
            write_text(s.path / "a.txt", "new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.param == "out" and snapshot(out) == {"a.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
