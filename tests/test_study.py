"""The hypothesis-2 study: controlled data set, size fractions, pairing, gains, fit, verdict, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from erf.objects import ObjectSizes
from erf.pasting import paste_objects
from erf.study import (
    Accuracy,
    ModelERF,
    erf_size,
    fit_gain,
    fraction_below,
    gain,
    pair_models,
    twin_of,
    verdict,
)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "erf" / "schemas" / "study.schema.json"


def _objects(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def _validate(doc: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))


# ----------------------------------------------------------------------------- controlled data set
def test_controlled_is_deterministic_and_seeded():
    x, y = _objects()
    a = paste_objects(x, 12, canvas=40, background="study", seed=3, labels=y)
    b = paste_objects(x, 12, canvas=40, background="study", seed=3, labels=y)
    c = paste_objects(x, 12, canvas=40, background="study", seed=4, labels=y)
    assert torch.equal(a.data.images, b.data.images) and np.array_equal(a.boxes.numpy(), b.boxes.numpy())
    assert not torch.equal(a.data.images, c.data.images)
    assert a.data.images.shape == (6, 3, 40, 40) and a.data.raw
    assert float(a.data.images.min()) >= 0 and float(a.data.images.max()) <= 1
    assert torch.equal(a.data.labels, torch.as_tensor(y))


def test_controlled_boxes_hold_the_pasted_object():
    x, y = _objects()
    s = paste_objects(x, 16, canvas=48, background="study", seed=1, labels=y)
    expected = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, size=(16, 16),
                             mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    assert s.boxes.numpy().shape == (6, 4)
    for i, (x0, y0, x1, y1) in enumerate(s.boxes.numpy().astype(int)):
        assert x1 - x0 == 16 and y1 - y0 == 16 and 0 <= x0 and x1 <= 48 and 0 <= y0 and y1 <= 48
        assert torch.allclose(s.data.images[i, :, y0:y1, x0:x1], expected[i], atol=1e-6)
    # the canvas outside the box does not depend on the object nor on the label
    other = paste_objects(np.zeros_like(x), 16, canvas=48, background="study", seed=1, labels=(y + 3) % 10)
    assert np.array_equal(other.boxes.numpy(), s.boxes.numpy())
    outside = torch.ones(6, 1, 48, 48, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(s.boxes.numpy().astype(int)):
        outside[i, :, y0:y1, x0:x1] = False
    outside = outside.expand_as(s.data.images)
    assert torch.equal(s.data.images[outside], other.data.images[outside])
    # uint8 view (for extent estimators) round-trips
    assert s.uint8().shape == (6, 48, 48, 3) and s.uint8().dtype == np.uint8


def test_controlled_rejects_bad_sizes():
    from erf.errors import InputError

    x, y = _objects(2)
    with pytest.raises(InputError, match="between 1 and the 32 px canvas"):
        paste_objects(x, 40, canvas=32, background="study", seed=0, labels=y)


# ----------------------------------------------------------------------------- fractions and sizes
def _model(label: str, name: str, r50: float, ci: tuple[float, float] | None, trf: int | None,
           acc: float | None = None, group: str = "", r95: float = 10.0) -> ModelERF:
    layer = {"name": "stage2", "trf_side": trf, "trf_local_side": trf or 99, "r50": r50,
             "r50_ci": list(ci) if ci else None, "r95": r95, "r95_ci": None}
    return ModelERF(label, name, None, [layer], Accuracy(acc, 100, "test") if acc is not None else None, group)


def test_fraction_below_hand_numbers():
    v = [2.0, 4.0, 6.0, 8.0]
    assert erf_size(2.5) == 5.0
    assert fraction_below(v, 5.0) == 0.5
    assert fraction_below(v, 8.0) == 1.0  # "below" is <=
    assert fraction_below(v, 1.9) == 0.0
    assert fraction_below(v, None) == 1.0  # a global TRF covers every object
    assert math.isnan(fraction_below(v, float("nan")))
    m = _model("m", "twoconv", r50=2.5, ci=(2.0, 3.0), trf=7, r95=3.5)
    objs = ObjectSizes(np.array(v), np.array([3.0, 5.0, 7.0, 9.0]), np.zeros(4), [None] * 4, False, "hand",
                       source="hand")
    f = m.fractions(objs)
    assert f["sqrt_area"]["below_erf50"] == {"value": 0.5, "ci": [0.5, 0.75]}  # 2r = 5 [4, 6]
    assert f["sqrt_area"]["below_erf95"]["value"] == 0.75  # 2 r95 = 7
    assert f["sqrt_area"]["below_trf"] == 0.75
    assert f["longer_side"]["below_erf50"]["value"] == 0.5  # 3, 5 <= 5
    assert f["longer_side"]["below_trf"] == 0.75


# ----------------------------------------------------------------------------- pairing and gains
def test_twin_names():
    """Twins come from the model registry alone (each family registers its attention twins); no name guessing."""
    assert twin_of("resnet20_cbam") == "resnet20"
    assert twin_of("twoconv_se") == "twoconv"
    assert twin_of("cbam_8d") == "norm_8d"
    assert twin_of("resnet20_cbam_spatial") == "resnet20"
    assert twin_of("mynet_cbam_spatial") is None  # not registered: no twin is guessed from the name
    assert twin_of("resnet20") is None and twin_of("norm_8d") is None


def test_pair_models_by_name_and_group():
    ms = [_model("a", "resnet20", 5, None, 9, 0.8), _model("b", "resnet20_cbam", 5, None, None, 0.85),
          _model("c", "twoconv_cbam", 2, None, None, 0.5), _model("d", "twoconv", 2, None, 5, 0.4, group="g"),
          _model("e", "twoconv_cbam", 2, None, None, 0.45, group="g")]
    pairs, notes = pair_models(ms)
    assert [(p.label, a.label) for p, a in pairs] == [("a", "b"), ("d", "e")]
    assert any(n.startswith("c: no plain twin 'twoconv'") for n in notes)


def test_gain_paired_bootstrap_and_normal_approximation():
    base = np.arange(400) % 2 == 0  # plain: right on every other image (50 %)
    better = base | (np.arange(400) % 4 == 1)  # attention: also right on a quarter more (75 %)
    g = gain(Accuracy(0.5, 400, "t", base), Accuracy(0.75, 400, "t", better), resamples=4000, seed=0)
    assert g["value"] == pytest.approx(0.25)
    # per-image differences are Bernoulli(1/4): the bootstrap CI is about 0.25 +- 1.96 sqrt(3/16 / 400)
    half = 1.959964 * math.sqrt(3 / 16 / 400)
    assert g["ci"] == pytest.approx([0.25 - half, 0.25 + half], abs=0.006)
    assert "paired bootstrap" in g["method"]
    g2 = gain(Accuracy(0.5, 100, "meta"), Accuracy(0.6, 100, "meta"))
    se = math.sqrt(0.25 / 100 + 0.24 / 100)
    assert g2["value"] == pytest.approx(0.1)
    assert g2["ci"] == pytest.approx([0.1 - 1.959964 * se, 0.1 + 1.959964 * se], abs=1e-5)


def test_fit_and_verdict_labels():
    ratios = [0.25, 0.5, 1.0, 2.0, 4.0]
    falling = [0.10, 0.08, 0.06, 0.04, 0.02]  # exactly -2 pp per doubling
    fit = fit_gain(ratios, falling)
    assert fit["slope"] == pytest.approx(-0.02) and fit["n"] == 5
    pts = [{"label": str(r), "ratio": r, "gain": g, "gain_ci": [g - 0.01, g + 0.01]} for r, g in zip(ratios, falling)]
    v = verdict(pts, fit)
    assert v["label"] == "supports" and "-2.0 pp per doubling" in v["text"]
    rising = [{**p, "gain": -p["gain"]} for p in pts]
    assert verdict(rising, fit_gain(ratios, [-g for g in falling]))["label"] == "contradicts"
    noisy = [0.05, -0.05, 0.05, -0.05, 0.05]
    assert verdict(pts, fit_gain(ratios, noisy))["label"] == "inconclusive"
    assert verdict(pts, fit, flagged=["x"])["label"] == "inconclusive"  # near-chance models veto a verdict
    assert fit_gain([1, 2], [0.1, 0.2]) is None
    one = verdict([{"label": "p", "ratio": 0.5, "gain": -0.1, "gain_ci": [-0.15, -0.05]}], None)
    assert one["label"] == "contradicts" and "no trend" in one["text"]


# ----------------------------------------------------------------------------- end to end
def test_real_study_cli_on_tiny_checkpoints(tmp_path, run_cli):
    from erf.checkpoints import save_checkpoint
    from erf.models import create_model

    specs = []
    for name, acc in (("twoconv", 0.40), ("twoconv_cbam", 0.46)):
        torch.manual_seed(0)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, create_model(name, widths=(4, 8)), name, {"widths": (4, 8)},
                        {"best_test_accuracy": acc, "test_images": 500})
        specs.append(str(path))
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({"objects": [{"sqrt_area": s, "longer_side": s + 2} for s in (3.0, 6.0, 12.0, 24.0)],
                                   "is_estimate": False, "method": "hand"}))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("study", *specs, "--images", "8", "--bootstrap", "5", "--objects", objects,
                                   "--out", out)
    assert code == 0, stderr
    doc = json.loads((out / "study.json").read_text())
    _validate(doc)
    assert doc["objects"]["count"] == 4 and doc["objects"]["sqrt_area"]["median"] == 9.0
    (pair,) = doc["pairs"]
    assert pair["gain"] == pytest.approx(0.06) and "normal approximation" in pair["gain_method"]
    plain = doc["models"][0]
    d = plain["erf_diameter50"]["value"]
    assert plain["fractions"]["sqrt_area"]["below_erf50"]["value"] == np.mean(np.array([3.0, 6, 12, 24]) <= d)
    assert pair["ratio"] == pytest.approx(d / 9.0)
    assert plain["trf_side"] == 5 and doc["models"][1]["trf_side"] is None  # CBAM's channel gate is global
    assert "Verdict:" in (out / "verdict.txt").read_text() and "Verdict:" in stdout
    assert (out / "erf_vs_objects_cdf.png").stat().st_size > 0 and (out / "gain_vs_ratio.png").stat().st_size > 0
    code, _, stderr = run_cli("study", *specs, "--out", out)
    assert code == 2 and "not empty" in stderr
    code, _, stderr = run_cli("study", "--controlled", specs[0], "--out", tmp_path / "c")
    assert code == 2 and "give no CKPT" in stderr
    # --input-size: the same images on a larger canvas; an ERF clipped by the 32 px border can only grow,
    # and the twoconv TRF (5 px) is far from the border, so its ERF must not change
    code, _, stderr = run_cli("study", *specs, "--images", "8", "--bootstrap", "5", "--objects", objects,
                              "--input-size", "48", "--out", tmp_path / "canvas")
    assert code == 0, stderr
    canvas = json.loads((tmp_path / "canvas" / "study.json").read_text())
    _validate(canvas)
    assert canvas["settings"]["input_size"] == [48, 48] and doc["settings"]["input_size"] is None
    assert canvas["models"][0]["erf_diameter50"]["value"] == pytest.approx(d)


def test_load_objects_reads_erf_objects_json(tmp_path):
    from erf.data import load_source
    from erf.errors import StudyError
    from erf.study import load_objects

    path = tmp_path / "objects.json"
    path.write_text(json.dumps({"schema": "erf.objects/1", "is_estimate": True, "method": "border-contrast",
                                "sizes": {"sqrt_area": [4.0, 8.0], "longer_side": [5.0, 9.0], "relative": [0.1, 0.2]}}))
    data = load_source("bundled", count=4)
    objs = load_objects(str(path), data)
    assert objs.sqrt_area.tolist() == [4.0, 8.0] and objs.longer_side.tolist() == [5.0, 9.0] and objs.is_estimate
    est = load_objects("estimate", data)
    assert est.is_estimate and est.sqrt_area.shape == (4,) and (est.sqrt_area <= 32).all()
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(StudyError, match="bad.json: no per-object sizes"):
        load_objects(str(tmp_path / "bad.json"), data)
