"""The ERF engine's performance contract, checked by oracles (never by timings).

* exact cropping: crop == no-crop maps on every registered model (ResNeXt at reduced width, same topology);
* no parameter gradients, ``requires_grad`` restored;
* layers deeper than the deepest requested one never run;
* ``--tol`` stops early, and uses every image without it;
* bounded memory: float64 accumulators of fixed size, images streamed in batches;
* ``erf bench`` runs end to end and its JSON validates against its schema.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from norms import randomise_norms
from references import tiny_model

from erf.bench import noise_images
from erf.data import load_source
from erf.layers import bench_layers, default_layers
from erf.measurement import make_targets, measure
from erf.models import get_entry, list_models
from erf.probes import GradientProbe
from erf.probes.gradient import plan_groups


@pytest.mark.parametrize("name", list_models())
def test_crop_equals_no_crop_on_every_registered_model(name: str) -> None:
    model = tiny_model(name)
    layers = default_layers(model)
    targets, _ = make_targets(model, layers, (32, 32))
    x = noise_images(2, 32, 3, seed=1)
    cropped = GradientProbe(crop=True).batch_maps(model, targets, x)
    full = GradientProbe(crop=False).batch_maps(model, targets, x)
    assert set(cropped) == set(full) == {t.name for t in targets}
    for layer in layers:
        a, b = cropped[layer].numpy(), full[layer].numpy()
        assert a.shape == b.shape == (2, 32, 32)
        scale = np.abs(b).max()
        assert scale > 0, f"{name} {layer}: empty map"
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale, err_msg=f"{name} {layer}")
    groups = plan_groups(targets, 32, 32, crop=True)
    if get_entry(name).attention in (None, "cbam_spatial"):
        # local layers exist: the equality above must have compared genuinely cropped runs
        assert any(g.crop is not None for g in groups), name


@pytest.mark.parametrize("name", ["norm_8d", "cbam_8d", "resnet20_cbam"])
def test_channels_last_equals_contiguous(name: str) -> None:
    from erf.probes.gradient import probe_memory_format

    model = tiny_model(name)
    targets, _ = make_targets(model, default_layers(model), (32, 32))
    x = noise_images(2, 32, 3, seed=4)
    last = GradientProbe(memory_format="channels_last").batch_maps(model, targets, x)
    cont = GradientProbe(memory_format="contiguous").batch_maps(model, targets, x)
    for layer, m in cont.items():
        scale = float(m.abs().max())
        assert scale > 0
        np.testing.assert_allclose(last[layer].numpy(), m.numpy(), rtol=0, atol=1e-5 * scale, err_msg=layer)
    grouped = get_entry(name).family == "resnext29"
    expected = torch.channels_last if grouped else torch.contiguous_format
    assert probe_memory_format(model, torch.device("cpu")) == expected
    assert probe_memory_format(model, torch.device("meta")) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory_format"):
        GradientProbe(memory_format="nhwc")


@pytest.mark.parametrize("name", ["norm_8d", "resnet20_cbam"])
def test_cpu_sub_batches_give_the_same_maps(name: str) -> None:
    model = tiny_model(name)
    targets, _ = make_targets(model, default_layers(model), (32, 32))
    x = noise_images(5, 32, 3, seed=6)
    whole = GradientProbe(cpu_chunk_mb=None).batch_maps(model, targets, x)
    split = GradientProbe(cpu_chunk_mb=1e-6).batch_maps(model, targets, x)  # one image per sub-batch
    for layer, m in whole.items():
        assert split[layer].shape == m.shape == (5, 32, 32)
        torch.testing.assert_close(split[layer], m, rtol=0, atol=1e-5 * float(m.abs().max()))


def test_sub_batch_size_from_the_largest_feature_map() -> None:
    from erf.probes.gradient import CPU_CHUNK_MB, largest_feature_map_bytes

    model = tiny_model("resnet20")  # widths 16/32/64: the largest map is a 16 x 32 x 32 float32 stage-1 map
    targets, _ = make_targets(model, ["stage1.block1"], (32, 32))
    assert largest_feature_map_bytes(model, targets, noise_images(3)) == 16 * 32 * 32 * 4
    deep, _ = make_targets(model, ["stage3"], (32, 32))
    assert largest_feature_map_bytes(model, deep, noise_images(3)) == 16 * 32 * 32 * 4  # earlier maps count
    probe = GradientProbe()
    assert probe.sub_batch(2**20, 64) == int(CPU_CHUNK_MB) == 16  # 1 MiB per image (a ResNeXt-29 8d stage-1 map)
    assert probe.sub_batch(2**20 * 1000, 64) == 1 and probe.sub_batch(1024, 64) == 64
    assert GradientProbe(cpu_chunk_mb=None).sub_batch(2**20, 64) == 64
    with pytest.raises(ValueError, match="cpu_chunk_mb"):
        GradientProbe(cpu_chunk_mb=0)


def test_no_parameter_gradient_and_flags_restored() -> None:
    model = tiny_model("resnet20_cbam")
    params = list(model.parameters())
    for k, p in enumerate(params):
        p.requires_grad_(k % 3 != 0)  # a mix of flags, to check they come back as they were
    before = [p.requires_grad for p in params]
    result = measure(model, load_source("noise", count=6), ["stem", "stage2.block1", "stage3"], batch_size=4,
                     bootstrap=0)
    assert result.images == 6
    assert all(p.grad is None for p in params)
    assert [p.requires_grad for p in params] == before


def test_deeper_layers_never_run() -> None:
    model = tiny_model("resnet20")
    calls = {"stage2": 0, "stage3": 0, "pool": 0, "fc": 0, "stage1": 0}
    modules = {"stage1": model.stage1 if hasattr(model, "stage1") else None}
    from erf.layers import resolve_layer

    handles = []
    for name in calls:
        module = resolve_layer(model, name).module
        modules[name] = module

        def hook(mod, inputs, output, name=name):
            calls[name] += 1

        handles.append(module.register_forward_hook(hook))
    targets, _ = make_targets(model, ["stem", "stage1.block2", "stage1"], (32, 32))
    for key in calls:
        calls[key] = 0  # the TRF trace above runs the whole model once; the engine must not
    GradientProbe(crop=True).batch_maps(model, targets, noise_images(3))
    GradientProbe(crop=False).batch_maps(model, targets, noise_images(3))
    for h in handles:
        h.remove()
    assert calls["stage1"] >= 2, "the deepest requested layer must have run"
    assert calls["stage2"] == calls["stage3"] == calls["pool"] == calls["fc"] == 0, calls


def test_tol_stops_early_and_none_uses_every_image(run_cli) -> None:
    model = tiny_model("twoconv")
    data = load_source("noise", count=64)
    loose = measure(model, data, ["stage1"], batch_size=8, tol=0.5, bootstrap=0)
    full = measure(model, data, ["stage1"], batch_size=8, tol=None, bootstrap=0)
    assert 8 <= loose.images < 64
    assert any("--tol" in n for n in loose.notes)
    assert full.images == 64
    code, out, _ = run_cli("measure", "twoconv", "--data", "noise", "--images", "64", "--batch-size", "8",
                           "--layer", "stage1", "--tol", "0.5", "--bootstrap", "0", "--json")
    assert code == 0
    doc = json.loads(out)
    assert 8 <= doc["images"] < 64
    assert doc["layers"][0]["images"] == doc["images"]
    code, out, _ = run_cli("measure", "twoconv", "--data", "noise", "--images", "64", "--batch-size", "8",
                           "--layer", "stage1", "--bootstrap", "0", "--json")
    assert code == 0 and json.loads(out)["images"] == 64


def test_memory_bounded_streams_batches_into_float64(monkeypatch) -> None:
    seen: list[int] = []
    original = GradientProbe.batch_maps

    def spy(self, model, targets, x):
        seen.append(int(x.shape[0]))
        return original(self, model, targets, x)

    monkeypatch.setattr(GradientProbe, "batch_maps", spy)
    model = tiny_model("twoconv")
    result = measure(model, load_source("noise", count=50), ["stem", "stage1"], batch_size=16, groups=8,
                     bootstrap=0)
    assert seen == [16, 16, 16, 2]  # streamed: never more than one batch at a time
    for layer in result.layers:
        assert layer.sum_map.dtype == np.float64 and layer.sum_map.shape == (32, 32)
        assert layer.group_maps.dtype == np.float64 and layer.group_maps.shape == (8, 32, 32)  # G, not N
        assert layer.group_counts.sum() == 50 == layer.images
        np.testing.assert_allclose(layer.group_maps.sum(axis=0), layer.sum_map)


def test_bench_layers_are_the_nine_resnext_bottlenecks() -> None:
    names = bench_layers(tiny_model("norm_8d"))
    assert names == [f"stage{s}.block{b}" for s in (1, 2, 3) for b in (1, 2, 3)]


def test_bench_end_to_end_json_validates(run_cli, tmp_path) -> None:
    from erf.schemas import validate

    out = tmp_path / "bench.json"
    code, stdout, _ = run_cli("bench", "--model", "twoconv", "--images", "4", "--json", "--quiet", "--parts", "erf",
                              "--threads", "1", "--in-process", "--out", out)
    assert code == 0
    doc = json.loads(stdout)
    assert json.loads(out.read_text()) == doc
    assert validate(doc, "bench")
    assert doc["schema"] == "erf.bench/1" and doc["images"] == 4 and doc["layers"] == 3
    for m in ("engine", "captum", "per_image", "floor"):
        assert doc["seconds"][m] > 0 and doc["peak_memory_mb"][m] is not None
    for m, d in doc["max_rel_diff"].items():
        assert d < 1e-4, (m, d)  # the four methods compute the same maps
    # cropping computes less than the floor; captum and the per-image loop run whole forwards: more
    assert 0 < doc["gflop"]["engine"] < doc["gflop"]["floor"] <= doc["gflop"]["captum"]
    assert doc["matmul_peak_gflop_per_second"] > 0 and doc["gflop_per_second"]["floor"] > 0
    code, _, err = run_cli("bench", "--model", "twoconv", "--images", "4", "--parts", "erf", "--out", out)
    assert code == 2 and "exists" in err


def test_bench_isolated_subprocess_measures_its_own_peak(run_cli) -> None:
    from erf.schemas import validate

    code, stdout, _ = run_cli("bench", "--model", "twoconv", "--images", "2", "--json", "--quiet", "--parts", "erf",
                              "--threads", "1", "--methods", "engine")
    assert code == 0
    doc = json.loads(stdout)
    assert validate(doc, "bench")
    assert doc["seconds"]["engine"] > 0 and doc["seconds"]["captum"] is None
    assert doc["peak_memory_mb"]["engine"] >= 0 and doc["ratios"]["engine_over_floor"] is None
    assert doc["memory_measure"].startswith("VmHWM")


def test_affine_batch_norm_is_the_same_function_and_is_restored() -> None:
    from erf.bench import run_floor
    from erf.probes.base import frozen_parameters
    from erf.probes.gradient import affine_batch_norm

    model = tiny_model("norm_8d")
    randomise_norms(model, 3)  # non-trivial running statistics and affine parameters
    x = noise_images(3, seed=2)
    with torch.no_grad():
        plain = model(x)
        with affine_batch_norm(model):
            affine = model(x)
        assert all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(affine, plain, rtol=1e-5, atol=1e-5)
    targets, _ = make_targets(model, bench_layers(model), (32, 32))
    engine = GradientProbe(crop=True).batch_maps(model, targets, x)
    with frozen_parameters(model), torch.enable_grad():
        floor = run_floor(model, targets, x, 3)  # plain batch norm, no crop
    for name, m in engine.items():
        ref = floor[name].numpy()
        np.testing.assert_allclose(m.sum(dim=0).numpy(), ref, rtol=0, atol=1e-4 * np.abs(ref).max(), err_msg=name)
    train = tiny_model("twoconv").train()
    with affine_batch_norm(train):  # batch statistics in train mode: left alone
        assert all("forward" not in m.__dict__ for m in train.modules())


def test_bench_methods_share_weights_for_unseeded_specs() -> None:
    from erf.bench import bench

    doc = bench("torchvision:resnet18", images=2, methods=("engine", "floor"), isolate=False, threads=1)
    assert doc["layers"] == 8  # the 8 basic blocks
    assert doc["max_rel_diff"]["floor"] < 1e-5  # same random weights in both runs


def test_flop_counter_matches_the_closed_form() -> None:
    """One forward of a convolution is 2 Cout Cin k^2 H W multiply-adds per image; its input gradient as much again."""
    from erf.bench import count_flops

    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 16, 16)
    forward = 2 * 8 * 3 * 9 * 16 * 16 * 2
    assert count_flops(lambda m, t, xs, b: m(xs), conv, [], x, 2) == forward

    def with_grad(m, t, xs, b):
        xin = xs.clone().requires_grad_(True)
        torch.autograd.grad(m(xin).sum(), xin)

    with torch.no_grad():
        conv.weight.requires_grad_(False)
    assert count_flops(with_grad, conv, [], x, 2) == 2 * forward  # no weight gradient: frozen


def test_bench_precision_parts_end_to_end(run_cli) -> None:
    """Issue 22: peaks, training throughput and the engine in bf16, side by side in one run (tiny models)."""
    from erf.schemas import validate

    code, stdout, _ = run_cli("bench", "--model", "twoconv", "--train-model", "twoconv", "--train-model",
                              "twoconv_cbam", "--parts", "peaks,training,precision", "--precision-images", "2",
                              "--threads", "1", "--json", "--quiet")
    assert code == 0
    doc = json.loads(stdout)
    assert validate(doc, "bench_suite")
    assert doc["parts"] == ["peaks", "training", "precision"] and doc["erf"] == []
    assert set(doc["training"]["attention_cost"]["bf16"]) == {"twoconv_cbam"}
    row = doc["precision"][0]
    assert row["model"] == "twoconv" and row["layers"] and 0 <= row["max_rel_diff"] < 0.5
    # the verdict follows the rule from the numbers it prints
    assert row["pays"] == (row["speedup"] >= doc["pays_rule"]["min_speedup"]
                           and row["worst_metric_change"] < doc["pays_rule"]["max_metric_change"])
    code, _, err = run_cli("bench", "--parts", "erf,nope")
    assert code == 2 and "--parts" in err
