"""The second hypothesis-2 grid (issue #24) through the real code path: tiny budget, CLI, two workers, resume."""

from __future__ import annotations

import json

import numpy as np

from erf.models.dilated import PATCHNET_PARAMS, SCHEDULES, PatchDilatedNet, gate_reduction
from erf.study import h2grid


def test_patchnet_twins_have_equal_parameters_at_every_level_and_enough_hidden_units():
    for kind, n in PATCHNET_PARAMS.items():
        counts = {sum(p.numel() for p in PatchDilatedNet(attention=kind, level=lv).parameters()) for lv in SCHEDULES}
        assert counts == {n}, kind
    assert 24 // gate_reduction(24) >= 4 and 32 // gate_reduction(32) >= 4 and gate_reduction(512) == 16


def test_grid_cpu_trains_in_fp32_and_cells_depend_on_the_precision():
    from erf.study.budgets import INTERACTION_BUDGETS

    b = INTERACTION_BUDGETS["grid_cpu"]
    assert b.precision == "fp32" and b.training()["precision"] == "fp32"  # a cell of another precision is not reused


def test_plan_partitions_between_workers():
    full = [c["key"] for c in h2grid.plan("grid_cpu")]
    a, b = (c["key"] for c in h2grid.plan("grid_cpu", (0, 2))), (c["key"] for c in h2grid.plan("grid_cpu", (1, 2)))
    a, b = list(a), list(b)
    assert sorted(a + b) == sorted(full) and not set(a) & set(b) and len(full) == len(set(full))
    assert sum(k.startswith("main/") for k in full) == 4 * 3 * 5 and sum(k.startswith("plateau/") for k in full) == 12


def test_interaction_grid_smoke_through_the_cli(tmp_path, run_cli, cifar10_prefix):
    out = tmp_path / "g"
    args = ("study", "--interaction", "--budget", "grid_tiny", "--data", f"cifar10:{cifar10_prefix}", "--out", out,
            "--quiet")
    code, stdout, stderr = run_cli(*args, "--worker", "0/2")
    assert code == 0, stderr
    code, stdout, stderr = run_cli(*args, "--worker", "1/2")
    assert code == 0, stderr
    cells = json.loads((out / "cells.json").read_text())
    assert {r["precision"] for c in cells["cells"] for r in c["arms"].values()} <= {"fp32", "bf16"}
    assert len(cells["cells"]) == cells["planned"] == len(h2grid.plan("grid_tiny")) and not cells["unfinished"]
    rep = json.loads((out / "study.json").read_text())
    text = (out / "verdict.txt").read_text()
    assert text.startswith("SMOKE TEST") and "Pre-registered rule (erf/study/interaction.py)" in text
    for f in ("cells.md", "interaction.png"):
        assert (out / f).stat().st_size > 0
    for r in rep["cells"]:  # per-cell train and test accuracy of every arm, ERF and measured object extent
        for arm in ("plain", "cbam", "localgate", "cbam_spatial"):
            assert 0 <= r[f"acc_{arm}"] <= 1 and 0 <= r[f"train_{arm}"] <= 1 and r[f"erf_{arm}"] > 0
        assert r["object_d50"] > 0 and r["ratio"] == r["erf_plain"] / r["object_d50"]
    # report only: cells unchanged
    before = (out / "cells.json").read_text()
    code, _, stderr = run_cli(*args, "--time-limit", "0")
    assert code == 0, stderr
    assert (out / "cells.json").read_text() == before
    # another budget into the same folder is refused (it would drop the cells)
    code, _, stderr = run_cli("study", "--interaction", "--budget", "grid_cpu", "--data", f"cifar10:{cifar10_prefix}",
                              "--out", out, "--time-limit", "0")
    assert code == 2 and "other settings" in stderr
    # the rule's full path (manipulation check, slopes, secondaries) on these real cell records, trained accuracies
    # replaced so every cell is included
    rng = np.random.default_rng(0)
    doc = json.loads(before)
    for c in doc["cells"]:
        for r in c["arms"].values():
            r["accuracy"] = 0.4 + 0.02 * rng.standard_normal()
    r2 = h2grid.report(doc)
    assert "Manipulation check" in r2["verdict"]["text"] and r2["analysis"]["b1"]["identified"]


def test_time_limit_stops_between_models(cifar10_prefix):
    data = f"cifar10:{cifar10_prefix}"
    seen = []
    doc = h2grid.run("grid_tiny", data, time_limit=1e-9, on_cell=seen.append)
    assert doc["cells"] == [] and len(seen) == 1 and seen[0]["incomplete"] and list(seen[0]["arms"]) == ["plain"]
    doc2 = h2grid.run("grid_tiny", data, previous=h2grid.merge(h2grid.header("grid_tiny", data),
                                                               {**seen[0], "settings": doc["settings"]}))
    first = next(c for c in doc2["cells"] if c["key"] == seen[0]["key"])
    assert first["arms"]["plain"]["seconds"] == seen[0]["arms"]["plain"]["seconds"]  # reused, not retrained


def test_third_grid_trains_all_compared_arms_for_its_operating_point_check(cifar10_prefix):
    data = f"cifar10:{cifar10_prefix}"
    doc = h2grid.run("grid3_tiny", data)
    plateau = [c for c in doc["cells"] if c["kind"] == "plateau"]
    assert plateau and all(set(c["arms"]) == {"plain", "cbam", "localgate"} for c in plateau)
    assert all(r["epochs"] == 2 for c in plateau for r in c["arms"].values())
    rep = h2grid.report(doc)
    assert rep["rule"].startswith("[interaction/2]") and "operating point" in rep["verdict"]["text"]
