"""The controlled grid: canvases, positive control, object-centred ERF, faster trainer, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from references import augment_batch_loop

from erf.data.sources import ImageSet
from erf.models import create_model
from erf.pasting import draw_canvases, paste, resize_objects, seeded_generator
from erf.study.canvases import EpochCanvases, fixed_canvases
from erf.study.object_centred import object_centred_erf, object_units
from erf.study.positive_control import COLOURS, MARK, draw_marks
from erf.training import Recipe, augment_batch, train


def _objects(n: int = 6, side: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g), torch.arange(n) % 10


# ----------------------------------------------------------------------------- canvases
def test_paste_equals_a_per_image_loop():
    canv = torch.rand(5, 3, 20, 20)
    obj = torch.rand(5, 3, 6, 6)
    y0, x0 = torch.tensor([0, 3, 14, 7, 2]), torch.tensor([14, 0, 5, 7, 9])
    ref = canv.clone()
    for i in range(5):
        ref[i, :, y0[i]: y0[i] + 6, x0[i]: x0[i] + 6] = obj[i]
    assert torch.equal(paste(canv.clone(), obj, y0, x0), ref)


def test_canvases_hold_the_object_in_its_box_and_are_redrawn_every_epoch():
    x, y = _objects()
    ep = EpochCanvases(x, y, 16, 40, seed=3)
    a, a2, b = ep.draw(0), ep.draw(0), ep.draw(1)
    assert torch.equal(a.data.images, a2.data.images) and torch.equal(a.boxes, a2.boxes)  # exact resume
    assert not torch.equal(a.boxes, b.boxes)  # positions redrawn
    small = resize_objects(x, 16)
    for i, (x0, y0, x1, y1) in enumerate(a.boxes.tolist()):
        assert x1 - x0 == 16 and y1 - y0 == 16 and 0 <= x0 and x1 <= 40 and 0 <= y0 and y1 <= 40
        patch = a.data.images[i, :, y0:y1, x0:x1]
        assert torch.equal(patch, small[i]) or torch.equal(patch, small[i].flip(-1))
    assert torch.equal(a.data.labels, y) and a.data.raw
    assert float(a.data.images.min()) >= 0 and float(a.data.images.max()) <= 1
    # native resolution: a 32 px object is pasted unchanged
    assert torch.equal(resize_objects(x, 32), x)
    t1, t2 = fixed_canvases(x, y, 16, 40, seed=0), fixed_canvases(x, y, 16, 40, seed=0)
    assert torch.equal(t1.data.images, t2.data.images)
    c = t1.centres()
    assert torch.equal(c[:, 0], (t1.boxes[:, 1] + 7.5).double())


def test_canvas_background_is_label_free():
    x, y = _objects(400)
    g = seeded_generator("cpu", 5)
    cs = draw_canvases(resize_objects(x, 8), y % 2, 32, g)
    mask = torch.ones(400, 32, 32, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(cs.boxes.tolist()):
        mask[i, y0:y1, x0:x1] = False
    bg = (cs.data.images.mean(1) * mask).sum((1, 2)) / mask.sum((1, 2))
    m0, m1 = bg[cs.data.labels == 0].mean(), bg[cs.data.labels == 1].mean()
    assert abs(float(m0 - m1)) < 4 * float(bg.std()) / np.sqrt(200)


# ----------------------------------------------------------------------------- positive control
def test_two_marks_are_d_apart_with_balanced_labels_and_the_right_colours():
    data, pos = draw_marks(600, 30, 64, seeded_generator("cpu", 1))
    a, b = pos[:, 0].double(), pos[:, 1].double()
    dist = (a - b).norm(dim=1)
    assert float((dist - 30).abs().max()) <= 0.75  # rounding of the direction to whole pixels
    assert int(pos.min()) >= 0 and int(pos.max()) <= 64 - MARK
    assert abs(float(data.labels.float().mean()) - 0.5) < 0.1
    palette = torch.tensor(COLOURS)
    for i in range(20):
        ca = data.images[i, :, pos[i, 0, 0], pos[i, 0, 1]]
        cb = data.images[i, :, pos[i, 1, 0], pos[i, 1, 1]]
        assert any(torch.equal(ca, p) for p in palette) and any(torch.equal(cb, p) for p in palette)
        assert bool(torch.equal(ca, cb)) == bool(data.labels[i])


# ----------------------------------------------------------------------------- object-centred ERF
@pytest.mark.parametrize("size", [16, 32])
def test_object_centred_unit_lies_over_the_object(size):
    from erf.trf import theoretical_rf

    x, y = _objects(40)
    cs = fixed_canvases(x, y, size, 64, seed=2)
    model = create_model("dilnet_d2", widths=(4, 8))
    trf = theoretical_rf(model, ["stage2"], input_size=(64, 64))["stage2"]
    units = object_units(trf, cs.centres())
    for (i, j), (x0, y0, x1, y1), (cy, cx) in zip(units, cs.boxes.tolist(), cs.centres().tolist()):
        uy, ux = trf.center((int(i), int(j)))
        assert x0 <= ux <= x1 - 1 and y0 <= uy <= y1 - 1
        assert abs(uy - cy) <= trf.stride[0] / 2 and abs(ux - cx) <= trf.stride[1] / 2
    r = object_centred_erf(model, "stage2", cs.data.images[:8], cs.centres()[:8], cs.boxes[:8], grid=2)
    assert r["unit_in_box"] == 1.0
    d = r["object_centred"]
    assert 0 < d["d25"] <= d["d50"] <= d["d75"] <= d["d95"] <= r["trf"]["local_size"][0] * 1.5


class _Point(torch.nn.Module):
    """A 1x1 convolution: each unit depends on its own pixel only (a point ERF)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.named_layers = {"stage1": "conv"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_object_centred_maps_are_centred_on_the_object():
    """A point ERF at the object's pixel: the shifted mean map is a single peak at its centre (radius 0)."""
    x = torch.rand(6, 3, 20, 20)
    centres = torch.tensor([[3.0, 4.0], [10.0, 10.0], [19.0, 0.0], [0.0, 19.0], [7.0, 12.0], [15.0, 2.0]])
    r = object_centred_erf(_Point(), "stage1", x, centres, grid=0, return_maps=True)
    m = r["maps"]["object_centred"]
    assert m.shape == (39, 39) and np.unravel_index(np.argmax(m), m.shape) == (19, 19)
    assert np.count_nonzero(m) == 1 and r["object_centred"]["d95"] == 0.0


# ----------------------------------------------------------------------------- faster trainer
def test_vectorised_augmentation_equals_the_loop():
    x = torch.rand(9, 3, 12, 12)
    a = augment_batch(x, torch.Generator().manual_seed(4))
    b = augment_batch_loop(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_train_with_epoch_data_and_checkpoint_modes(tmp_path):
    x, y = _objects(16)
    ep = EpochCanvases(x, y, 8, 16, seed=0)
    test = fixed_canvases(x, y, 8, 16, seed=0).data
    seen = []

    def data(epoch: int) -> ImageSet:
        seen.append(epoch)
        return ep(epoch)

    model = create_model("dilnet_d1", widths=(4, 8))
    r = train(model, "dilnet_d1", data, test, None, Recipe(epochs=2, batch_size=8, augment=False),
              checkpoints="none", evaluate_every_epoch=False, channels_last=True, progress=False)
    assert seen[-2:] == [0, 1] and r["out"] is None and 0 <= r["last_test_accuracy"] <= 1
    out = tmp_path / "end"
    train(create_model("dilnet_d1", widths=(4, 8)), "dilnet_d1", ep, test, out,
          Recipe(epochs=2, batch_size=8, augment=False), checkpoints="end", progress=False)
    assert sorted(p.name for p in out.iterdir() if p.name != ".erf-manifest.json") == ["best.pt", "last.pt", "log.csv"]
    assert len((out / "log.csv").read_text().splitlines()) == 3


# ----------------------------------------------------------------------------- end to end
def test_study_controlled_tiny_end_to_end_and_resume(tmp_path, run_cli, cifar10_prefix):
    out = tmp_path / "h2"
    code, stdout, stderr = run_cli("study", "--controlled", "--budget", "tiny", "--data", f"cifar10:{cifar10_prefix}",
                                   "--out", out, "--quiet")
    assert code == 0, stderr
    rep = json.loads((out / "study.json").read_text())
    cells = json.loads((out / "cells.json").read_text())
    from erf.schemas import validate

    assert validate(rep, "study_controlled")
    from erf.study.budgets import BUDGETS
    from erf.study.grid import plan

    assert len(cells["cells"]) == len(plan(BUDGETS["tiny"])) == cells["planned"]
    assert rep["verdict"]["label"] in ("supports", "contradicts", "inconclusive")
    assert rep["rule"] and "Verdict:" in (out / "verdict.txt").read_text() and "Verdict:" in stdout
    for f in ("gain_vs_ratio.png", "erf_by_dilation.png", "positive_control.png", "gating_controls.png",
              "cells.md"):
        assert (out / f).stat().st_size > 0
    for c in rep["cells"]:
        assert c["gain"] == pytest.approx(c["acc_attention"] - c["acc_plain"])
        assert c["params_plain"] == rep["cells"][0]["params_plain"] and c["unit_in_box"] == 1.0
        assert c["flops_plain"] == rep["cells"][0]["flops_plain"]  # dilation twins: equal capacity in every cell
    # resume: nothing is retrained, the cells are byte-identical
    before = (out / "cells.json").read_text()
    code, _, stderr = run_cli("study", "--controlled", "--budget", "tiny", "--data", f"cifar10:{cifar10_prefix}",
                              "--out", out, "--force", "--quiet", "--time-limit", "0")
    assert code == 0, stderr
    assert (out / "cells.json").read_text() == before
    code, _, stderr = run_cli("study", "--controlled", "--budget", "tiny", "--pairs", "twoconv", "--out", out,
                              "--force")
    assert code == 2 and "--pairs" in stderr


def test_budget_choices_come_from_the_registry(run_cli):
    from erf.study.budgets import BUDGETS

    code, out, _ = run_cli("study", "--help")
    assert code == 0
    out = " ".join(out.split())
    for name, b in BUDGETS.items():
        assert f"{name}: {' '.join(b.help.split())[:30]}" in out
    code, _, err = run_cli("study", "--controlled", "--budget", "nope", "--out", "x")
    assert code == 2
    assert "invalid choice" in err and all(repr(k) in err for k in BUDGETS)


def test_time_limit_stops_between_models_and_resumes(cifar10_prefix):
    """--time-limit is honoured inside a cell: one model, then stop; the rerun reuses it and finishes the grid."""
    from erf.study.grid import grid_report, run_grid

    data = f"cifar10:{cifar10_prefix}"
    written = []
    doc = run_grid("tiny", data, time_limit=1e-9, on_cell=lambda d: written.append(json.dumps(d, default=str)))
    assert doc["cells"] == [] and len(doc["unfinished"]) == 1 and written  # written so a killed run keeps it
    (key, part), = doc["unfinished"].items()
    assert part["incomplete"] and "plain" in part and "attention" not in part
    doc2 = run_grid("tiny", data, previous=json.loads(written[-1]))
    assert len(doc2["cells"]) == doc2["planned"] and not doc2["unfinished"]
    first = next(c for c in doc2["cells"] if c["key"] == key)
    assert first["plain"]["correct"] == part["plain"]["correct"]
    assert first["plain"]["seconds"] == part["plain"]["seconds"]  # reused, not retrained
    assert "incomplete" not in first
    # a partial run's verdict says exactly what ran; a smoke budget says its numbers mean nothing
    partial = {**doc2, "cells": [c for c in doc2["cells"] if c["kind"] == "main"]}
    text = grid_report(partial)["verdict"]["text"]
    assert text.startswith("SMOKE TEST (budget tiny") and "mean nothing" in text
    assert "PARTIAL RUN" in text and "positive-control cells 0 of" in text
    assert "Positive control: not run" in text and "did not pass" not in text


def test_controlled_needs_a_budget(run_cli, tmp_path):
    code, _, err = run_cli("study", "--controlled", "--out", tmp_path / "x")
    assert code == 2 and "--budget" in err and "tiny" in err
