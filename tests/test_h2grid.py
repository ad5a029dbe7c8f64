"""The second hypothesis-2 grid (issue #24) through the real code path: tiny budget, CLI, two workers, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from erf.errors import StudyError
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
    # half the grid: no interim report unless asked (a pre-registered grid is not looked at on the way)
    assert "no report until every planned cell is in" in stderr and not (out / "study.json").exists()
    assert "wrote" in stdout and "study.json" not in stdout.split("wrote")[-1]
    code, stdout, stderr = run_cli(*args, "--time-limit", "0", "--partial-report")
    assert code == 0, stderr
    assert "PARTIAL RUN" in (out / "verdict.txt").read_text()
    code, _, stderr = run_cli(*args, "--operating-point")  # grid_tiny's rule checks an accuracy plateau
    assert code == 2 and "accuracy plateau" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli("study", "--operating-point", "--out", out)
    assert code == 2 and "goes with --interaction" in stderr
    code, stdout, stderr = run_cli(*args, "--worker", "1/2")
    assert code == 0, stderr
    assert "PARTIAL RUN" not in (out / "verdict.txt").read_text()
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
    state = h2grid.progress(doc)
    assert state["complete"] and state["by_kind"]["plateau"] == [len(plateau), len(plateau)]
    assert abs(state["seconds"] - sum(r["seconds"] for c in doc["cells"] for r in c["arms"].values())) < 1e-6
    assert "accuracy" not in h2grid.progress_text(doc)  # counts and seconds only
    assert state["seconds_left"] == 0.0 and "left" not in h2grid.progress_text(doc)
    # the time left, against numpy on the raw cells: drop one main cell, keep one of its arms as half-finished
    main_cells = [c for c in doc["cells"] if c["kind"] == "main"]
    dropped, kept = main_cells[0], next(iter(main_cells[0]["arms"]))
    partial = {**doc, "cells": [c for c in doc["cells"] if c is not dropped],
               "unfinished": {dropped["key"]: {**dropped, "incomplete": True,
                                               "arms": {kept: dropped["arms"][kept]}}}}
    mean_main = np.mean([sum(r["seconds"] for r in c["arms"].values()) for c in main_cells[1:]])
    left = h2grid.progress(partial)["seconds_left"]
    assert abs(left - max(0.0, mean_main - dropped["arms"][kept]["seconds"])) < 1e-6
    assert "worker-hours left" in h2grid.progress_text(partial)
    no_pc = {**partial, "cells": [c for c in partial["cells"] if c["kind"] != "pc"]}  # a kind left, none timed
    assert h2grid.progress(no_pc)["seconds_left"] is None and "unknown" in h2grid.progress_text(no_pc)
    # rule 2 alone, checked against the contrasts computed here from the raw cells (the 1-epoch accuracies replaced
    # by random ones above chance, so every cell is included and the check has numbers to get wrong)
    rng = np.random.default_rng(1)
    doc = json.loads(json.dumps(doc))
    for c in doc["cells"]:
        for r in c["arms"].values():
            r["accuracy"], r["train_accuracy"] = 0.5 + 0.05 * rng.standard_normal(), 0.6 + 0.03 * rng.standard_normal()
    plateau = [c for c in doc["cells"] if c["kind"] == "plateau"]
    check = h2grid.operating_point(doc)
    main = {(c["scale"], c["level"], c["seed"]): c for c in doc["cells"] if c["kind"] == "main"}

    def acc(c, arm):
        return c["arms"][arm]["accuracy"]

    for name, (a, b) in (("cbam - plain", ("cbam", "plain")), ("cbam - localgate", ("cbam", "localgate"))):
        got = check["result"]["contrasts"][name]
        want = [(acc(p, a) - acc(p, b)) - (acc(m, a) - acc(m, b))
                for p, m in ((p, main[(p["scale"], p["level"], p["seed"])]) for p in plateau)]
        assert got["n"] == len(want) == len(plateau) and abs(got["mean_change"] - float(np.mean(want))) < 1e-12
    assert check["contrasts_passed"] == all(abs(v["mean_change"]) < 0.04 for v in check["result"]["contrasts"].values())
    assert check["lag_final"] and ("FAILS" in check["text"]) != check["contrasts_passed"]
    mains = list(main.values())
    for arm in ("cbam", "localgate"):
        want_lag = np.mean([c["arms"][arm]["train_accuracy"] - c["arms"]["plain"]["train_accuracy"] for c in mains])
        assert abs(check["result"]["lag"][arm] - want_lag) < 1e-12
        want_sd = np.std([c["arms"][arm]["train_accuracy"] - c["arms"]["plain"]["train_accuracy"] for c in mains],
                         ddof=1)
        assert check["lag_spread"][arm]["n"] == len(mains) and abs(check["lag_spread"][arm]["sd"] - want_sd) < 1e-12
    for p in plateau:  # CBAM catching up by 10 pp at twice the epochs: the contrast part fails, early stop applies
        p["arms"]["cbam"]["accuracy"] += 0.10
    caught = h2grid.operating_point(doc)
    assert not caught["contrasts_passed"] and "early stop applies" in caught["text"]
    for p in plateau:
        p["arms"]["cbam"]["accuracy"] -= 0.10
    # a main cell missing: the lag part is provisional; a plateau cell missing: no check
    first_main = next(c for c in doc["cells"] if c["kind"] == "main")
    fewer = h2grid.operating_point({**doc, "cells": [c for c in doc["cells"] if c is not first_main]})
    assert not fewer["lag_final"] and "provisional" in fewer["text"] and fewer["main_cells"] == len(main) - 1
    with pytest.raises(StudyError, match="operating-point cells finished"):
        h2grid.operating_point({**doc, "cells": [c for c in doc["cells"] if c is not plateau[0]]})
