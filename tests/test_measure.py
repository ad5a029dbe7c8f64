"""The ERF engine against independent references: a per-image autograd loop, captum, no cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from norms import randomise_norms
from references import BypassesHooks, reference_map
from torch import nn

from erf.data import ImageSet, load_source
from erf.errors import InputError, LayerDidNotRunError, LayerNotFoundError, UndefinedERFError
from erf.measurement import measure
from erf.models import create_model
from erf.pasting import embed
from erf.probes.gradient import plan_groups

LAYERS = ["stem", "stage1.block2", "stage2.block1", "stage2", "stage3"]


def _model(name: str = "resnet20_cbam", seed: int = 0) -> nn.Module:
    """A registered model with random weights and non-trivial batch-norm statistics (eval != train)."""
    torch.manual_seed(seed)
    return randomise_norms(create_model(name), None)  # the global generator: the draws of the seed above


def _images(count: int, size: int = 32, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 3, size, size, generator=gen)
    return ImageSet(x, torch.full((count,), -1), f"{count} test images")


def test_batched_equals_per_image_reference_resnet20_cbam() -> None:
    model = _model()
    data = _images(6)
    result = measure(model, data, LAYERS, batch_size=4, bootstrap=0)
    assert result.images == 6
    for layer in result.layers:
        ref = reference_map(model, layer.name, layer.unit, data.images)
        scale = ref.max()
        assert scale > 0
        # N <= groups: each bootstrap group is one image, so group maps are per-image maps
        np.testing.assert_allclose(layer.group_maps, ref, rtol=0, atol=1e-5 * scale, err_msg=layer.name)
        np.testing.assert_allclose(layer.sum_map, ref.sum(0), rtol=0, atol=6e-5 * scale, err_msg=layer.name)
        assert layer.sum_map.dtype == np.float64 and layer.sum_map.shape == (32, 32)
    # the channel gate makes every stage-1.. block global; its map reaches the far corners of the input
    glob = result.layer("stage2.block1")
    assert glob.trf.is_global and glob.sum_map[0, 0] > 0 and glob.sum_map[-1, -1] > 0


def test_relu_mode_matches_reference() -> None:
    model = _model("resnet20")
    data = _images(3, seed=1)
    result = measure(model, data, ["stage1.block3", "stage3"], probe_options={"mode": "relu"}, bootstrap=0)
    for layer in result.layers:
        ref = reference_map(model, layer.name, layer.unit, data.images, mode="relu")
        np.testing.assert_allclose(layer.group_maps, ref, rtol=0, atol=1e-5 * max(ref.max(), 1e-12))


def test_eval_mode_independence_of_images() -> None:
    """One image's map does not depend on the other images of its batch, even for a model in train mode."""
    model = _model("resnet20")
    a = _images(4, seed=2)
    b = _images(4, seed=3)
    b.images[0] = a.images[0]  # same first image, different companions
    model.train()
    ra = measure(model, a, ["stage2", "stage3"], batch_size=4, bootstrap=0)
    assert model.training  # measured in eval mode, given back in train mode (erf.measurement.lent)
    assert any("eval mode" in note for note in ra.notes)
    model.train()
    rb = measure(model, b, ["stage2", "stage3"], batch_size=4, bootstrap=0)
    for name in ("stage2", "stage3"):
        ma, mb = ra.layer(name).group_maps, rb.layer(name).group_maps
        np.testing.assert_allclose(ma[0], mb[0], rtol=0, atol=1e-6 * ma[0].max())
        assert not np.allclose(ma[1], mb[1])  # the companions did differ
    # and it equals the eval-mode single-image reference
    ref = reference_map(model.eval(), "stage3", ra.layer("stage3").unit, a.images[:1])
    np.testing.assert_allclose(ra.layer("stage3").group_maps[0], ref[0], rtol=0, atol=1e-5 * ref.max())


def test_captum_neuron_gradient_agrees_with_builtin_probe() -> None:
    model = _model("resnet20_cbam_spatial")
    data = _images(3, seed=4)
    layers = ["stem", "stage1.block1", "stage2", "stage3.block1"]
    ours = measure(model, data, layers, bootstrap=0)
    theirs = measure(model, data, layers, probe="captum-gradient", bootstrap=0)
    assert theirs.settings["probe"] == "captum-gradient"
    for a, b in zip(ours.layers, theirs.layers):
        assert a.unit == b.unit
        np.testing.assert_allclose(a.group_maps, b.group_maps, rtol=0, atol=1e-5 * a.group_maps.max())


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
@pytest.mark.parametrize("probe", ["integrated-gradients", "guided-backprop"])
def test_other_captum_probes_same_output_type(probe: str) -> None:
    model = _model("twoconv")
    result = measure(model, _images(2), ["stage2"], probe=probe, bootstrap=0)
    layer = result.layer("stage2")
    assert layer.sum_map.shape == (32, 32) and layer.sum_map.dtype == np.float64
    assert (layer.sum_map >= 0).all() and layer.sum_map.sum() > 0
    y0, y1, x0, x1 = layer.trf.box(layer.unit)
    outside = layer.sum_map.copy()
    outside[max(y0, 0): y1 + 1, max(x0, 0): x1 + 1] = 0
    assert outside.sum() == 0  # attributions stay inside the 5 px TRF


@pytest.mark.parametrize("name,size,unit", [("resnet20", 48, None), ("resnet20", 37, None),
                                            ("resnet20_cbam_spatial", 45, None), ("resnet20", 40, (1, 2))])
def test_crop_equals_no_crop(name: str, size: int, unit: tuple[int, int] | None) -> None:
    """Cropping the input to the TRF is exact, also at odd sizes and for off-centre units."""
    model = _model(name)
    data = _images(3, size=size, seed=5)
    layers = ["stem", "stage1.block1", "stage1.block3", "stage2.block2", "stage3"]
    units = {n: unit for n in layers} if unit else None
    cropped = measure(model, data, layers, units=units, bootstrap=0)
    full = measure(model, data, layers, units=units, probe_options={"crop": False}, bootstrap=0)
    # the test is only meaningful if the engine really cropped something
    targets = [cropped.layer(n) for n in layers]
    from erf.probes import Target

    groups = plan_groups([Target(t.name, t.path, nn.Identity(), t.unit, t.trf) for t in targets], size, size)
    assert any(g.crop is not None for g in groups)
    for a, b in zip(cropped.layers, full.layers):
        np.testing.assert_allclose(a.group_maps, b.group_maps, rtol=0, atol=1e-5 * b.group_maps.max(),
                                   err_msg=a.name)
        # nothing outside the TRF box, cropped or not
        y0, y1, x0, x1 = a.trf.box(a.unit)
        rest = b.sum_map.copy()
        rest[max(y0, 0): y1 + 1, max(x0, 0): x1 + 1] = 0
        assert rest.sum() == 0


def test_layer_that_never_ran_is_an_error_not_zeros() -> None:
    model = BypassesHooks()
    with pytest.raises(LayerDidNotRunError, match="forward"):
        measure(model, _images(2), ["stage1"], bootstrap=0)
    ok = measure(model, _images(2), ["stem", "stage.1"], bootstrap=0)
    assert ok.layer("stage.1").trf.size == (5, 5) and ok.layer("stage.1").sum_map.sum() > 0


def test_layer_errors() -> None:
    model = _model("resnet20")
    with pytest.raises(UndefinedERFError, match="pooling"):
        measure(model, _images(1), ["fc"], bootstrap=0)
    with pytest.raises(LayerNotFoundError, match="stage3"):
        measure(model, _images(1), ["stage_3"], bootstrap=0)
    with pytest.raises(InputError, match="^units "):
        measure(model, _images(1), ["stage3"], units={"stage3": (8, 0)}, bootstrap=0)
    # the global-pooling output (a 1x1 map of the whole image) has no ERF of its own either
    with pytest.raises(UndefinedERFError, match="pooling"):
        measure(model, _images(1), ["pool"], bootstrap=0)


def test_given_unit_and_even_map_rule() -> None:
    model = _model("resnet20")
    result = measure(model, _images(2), ["stage2", "stage3"], units={"stage2": (0, 0)}, bootstrap=0)
    s2, s3 = result.layer("stage2"), result.layer("stage3")
    assert s2.unit == (0, 0) and s2.unit_rule == "given"
    y0, y1, x0, x1 = s2.trf.box((0, 0))
    rest = s2.sum_map.copy()
    rest[max(y0, 0): y1 + 1, max(x0, 0): x1 + 1] = 0
    assert rest.sum() == 0 and s2.sum_map.sum() > 0
    assert s3.unit == s3.trf.central_unit() and "even map" in s3.unit_rule
    doc = result.to_json()
    assert doc["layers"][1]["unit"] == list(s3.unit) and doc["layers"][1]["trf"]["center"] == list(s3.center)


def test_input_size_embedding_and_clipped_fraction() -> None:
    model = _model("resnet20")
    data = _images(2, seed=6)
    small = measure(model, data, ["stem", "stage3"], bootstrap=0)
    big = measure(model, data, ["stem", "stage3"], input_size=(96, 96), bootstrap=0)
    assert big.input_size == (96, 96) and big.image_size == (32, 32)
    assert big.outside is not None and big.outside.sum() == 96 * 96 - 32 * 32
    assert not big.outside[32:64, 32:64].any()
    s3 = big.layer("stage3")
    expected = s3.sum_map[big.outside].sum() / s3.sum_map.sum()
    assert s3.metrics.clipped_fraction == pytest.approx(expected)
    assert 0 < s3.metrics.clipped_fraction < 1
    assert big.layer("stem").metrics.clipped_fraction == 0.0
    assert small.layer("stage3").metrics.clipped_fraction == 0.0
    # at 32 px the frame bounds stage3 (said in words); on the 96 px canvas the padding decides it instead
    assert small.layer("stage3").trust.frame_bound and not big.layer("stage3").trust.frame_bound
    assert any(n.startswith("bounded by the frame") and "stage3" in n for n in small.notes)
    assert big.layer("stage3").trust.padding_mass == s3.metrics.clipped_fraction
    assert big.preprocessing == {"kind": "canvas", "source_size": [32, 32], "canvas": [96, 96], "fill": "zero"}
    # the stem's 3x3 field sees the same pixels in both runs (it is inside the image)
    np.testing.assert_allclose(small.layer("stem").sum_map.sum(), big.layer("stem").sum_map.sum(), rtol=1e-5)


def test_embed_fills() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    zero, outside = embed(x, (8, 10), "zero")
    assert zero.shape == (2, 3, 8, 10) and torch.equal(zero[:, :, 2:6, 3:7], x)
    assert zero[:, :, outside].abs().sum() == 0
    mean, _ = embed(x, (8, 10), "mean")
    assert torch.allclose(mean[:, :, 0, 0], x.mean(dim=(2, 3)))
    same, none = embed(x, (4, 4))
    assert same is x and none is None
    with pytest.raises(InputError):
        embed(x, (2, 2))


def test_sources_noise_constant_tensor(tmp_path) -> None:
    model = _model("twoconv")
    array = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    from_file = measure(model, load_source(f"tensor:{tmp_path / 'x.npy'}"), ["stage2"], bootstrap=0)
    direct = measure(model, ImageSet(torch.from_numpy(array), torch.full((3,), -1), "x"), ["stage2"], bootstrap=0)
    np.testing.assert_array_equal(from_file.layer("stage2").sum_map, direct.layer("stage2").sum_map)
    noise = measure(model, load_source("noise:1", count=2), ["stage2"], bootstrap=0)
    const = measure(model, load_source("constant:0.5", count=2), ["stage2"], bootstrap=0)
    assert noise.images == const.images == 2
    # constant input: both images give the same map
    np.testing.assert_allclose(const.layer("stage2").group_maps[0], const.layer("stage2").group_maps[1])


def test_float64_model_and_bootstrap_ci_present() -> None:
    model = _model("twoconv").double()
    result = measure(model, _images(8), ["stage2"], bootstrap=50)
    layer = result.layer("stage2")
    for key in ("radius.50", "radius.95", "area_ratio.50", "sigma.y"):
        lo, hi = layer.ci[key]
        assert lo <= hi


def test_duplicate_names_are_probed_once() -> None:
    """``stage3`` and its module path ``layer3`` are one layer: summing both into one map would double it."""
    model = _model("resnet20")
    data = _images(3)
    both = measure(model, data, ["stage3", "layer3", "stage3"], bootstrap=0)
    single = measure(model, data, ["stage3"], bootstrap=0)
    assert [layer.name for layer in both.layers] == ["stage3"]
    np.testing.assert_array_equal(both.layers[0].sum_map, single.layers[0].sum_map)
    # two stable names of one module (twoconv's stem and stage1) stay two entries with equal maps
    two = measure(_model("twoconv"), data, ["stem", "stage1"], bootstrap=0)
    np.testing.assert_array_equal(two.layer("stem").sum_map, two.layer("stage1").sum_map)


def test_tol_stops_early_and_replknet_unit() -> None:
    model = _model("twoconv")
    data = _images(20)
    early = measure(model, data, ["stage2"], batch_size=2, tol=10.0, bootstrap=20)
    assert early.images == 8 and any("--tol" in note for note in early.notes)
    full = measure(model, data, ["stage2"], batch_size=5, tol=1e-9, bootstrap=20)
    assert full.images == 20
    # RepLKNet's centre is (h // 2, w // 2); ours the unit nearest the input centre (ties: lower index)
    ours = measure(model, data.head(2), ["stem"], bootstrap=0).layer("stem")
    theirs = measure(model, data.head(2), ["stem"], exact_replknet=True, bootstrap=0).layer("stem")
    assert ours.unit == (15, 15) and theirs.unit == (16, 16) and "replknet" in theirs.unit_rule


class Detached(nn.Module):
    """A stage whose output is detached from the input (no gradient can reach the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Conv2d(4, 4, 3, padding=1)
        self.named_layers = {"stem": "stem", "stage1": "stage"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.stem(x).detach())


def test_detached_layer_is_an_error_not_zeros() -> None:
    with pytest.raises(UndefinedERFError, match="autograd"):
        measure(Detached(), _images(2), ["stage1"], bootstrap=0)
