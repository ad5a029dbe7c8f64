"""Training and evaluation: a short real run lowers the loss, exact resume, the CLI."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import torch.nn.functional as F

import erf.training
from erf.checkpoints import load_checkpoint, save_checkpoint
from erf.data import load_source
from erf.data.sources import normalize
from erf.errors import CheckpointError, InputError
from erf.files.checkpoint_io import read_checkpoint_file
from erf.models import create_model
from erf.training import Recipe, evaluate, train

RECIPE = Recipe(epochs=4, batch_size=32, augment=True, seed=5)


def _data():
    """Real CIFAR-10 test images from the bundled sample: 128 to train on, 64 others to test on."""
    sample = load_source("bundled")
    test = load_source("bundled")
    test.images, test.labels = sample.images[236:], sample.labels[236:]
    return sample.head(128), test


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("twoconv")


def test_recipe_defaults_are_the_articles():
    r = Recipe()
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.schedule, r.augment) == (
        200, 128, 0.1, 0.9, 5e-4, "cosine", True)


def test_short_real_run_lowers_the_training_loss(tmp_path):
    train_data, test_data = _data()
    model = _model()
    before = evaluate(model, train_data)
    summary = train(model, "twoconv", train_data, test_data, tmp_path / "run",
                    Recipe(epochs=6, batch_size=32, augment=False, seed=0), progress=False)
    after = evaluate(model, train_data)
    assert after.loss < before.loss - 0.2, (before, after)
    assert after.accuracy > before.accuracy
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert set(rows[0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr"}
    # cosine schedule from 0.1 to 0 over the epochs
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs[2] == pytest.approx(0.05)
    # best.pt holds the best test accuracy, last.pt the last epoch
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    accs = [float(r["test_acc"]) for r in rows]
    assert best.metadata["best_test_accuracy"] == pytest.approx(max(accs))
    assert summary["best_test_accuracy"] == pytest.approx(max(accs)) and summary["epochs"] == 6
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last.metadata["epochs"] == 6 and last.metadata["recipe"]["lr"] == 0.1
    for k, v in model.state_dict().items():
        assert torch.equal(last.model.state_dict()[k], v)
    assert evaluate(last.model, test_data).accuracy == pytest.approx(accs[-1])


def test_training_is_seeded(tmp_path):
    train_data, test_data = _data()
    a, b = _model(), _model()
    r = Recipe(epochs=1, batch_size=32, seed=3)
    train(a, "twoconv", train_data, test_data, tmp_path / "a", r, progress=False)
    train(b, "twoconv", train_data, test_data, tmp_path / "b", r, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    train_data, test_data = _data()
    whole = _model()
    train(whole, "twoconv", train_data, test_data, tmp_path / "whole", RECIPE, progress=False)

    # interrupted run: the third evaluation (end of epoch 3) dies before epoch 3 is saved
    calls = {"n": 0}
    real_evaluate = erf.training.evaluate

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(erf.training, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        train(_model(), "twoconv", train_data, test_data, tmp_path / "cut", RECIPE, progress=False)
    monkeypatch.setattr(erf.training, "evaluate", real_evaluate)
    assert read_checkpoint_file(tmp_path / "cut" / "last.pt")["epoch"] == 2

    resumed = _model(seed=99)  # a different init: everything must come from last.pt
    summary = train(resumed, "twoconv", train_data, test_data, tmp_path / "cut", RECIPE, resume=True,
                    progress=False)
    assert summary["epochs"] == 4
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    log_whole = list(csv.DictReader(open(tmp_path / "whole" / "log.csv")))
    log_cut = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [r["epoch"] for r in log_cut] == ["1", "2", "3", "4"]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(log_cut) == drop(log_whole)


def test_half_checkpoints_keep_last_pt_in_full_precision(tmp_path):
    train_data, test_data = _data()
    r2 = Recipe(epochs=2, batch_size=64, seed=1)
    whole = _model()
    train(whole, "twoconv", train_data, test_data, tmp_path / "w", r2, progress=False, half_checkpoints=True)
    best = read_checkpoint_file(tmp_path / "w" / "best.pt")
    assert best["state_dict"]["conv1.weight"].dtype == torch.float16
    last = read_checkpoint_file(tmp_path / "w" / "last.pt")
    assert last["state_dict"]["conv1.weight"].dtype == torch.float32


def test_resume_refuses_a_different_recipe(tmp_path):
    train_data, test_data = _data()
    train(_model(), "twoconv", train_data, test_data, tmp_path / "r", Recipe(epochs=1, batch_size=64),
          progress=False)
    with pytest.raises(InputError, match="epochs 1 -> 3"):
        train(_model(), "twoconv", train_data, test_data, tmp_path / "r", Recipe(epochs=3, batch_size=64),
              resume=True, progress=False)
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(create_model("resnet20"), "resnet20", train_data, test_data, tmp_path / "r",
              Recipe(epochs=1, batch_size=64), resume=True, progress=False)


def test_evaluate_matches_a_direct_computation():
    _, test_data = _data()
    model = _model().eval()
    with torch.no_grad():
        logits = model(normalize(test_data.images))
    result = evaluate(model, test_data, batch_size=10)
    assert result.images == 64
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == test_data.labels).float().mean()))
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, test_data.labels)), rel=1e-5)
    with pytest.raises(InputError, match="labels"):
        evaluate(model, load_source("noise", count=4))


def test_cli_evaluate_prints_accuracy_and_loss(tmp_path, run_cli):
    _, test_data = _data()
    model = _model().eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, "twoconv", metadata={"best_test_accuracy": 0.1})
    expected = evaluate(model, load_source("bundled", count=50))
    code, out, _ = run_cli("evaluate", ckpt, "--data", "bundled", "--images", "50")
    assert code == 0
    m = re.search(r"accuracy ([0-9.]+), loss ([0-9.]+) on 50 images", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(expected.accuracy, abs=1e-4)
    assert float(m.group(2)) == pytest.approx(expected.loss, abs=1e-4)
    code, out, _ = run_cli("evaluate", ckpt, "--images", "50", "--json")
    payload = json.loads(out)
    assert payload["schema"] == "erf.evaluate/1" and payload["images"] == 50
    assert payload["accuracy"] == pytest.approx(expected.accuracy) and payload["loss"] == pytest.approx(expected.loss)


def test_cli_evaluate_errors_are_one_line(tmp_path, run_cli):
    code, _, err = run_cli("evaluate", tmp_path / "none.pt")
    assert code == 2 and "none.pt" in err and len(err.strip().splitlines()) == 1


def test_cli_train_and_resume(tmp_path, run_cli):
    out = tmp_path / "run"
    args = ["train", "twoconv", "--data", "bundled", "--subset", "64", "--epochs", "2",
            "--batch-size", "32", "--out", out, "--quiet", "--device", "cpu"]
    code, text, err = run_cli(*args, "--json")
    assert code == 0, err
    assert "test images only" in err  # the bundled sample has no train split: said, not hidden
    summary = json.loads(text)
    assert summary["schema"] == "erf.train/1" and summary["epochs"] == 2
    assert {p.name for p in out.iterdir()} - {".erf-manifest.json"} == {"best.pt", "last.pt", "log.csv"}
    meta = load_checkpoint(out / "best.pt").metadata
    assert meta["train_images"] == 64 and meta["test_images"] == 64 and meta["subset"] == "64"
    # an existing run folder is not overwritten without --force
    code, _, err = run_cli(*args)
    assert code == 2 and "--force" in err
    # resuming a finished run does nothing more and keeps the log
    code, text, err = run_cli(*args, "--resume")
    assert code == 0, err
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 2
    code, _, err = run_cli(*args[:10], "--out", tmp_path / "empty", "--resume", "--quiet")
    assert code == 2 and "nothing to resume" in err


# ----------------------------------------------------------------------------- precision (issue 22)
def test_precision_is_resolved_recorded_and_fp32_keeps_the_reference_path(tmp_path):
    from erf.precision import bf16_supported

    train_data, test_data = _data()
    recipe = Recipe(epochs=1, batch_size=32, augment=False, seed=0)
    expected_auto = "bf16" if bf16_supported("cpu") else "fp32"
    for precision, expected in (("auto", expected_auto), ("fp32", "fp32"), ("bf16", "bf16")):
        out = tmp_path / precision
        summary = train(_model(), "twoconv", train_data, test_data, out, recipe, progress=False,
                        precision=precision, device="cpu")
        assert summary["precision"] == expected
        meta = read_checkpoint_file(out / "last.pt")["metadata"]
        assert meta["precision"] == expected
        assert meta["memory_format"] == ("channels_last" if expected == "bf16" else "contiguous")
    # fp32 is the float32 path: two runs with the same seed give the same weights bit for bit
    a, b = _model(), _model()
    train(a, "twoconv", train_data, test_data, None, recipe, checkpoints="none", progress=False, precision="fp32")
    train(b, "twoconv", train_data, test_data, None, recipe, checkpoints="none", progress=False, precision="fp32")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(p.dtype == torch.float32 for p in a.parameters())


def test_bf16_keeps_float32_master_weights_and_resume_needs_the_runs_precision(tmp_path):
    train_data, test_data = _data()
    model = _model()
    train(model, "twoconv", train_data, test_data, tmp_path / "run", Recipe(epochs=1, batch_size=32, seed=0),
          progress=False, precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(InputError, match="trained in bf16, not fp32"):
        train(_model(), "twoconv", train_data, test_data, tmp_path / "run", Recipe(epochs=1, batch_size=32, seed=0),
              resume=True, progress=False, precision="fp32")
    with pytest.raises(InputError, match="precision"):
        train(_model(), "twoconv", train_data, test_data, tmp_path / "x", progress=False, precision="fp8")


def test_onecycle_schedule_warms_up_then_anneals_to_zero(tmp_path):
    from erf.recipe import onecycle_factor

    f = [onecycle_factor(e, 20) for e in range(20)]
    assert f[0] == pytest.approx(1 / 25)
    ramp = round(0.3 * 20)
    assert f[:ramp] == sorted(f[:ramp]) and max(f) <= 1.0 and max(f) > 0.95
    assert f[ramp:] == sorted(f[ramp:], reverse=True) and 0 < f[-1] < 0.02
    train_data, test_data = _data()
    train(_model(), "twoconv", train_data, test_data, tmp_path / "run",
          Recipe(epochs=4, batch_size=64, schedule="onecycle", seed=0), progress=False)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))]
    # the log's lr is the one set for the next epoch: factors 1..4 of the per-epoch schedule
    assert lrs == pytest.approx([0.1 * onecycle_factor(e, 4) for e in range(1, 5)])


def test_train_help_lists_the_registries(run_cli):
    from erf.precision import PRECISIONS
    from erf.recipe import SCHEDULES

    code, out, _ = run_cli("train", "--help")
    assert code == 0
    for name in [*PRECISIONS, *SCHEDULES]:
        assert name in out
