"""Architecture facts of the model zoo, checked against the article's source as described in issue 3.

Oracles are independent of the implementation: parameter counts are computed from the
published layer list, state-dict keys are spelled out from the source's naming, and one
CBAM bottleneck is re-implemented with functional ops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from norms import randomise_norms
from references import n_params
from torch import nn

from erf.errors import UnknownModelError
from erf.layers import named_layers, resolve_layer
from erf.models import canonical_name, create_model, get_entry, is_model, list_models

WIDTHS = (8, 16, 32, 64)
STAGE_OUT = (256, 512, 1024)
RESNEXT = [f"{p}_{d}d" for d in WIDTHS for p in ("norm", "cbam")]


def meta_model(name: str, **kw) -> nn.Module:
    """Build on the meta device: shapes and parameter counts without memory or init cost."""
    with torch.device("meta"):
        return create_model(name, **kw)


# ----------------------------------------------------------------------------- oracles
def resnext_params_oracle(d: int, cbam: bool) -> int:
    """Parameter count of ResNeXt-29 16xd from the issue's layer list (no model involved)."""
    bn = lambda c: 2 * c  # noqa: E731 - weight + bias
    total = 3 * 64 * 9 + bn(64)  # stem conv (no bias) + BN
    cin = 64
    for out in STAGE_OUT:
        D = 16 * int(d * out / 256)
        for _ in range(3):
            total += cin * D + bn(D)  # 1x1 reduce
            total += D * (D // 16) * 9 + bn(D)  # 3x3 grouped, 16 groups
            total += D * out + bn(out)  # 1x1 expand
            if cin != out:
                total += cin * out + bn(out)  # projection shortcut
            if cbam:
                h = out // 16
                total += (out * h + h) + (h * out + out)  # shared MLP
                total += 2 * 49 + bn(1)  # 7x7 conv 2->1 (no bias) + BN
            cin = out
    return total + 1024 * 10 + 10  # fc


def resnext_keys_oracle(cbam: bool) -> set[str]:
    """State-dict keys of the article's source (pprp/pytorch-cifar-model-zoo att_overfit)."""
    bn = lambda p: {f"{p}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}  # noqa: E731
    keys = {"conv_1_3x3.weight", *bn("bn_1"), "fc.weight", "fc.bias"}
    for s in (1, 2, 3):
        for b in range(3):
            p = f"stage_{s}.stage_{s}_bottleneck_{b}"
            keys |= {f"{p}.conv_reduce.weight", f"{p}.conv_conv.weight", f"{p}.conv_expand.weight"}
            keys |= bn(f"{p}.bn_reduce") | bn(f"{p}.bn") | bn(f"{p}.bn_expand")
            if b == 0:
                keys |= {f"{p}.shortcut.shortcut_conv.weight"} | bn(f"{p}.shortcut.shortcut_bn")
            if cbam:
                c = f"{p}.cbam_module"
                keys |= {f"{c}.ChannelGate.mlp.1.weight", f"{c}.ChannelGate.mlp.1.bias",
                         f"{c}.ChannelGate.mlp.3.weight", f"{c}.ChannelGate.mlp.3.bias",
                         f"{c}.SpatialGate.spatial.conv.weight"} | bn(f"{c}.SpatialGate.spatial.bn")
    return keys


# ----------------------------------------------------------------------------- parameter counts
def test_article_parameter_counts_exact():
    assert n_params(meta_model("norm_8d")) == 5_066_058
    assert n_params(meta_model("cbam_8d")) == 5_588_766
    assert n_params(meta_model("resnet20")) == 269_722


@pytest.mark.parametrize("d", WIDTHS)
@pytest.mark.parametrize("cbam", [False, True])
def test_resnext_parameter_count_matches_layer_list(d, cbam):
    name = f"{'cbam' if cbam else 'norm'}_{d}d"
    assert n_params(meta_model(name)) == resnext_params_oracle(d, cbam)


def test_oracle_reproduces_the_article_numbers():
    # the oracle itself is pinned to the issue's published counts
    assert resnext_params_oracle(8, False) == 5_066_058
    assert resnext_params_oracle(8, True) == 5_588_766
    assert round(resnext_params_oracle(32, False) / 1e6, 1) == 25.1
    assert round(resnext_params_oracle(64, False) / 1e6, 1) == 68.2


def test_meta_count_equals_real_count():
    # the meta-device shortcut counts what a real build allocates
    torch.manual_seed(0)
    assert n_params(create_model("norm_8d")) == n_params(meta_model("norm_8d"))


def test_resnet20_and_twoconv_sizes():
    assert 0.26e6 < n_params(meta_model("resnet20")) < 0.28e6
    # ResNet-20 option A: 19 convs (no projection) + 19 BN + fc
    convs = [m for m in meta_model("resnet20").modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(m.kernel_size == (3, 3) for m in convs)
    for name in list_models("*cbam") + list_models("*_se"):
        twin = get_entry(name).twin
        assert twin is not None and n_params(meta_model(name)) > n_params(meta_model(twin))


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", list_models())
def test_output_shape_every_model(name):
    with torch.device("meta"):
        model = create_model(name).eval()
        out = model(torch.empty(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet20_cbam", "resnet20_se", "twoconv_cbam"])
def test_real_forward_small_models(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", RESNEXT)
def test_resnext_stage_maps_32_32_16_8(name):
    with torch.device("meta"):
        model = create_model(name).eval()
        shapes = {}
        hooks = [getattr(model, m).register_forward_hook(lambda mod, i, o, m=m: shapes.__setitem__(m, tuple(o.shape)))
                 for m in ("act_1", "stage_1", "stage_2", "stage_3", "pool")]
        model(torch.empty(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == {
        "act_1": (1, 64, 32, 32),
        "stage_1": (1, 256, 32, 32),
        "stage_2": (1, 512, 16, 16),
        "stage_3": (1, 1024, 8, 8),
        "pool": (1, 1024, 1, 1),
    }


def test_resnext_head_is_8x8_average_pool_and_linear_1024_10():
    torch.manual_seed(0)
    model = create_model("norm_8d").eval()
    feats = {}
    model.stage_3.register_forward_hook(lambda m, i, o: feats.__setitem__("s3", o))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    expected = F.linear(F.avg_pool2d(feats["s3"], 8).flatten(1), model.fc.weight, model.fc.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert (model.fc.in_features, model.fc.out_features) == (1024, 10)


# ----------------------------------------------------------------------------- key names and layer facts
@pytest.mark.parametrize("cbam", [False, True])
def test_resnext_state_dict_keys_are_the_sources(cbam):
    keys = set(meta_model("cbam_8d" if cbam else "norm_8d").state_dict())
    expected = resnext_keys_oracle(cbam)
    assert keys == expected, (sorted(keys - expected)[:5], sorted(expected - keys)[:5])


def test_resnext_keys_same_for_every_width():
    for d in WIDTHS:
        assert set(meta_model(f"norm_{d}d").state_dict()) == resnext_keys_oracle(False)
        assert set(meta_model(f"cbam_{d}d").state_dict()) == resnext_keys_oracle(True)


@pytest.mark.parametrize("d", WIDTHS)
def test_bottleneck_widths_groups_and_strides(d):
    model = meta_model(f"cbam_{d}d")
    assert model.conv_1_3x3.kernel_size == (3, 3) and model.conv_1_3x3.bias is None
    assert (model.conv_1_3x3.in_channels, model.conv_1_3x3.out_channels) == (3, 64)
    cin = 64
    for s, out in enumerate(STAGE_OUT, start=1):
        for b in range(3):
            block = getattr(model, f"stage_{s}")[b]
            D = 16 * int(d * out / 256)
            stride = (1 if s == 1 else 2) if b == 0 else 1
            assert (block.conv_reduce.in_channels, block.conv_reduce.out_channels) == (cin, D)
            assert block.conv_reduce.kernel_size == (1, 1)
            conv = block.conv_conv
            assert (conv.in_channels, conv.out_channels, conv.groups) == (D, D, 16)
            assert conv.kernel_size == (3, 3) and conv.stride == (stride, stride) and conv.padding == (1, 1)
            assert (block.conv_expand.in_channels, block.conv_expand.out_channels) == (D, out)
            assert all(c.bias is None for c in (block.conv_reduce, conv, block.conv_expand))
            if cin != out:
                assert block.shortcut.shortcut_conv.stride == (stride, stride)
                assert block.shortcut.shortcut_conv.kernel_size == (1, 1)
            else:
                assert len(block.shortcut) == 0
            gate = block.cbam_module.SpatialGate.spatial
            assert gate.conv.kernel_size == (7, 7) and gate.conv.padding == (3, 3) and gate.conv.bias is None
            assert gate.bn.eps == 1e-5 and gate.bn.momentum == 0.01
            mlp = block.cbam_module.ChannelGate.mlp
            assert (mlp[1].in_features, mlp[1].out_features, mlp[3].out_features) == (out, out // 16, out)
            cin = out


def test_resnext_initialisation():
    torch.manual_seed(0)
    model = create_model("norm_8d")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # Kaiming normal (fan_in, gain sqrt 2): std sqrt(2 / fan_in) for a large layer
    w = model.stage_3.stage_3_bottleneck_1.conv_expand.weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)


def _functional_cbam_bottleneck(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The issue's bottleneck, written independently: reduce, grouped conv, expand+BN, CBAM, add, ReLU."""

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    out = F.relu(bn(block.bn_reduce, F.conv2d(x, block.conv_reduce.weight)))
    c = block.conv_conv
    out = F.relu(bn(block.bn, F.conv2d(out, c.weight, stride=c.stride, padding=1, groups=16)))
    out = bn(block.bn_expand, F.conv2d(out, block.conv_expand.weight))
    # channel gate: shared MLP on avg- and max-pooled vectors, summed, sigmoid
    mlp = block.cbam_module.ChannelGate.mlp

    def mlp_f(v):
        return F.linear(F.relu(F.linear(v, mlp[1].weight, mlp[1].bias)), mlp[3].weight, mlp[3].bias)

    gate = torch.sigmoid(mlp_f(out.mean(dim=(2, 3))) + mlp_f(out.amax(dim=(2, 3))))
    out = out * gate[:, :, None, None]
    # spatial gate: [channel max, channel mean] -> 7x7 conv -> BN -> sigmoid
    sp = block.cbam_module.SpatialGate.spatial
    pooled = torch.cat([out.amax(1, keepdim=True), out.mean(1, keepdim=True)], 1)
    out = out * torch.sigmoid(bn(sp.bn, F.conv2d(pooled, sp.conv.weight, padding=3)))
    if len(block.shortcut):
        sc = block.shortcut
        short = bn(sc.shortcut_bn, F.conv2d(x, sc.shortcut_conv.weight, stride=sc.shortcut_conv.stride))
    else:
        short = x
    return F.relu(out + short)


@pytest.mark.parametrize("path", ["stage_2.stage_2_bottleneck_0", "stage_2.stage_2_bottleneck_1"])
def test_cbam_bottleneck_matches_independent_implementation(path):
    torch.manual_seed(0)
    model = create_model("cbam_8d").eval()
    block = model.get_submodule(path)
    gen = torch.Generator().manual_seed(1)
    randomise_norms(block, gen)  # non-trivial BN statistics
    cin = block.conv_reduce.in_channels
    x = torch.randn(2, cin, 16 if path.endswith("_1") else 32, 16 if path.endswith("_1") else 32, generator=gen)
    with torch.no_grad():
        expected = _functional_cbam_bottleneck(block, x)
        got = block(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        # the oracle is sensitive to CBAM placement: dropping the gates changes the result
        plain = F.relu(block.bn_expand(block.conv_expand(F.relu(block.bn(block.conv_conv(
            F.relu(block.bn_reduce(block.conv_reduce(x)))))))) + block.shortcut(x))
        assert (plain - got).abs().max() > 1e-3


def test_cbam_runs_after_bn_expand_and_before_add():
    torch.manual_seed(0)
    model = create_model("cbam_8d").eval()
    block = model.stage_1.stage_1_bottleneck_1
    seen = {}
    block.bn_expand.register_forward_hook(lambda m, i, o: seen.__setitem__("bn_expand", o))
    block.cbam_module.register_forward_hook(lambda m, i, o: seen.__setitem__("cbam_in", i[0]))
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        y = block(x)
    assert torch.equal(seen["cbam_in"], seen["bn_expand"])
    # identity shortcut here, so block(x) == relu(cbam(bn_expand) + x)
    with torch.no_grad():
        torch.testing.assert_close(y, F.relu(block.cbam_module(seen["bn_expand"]) + x))


# ----------------------------------------------------------------------------- registry
@pytest.mark.parametrize("d", WIDTHS)
def test_long_aliases_resolve(d):
    for prefix in ("norm", "cbam"):
        alias = f"{prefix}_resnext29_16x{d}d"
        assert is_model(alias) and canonical_name(alias) == f"{prefix}_{d}d"
        assert n_params(meta_model(alias)) == n_params(meta_model(f"{prefix}_{d}d"))


def test_registry_has_the_issues_models():
    names = set(list_models())
    assert set(RESNEXT) <= names
    assert {"resnet20", "resnet20_cbam", "resnet20_se", "twoconv", "twoconv_cbam"} <= names
    assert get_entry("cbam_8d").twin == "norm_8d" and get_entry("cbam_8d").attention == "cbam"
    assert list_models("resnet20*") == sorted(n for n in names if n.startswith("resnet20"))


def test_unknown_model_suggests_names():
    with pytest.raises(UnknownModelError, match="norm_8d"):
        canonical_name("norm_8")


def test_twoconv_has_cbam_after_the_two_convs():
    torch.manual_seed(0)
    model = create_model("twoconv_cbam").eval()
    order = []
    for n in ("conv1", "conv2", "attention", "pool", "fc"):
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: order.append(n))
    model(torch.randn(1, 3, 32, 32))
    assert order == ["conv1", "conv2", "attention", "pool", "fc"]
    assert order.count("attention") == 1


@pytest.mark.parametrize("name", list_models())
def test_named_layers_exist_and_run(name):
    model = meta_model(name)
    names = named_layers(model)
    modules = dict(model.named_modules())
    assert "stem" in names and "stage1" in names and "fc" in names
    assert all(path in modules for path in names.values()), names
    family = get_entry(name).family
    if family in ("resnext29", "resnet_cifar"):
        for s in (1, 2, 3):
            assert f"stage{s}" in names
            for b in (1, 2, 3):
                assert f"stage{s}.block{b}" in names
                assert names[f"stage{s}.block{b}"].startswith(names[f"stage{s}"] + ".")
    elif family == "patchnet":  # the second hypothesis-2 grid's twins: three single-convolution stages
        assert {"stage1", "stage2", "stage3"} <= set(names)
    else:  # the two-conv toy and the dilation twins have exactly two stages (documented exception: no stage3)
        assert family in ("twoconv", "dilnet") and {"stage1", "stage2"} <= set(names) and "stage3" not in names
    # every named layer fires its forward hook (no module is bypassed with .forward)
    fired = set()
    for n, path in names.items():
        modules[path].register_forward_hook(lambda m, i, o, n=n: fired.add(n))
    with torch.device("meta"):
        model.eval()(torch.empty(1, 3, 32, 32))
    assert fired == set(names)
    assert resolve_layer(model, "stage1").path == names["stage1"]


def test_erf_models_lists_parameter_counts(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert set(lines) == set(list_models())
    assert "5,066,058" in lines["norm_8d"] and "5,588,766" in lines["cbam_8d"]
    assert "269,722" in lines["resnet20"]
    code, out, _ = run_cli("models", "norm_*", "--json")
    import json

    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert set(rows) == {f"norm_{d}d" for d in WIDTHS}
    assert rows["norm_64d"]["params"] == resnext_params_oracle(64, False)


def test_erf_help_lists_every_subcommand(run_cli):
    from erf.cli import COMMANDS, build_parser

    parser = build_parser()
    text = parser.format_help()
    assert set(COMMANDS) >= {"models", "train", "evaluate", "measure", "layers"}
    for name, (help_text, _, _) in COMMANDS.items():
        lines = [ln for ln in text.splitlines() if ln.strip().startswith(name + " ")]
        assert lines, f"{name} missing from erf --help"
        assert help_text.strip() and "\n" not in help_text
        assert help_text.split()[0] in lines[0]
    code, out, _ = run_cli("--help")  # argparse's SystemExit(0) becomes exit code 0
    assert code == 0 and "measure" in out


def test_subcommand_help_shows_only_defaults_that_say_something():
    """``--help`` shows real defaults (``(default: 64)``), never ``(default: None)`` or a flag's ``False``."""
    import argparse

    from erf.cli import COMMANDS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in COMMANDS:
        text = " ".join(sub.choices[name].format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text, name
    bench = " ".join(sub.choices["bench"].format_help().split())
    assert "(default: 64)" in bench  # --images: a default worth showing is still shown


def test_every_option_of_every_command_says_what_it_does():
    """No option in any ``erf COMMAND --help`` is a bare flag name: each has a help text."""
    import argparse

    from erf.cli import COMMANDS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    bare = [f"{name} {action.option_strings[0]}" for name in COMMANDS for action in sub.choices[name]._actions
            if action.option_strings and not action.help]
    assert not bare, f"options without help: {bare}"
