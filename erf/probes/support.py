"""Gradient-support probe: an independent check of the analytic TRF.

For random weights and inputs in float64, the set of input pixels with a
non-zero gradient of a unit's activation (summed over channels) is that
unit's receptive field. Its bounding box must equal the analytic TRF box of
:mod:`erf.trf` (clipped to the input); for a global layer it
covers the whole input. Several random inputs are summed so that a ReLU that
happens to be off for one input does not hide a pixel.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from erf.errors import LayerDidNotRunError, UndefinedERFError
from erf.hooks import capture_outputs
from erf.layers import Layer, resolve_layer


@dataclass(frozen=True)
class Support:
    """Bounding box ``(y0, y1, x0, x1)`` (inclusive, input pixels) of the non-zero gradient,
    whether every input pixel has a non-zero gradient, the unit probed and the fraction
    of input pixels with a non-zero gradient."""

    box: tuple[int, int, int, int] | None
    covers_input: bool
    unit: tuple[int, int]
    nonzero_fraction: float = 0.0


def gradient_support(
    model: nn.Module,
    layers: Sequence[str],
    input_size: Sequence[int],
    units: dict[str, tuple[int, int]] | None = None,
    channels: int = 3,
    samples: int = 3,
    seed: int = 0,
    index: dict[str, tuple[Any, ...]] | None = None,
    copy_model: bool = True,
) -> dict[str, Support]:
    """Support of ``d unit / d input`` for each layer, in float64 on a copy of ``model``.

    Args:
        model: any module (copied, cast to float64, eval mode).
        layers: layer names (stable or module paths).
        input_size: ``(H, W)`` of the random input.
        units: ``{layer: (i, j)}`` of an ``(N, C, H, W)`` output; default the centre of the map.
        channels: input channels.
        samples: random inputs whose absolute gradients are summed.
        seed: seed of the inputs.
        index: ``{layer: index}`` for outputs of another layout, given by the caller (not read
            from the TRF tracer): ``output[(slice(None),) + index]`` is the probed unit of every
            image, e.g. ``(1 + 3 * 7 + 3,)`` for token 3 * 7 + 3 of a ViT with one class token,
            or ``(i, j)`` of a channels-last ``(N, H, W, C)`` map. ``Support.unit`` is then ``(-1, -1)``.
        copy_model: work on a float64 copy (default); ``False``: ``model`` itself, which must then be float64
            and in eval mode (its parameters' ``requires_grad`` are switched off and left so).
    """
    net = copy.deepcopy(model).double().eval() if copy_model else model
    if not copy_model and any(p.dtype != torch.float64 for p in net.parameters()):
        raise ValueError("copy_model=False needs a float64 model")
    for p in net.parameters():
        p.requires_grad_(False)
    modules = dict(net.named_modules())
    resolved = [resolve_layer(model, name) for name in layers]  # names from the original (same paths)
    resolved = [Layer(layer.name, layer.path, modules[layer.path]) for layer in resolved]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, channels, int(input_size[0]), int(input_size[1]), generator=gen,
                    dtype=torch.float64).requires_grad_(True)
    captured = capture_outputs(net, {layer.path: layer.module for layer in resolved}, x)
    out: dict[str, Support] = {}
    for n, (name, layer) in enumerate(zip(layers, resolved)):
        act = captured.get(layer.path)
        if act is None:
            raise LayerDidNotRunError(f"layer {name!r} ({layer.path}) never ran through its forward hook")
        if index and name in index:
            i, j = -1, -1
            selected = act[(slice(None),) + tuple(index[name])]
        else:
            if act.ndim != 4:
                raise UndefinedERFError(f"layer {name!r} has no spatial map (output shape {tuple(act.shape)})")
            i, j = (units or {}).get(name, (act.shape[2] // 2, act.shape[3] // 2))
            selected = act[:, :, i, j]
        (grad,) = torch.autograd.grad(selected.sum(), x, retain_graph=n < len(layers) - 1)
        nz = grad.abs().sum(dim=(0, 1)) > 0
        ys = torch.nonzero(nz.any(dim=1)).flatten()
        xs = torch.nonzero(nz.any(dim=0)).flatten()
        box = None if len(ys) == 0 else (int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1]))
        out[name] = Support(box, bool(nz.all()), (int(i), int(j)), float(nz.double().mean()))
    return out
