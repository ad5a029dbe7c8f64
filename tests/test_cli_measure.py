"""`erf measure` and `erf layers` end to end: files, schema, raw maps, messages, exit codes."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from references import reference_map

from erf.checkpoints import load_checkpoint
from erf.data import load_source
from erf.layers import default_layers, named_layers
from erf.schemas import load_schema, validate
from erf.trf import theoretical_rf


def test_measure_json_out(run_cli, tmp_path) -> None:
    out = tmp_path / "m"
    code, stdout, stderr = run_cli("measure", "resnet20", "--layer", "stage3", "--images", "4", "--json",
                                   "--out", out, "--bootstrap", "50")
    assert code == 0, stderr
    doc = json.loads((out / "measure.json").read_text())
    assert validate(doc, "measure") is True
    printed = json.loads(stdout)
    assert printed == doc
    assert doc["schema"] == "erf.measure/1" and doc["model"] == "resnet20" and doc["probe"] == "gradient"
    assert doc["images"] == 4 and doc["input_size"] == [32, 32] and isinstance(doc["trained"], bool)
    (layer,) = doc["layers"]
    assert layer["name"] == "stage3" and layer["module"] == "layer3" and layer["feature_size"] == [8, 8]
    assert layer["trf"]["size"] == [81, 81] and layer["trf"]["stride"] == [4, 4] and not layer["trf"]["global"]
    assert layer["map"] == "maps/stage3.npy"
    assert set(layer["erf"]["area_ratio"]) >= {"20", "30", "50", "99"}
    assert set(layer["erf"]["radius"]) >= {"50", "95"}
    assert {"radius.50", "radius.95", "area_ratio.50"} <= set(layer["erf"]["ci95"])
    # the raw map: float64, input H x W, the un-normalised sum over images and channels of |d unit / d input|
    raw = np.load(out / layer["map"])
    assert raw.dtype == np.float64 and raw.shape == (32, 32)
    loaded = load_checkpoint("resnet20", seed=0)
    x = load_source("bundled", count=4).normalized()
    ref = reference_map(loaded.model.eval(), "stage3", tuple(layer["unit"]), x).sum(0)
    np.testing.assert_allclose(raw, ref, rtol=0, atol=1e-5 * ref.max())
    assert (out / "heatmaps" / "stage3.png").stat().st_size > 1000
    # the same folder again: refused without --force
    code, _, stderr = run_cli("measure", "resnet20", "--layer", "stage3", "--images", "1", "--out", out)
    assert code == 2 and "force" in stderr


def test_schema_rejects_broken_documents(run_cli, tmp_path) -> None:
    code, stdout, _ = run_cli("measure", "twoconv_cbam", "--layer", "attention", "--layer", "stage2",
                              "--images", "2", "--json", "--bootstrap", "0")
    assert code == 0
    doc = json.loads(stdout)
    validate(doc, "measure")
    glob, local = doc["layers"]
    assert glob["trf"]["global"] and glob["trf"]["size"] is None and "ChannelGate" in glob["trf"]["reason"]
    assert local["trf"]["size"] == [5, 5]
    schema = load_schema("measure")
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)  # the schema itself is valid
    bad = json.loads(stdout)
    bad["layers"][0]["trf"]["size"] = [5, 5]  # size must be null when global
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "measure")
    bad = json.loads(stdout)
    bad["layers"][1]["trf"]["size"] = None  # and given when local
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "measure")
    bad = json.loads(stdout)
    del bad["layers"][1]["erf"]["radius"]["95"]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "measure")
    bad = json.loads(stdout)
    bad["schema"] = "erf.measure/2"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "measure")


def test_layers_lists_names_and_trfs(run_cli) -> None:
    code, stdout, _ = run_cli("layers", "resnet20")
    assert code == 0
    loaded = load_checkpoint("resnet20")
    trf = theoretical_rf(loaded.model, [n for n in named_layers(loaded.model) if n != "fc"])
    for name, t in trf.items():
        line = next(row for row in stdout.splitlines() if row.split() and row.split()[0] == name)
        assert ("global" if t.is_global else str(t.size[0])) in line.split()
    marked = [row.split()[0] for row in stdout.splitlines() if row.endswith("no ERF")]
    assert marked == ["pool", "fc"]
    code, stdout, _ = run_cli("layers", "resnet20_cbam", "--json")
    rows = {r["name"]: r for r in json.loads(stdout)["layers"]}
    assert rows["stage3"]["erf"] and not rows["pool"]["erf"] and not rows["fc"]["erf"]
    assert rows["stem"]["trf"]["size"] == [3, 3]
    assert rows["stage1.block1"]["trf"]["global"] and rows["stage1.block1"]["trf"]["size"] is None


def test_unknown_and_undefined_layers(run_cli) -> None:
    code, _, stderr = run_cli("measure", "resnet20", "--layer", "stage_3", "--images", "1")
    assert code == 2
    assert "erf measure: error" in stderr and "nearest" in stderr and "stage3" in stderr
    code, _, stderr = run_cli("measure", "resnet20", "--layer", "fc", "--images", "1")
    assert code == 2 and "undefined" in stderr
    code, _, stderr = run_cli("measure", "resnet20", "--layer", "stage3", "--unit", "9,9", "--images", "1")
    assert code == 2 and "--unit" in stderr


def test_all_layers_writes_heatmaps_and_depth_plot(run_cli, tmp_path) -> None:
    out = tmp_path / "all"
    code, stdout, stderr = run_cli("measure", "resnet20", "--all-layers", "--images", "2", "--bootstrap", "10",
                                   "--out", out, "--display", "linear")
    assert code == 0, stderr
    loaded = load_checkpoint("resnet20")
    names = default_layers(loaded.model)
    doc = json.loads((out / "measure.json").read_text())
    assert [layer["name"] for layer in doc["layers"]] == names
    assert (out / "erf_vs_depth.png").stat().st_size > 1000
    for name in names:
        assert (out / "heatmaps" / f"{name}.png").is_file() and (out / "maps" / f"{name}.npy").is_file()
    table = [line for line in stdout.splitlines() if not line.startswith("wrote")]
    assert any(line.startswith("stage3.block3") for line in table)  # the table
    assert max(len(line) for line in table) <= 80


def test_measure_options(run_cli, tmp_path) -> None:
    code, stdout, stderr = run_cli("measure", "resnet20", "--layer", "stage2", "--unit", "0,0", "--images", "2",
                                   "--input-size", "64", "--fill", "mean", "--json", "--bootstrap", "0")
    assert code == 0, stderr
    doc = json.loads(stdout)
    validate(doc, "measure")
    layer = doc["layers"][0]
    assert doc["input_size"] == [64, 64] and doc["image_size"] == [32, 32] and layer["unit"] == [0, 0]
    assert layer["unit_rule"] == "given" and doc["settings"]["fill"] == "mean"
    assert 0 < layer["erf"]["clipped_fraction"] <= 1  # unit (0, 0) of a 64 px canvas looks at padding
    array = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    for data in ("noise:3", "constant:0", f"tensor:{tmp_path / 'x.npy'}"):
        code, stdout, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--images", "2", "--data", data,
                                       "--json", "--bootstrap", "0")
        assert code == 0, (data, stderr)
        assert json.loads(stdout)["images"] == 2
    code, stdout, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--images", "2", "--json",
                                   "--probe", "captum-gradient", "--bootstrap", "0")
    assert code == 0, stderr
    assert json.loads(stdout)["probe"] == "captum-gradient"
    code, stdout, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--images", "2", "--json",
                                   "--replknet", "--bootstrap", "0")
    assert code == 0, stderr
    settings = json.loads(stdout)["settings"]
    assert settings["exact_replknet"] is True and settings["probe_options"]["mode"] == "relu"
    code, _, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--probe", "captum-gradient",
                              "--mode", "relu", "--images", "1")
    assert code == 2 and "--mode" in stderr
    code, _, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--probe", "nope", "--images", "1")
    assert code == 2 and "captum-gradient" in stderr


def test_display_scales(run_cli, tmp_path) -> None:
    """--display: log10(1 + 9 m) with m = mean map / max (default), linear m, RepLKNet's log10(1 + mean) / max."""
    import matplotlib.pyplot as plt

    from erf.measurement import measure
    from erf.plotting import draw_erf

    loaded = load_checkpoint("twoconv", seed=0)
    layer = measure(loaded.model, load_source("bundled", count=3), ["stage2"], bootstrap=0).layer("stage2")
    mean = layer.sum_map / 3
    expected = {True: np.log10(1 + 9 * mean / mean.max()), False: mean / mean.max(),
                "log1p": np.log10(1 + mean) / np.log10(1 + mean).max()}
    for log, want in expected.items():
        fig, ax = plt.subplots()
        shown = np.asarray(draw_erf(ax, layer, log=log).get_array())
        plt.close(fig)
        np.testing.assert_allclose(shown, want, rtol=1e-12)
    for display in ("log", "linear", "log1p"):
        out = tmp_path / display
        code, _, stderr = run_cli("measure", "twoconv", "--layer", "stage2", "--images", "2", "--bootstrap", "0",
                                  "--display", display, "--out", out)
        assert code == 0, stderr
        assert (out / "heatmaps" / "stage2.png").stat().st_size > 1000


def test_tables_never_cut_names_and_p_values_never_read_zero() -> None:
    from erf.commands.compare import format_p
    from erf.commands.tables import format_table

    long = "features.denseblock2.denselayer12"
    lines = format_table(["name", "module", "TRF"], [[long, "features.denseblock2.denselayer12.conv2", 7],
                                                     ["stem", "conv0", 3]])
    assert long in lines[1] and "features.denseblock2.denselayer12.conv2" in lines[1]
    assert len({len(line.rstrip()) for line in lines}) == 1  # the last column ends in one place
    assert lines[1].split()[1] == "features.denseblock2.denselayer12.conv2"  # columns never run into each other
    assert format_p(0.0) == "<1e-4" and format_p(3e-5) == "<1e-4" and format_p(0.0312) == "0.0312"
    assert format_p(None) == "n/a" and format_p(1.0) == "1"
