"""Layer selection: stable layer names mapped to module paths, and the policies that choose layers.

Stable names are ``stem``, ``stage1``..``stageN``, ``stageN.blockM`` (blocks numbered from 1) and the
heads (:data:`erf.stages.HEADS`: ``pool``, ``avgpool``, ``fc``, ``classifier``..., which have no ERF). Every
registered model carries a ``named_layers`` dict; torchvision ResNets get the same names by convention
(``stageN`` -> ``layerN``, ``stageN.blockM`` -> ``layerN.(M-1)``); any other model (torchvision, timm, a custom
module) gets names derived from where its spatial resolution changes (:mod:`erf.stages`). Any module path
(``stage_3.stage_3_bottleneck_2``) or the module object itself is accepted as a layer too.

Policies (each returns stable names in forward order):

* :func:`default_layers`: every block and the stem (``erf measure``'s default);
* :func:`shared_layers` / :func:`match_layers`: the names several models share (``erf compare``);
* :func:`study_layers`: the last stage-level layers (the hypothesis-2 study);
* :func:`bench_layers`: every block (``erf bench``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from erf.errors import LayerError, LayerNotFoundError, StudyError
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


def resolve_layer(model: nn.Module, name: str | nn.Module) -> Layer:
    """Find the layer ``name``: a stable name, a module path, or a submodule of ``model`` itself.

    Raises:
        LayerNotFoundError: no such layer; the message lists the nearest valid names.
    """
    stable = named_layers(model)
    modules: dict[str, nn.Module] = dict(model.named_modules())
    if isinstance(name, nn.Module):
        path = next((p for p, m in modules.items() if m is name), None)
        if path is None:
            raise LayerNotFoundError(f"the module {type(name).__name__} given as a layer is not part of the model")
        if path == "":
            raise LayerNotFoundError("the model itself is not a layer of the model; give one of its submodules")
        name = path
    if name in stable:
        return Layer(name, stable[name], modules[stable[name]])
    if name and name in modules:
        inverse = {path: key for key, path in stable.items()}
        return Layer(inverse.get(name, name), name, modules[name])
    candidates = [*stable, *(m for m in modules if m)]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    hint = ", ".join(close or list(stable)[:8])
    raise LayerNotFoundError(f"no layer {name!r}; nearest valid names: {hint} (see `erf layers`)")


def spatial_layers(model: nn.Module) -> list[str]:
    """Stable layer names of ``model`` that can carry an ERF (the :data:`HEADS` excluded), in order."""
    return [n for n in named_layers(model) if n not in HEADS]


def default_layers(model: nn.Module) -> list[str]:
    """The stable names of every spatial layer worth probing, in forward order (blocks and stem)."""
    stable = named_layers(model)
    blocks = [n for n in stable if "." in n]
    stems = [n for n in stable if n == "stem"]
    if blocks:
        return stems + blocks
    return spatial_layers(model)


def bench_layers(model: nn.Module) -> list[str]:
    """Default layers of the benchmark: every block (``stageN.blockM``), e.g. the 9 bottlenecks of ResNeXt-29."""
    blocks = [n for n in named_layers(model) if "." in n]
    return blocks or default_layers(model)


def study_layers(model: nn.Module, count: int = 2) -> list[str]:
    """The last ``count`` spatial stage-level layers (``stageN``, ``attention``), forward order.

    Raises:
        StudyError: the model has no named stage-level layer.
    """
    names = [n for n in named_layers(model) if "." not in n and n not in (*HEADS, "stem")]
    if not names:
        raise StudyError("the model has no named stage layers (stageN) to measure; see `erf layers`")
    return names[-count:]


def shared_layers(models: Sequence[nn.Module]) -> list[str]:
    """Stable layer names every model has, in the first model's order (heads excluded)."""
    names = spatial_layers(models[0])
    for m in models[1:]:
        own = set(spatial_layers(m))
        names = [n for n in names if n in own]
    return names


def match_layers(models: Sequence[nn.Module], layers: Sequence[str] | None, labels: Sequence[str] | None = None,
                 all_layers: bool = False) -> list[str]:
    """Resolve the layers to compare: ``layers`` if every model has each, else the defaults.

    Defaults: the shared stage-level layers (``stem``, ``stage1``, ``stage2``...); with
    ``all_layers``, every shared block (as :func:`default_layers`).

    Raises:
        LayerError: a requested layer is missing from some model, or no layer is shared;
            the message lists the shared names.
    """
    labels = list(labels or [f"model {k + 1}" for k in range(len(models))])
    shared = shared_layers(models)
    shown = ", ".join(shared) or "none"
    if layers:
        for name in layers:
            missing = []
            for label, m in zip(labels, models):
                try:
                    resolve_layer(m, name)
                except LayerNotFoundError:
                    missing.append(label)
            if missing:
                raise LayerError(f"layer {name!r} is not in {', '.join(missing)}; "
                                 f"layers shared by all models: {shown}")
        return list(dict.fromkeys(layers))
    if all_layers:
        own = set(shared)
        names = [n for n in default_layers(models[0]) if n in own]
    else:
        names = [n for n in shared if re.fullmatch(r"stem|stage\d+", n)]
    if not names:
        names = shared
    if not names:
        raise LayerError(f"the models share no layer name ({', '.join(labels)}); pass module paths with --layer "
                         "(see `erf layers`)")
    return names
