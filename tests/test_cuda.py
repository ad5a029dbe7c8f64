"""The GPU path, checked against the CPU path (oracle: the same code in float32 on the CPU).

These run only where CUDA is available; elsewhere (CI, a laptop) pytest reports them as skipped with the
reason "no CUDA device". On a lent GPU machine, ``bash scripts/device_checks.sh`` runs them first.

* the engine's maps on CUDA (cropped and uncropped) equal its CPU maps, for every registered model;
* ``erf measure --device cuda`` writes the same raw map and ERF sizes as ``--device cpu``;
* ``erf bench --device cuda`` runs every method, reports CUDA peak memory, and its maps agree.

TF32 is switched off around each test: with it cuDNN rounds convolution inputs to 10-bit mantissas, which is a
different arithmetic, not an error of the engine (``erf measure`` keeps the user's TF32 setting).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from references import tiny_model

from erf.bench import noise_images
from erf.layers import default_layers
from erf.measurement import make_targets
from erf.models import list_models
from erf.probes import GradientProbe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def float32_arithmetic() -> Iterator[None]:
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _maps(model: torch.nn.Module, x: torch.Tensor, crop: bool) -> dict[str, torch.Tensor]:
    targets, _ = make_targets(model, default_layers(model), (32, 32))
    return GradientProbe(crop=crop).batch_maps(model, targets, x)


@pytest.mark.parametrize("name", list_models())
def test_engine_maps_on_cuda_equal_cpu(name: str) -> None:
    model = tiny_model(name)
    x = noise_images(3, 32, 3, seed=2)
    cpu = _maps(model, x, crop=True)
    gpu_model = copy.deepcopy(model).cuda()
    for crop in (True, False):
        gpu = _maps(gpu_model, x.cuda(), crop=crop)
        assert set(gpu) == set(cpu)
        for layer, ref in cpu.items():
            got = gpu[layer]
            assert got.device.type == "cuda" and got.shape == ref.shape == (3, 32, 32)
            scale = float(ref.abs().max())
            assert scale > 0, f"{name} {layer}: empty map"
            np.testing.assert_allclose(got.cpu().numpy(), ref.numpy(), rtol=0, atol=1e-4 * scale,
                                       err_msg=f"{name} {layer} crop={crop}")


def test_measure_cli_on_cuda_equals_cpu(run_cli, tmp_path) -> None:
    docs, maps = {}, {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        code, stdout, stderr = run_cli("measure", "resnet20", "--layer", "stage2", "--layer", "stage3",
                                       "--images", "8", "--bootstrap", "0", "--json", "--out", out,
                                       "--device", device)
        assert code == 0, stderr
        docs[device] = json.loads(stdout)
        maps[device] = {layer["name"]: np.load(out / layer["map"]) for layer in docs[device]["layers"]}
    assert set(maps["cuda"]) == set(maps["cpu"]) == {"stage2", "stage3"}
    for name, ref in maps["cpu"].items():
        np.testing.assert_allclose(maps["cuda"][name], ref, rtol=0, atol=1e-4 * ref.max(), err_msg=name)
    for a, b in zip(docs["cpu"]["layers"], docs["cuda"]["layers"], strict=True):
        for level, radius in a["erf"]["radius"].items():
            assert b["erf"]["radius"][level] == pytest.approx(radius, rel=1e-3, abs=1e-3), (a["name"], level)


def test_bench_on_cuda_runs_every_method(run_cli) -> None:
    from erf.schemas import validate

    code, stdout, stderr = run_cli("bench", "--model", "resnet20", "--images", "8", "--device", "cuda",
                                   "--parts", "erf", "--json", "--quiet", "--in-process")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert validate(doc, "bench") is True
    assert doc["device"] == "cuda" and doc["memory_measure"].startswith("cuda.max_memory_allocated")
    for method in ("engine", "captum", "per_image", "floor"):
        assert doc["seconds"][method] > 0 and doc["peak_memory_mb"][method] > 0, method
    for method, diff in doc["max_rel_diff"].items():
        assert diff < 1e-4, (method, diff)  # the four methods compute the same maps


def test_training_on_cuda_runs_in_the_precision_it_records(run_cli, tmp_path) -> None:
    """``erf train --device cuda`` (the path of ``scripts/device_article_8d.sh``): ``auto`` picks bf16 where the
    GPU has it, fp32 when asked; the summary and both checkpoints say which ran, and the weights stay finite."""
    from erf.files.checkpoint_io import read_checkpoint_file

    want = {"auto": "bf16" if torch.cuda.is_bf16_supported() else "fp32", "fp32": "fp32"}
    for precision, ran in want.items():
        out = tmp_path / precision
        code, stdout, stderr = run_cli("train", "twoconv", "--epochs", "1", "--device", "cuda", "--precision",
                                       precision, "--out", out, "--half", "--quiet", "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["precision"] == ran
        for f in ("last.pt", "best.pt"):
            state = read_checkpoint_file(out / f)
            assert state["metadata"]["precision"] == ran, f
            assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()), f
