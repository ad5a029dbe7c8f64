"""Tests of ``erf compare`` (erf/comparison.py, erf/commands/compare.py): paired statistics with oracles."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from erf.checkpoints import LoadedModel, load_checkpoint, save_checkpoint
from erf.cli import main
from erf.comparison import COMPARED_METRICS, compare
from erf.data import load_source
from erf.errors import InputError, LayerError
from erf.layers import match_layers
from erf.models.resnet_cifar import ResNetCifar
from erf.models.resnext import ResNeXtCifar
from erf.models.twoconv import TwoConv
from erf.uncertainty import signed_rank_test


def _load(*specs) -> list[LoadedModel]:
    """Load checkpoint specs the way ``erf compare`` does (random inits seeded with 0)."""
    return [load_checkpoint(str(spec), seed=0) for spec in specs]


SCHEMA_PATH = Path(__file__).parents[1] / "erf" / "schemas" / "compare.schema.json"
TINY = dict(depth=8, stages=2, widths=(8, 8, 8))


def validate(doc: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data():
    return load_source("bundled", count=16)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A small CIFAR ResNet checkpoint (erf format) with accuracy metadata."""
    torch.manual_seed(1)
    model = ResNetCifar(**TINY).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, "resnet20", TINY, {"best_test_accuracy": 0.625})
    return path


def widened_pair(weight: float = 2.0) -> tuple[LoadedModel, LoadedModel]:
    """A one-block ResNet and the same net with a CBAM spatial gate whose 7x7 kernel is set to mix
    positions 3 px away (ring weights of alternating sign, so the gate is not saturated): the gate's
    gradient reaches 3 px beyond the plain block's 7 px TRF, so the ERF must widen."""
    torch.manual_seed(0)
    kw = dict(depth=8, stages=1, widths=(8, 8, 8))
    plain = ResNetCifar(**kw).eval()
    gated = ResNetCifar(attention="cbam_spatial", **kw).eval()
    missing = gated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert all("SpatialGate" in k for k in missing)
    yy, xx = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    ring = torch.maximum((yy - 3).abs(), (xx - 3).abs()) == 3
    sign = ((yy + xx) % 2) * 2 - 1
    with torch.no_grad():
        gated.layer1[0].attention.SpatialGate.spatial.conv.weight.copy_((ring * sign).float().expand(1, 2, 7, 7)
                                                                        * weight)
    return LoadedModel(plain, "plain", "plain"), LoadedModel(gated, "gated", "gated")


# ----------------------------------------------------------------------------- statistics
def test_signed_rank_all_zero_differences_is_p_one() -> None:
    assert signed_rank_test(np.zeros(10)) == (0.0, 1.0, 0)


def test_signed_rank_matches_scipy_exact() -> None:
    from scipy.stats import wilcoxon

    d = np.array([0.0, 1.5, 2.0, -0.5, 3.0, 0.0, 2.5, 1.0])
    stat, p, nonzero = signed_rank_test(d)
    ref = wilcoxon(d[d != 0], method="exact")
    assert nonzero == 6
    assert stat == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    # W- = rank of |-0.5| = 1 -> two-sided exact p = 2 * P(W <= 1) = 2 * 2 / 64
    assert p == pytest.approx(4 / 64)


# ----------------------------------------------------------------------------- oracles
def test_identical_checkpoints_zero_difference_not_significant(tiny_ckpt: Path, data) -> None:
    result = compare(_load(tiny_ckpt, tiny_ckpt), data, bootstrap=50)
    assert [m.label for m in result.models] == ["tiny", "tiny#2"]
    assert result.pairing == "image" and result.samples == 16
    assert [lc.name for lc in result.layers] == ["stem", "stage1", "stage2"]
    for lc in result.layers:
        np.testing.assert_array_equal(lc.erfs[0].sum_map, lc.erfs[1].sum_map)
        assert {d.metric for d in lc.differences} == set(COMPARED_METRICS)
        for d in lc.differences:
            assert d.estimate == 0.0 and d.mean == 0.0 and d.ci == (0.0, 0.0)
            assert d.p_value == 1.0 and d.p_value >= 0.05 and not d.significant
            assert d.nonzero == 0 and d.pairs == 16
    assert result.models[0].accuracy == 0.625 and result.models[0].accuracy_source == "metadata"
    validate(result.to_json())


def test_attention_that_widens_the_erf_is_detected(data) -> None:
    plain, gated = widened_pair()
    result = compare([plain, gated], data, layers=["stem", "stage1.block1"], bootstrap=100)
    assert result.layer("stage1.block1").erfs[1].trf.size[0] == result.layer("stage1.block1").erfs[0].trf.size[0] + 6
    d = result.difference("stage1.block1", "radius.95")
    assert d.model == "gated" and d.reference == "plain"
    assert d.estimate > 1.0 and d.ci[0] > 0  # wider, and the paired CI excludes 0
    assert d.p_value < 0.05 and d.significant and d.mean > 0
    # the stem comes before the gate: no difference there
    assert all(x.estimate == 0 and x.p_value == 1.0 for x in result.layer("stem").differences)
    # the sign follows the order: reference first
    rev = compare([gated, plain], data, layers=["stage1.block1"], bootstrap=50)
    r = rev.difference("stage1.block1", "radius.95")
    assert r.estimate == pytest.approx(-d.estimate) and r.ci[1] < 0 and r.p_value == pytest.approx(d.p_value)
    validate(result.to_json())


def test_gate_that_cannot_mix_positions_changes_nothing(data) -> None:
    """With a zero kernel the spatial gate is the constant sigmoid(0) = 1/2: the gated block equals the plain
    block with its second BN's affine halved, so the two ERFs agree and no difference is significant."""
    plain, gated = widened_pair(weight=0.0)
    halved = ResNetCifar(depth=8, stages=1, widths=(8, 8, 8)).eval()
    halved.load_state_dict(plain.model.state_dict())
    with torch.no_grad():
        halved.layer1[0].bn2.weight.mul_(0.5)
        halved.layer1[0].bn2.bias.mul_(0.5)
    result = compare([LoadedModel(halved, "halved", "halved"), gated], data, layers=["stage1.block1"],
                     bootstrap=20)
    a, b = result.layers[0].erfs
    np.testing.assert_allclose(a.sum_map, b.sum_map, rtol=1e-4, atol=1e-7 * a.sum_map.max())
    for d in result.layers[0].differences:
        assert not d.significant and abs(d.estimate) < 0.5


def test_more_images_than_groups_pairs_groups(tiny_ckpt: Path) -> None:
    result = compare(_load(tiny_ckpt, tiny_ckpt), load_source("bundled"), layers=["stage1"], count=12, groups=4,
                     bootstrap=10)
    assert result.pairing == "group" and result.samples == 4 and result.images == 12
    assert result.layers[0].differences[0].pairs == 4
    assert any("groups" in n for n in result.notes)
    validate(result.to_json())


# ----------------------------------------------------------------------------- layers
def test_mismatched_layers_error_lists_shared_names() -> None:
    torch.manual_seed(0)
    two = LoadedModel(TwoConv(widths=(4, 4)).eval(), "twoconv", "twoconv")
    res = LoadedModel(ResNetCifar(**TINY).eval(), "resnet", "resnet")
    with pytest.raises(LayerError) as err:
        compare([two, res], load_source("bundled"), layers=["stage1.block1"], count=2)
    msg = str(err.value)
    assert "stage1.block1" in msg and "twoconv" in msg and "stem, stage1, stage2" in msg
    assert match_layers([two.model, res.model], None) == ["stem", "stage1", "stage2"]
    with pytest.raises(InputError):
        compare([two], load_source("bundled"), count=2)


def test_torchvision_specs(data) -> None:
    result = compare(_load("torchvision:resnet18", "torchvision:resnet50"), data, count=3, bootstrap=10)
    assert [lc.name for lc in result.layers] == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert result.layer("stage1").erfs[0].path == "layer1"
    assert not result.models[0].trained and result.models[1].label == "torchvision:resnet50"
    assert any("cannot reach p < 0.05" in n for n in result.notes)  # 3 images: the test is powerless
    validate(result.to_json())
    again = compare(_load("torchvision:resnet18", "torchvision:resnet50"), data, layers=["stage1"], count=3,
                    bootstrap=10)  # random inits are seeded: the same numbers again
    assert again.difference("stage1", "radius.95").estimate == result.difference("stage1", "radius.95").estimate


# ----------------------------------------------------------------------------- command line
def test_cli_raw_article_checkpoints_figures_json(tmp_path: Path) -> None:
    """Raw state dicts of the article's ResNeXt (a tiny one), with and without CBAM."""
    specs = []
    for attention in (None, "cbam"):
        torch.manual_seed(0)
        net = ResNeXtCifar(cardinality=2, base_width=1, depth=11, attention=attention)
        path = tmp_path / f"{attention or 'norm'}_tiny.pth"
        torch.save(net.state_dict(), path)
        specs.append(str(path))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("compare", *specs, "--images", "4", "--bootstrap", "20",
                                   "--layer", "stage1", "--layer", "stage3", "--out", str(out), "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    validate(doc)
    assert doc == json.loads((out / "compare.json").read_text())
    assert [m["label"] for m in doc["models"]] == ["norm_tiny", "cbam_tiny"]
    assert [layer["name"] for layer in doc["layers"]] == ["stage1", "stage3"]
    for name in ("heatmaps_stage1.png", "heatmaps_stage3.png", "radial_profiles_stage1.png",
                 "radial_profiles_stage3.png", "radius_vs_depth.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["figures"]["heatmaps"]["stage3"] == "heatmaps_stage3.png"
    # a non-empty --out is refused without --force
    code, _, stderr = run_cli("compare", *specs, "--images", "2", "--out", str(out))
    assert code == 2 and "not empty" in stderr


def test_cli_table_fits_80_columns_and_layer_error(tiny_ckpt: Path) -> None:
    code, stdout, stderr = run_cli("compare", str(tiny_ckpt), "resnet20", "--images", "6", "--bootstrap", "20",
                                   "--all-layers", "--seed", "3")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("stage2.block1") for line in lines)
    assert "acc 0.625 (metadata)" in stdout
    code, _, stderr = run_cli("compare", str(tiny_ckpt), "twoconv", "--images", "2", "--layer", "stage1.block1")
    assert code == 2 and "shared by all models: stem, stage1, stage2" in stderr
    code, _, stderr = run_cli("compare", str(tiny_ckpt), "--images", "2")
    assert code == 2 and "two or more" in stderr


def test_accuracy_evaluated_with_evaluate_data(tiny_ckpt: Path, data) -> None:
    from erf.training import evaluate

    result = compare(_load(tiny_ckpt, "twoconv"), data, layers=["stem"], count=2, bootstrap=0,
                     evaluate_data=data)
    expected = evaluate(load_checkpoint(tiny_ckpt).model, data).accuracy
    assert result.models[0].accuracy == pytest.approx(expected)
    assert [m.accuracy_source for m in result.models] == ["evaluated", "evaluated"]
    assert result.layers[0].differences[0].ci is None  # no bootstrap asked
    validate(result.to_json())
