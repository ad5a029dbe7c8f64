"""Trustworthy by default (issue 23): images brought to a model's own input size by its preprocessing instead of
pasted on a canvas, the frame / padding trust signal, progress bars, short reprs and module names.

The oracles are independent computations: torchvision's own ``Resize`` + ``CenterCrop`` for the preprocessing,
Gaussians cut by frames (r95 measured on the whole Gaussian) for the frame limit, and the pixels within r95 for
the padding limit."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

import erf
from erf.data import ImageSet, Preprocessing, load_source, preprocessing_for
from erf.measurement import measure
from erf.measurement_result import FRAME_LIMIT, PADDING_LIMIT, Trust, trust_of
from erf.metrics import erf_metrics, mass_radius
from erf.models import create_model
from erf.schemas import validate

FAST = ("--images", "2", "--bootstrap", "0", "--json")


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("shape, resize, crop, mode", [
    ((32, 32), 256, 224, "bilinear"),   # CIFAR to ResNet-18 (an upsampling)
    ((32, 40), 236, 224, "bilinear"),   # not square: the shorter side is resized
    ((300, 260), 256, 224, "bicubic"),  # a downsampling (antialiased)
    ((50, 50), 40, 40, "bilinear"),     # no margin (a code spec's input_size)
])
def test_preprocessing_equals_torchvision_resize_and_centre_crop(shape, resize, crop, mode) -> None:
    from torchvision.transforms import InterpolationMode, v2

    x = torch.rand(3, 3, *shape, generator=torch.Generator().manual_seed(0))
    data = ImageSet(x, torch.full((3,), -1), "random", raw=True)
    ours = Preprocessing((crop, crop), resize, mode).apply(data).images
    ref = v2.Compose([v2.Resize(resize, interpolation=InterpolationMode(mode), antialias=True),
                      v2.CenterCrop(crop)])(x).clamp(0, 1)
    assert ours.shape == (3, 3, crop, crop)
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=0)


def test_preprocessing_for_reads_the_models_own_recipe() -> None:
    import torchvision

    for arch, resize in (("resnet18", 256), ("convnext_tiny", 236), ("vit_b_16", 256), ("inception_v3", 342)):
        t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        crop = tuple(t.crop_size) * 2 if len(t.crop_size) == 1 else tuple(t.crop_size)
        prep = preprocessing_for(f"torchvision:{arch}", None, crop)
        assert (prep.resize, prep.crop, prep.interpolation) == (resize, crop, "bilinear") == (
            t.resize_size[0], crop, t.interpolation.value)
    assert preprocessing_for("torchvision:efficientnet_b0", None, (224, 224)).interpolation == "bicubic"
    plain = preprocessing_for("mine.py:Net", nn.Conv2d(3, 3, 3), (40, 40))
    assert (plain.resize, plain.crop) == (40, (40, 40)) and "input_size" in plain.origin
    assert preprocessing_for("resnet20", None, None) is None


# ----------------------------------------------------------------------------- the trust signal
def test_frame_limit_flags_gaussians_the_frame_shrinks() -> None:
    """A Gaussian ERF cut by frames of many sizes: r95 of the cut map against r95 of the whole Gaussian."""
    n, c = 241, 120
    yy, xx = np.indices((n, n))
    checked = {"flagged": 0, "clear": 0}
    for sigma in (3.0, 5.0, 8.0, 12.0):
        g = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma ** 2))
        whole = mass_radius(g, 0.95, (c, c))
        for half in range(4, 60, 2):
            cut = g[c - half: c + half + 1, c - half: c + half + 1]
            metrics = erf_metrics(cut, 1, (half, half))
            shrink = 1 - metrics.radius[0.95] / whole
            trust = trust_of(metrics, (half, half), cut.shape)
            assert trust.border == half and trust.padding_mass == 0.0
            if shrink > 0.05:  # the frame changes the number: always said
                assert trust.frame_bound, (sigma, half, shrink)
                checked["flagged"] += 1
            elif whole < 0.8 * half:  # the whole ERF lies well inside the frame: never flagged
                assert not trust.frame_bound, (sigma, half, shrink)
                checked["clear"] += 1
    assert min(checked.values()) >= 10


def test_padding_limit_means_the_r95_disk_reaches_the_padding() -> None:
    """Whenever more than PADDING_LIMIT of the mass lies on padding, some padding pixel lies within r95."""
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(200):
        h = int(rng.integers(8, 30))
        m = rng.random((h, h)) ** rng.integers(1, 8)
        outside = np.ones((h, h), dtype=bool)
        k = int(rng.integers(1, h // 2))
        outside[k: h - k, k: h - k] = False
        centre = (float(rng.uniform(k, h - k - 1)), float(rng.uniform(k, h - k - 1)))
        metrics = erf_metrics(m, 1, centre, outside)
        trust = trust_of(metrics, centre, m.shape)
        if trust.padding_bound:
            seen += 1
            d = np.hypot(*(np.indices(m.shape) - np.array(centre)[:, None, None]))
            assert (d[outside] <= trust.r95 + 1e-9).any()
        assert trust.padding_bound == (m[outside].sum() / m.sum() > PADDING_LIMIT)
    assert seen > 20
    assert Trust(10.0, 0.0, 0.0).frame_bound and Trust(1.0, 10.0, 0.06).flags == ["padding"]
    assert Trust(FRAME_LIMIT * 10, 10.0, 0.0).flags == ["frame"]


@pytest.mark.parametrize("model", ["resnet20", "resnet20_cbam"])
def test_quick_start_stage3_is_bounded_by_the_frame(model: str, run_cli) -> None:
    """The README's quick start at the models' own 32 px: stage3's ERF fills the frame (CBAM's global layers
    included), so it is marked and said in words; stage1.block1's is not."""
    code, stdout, stderr = run_cli("measure", model, "--layer", "stage1.block1", "--layer", "stage3", *FAST)
    assert code == 0, stderr
    doc = json.loads(stdout)
    validate(doc, "measure")
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert layers["stage3"]["trust"]["frame_bound"] and not layers["stage1.block1"]["trust"]["frame_bound"]
    assert layers["stage3"]["trust"]["r95_over_border"] >= FRAME_LIMIT
    assert doc["preprocessing"] == {"kind": "none"}
    note = next(n for n in doc["notes"] if n.startswith("bounded by the frame"))
    assert "stage3" in note and "stage1.block1" not in note and "lower bound" in note
    code, stdout, _ = run_cli("measure", model, "--layer", "stage3", "--images", "2", "--bootstrap", "0")
    row = next(line for line in stdout.splitlines() if line.startswith("stage3"))
    assert row.split()[-1] == "frame" and "bounded" in stdout


# ----------------------------------------------------------------------------- native size by default
@pytest.mark.parametrize("spec, layer", [
    ("torchvision:resnet18", "stage4.block2"),
    ("torchvision:convnext_tiny", "stage3.block1"),
    ("torchvision:vit_b_16", "stage1.block1"),
])
def test_torchvision_models_measure_on_resized_images_not_on_padding(spec: str, layer: str, run_cli) -> None:
    """The bundled 32 px images are resized to 224 px with the model's own preprocessing: no padding, no mass
    on padding, and a map with support across the image (the pasted canvas gave padding-only maps)."""
    code, stdout, stderr = run_cli("measure", spec, "--layer", layer, "--images", "1", "--bootstrap", "0", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    validate(doc, "measure")
    prep = doc["preprocessing"]
    assert prep["kind"] == "resize" and prep["source_size"] == [32, 32] and prep["crop"] == [224, 224]
    assert doc["input_size"] == [224, 224] and doc["image_size"] == [224, 224]
    assert any("resized from 32x32" in n and "model-input px" in n for n in doc["notes"])
    assert not any("pasted at the centre" in n or n.startswith("decided by the padding") for n in doc["notes"])
    entry = doc["layers"][0]
    assert entry["erf"]["clipped_fraction"] == 0.0 and entry["trust"]["padding_mass"] == 0.0
    assert not entry["trust"]["padding_bound"]
    if spec.endswith("resnet18"):  # the artefact of the zero canvas: exactly 0 outside rows 91-133
        loaded = erf.load_checkpoint(spec)
        data = load_source("bundled", count=1)
        data = preprocessing_for(spec, loaded.model, (224, 224)).apply(data)
        result = measure(loaded.model, data, [layer], bootstrap=0, normalization=loaded.normalization)
        sum_map = result.layers[0].sum_map
        rows = np.nonzero(sum_map.sum(axis=1))[0]
        assert rows.max() - rows.min() > 150
        assert entry["erf"]["radius"]["95"] == pytest.approx(result.layers[0].metrics.radius[0.95])


def test_a_canvas_by_request_is_warned_about_in_words(run_cli) -> None:
    """32 px images pasted on a 224 px canvas (--input-size 224) for ResNet-18: the padding decides stage4."""
    code, stdout, stderr = run_cli("measure", "torchvision:resnet18", "--layer", "stage4.block2",
                                   "--input-size", "224", *FAST)
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["preprocessing"]["kind"] == "canvas" and doc["image_size"] == [32, 32]
    trust = doc["layers"][0]["trust"]
    assert trust["padding_bound"] and trust["padding_mass"] > PADDING_LIMIT
    assert trust["padding_mass"] == doc["layers"][0]["erf"]["clipped_fraction"]
    note = next(n for n in doc["notes"] if n.startswith("decided by the padding"))
    assert "stage4.block2" in note and "32x32 images" in note


# ----------------------------------------------------------------------------- progress, repr, names
def test_progress_bar_counts_maps_and_names_the_layer(capsys) -> None:
    torch.manual_seed(0)
    model = create_model("twoconv", widths=(4, 8))
    measure(model, torch.randn(5, 3, 16, 16), ["stage1", "stage2"], bootstrap=0, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "ERF maps" in err and "10/10" in err and ("stage1]" in err or "stage2]" in err)
    measure(model, torch.randn(2, 3, 16, 16), ["stage1"], bootstrap=0)
    assert capsys.readouterr().err == ""


def test_cli_progress_only_in_a_terminal_and_not_quiet(run_cli, monkeypatch) -> None:
    args = ("measure", "twoconv", "--layer", "stage2", "--images", "2", "--bootstrap", "0")
    code, _, err = run_cli(*args)
    assert code == 0 and "ERF maps" not in err  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli(*args)
    assert code == 0 and "ERF maps" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli(*args, "--quiet")
    assert code == 0 and "ERF maps" not in err


def test_repr_is_short_and_a_module_keeps_its_path_name() -> None:
    torch.manual_seed(0)
    mine = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Conv2d(8, 8, 5))
    result = erf.measure(mine, torch.randn(4, 3, 32, 32), [mine[2]], bootstrap=0)
    assert result.layers[0].name == "2" and result.layer("2") is result.layers[0]
    for text in (repr(result), repr(result.layers[0]), str(result)):
        assert len(text) < 300 and "array" not in text and "0., 0." not in text
    assert "r95=" in repr(result.layers[0]) and "1 layers" in repr(result)
    cmp = erf.compare([mine, mine], torch.randn(4, 3, 32, 32), layers=["stage1"], bootstrap=0)
    assert len(repr(cmp)) < 300 and "array" not in repr(cmp)


# ----------------------------------------------------------------------------- figures say what they draw
def test_figures_legends_and_captions_match_what_is_drawn() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.patches import Rectangle

    from erf.plotting import SCALE, compare_heatmaps, erf_grid, erf_heatmap, erf_vs_depth

    torch.manual_seed(0)
    model = create_model("resnet20_cbam")
    result = measure(model, load_source("bundled", count=2), ["stem", "stage3"], bootstrap=0)
    stem, s3 = result.layers
    fig = erf_heatmap(s3)
    texts = " ".join(t.get_text() for t in fig.texts)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert "no box" in texts and "encloses the whole 32 px input" in texts and not boxes  # 207 px box: not drawn
    assert fig.axes[0].get_xlabel() == "x (input px)" and len(fig.axes[0].get_xticks()) > 2
    fig = erf_heatmap(stem)
    assert "dashed: its 3 px TRF" in " ".join(t.get_text() for t in fig.texts)
    assert [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    legend = [t.get_text() for t in erf_vs_depth({"cbam": [s3]}).axes[0].get_legend().get_texts()]
    assert not any("TRF" in t for t in legend)  # every layer global: no TRF line, no TRF entry
    legend = [t.get_text() for t in erf_vs_depth({"cbam": [stem, s3]}).axes[0].get_legend().get_texts()]
    assert any("TRF half-size" in t for t in legend)
    fig = compare_heatmaps([s3, s3], ["a", "b"])
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert any(SCALE in lab for lab in labels) and fig.axes[0].get_xlabel() == "x (input px)"
    grid = erf_grid({"cbam": [stem, s3], "again": [stem, s3]})
    assert sum(1 for ax in grid.axes if SCALE in ax.get_ylabel()) == 1  # one colour bar for the grid
