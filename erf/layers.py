"""Stable layer names (``stem``, ``stage1``..``stage3``, ``stageN.blockM``) mapped to module paths.

Every registered model carries a ``named_layers`` dict. torchvision ResNets
get the same names by convention (``stageN`` -> ``layerN``, ``stageN.blockM``
-> ``layerN.(M-1)``). Any other model (torchvision, timm, a custom module) gets
names derived from where its spatial resolution changes (:mod:`erf.stages`).
Any module path (``stage_3.stage_3_bottleneck_2``) is accepted as a layer name
too. Blocks are numbered from 1.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from torch import nn

from erf.errors import LayerNotFoundError
from erf.stages import HEADS, derived_layers


@dataclass(frozen=True)
class Layer:
    """A probe-able layer: its stable ``name``, its ``module`` path and the module object."""

    name: str
    path: str
    module: nn.Module


def named_layers(model: nn.Module) -> dict[str, str]:
    """Stable name -> module path for ``model`` (empty when no convention is known)."""
    names = getattr(model, "named_layers", None)
    if isinstance(names, dict):
        return dict(names)
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    if "conv1" in modules and "layer1" in modules:  # torchvision ResNet / ResNeXt layout
        out["stem"] = "relu" if "relu" in modules else "conv1"
        for s in range(1, 5):
            stage = modules.get(f"layer{s}")
            if stage is None:
                break
            out[f"stage{s}"] = f"layer{s}"
            for b, _ in enumerate(stage.children()):
                out[f"stage{s}.block{b + 1}"] = f"layer{s}.{b}"
    else:  # no known convention: stages derived from the resolution changes (one traced forward, cached)
        out.update(derived_layers(model))
    for head in HEADS:
        if head in modules and head not in out:
            out[head] = head
    return out


def resolve_layer(model: nn.Module, name: str) -> Layer:
    """Find the layer called ``name`` (stable name or module path).

    Raises:
        LayerNotFoundError: no such layer; the message lists the nearest valid names.
    """
    stable = named_layers(model)
    modules = dict(model.named_modules())
    if name in stable:
        return Layer(name, stable[name], modules[stable[name]])
    if name and name in modules:
        inverse = {path: key for key, path in stable.items()}
        return Layer(inverse.get(name, name), name, modules[name])
    candidates = [*stable, *(m for m in modules if m)]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    hint = ", ".join(close or list(stable)[:8])
    raise LayerNotFoundError(f"no layer {name!r}; nearest valid names: {hint} (see `erf layers`)")


def default_layers(model: nn.Module) -> list[str]:
    """The stable names of every spatial layer worth probing, in forward order (blocks and stem)."""
    stable = named_layers(model)
    blocks = [n for n in stable if "." in n]
    stems = [n for n in stable if n == "stem"]
    if blocks:
        return stems + blocks
    return [n for n in stable if n not in HEADS]
