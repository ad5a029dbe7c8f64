"""Op rules of the TRF tracer against the gradient support of every unit (the oracle: autograd on random
float64 weights and inputs, independent of the tracer), on held-out op patterns: in-place shifts into views
(TSM, ShiftNet), index writes and reads, resampling, space-to-batch; and the rule registry itself.

For a local layer the oracle checks both directions of the translation-invariant box model: every unit's
support lies inside its TRF box (safe: the ERF engine crops to it), and the hull of the units' supports, each
taken relative to its unit, is the TRF box (tight: no wider than the model needs; a border unit that keeps the
unshifted map, as ``index_copy`` leaves column 0, counts as much as an interior one).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from erf.trf import TRF, trace_receptive_fields
from erf.trf.rules import RULES, register_rule
from erf.trf.rules.registry import bind


class Body(nn.Module):
    """``conv3x3 (stride s) -> body -> out`` on 3-channel inputs; ``body(module, y)`` is the op pattern."""

    def __init__(self, body: Callable[[nn.Module, torch.Tensor], torch.Tensor], stride: int = 1,
                 channels: int = 6) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, channels, 3, stride=stride, padding=1)
        self.body = body
        self.w = nn.Parameter(torch.randn(channels, channels * 4))
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self, self.c1(x)))


def unit_supports(model: nn.Module, size: int, samples: int = 2) -> dict[tuple[int, int], tuple[int, ...] | None]:
    """Bounding box ``(y0, y1, x0, x1)`` of ``d out[:, :, i, j] / d input`` for every unit of ``out``."""
    net = model.double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    out = net(x)
    boxes: dict[tuple[int, int], tuple[int, ...] | None] = {}
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            (g,) = torch.autograd.grad(out[:, :, i, j].sum(), x, retain_graph=True)
            nz = g.abs().sum(dim=(0, 1)) > 0
            ys, xs = torch.nonzero(nz.any(dim=1)).flatten(), torch.nonzero(nz.any(dim=0)).flatten()
            boxes[(i, j)] = None if len(ys) == 0 else (int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1]))
    return boxes


def check_local(model: nn.Module, size: int, tight: bool = True) -> TRF:
    """The TRF of ``out`` is local, contains every unit's support and (``tight``) is the hull of their supports
    relative to their units (inputs are chosen so that interior units exist: clipping only shrinks a support)."""
    torch.manual_seed(0)
    trf = trace_receptive_fields(model, (size, size)).trf["out"]
    assert not trf.is_global, trf.reason
    supports = unit_supports(model, size)
    hull = [None, None, None, None]
    for unit, box in supports.items():
        y0, y1, x0, x1 = trf.box(unit)
        if box is None:  # a unit that depends on no input pixel (a position nothing was written to)
            continue
        assert y0 <= box[0] and box[1] <= y1 and x0 <= box[2] and box[3] <= x1, (unit, box, trf.box(unit))
        rel = (box[0] - unit[0] * trf.stride[0], box[1] - unit[0] * trf.stride[0],
               box[2] - unit[1] * trf.stride[1], box[3] - unit[1] * trf.stride[1])
        hull = [rel[k] if hull[k] is None else (min if k % 2 == 0 else max)(hull[k], rel[k]) for k in range(4)]
    if tight:
        assert tuple(hull) == (trf.lo[0], trf.hi[0], trf.lo[1], trf.hi[1]), (hull, trf)
    return trf


def check_safe(model: nn.Module, size: int) -> TRF:
    """Global, or local with every unit's support inside its box (never smaller than the support)."""
    trf = trace_receptive_fields(model, (size, size)).trf["out"]
    return trf if trf.is_global else check_local(model, size, tight=False)


# ----------------------------------------------------------------------------- in-place shifts (were unsafe)
def _tsm_copy(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """TSM / ShiftNet: a third of the channels shifted right, a third left, written into views of a zero map."""
    c = y.shape[1] // 3
    out = torch.zeros_like(y)
    out[:, :c, :, 1:].copy_(y[:, :c, :, :-1])
    out[:, c:2 * c, :, :-1].copy_(y[:, c:2 * c, :, 1:])
    out[:, 2 * c:].copy_(y[:, 2 * c:])
    return out


def _tsm_setitem(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    c = y.shape[1] // 3
    out = torch.zeros_like(y)
    out[:, :c, 1:, :] = y[:, :c, :-1, :]
    out[:, c:2 * c, :, :-2] = y[:, c:2 * c, :, 2:]
    out[:, 2 * c:] = y[:, 2 * c:]
    return out


def _shift_in_place(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The map shifted into itself through a view (no new tensor)."""
    y = y.clone()
    y[:, :, :, 1:].copy_(y[:, :, :, :-1].clone())
    return y


def _add_into_view(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(y)
    view = out.narrow(3, 2, y.shape[3] - 2)
    view += y[:, :, :, :-2]
    return out + y


def _index_copy_shift(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    w = y.shape[3]
    return y.index_copy(3, torch.arange(1, w), y[:, :, :, :-1])


def _scatter_reduce_shift(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    src = y[:, :, :, :-1]
    index = (torch.arange(src.shape[3]) + 1).expand_as(src)
    return torch.zeros_like(y).scatter_reduce(3, index, src, "sum", include_self=False)


def _gather_shift(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    index = (torch.arange(y.shape[2]) - 2).clamp(min=0).view(1, 1, -1, 1).expand_as(y)
    return torch.gather(y, 2, index)


def _index_select_stride(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return y.index_select(3, torch.arange(1, y.shape[3], 2)).index_select(2, torch.arange(0, y.shape[2], 2))


EXACT = {  # body -> conv stride: exact and tight rules
    "TSM shift: copy_ into views of zeros_like": (_tsm_copy, 1),
    "TSM shift: setitem into slices": (_tsm_setitem, 1),
    "shift of a map into a view of itself": (_shift_in_place, 1),
    "+= into a narrow() view": (_add_into_view, 1),
    "index_copy shift (no wrap-around)": (_index_copy_shift, 1),
    "scatter_reduce shift": (_scatter_reduce_shift, 1),
    "gather shift": (_gather_shift, 1),
    "index_select of every other column (a strided slice)": (_index_select_stride, 1),
}


@pytest.mark.parametrize("case", sorted(EXACT))
def test_shifts_and_index_writes_are_exact(case: str) -> None:
    body, stride = EXACT[case]
    check_local(Body(body, stride), 12)


def _index_copy_wrap(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """TSM's ``index_copy`` with wrap-around: the first column reads the last."""
    w = y.shape[3]
    return y.index_copy(3, (torch.arange(w) + 1) % w, y)


def _stale_view(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A view taken before its base is written in place sees the write."""
    y = y.clone()
    view = y[:, :, 1:, :]
    y.add_(torch.roll(y, 3, dims=3).contiguous())
    return F.pad(view, (0, 0, 1, 0))


def _strided_write(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Values written into every other column (not a box of the map: placed conservatively)."""
    out = torch.zeros_like(y)
    out[:, :, :, ::2] = y[:, :, :, 1::2]
    return out


SAFE = {
    "index_copy shift with wrap-around": _index_copy_wrap,
    "a view written through its base": _stale_view,
    "strided write": _strided_write,
}


@pytest.mark.parametrize("case", sorted(SAFE))
def test_writes_it_cannot_place_exactly_are_never_smaller_than_the_support(case: str) -> None:
    check_safe(Body(SAFE[case]), 12)


def test_the_wrapped_index_copy_is_widened_not_global() -> None:
    trf = check_safe(Body(_index_copy_wrap), 12)
    assert not trf.is_global and trf.local_size[1] > trf.local_size[0] == 3


# ----------------------------------------------------------------------------- resampling (were called global)
def _pixel_shuffle(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(torch.cat([y[:, :4]] * 2, 1)[:, :4], 2) * 1.0


def _pixel_unshuffle(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    return F.pixel_unshuffle(y, 2)


def _unfold(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A convolution written as unfold + matmul, folded back by a view (as in im2col code)."""
    b, c, h, w = y.shape
    cols = F.unfold(y[:, :1], 2, stride=2)  # (B, 4, H/2 * W/2)
    return (m.w[:, :4] @ cols).view(b, -1, h // 2, w // 2)


def _space_to_batch(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A dilated convolution by space-to-batch (TensorFlow's atrous): phases to the batch, a 3x3 on each, back."""
    b, c, h, w = y.shape
    t = y.view(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b * 4, c, h // 2, w // 2)
    t = F.conv2d(t, m.w.view(c, c * 4, 1, 1)[:, :c].expand(c, c, 3, 3).contiguous(), padding=1)
    return t.view(b, 2, 2, c, h // 2, w // 2).permute(0, 3, 4, 1, 5, 2).reshape(b, c, h, w)


def _interpolate(mode: str, factor: int, **options: object) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    return lambda m, y: F.interpolate(y, scale_factor=factor, mode=mode, **options)


RESAMPLING = {  # body -> (conv stride, input size)
    "pixel_shuffle(2) after a stride-2 conv": (_pixel_shuffle, 2, 16),
    "pixel_unshuffle(2)": (_pixel_unshuffle, 1, 12),
    "unfold + matmul + view": (_unfold, 1, 12),
    "Tensor.unfold(3, 2, 2) + amax (a 2-wide max pool along x)": (lambda m, y: y.unfold(3, 2, 2).amax(-1), 1, 12),
    "narrow": (lambda m, y: y.narrow(3, 1, 8) * 2, 1, 12),
    "space-to-batch 3x3 (dilation 2)": (_space_to_batch, 1, 16),
    "nearest x2 after stride 2": (_interpolate("nearest", 2), 2, 16),
    "bilinear x2 after stride 2": (_interpolate("bilinear", 2), 2, 16),
    "bilinear x2, align_corners, after stride 2": (_interpolate("bilinear", 2, align_corners=True), 2, 16),
    "bicubic x2 after stride 2": (_interpolate("bicubic", 2), 2, 16),
    "nearest x4 after stride 4": (_interpolate("nearest", 4), 4, 16),
}


@pytest.mark.parametrize("case", sorted(RESAMPLING))
def test_resampling_is_local_and_exact(case: str) -> None:
    body, stride, size = RESAMPLING[case]
    check_local(Body(body, stride), size)


def test_upsampling_finer_than_the_jump_stays_global() -> None:
    """A map made finer than one input pixel per unit has no integer jump: global, as before."""
    trf = trace_receptive_fields(Body(_interpolate("bilinear", 2)), (12, 12)).trf["out"]
    assert trf.is_global and "finer than the input's jump" in trf.reason


# ----------------------------------------------------------------------------- the registry
def test_an_op_rule_is_one_decorated_function() -> None:
    """A rule registered for an op the tracer would otherwise call global changes its verdict; a second rule
    for the same op is refused; arguments are bound by the rule's signature."""
    from erf.trf.rules.registry import Call
    from erf.trf.state import TraceState

    body = Body(lambda m, y: torch.take_along_dim(y, torch.arange(y.shape[3]).view(1, 1, 1, -1), dim=3))
    assert trace_receptive_fields(body, (8, 8)).trf["out"].is_global

    @register_rule("take_along_dim_test_only", signature="input, indices, dim=None")
    def keep(state: TraceState, call: Call) -> object:
        return call.xinfo

    saved = RULES.pop("take_along_dim")
    RULES["take_along_dim"] = RULES.pop("take_along_dim_test_only")
    try:
        trf = trace_receptive_fields(body, (8, 8)).trf["out"]
        assert not trf.is_global and trf.size == (3, 3)
        with pytest.raises(ValueError, match="already has a rule"):
            register_rule("take_along_dim")(keep)
    finally:
        RULES["take_along_dim"] = saved
    assert bind("input, dim=None, keepdim=False", (1, 2), {"keepdim": True}) == {
        "input": 1, "dim": 2, "keepdim": True, "extra_args": (), "extra": {}}
    assert bind("input, index", (1,), {}) is None  # a required argument missing
