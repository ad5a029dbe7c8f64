"""Scale-out: ``torchrun --nproc-per-node 2 -m erf measure ... --distributed`` (gloo, CPU) equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ARGS = ["twoconv", "--data", "noise", "--images", "12", "--batch-size", "4", "--bootstrap", "0", "--no-plots",
        "--layer", "stem", "--layer", "stage1", "--layer", "stage2"]
"""12 images in 3 batches: rank 0 gets two batches, rank 1 one (uneven shards)."""


def _numbers(doc: dict) -> dict:
    return {layer["name"]: layer["erf"] for layer in doc["layers"]}


@pytest.mark.slow
def test_two_gloo_processes_equal_single_process(tmp_path: Path, run_cli) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    code, _, _ = run_cli("measure", *ARGS, "--out", single)
    assert code == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "erf", "measure", *ARGS, "--distributed", "--out", str(multi)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = json.loads((single / "measure.json").read_text())
    b = json.loads((multi / "measure.json").read_text())
    assert a["images"] == b["images"] == 12
    assert [layer["images"] for layer in b["layers"]] == [12, 12, 12]
    for name in ("stem", "stage1", "stage2"):
        ma, mb = np.load(single / "maps" / f"{name}.npy"), np.load(multi / "maps" / f"{name}.npy")
        assert ma.dtype == mb.dtype == np.float64 and ma.max() > 0
        np.testing.assert_allclose(mb, ma, rtol=1e-9, atol=1e-12 * ma.max(), err_msg=name)
    na, nb = _numbers(a), _numbers(b)
    for name in na:
        assert nb[name]["radius"] == pytest.approx(na[name]["radius"], rel=1e-9)
        assert nb[name]["area_ratio"] == pytest.approx(na[name]["area_ratio"], rel=1e-9)


def test_distributed_without_torchrun_is_a_clear_error(run_cli, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, _, err = run_cli("measure", *ARGS, "--distributed", "--json")
    assert code == 2
    assert "torchrun" in err


def test_process_group_is_destroyed_on_the_way_out(monkeypatch) -> None:
    """A rank that exits with a live gloo group can abort in teardown (exit -6): the block must destroy it."""
    import socket

    import torch.distributed as dist

    from erf.runtime.distributed import process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}.items():
        monkeypatch.setenv(key, value)
    assert not dist.is_initialized()
    with process_group("cpu") as (rank, world):
        assert (rank, world) == (0, 1) and dist.is_initialized() and dist.get_backend() == "gloo"
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="inside"), process_group("cpu"):
        raise RuntimeError("inside")
    assert not dist.is_initialized()
