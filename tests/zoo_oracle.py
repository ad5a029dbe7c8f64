"""Shared by the zoo tests: the analytic TRF of named layers against the float64 gradient support.

The oracle (:func:`erf.probes.support.gradient_support`) is independent of the tracer: it differentiates the
real model. Where the layer's output is not ``(N, C, H, W)`` the caller states the layout it expects
(``"nhwc"``, ``"tokens"`` with a number of class tokens) and the probed index is built here from that
statement, not from the tracer's answer (the tracer's layout is only checked against it).

Exact zeros would make the support smaller than the TRF without any error in the TRF: a ReLU that is off
for every input, a layer-scale or batch-norm gamma initialised to zero (timm's ``zero_init_last``), a
LayerNorm with unit gain and no bias, whose output summed over channels is identically zero, a
squeeze-and-excitation block whose few hidden ReLUs are all off (their input is a spatial mean, nearly
the same for every image, so they are on or off for all images at once). So the zoo tests build their
models through ``tests/norms.py``'s ``randomise_norms(model, open_gates=True)``: every norm layer gets random
affine parameters (and batch norm random running statistics), layer-scale gammas random values, the first
layer of every squeeze-and-excitation block a bias of +1 and weights / 10 (its hidden units on, its gate
far from the flat parts of a hard sigmoid); and three random inputs are summed (as in tests/test_trf.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from erf.layers import named_layers
from erf.probes import gradient_support
from erf.trf import TRF, TRFTrace, trace_receptive_fields


def probe_layers(model: nn.Module) -> list[str]:
    """``stem``, every ``stageK`` and the first block of stage 1 (``stage1.block1``) where those exist."""
    names = named_layers(model)
    out = [n for n in names if n == "stem" or (n.startswith("stage") and "." not in n)]
    return out + [n for n in names if n == "stage1.block1"]


@dataclass
class Verdict:
    """One layer's comparison: what the tracer said and what the gradient support showed."""

    name: str
    path: str
    trf: TRF
    box: tuple[int, int, int, int] | None      # support of the centre unit
    corner: tuple[int, int, int, int] | None   # support of unit (0, 0) (local layers)
    fraction: float
    ok: bool
    why: str = ""


def _prefix(layout: str, default: int) -> int:
    """Class tokens of a ``"tokens"`` layout: ``"tokens2"`` says 2, ``"tokens"`` the default."""
    return int(layout[len("tokens"):]) if layout.startswith("tokens") and layout[len("tokens"):] else default


def _index(trf: TRF, unit: tuple[int, int], layout: str, prefix: int) -> tuple | None:
    if layout == "nchw":
        return None
    if layout == "nhwc":
        return (unit[0], unit[1])
    assert trf.feature_size is not None
    return (_prefix(layout, prefix) + unit[0] * trf.feature_size[1] + unit[1],)


def uncovered(trace: TRFTrace, size: int) -> list[str]:
    """Local modules whose units, all together, do not reach the last input row or column.

    A strided valid convolution whose grid stops short of the border (squeezenet's first 7x7 at an even
    size) never reads the last pixels, so no later unit depends on them: the TRF box, which assumes an
    unbounded input, then overhangs the true support at that border. The zoo tests use input sizes
    without such modules."""
    out = []
    for path, t in trace.trf.items():
        if t.feature_size is None or t.is_global or path in trace.regridded:
            continue
        last = t.box((t.feature_size[0] - 1, t.feature_size[1] - 1))
        if last[1] < size - 1 or last[3] < size - 1:
            out.append(path)
    return out


def covering_size(model: nn.Module, target: int, tries: int = 12) -> tuple[int, TRFTrace]:
    """The first input size from ``target`` up whose every local module reaches the border (see :func:`uncovered`)."""
    for size in range(target, target + tries):
        try:
            trace = trace_receptive_fields(model, (size, size))
        except Exception:
            continue
        if not uncovered(trace, size):
            return size, trace
    raise AssertionError(f"no input size in {target}..{target + tries - 1} is covered by every module")


def compare(model: nn.Module, size: int, layers: list[str], layouts: dict[str, str] | None = None,
            prefix: int = 0, samples: int = 3, seed: int = 0, trace: TRFTrace | None = None) -> list[Verdict]:
    """TRF of ``layers`` at ``size`` x ``size`` against the gradient support of the centre unit and unit (0, 0).

    A float64 ``model`` is probed in place (no copy: faster for the zoo); any other is copied.

    ``layouts``: ``{layer: "nchw" | "nhwc" | "tokens" | "tokensK"}`` as the caller expects them (default
    ``"nchw"``; ``"tokensK"``: a token sequence after K class tokens); ``prefix``: K for ``"tokens"``.
    Local layers: the support box equals the TRF box clipped to the input, for both units. Global layers:
    the support covers the input (box = input, >= 90 % of pixels).
    """
    names = named_layers(model)
    trace = trace or trace_receptive_fields(model, (size, size))
    assert trace.input_size == (size, size)
    layouts = layouts or {}
    trfs = {n: trace.trf[names.get(n, n)] for n in layers}
    verdicts = []
    centre = {n: t.central_unit() for n, t in trfs.items()}
    idx = {n: _index(trfs[n], centre[n], layouts.get(n, "nchw"), prefix) for n in layers}
    copy_model = any(p.dtype != torch.float64 for p in model.parameters())
    sup = gradient_support(model, layers, (size, size), units=centre, samples=samples, seed=seed,
                           index={n: i for n, i in idx.items() if i is not None}, copy_model=copy_model)
    local = [n for n in layers if not trfs[n].is_global]
    idx0 = {n: _index(trfs[n], (0, 0), layouts.get(n, "nchw"), prefix) for n in local}
    sup0 = gradient_support(model, local, (size, size), units={n: (0, 0) for n in local}, samples=samples,
                            seed=seed, index={n: i for n, i in idx0.items() if i is not None},
                            copy_model=copy_model) if local else {}
    full = (0, size - 1, 0, size - 1)

    def clip(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return (max(0, b[0]), min(size - 1, b[1]), max(0, b[2]), min(size - 1, b[3]))

    for n in layers:
        t, s = trfs[n], sup[n]
        expected_layout = layouts.get(n, "nchw")
        dims = {"nchw": (2, 3), "nhwc": (1, 2)}.get(expected_layout, (1,))
        why = ""
        if t.dims != dims or (expected_layout.startswith("tokens") and t.prefix != _prefix(expected_layout, prefix)):
            why = f"layout {t.dims}/{t.prefix}, expected {expected_layout}"
        if t.is_global:
            ok = not why and s.box == full and s.nonzero_fraction > 0.9
            verdicts.append(Verdict(n, names.get(n, n), t, s.box, None, s.nonzero_fraction, ok, why))
        else:
            ok = not why and s.box == clip(t.box(centre[n])) and sup0[n].box == clip(t.box((0, 0)))
            verdicts.append(Verdict(n, names.get(n, n), t, s.box, sup0[n].box, s.nonzero_fraction, ok, why))
    return verdicts


def report(verdicts: list[Verdict]) -> str:
    """One line per layer (for assertion messages)."""
    return "\n".join(
        f"{'ok ' if v.ok else 'BAD'} {v.name:16s} {v.path:36s} global={v.trf.is_global!s:5s} size={v.trf.size} "
        f"stride={v.trf.stride} box={v.trf.box(v.trf.central_unit())} support={v.box} corner={v.corner} "
        f"fraction={v.fraction:.2f} {v.why} {v.trf.reason or ''}" for v in verdicts)


def topology(model: nn.Module) -> tuple:
    """What a receptive field depends on, channel counts aside: each module's type and window geometry."""
    sig = []
    for name, m in model.named_modules():
        geometry = tuple(getattr(m, a, None) for a in ("kernel_size", "stride", "padding", "dilation",
                                                      "output_size", "window_size", "shift_size"))
        sig.append((name, type(m).__name__, repr(geometry)))
    return tuple(sig)
