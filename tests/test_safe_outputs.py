"""Outputs that are never half written, and reproducible (issues 9 and 17).

``--out`` / ``--force`` for every command, atomic writes (ordinary permissions, untouched targets on Ctrl-C),
Ctrl-C during and after a measurement, ``measure.json`` valid against its schema even for dead models and odd
settings; the same command twice gives the same bytes. Real processes and signals: test_outputs.py. Shared
helpers: tests/reliability.py.

Everything runs on CPU with the 20k-parameter ``twoconv`` or ``resnet20``, a few images and fixed seeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from references import (
    assert_cli_error,
    assert_no_temporaries,
    snapshot,
)
from reliability import FAST, nan_checkpoint

from erf.checkpoints import save_checkpoint
from erf.data import load_source
from erf.errors import (
    OutputExistsError,
)
from erf.files import atomic
from erf.files.outputs import OutputSet
from erf.measurement import measure
from erf.models import create_model

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "erf" / "schemas" / "measure.schema.json"


# ============================================================================ outputs
def _validate(doc: dict) -> None:
    if not SCHEMA_FILE.is_file():
        pytest.skip(f"{SCHEMA_FILE} not written yet")
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(doc)


def test_existing_out_is_not_overwritten_without_force(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "measure.json").write_text('{"old": true}\n')
    (out / "maps").mkdir()
    (out / "maps" / "stem.npy").write_bytes(b"precious")
    before = snapshot(out)
    with pytest.raises(OutputExistsError, match="--force") as info:
        with OutputSet(out):
            pass
    assert str(out) in str(info.value)
    assert_cli_error(run_cli, ["measure", "twoconv", *FAST, "--out", str(out)], "measure", [str(out), "--force"])
    assert snapshot(out) == before
    code, _, err = run_cli("measure", "twoconv", *FAST, "--out", str(out), "--force")
    assert code == 0, err
    doc = json.loads((out / "measure.json").read_text())
    assert doc["schema"] == "erf.measure/1" and "old" not in doc
    assert np.load(out / "maps" / "stem.npy").ndim == 2
    assert_no_temporaries(out)
    _validate(doc)


OUT_COMMANDS = [  # argv (before --out) of every command that writes an output folder or file
    ("measure", ["measure", "twoconv", *FAST]),
    ("compare", ["compare", "twoconv", "twoconv_cbam", "--images", "2", "--bootstrap", "0"]),
    ("objects", ["objects", "ANNOTATIONS"]),
    ("study", ["study", "twoconv", "--images", "2"]),
    ("train", ["train", "twoconv", "--epochs", "1", "--subset", "8"]),
]


@pytest.mark.parametrize("command,argv", OUT_COMMANDS, ids=[c[0] for c in OUT_COMMANDS])
def test_every_command_keeps_a_non_empty_out(command: str, argv: list[str], tmp_path: Path, run_cli) -> None:
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h\na.jpg,1,1,9,9,32,32\n")
    argv = [str(tmp_path / "a.csv") if a == "ANNOTATIONS" else a for a in argv]
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.json").write_text('{"precious": 1}')
    assert_cli_error(run_cli, [*argv, "--out", str(out)], command, [str(out), "--force"])
    assert snapshot(out) == {"keep.json": b'{"precious": 1}'}


def test_bench_keeps_an_existing_out_file(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "bench.json"
    target.write_text("old")
    assert_cli_error(run_cli, ["bench", "--model", "twoconv", "--images", "2", "--out", str(target)], "bench",
                      [str(target), "--force"])
    assert target.read_text() == "old"


def test_bench_reports_the_workers_own_error(run_cli) -> None:
    """An error inside a bench subprocess reaches the user as that error's message, not as a subprocess failure."""
    line = assert_cli_error(run_cli, ["bench", "--model", "nosuch", "--images", "2", "--quiet"], "bench",
                            ["unknown model 'nosuch'", "erf models"])
    assert "subprocess" not in line and "UnknownModelError" not in line
    assert_cli_error(run_cli, ["bench", "--model", "twoconv", "--layers", "nosuch", "--images", "2", "--quiet"],
                     "bench", ["no layer 'nosuch'"])


def test_out_that_is_a_file_is_refused(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert_cli_error(run_cli, ["measure", "twoconv", *FAST, "--out", str(target), "--force"], "measure",
                      [str(target), "not a folder"])
    assert target.read_text() == "keep me"


def test_atomic_writes_leave_target_untouched_on_interrupt(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "doc.json"
    atomic.write_json(target, {"a": 1})
    before = target.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    for write in (lambda: atomic.write_json(target, {"a": 2}), lambda: atomic.write_npy(target, np.zeros(3))):
        with pytest.raises(KeyboardInterrupt):
            write()
        assert target.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
    monkeypatch.undo()
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        atomic.write_json(target, {"a": float("nan")})
    assert target.read_bytes() == before


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    """The temporary file is private (mkstemp: 0600); the renamed result must not be."""
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    atomic.write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    os.chmod(tmp_path / "atomic.txt", 0o640)
    atomic.write_text(tmp_path / "atomic.txt", "y")  # an existing file keeps its mode
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == 0o640


def test_ctrl_c_during_measure(tmp_path: Path, run_cli, monkeypatch) -> None:
    import erf.measurement

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(erf.measurement, "measure", interrupted)
    out = tmp_path / "run"
    code, out_text, err = run_cli("measure", "twoconv", *FAST, "--out", str(out))
    assert code == 130
    assert "erf measure: interrupted" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*"))


def test_ctrl_c_while_writing_keeps_old_results(tmp_path: Path, run_cli, monkeypatch) -> None:
    """Interrupt the last write (measure.json) of a --force re-run: no temp file, no half-written file."""
    out = tmp_path / "run"
    code, _, err = run_cli("measure", "twoconv", *FAST, "--seed", "1", "--out", str(out))
    assert code == 0, err
    before = snapshot(out)
    real = atomic.write_bytes

    def write_bytes(path, data):
        if Path(path).name == "measure.json":
            with atomic.atomic_path(path) as tmp:
                Path(tmp).write_bytes(data[: len(data) // 2])  # half written when Ctrl-C arrives
                raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    code, _, err = run_cli("measure", "twoconv", *FAST, "--images", "3", "--seed", "1", "--out", str(out),
                           "--force")
    assert code == 130 and "Traceback" not in err
    assert_no_temporaries(out)
    assert (out / "measure.json").read_bytes() == before["measure.json"]
    json.loads((out / "measure.json").read_text())
    for p in out.rglob("*.npy"):
        assert np.load(p).shape == (32, 32)
    # issue 17: the maps written before the interrupt must not replace the old ones either (no mixed set)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder, no lock left


def test_measure_json_validates_even_for_a_dead_model(tmp_path: Path, run_cli) -> None:
    """All-zero weights give all-zero gradient maps: metrics stay finite and the JSON still validates."""
    torch.manual_seed(0)
    model = create_model("twoconv")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    save_checkpoint(tmp_path / "dead.pt", model, "twoconv")
    code, out, err = run_cli("measure", str(tmp_path / "dead.pt"), *FAST, "--bootstrap", "20", "--json",
                             "--out", str(tmp_path / "run"))
    assert code == 0, err
    doc = json.loads(out)
    assert json.loads((tmp_path / "run" / "measure.json").read_text())["layers"] == doc["layers"]
    _validate(doc)


ODD_RUNS = [  # unusual but legal settings: the document must still validate
    ("1 px images, global CBAM layers", "resnet20_cbam", ["--data", "tensor:TINY"]),
    ("non-square 5x7 images", "resnet20", ["--data", "tensor:RECT", "--layer", "stage2"]),
    ("constant images", "twoconv", ["--data", "constant:0"]),
    ("RepLKNet variant on a 40x48 canvas", "twoconv", ["--replknet", "--input-size", "40x48", "--fill", "mean"]),
    ("integrated gradients", "twoconv", ["--probe", "integrated-gradients", "--layer", "stage2"]),
]


@pytest.mark.parametrize("case", ODD_RUNS, ids=[c[0] for c in ODD_RUNS])
def test_measure_json_validates_for_odd_settings(case, tmp_path: Path, run_cli) -> None:
    _, model, extra = case
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tiny.npy", rng.random((3, 3, 1, 1), dtype=np.float32))
    np.save(tmp_path / "rect.npy", rng.random((3, 3, 5, 7), dtype=np.float32))
    extra = [{"tensor:TINY": f"tensor:{tmp_path / 'tiny.npy'}",
              "tensor:RECT": f"tensor:{tmp_path / 'rect.npy'}"}.get(a, a) for a in extra]
    code, out, err = run_cli("measure", model, "--images", "3", "--bootstrap", "10", "--no-plots", "--json",
                             "--out", str(tmp_path / "run"), *extra)
    assert code == 0, err
    doc = json.loads((tmp_path / "run" / "measure.json").read_text())
    assert doc["layers"] == json.loads(out)["layers"]
    _validate(doc)


# ============================================================================ reproducibility
def test_same_command_same_bytes(tmp_path: Path, run_cli) -> None:
    outputs = []
    for name in ("a", "b"):
        argv = ["measure", "resnet20", "--layer", "stem", "--layer", "stage2", "--images", "6", "--bootstrap", "30",
                "--seed", "3", "--json", "--no-plots", "--out", str(tmp_path / name)]
        code, out, err = run_cli(*argv)
        assert code == 0, err
        outputs.append(out)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert sorted(a) == ["maps/stage2.npy", "maps/stem.npy", "measure.json"]
    assert a == b
    assert outputs[0] == outputs[1]
    _validate(json.loads(a["measure.json"]))


def test_measure_uses_deterministic_cudnn_kernels(monkeypatch) -> None:
    """On a GPU, cuDNN's default backward kernels are not deterministic (two identical runs on an H200 gave
    different maps); measure runs its probes with ``cudnn.deterministic`` on and restores the flags after."""
    from erf.probes.gradient import GradientProbe

    seen = []
    real = GradientProbe.batch_maps

    def spy(self, *args, **kwargs):
        seen.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GradientProbe, "batch_maps", spy)
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    measure(create_model("twoconv"), load_source("bundled", count=3), ["stage2"], batch_size=2, bootstrap=0)
    assert seen == [(True, False), (True, False)]
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before


REPRO_COMMANDS = [  # other commands that write JSON (and figures) into --out
    ("measure with figures", ["measure", "twoconv", "--images", "4", "--bootstrap", "20", "--seed", "5"]),
    ("compare", ["compare", "twoconv", "twoconv_cbam", "--images", "4", "--bootstrap", "20"]),
    ("objects", ["objects", "ANNOTATIONS"]),
    ("study", ["study", "twoconv", "twoconv_cbam", "--images", "4", "--bootstrap", "20"]),
]


@pytest.mark.parametrize("case", REPRO_COMMANDS, ids=[c[0] for c in REPRO_COMMANDS])
def test_same_command_same_bytes_other_commands(case, tmp_path: Path, run_cli) -> None:
    _, argv = case
    (tmp_path / "a.csv").write_text("image,x0,y0,x1,y1,image_w,image_h,label\n"
                                    "a.jpg,1,1,9,9,32,32,cat\nb.jpg,2,3,30,20,32,32,dog\n")
    argv = [str(tmp_path / "a.csv") if a == "ANNOTATIONS" else a for a in argv]
    runs = []
    for name in ("a", "b"):
        code, out, err = run_cli(*argv, "--json", "--out", str(tmp_path / name))
        assert code == 0, err
        runs.append((out, snapshot(tmp_path / name)))
    assert any(k.endswith(".json") for k in runs[0][1])
    assert runs[0][1] == runs[1][1]
    assert runs[0][0] == runs[1][0]


def test_cli_never_prints_python_warnings_as_tracebacks(tmp_path: Path, run_cli) -> None:
    """Warnings reach the user as one ``warning:`` line (the CLI's format), never with source lines."""
    path = nan_checkpoint(tmp_path)
    code, _, err = run_cli("layers", str(path))
    assert code == 0
    warning_lines = [ln for ln in err.splitlines() if "NaN/Inf" in ln and ln.startswith("warning:")]
    assert len(warning_lines) == 1, err
