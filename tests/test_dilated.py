"""Dilation twins: equal capacity across dilations, ERF growing with dilation, local vs global gates."""

from __future__ import annotations

import pytest
import torch
from closed_forms import receptive_field_size_formula
from references import n_params

from erf.models import DILATIONS, DILNET_GATES, create_model, get_entry
from erf.models.attention import make_attention
from erf.study.grid import model_facts
from erf.study.object_centred import object_centred_erf
from erf.trf import trace_receptive_fields

SMALL = {"widths": (4, 8), "blocks": (1, 2)}


@pytest.mark.parametrize("suffix", list(DILNET_GATES.values()))
def test_dilation_twins_have_equal_parameters_and_flops(suffix):
    facts = [model_facts(create_model(f"dilnet_d{d}{suffix}"), 64) for d in DILATIONS]
    assert len({f["params"] for f in facts}) == 1 and len({f["flops"] for f in facts}) == 1
    assert facts[0]["flops"] > 0


def test_twins_and_gate_parameters():
    plain = n_params(create_model("dilnet_d1"))
    cbam = create_model("dilnet_d1_cbam")
    local = create_model("dilnet_d1_localgate")
    assert n_params(cbam) > plain and get_entry("dilnet_d2_cbam").twin == "dilnet_d2"
    # the local gate has exactly CBAM's parameters (same names and shapes), only its pooling differs
    assert {k: v.shape for k, v in cbam.state_dict().items()} == {k: v.shape for k, v in local.state_dict().items()}


def test_trf_of_stage2_follows_the_dilation_formula():
    for d in DILATIONS:
        trf = trace_receptive_fields(create_model(f"dilnet_d{d}"), (64, 64)).trf["layer2"]
        # stem 3x3/2, stage 1: two 3x3, stage 2: 3x3/2 then three 3x3 of dilation d
        expected = receptive_field_size_formula([3, 3, 3, 3, 3, 3, 3], [2, 1, 1, 2, 1, 1, 1], [1, 1, 1, 1, d, d, d])
        assert trf.size == (expected, expected) and not trf.is_global and trf.stride == (4, 4)


def test_gates_global_or_local_as_claimed():
    field = {}
    for kind in ("cbam", "se", "cbam_spatial", "localgate"):
        t = trace_receptive_fields(create_model(f"dilnet_d1{DILNET_GATES[kind]}"), (64, 64)).trf["layer2"]
        field[kind] = t.is_global
    assert field == {"cbam": True, "se": True, "cbam_spatial": False, "localgate": False}
    # the local gate alone widens a map's field by (k - 1) = 2 units only
    gate = make_attention("localgate", 8).ChannelGate
    t = trace_receptive_fields(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), gate), (16, 16)).trf["1"]
    assert t.size == (3, 3) and not t.is_global


def test_local_gate_is_cbams_gate_with_a_window():
    """With a window covering the whole map, at the centre position, the local gate equals CBAM's channel gate."""
    torch.manual_seed(0)
    cbam = make_attention("cbam", 16).ChannelGate
    local = make_attention("localgate", 16).ChannelGate
    local.load_state_dict(cbam.state_dict())
    local.kernel_size = 9
    x = torch.randn(2, 16, 5, 5)
    assert torch.allclose(local(x)[:, :, 2, 2], cbam(x)[:, :, 2, 2], atol=1e-6)


def test_larger_dilation_gives_a_larger_measured_erf():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64)
    centres = torch.full((8, 2), 31.5)
    d50 = []
    for d in DILATIONS:
        torch.manual_seed(0)
        model = create_model(f"dilnet_d{d}", **SMALL)
        d50.append(object_centred_erf(model, "stage2", x, centres, grid=0)["object_centred"]["d50"])
    assert d50 == sorted(d50) and d50[-1] > 1.5 * d50[0], d50


def test_forward_shapes_and_named_layers():
    model = create_model("dilnet_d4_cbam", **SMALL).eval()
    shapes = {}
    for n in ("layer1", "layer2"):
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert shapes == {"layer1": (2, 4, 32, 32), "layer2": (2, 8, 16, 16)}
    assert {"stem", "stage1", "stage2", "pool", "fc"} <= set(model.named_layers)
