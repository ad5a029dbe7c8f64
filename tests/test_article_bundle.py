"""scripts/bundle_article_8d.py: the float16 export a lent GPU sends back bundles exactly like the full last.pt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bundle_article_8d.py"


def _bundle(runs: Path, out: Path, data: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--models", "twoconv", "--weights",
                           str(out / "weights"), "--figures", str(out / "figures"), "--data", data],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})


def test_export_is_small_and_bundles_identically(tmp_path, run_cli, cifar10_prefix):
    from erf.files.checkpoint_io import read_checkpoint_file

    data = f"cifar10:{cifar10_prefix}"
    runs = tmp_path / "runs"
    code, _, stderr = run_cli("train", "twoconv", "--data", data, "--subset", "64", "--epochs", "1", "--out",
                              runs / "twoconv", "--half", "--schedule", "onecycle", "--quiet", "--seed", "0")
    assert code == 0, stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--models", "twoconv", "--export",
                        str(tmp_path / "back")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    full, small = runs / "twoconv" / "last.pt", tmp_path / "back" / "twoconv" / "last_weights16.pt"
    assert small.stat().st_size < 0.5 * full.stat().st_size  # float16 weights and no optimizer state
    assert (tmp_path / "back" / "twoconv" / "log.csv").read_text() == (runs / "twoconv" / "log.csv").read_text()
    a, b = read_checkpoint_file(full), read_checkpoint_file(small)
    assert "optimizer" in a and "optimizer" not in b and b["metadata"]["recipe"] == a["metadata"]["recipe"]
    for k, v in a["state_dict"].items():
        w = b["state_dict"][k]
        assert torch.equal(w, v.half() if v.is_floating_point() else v), k
    # the bundle from each: the same tensors and the same evaluated accuracies
    r1, r2 = _bundle(runs, tmp_path / "one", data), _bundle(tmp_path / "back", tmp_path / "two", data)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    from safetensors import safe_open

    with safe_open(tmp_path / "one/weights/twoconv.safetensors", "pt") as f1, \
            safe_open(tmp_path / "two/weights/twoconv.safetensors", "pt") as f2:
        assert set(f1.keys()) == set(f2.keys())
        for k in f1.keys():
            assert torch.equal(f1.get_tensor(k), f2.get_tensor(k)), k
    assert r1.stdout.split(" -> ")[0] == r2.stdout.split(" -> ")[0]  # "twoconv: test ..., train ..., plateau ..."
    # a run folder with neither file: one line naming it
    (tmp_path / "empty" / "twoconv").mkdir(parents=True)
    r3 = _bundle(tmp_path / "empty", tmp_path / "three", data)
    assert r3.returncode != 0 and "neither last.pt nor last_weights16.pt" in r3.stderr
