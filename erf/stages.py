"""Stable layer names for any model: ``stem``, ``stage1..N``, ``stageN.blockM``, from where the resolution changes.

Used by :func:`erf.layers.named_layers` for models without a known convention
(erf's own models carry ``named_layers``; torchvision ResNets keep their mapping).

Method. One traced forward (:func:`erf.trf.tracer.trace_receptive_fields`)
gives every module's output *reduction*: its effective stride in input pixels
(the jump, which does not depend on the input size; a ViT's tokens have the
patch size). The module tree is cut into *units*: the root's children, where a
child is itself replaced by its children when they span several reductions
(a ``Sequential``/``ModuleList``/``ModuleDict`` with two or more, any other module
with three or more: torchvision's ``features``, timm's ``stages``; a single
downsampling block such as DenseNet's transition or Inception's ``Mixed_6a``
stays whole). Heads (``avgpool``, ``fc``, ``classifier``, ``head``...), modules whose
output has no spatial map and globally pooled ``1x1`` maps are not units.
Consecutive units with the same reduction form a *run* (as timm's
``feature_info`` groups features by reduction).

* ``stem``: in the first run, the last of the leading *layer-like* units (a leaf,
  or a module with at most one convolution or linear layer: conv-norm-act, patch
  embedding); when the run starts with a block, that first unit.
* ``stageK``: each following run (and what the first run holds after the stem),
  in order: its last unit that is not layer-like (the last block container), or
  its last unit when all are layer-like (VGG). When that unit is not itself a
  container but holds its blocks in a ``Sequential`` (torchvision ViT's
  ``encoder.layers``), the stage is that ``Sequential`` (the last block's output,
  before a final norm).
* ``stageK.blockM``: the blocks of the run in forward order: the non-layer-like
  children of its containers (or of a unit with two or more such children), or
  of the first ``Sequential``/``ModuleList``/``ModuleDict`` inside a unit that holds
  two or more blocks; else the unit itself.

With timm's ``feature_info`` (module and reduction per feature), each listed
module becomes the stem or the end of the stage holding it, as timm names them.

The trace runs at the first input size the model accepts among its declared
size (``image_size``, ``img_size``, timm's ``pretrained_cfg``) and
:data:`CANDIDATE_SIZES`; the result is cached per model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torch import nn

from erf.trf.tracer import TRFTrace, trace_receptive_fields

HEADS = ("avgpool", "pool", "global_pool", "fc", "classifier", "head", "heads")
"""Top-level module names listed as heads (after the stages), never part of a stage."""

CANDIDATE_SIZES = ((96, 96), (224, 224), (32, 32), (299, 299), (64, 64), (128, 128))
"""Input sizes tried, in order, after the model's declared size (the names do not depend on it)."""

_TRIVIAL = ("Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
            "DropPath", "StochasticDepth", "DropBlock2d", "Flatten")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class _Unit:
    path: str
    module: nn.Module
    reduction: tuple[int, int]


def _trivial(module: nn.Module) -> bool:
    return type(module).__name__ in _TRIVIAL


def _weighted(module: nn.Module) -> int:
    """Convolutions and linear layers in ``module`` (itself included)."""
    return sum(1 for m in module.modules()
               if isinstance(weight := getattr(m, "weight", None), nn.Parameter) and weight.ndim >= 2)


def _layer_like(module: nn.Module) -> bool:
    """A leaf, or a module with at most one convolution / linear layer (conv-norm-act, patch embedding)."""
    return not list(module.children()) or _weighted(module) <= 1


def _declared_sizes(model: nn.Module) -> list[tuple[int, int]]:
    sizes = []
    for obj in (model, getattr(model, "patch_embed", None)):
        for attr in ("image_size", "img_size", "input_size"):
            value = getattr(obj, attr, None) if obj is not None else None
            if isinstance(value, int):
                sizes.append((value, value))
            elif isinstance(value, (tuple, list)) and len(value) in (2, 3) and all(isinstance(v, int) for v in value):
                sizes.append((int(value[-2]), int(value[-1])))
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)):
        sizes.append((int(cfg["input_size"][-2]), int(cfg["input_size"][-1])))
    return sizes


def _channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def stage_trace(model: nn.Module) -> TRFTrace | None:
    """One TRF trace of ``model`` at the first size it accepts (declared size, then :data:`CANDIDATE_SIZES`).

    Returns ``None`` when the model runs at none of them.
    """
    channels = _channels(model)
    tried: list[tuple[int, int]] = []
    for size in [*_declared_sizes(model), *CANDIDATE_SIZES]:
        if size in tried:
            continue
        tried.append(size)
        try:
            return trace_receptive_fields(model, size, channels)
        except Exception:
            continue
    return None


def _units(model: nn.Module, trace: TRFTrace) -> list[_Unit]:
    order = {path: k for k, path in enumerate(trace.trf)}

    def spatial(path: str) -> bool:
        t = trace.trf.get(path)
        if t is None or t.feature_size is None or path in trace.regridded:
            return False
        # a globally pooled 1x1 map (its stride would give a larger one), not a map that is 1x1 at this size
        pooled = t.is_global and t.feature_size == (1, 1) and all(
            trace.input_size[a] >= 2 * t.stride[a] for a in (0, 1))
        return not pooled

    def expand(prefix: str, module: nn.Module, root: bool) -> list[tuple[str, nn.Module]]:
        kids = [(f"{prefix}.{n}" if prefix else n, c) for n, c in module.named_children()]
        ran = sorted(((p, c) for p, c in kids if p in order or isinstance(c, (nn.ModuleList, nn.ModuleDict))),
                     key=lambda pc: order.get(pc[0], min((order[q] for q in order if q.startswith(pc[0] + ".")),
                                                         default=len(order))))
        reductions = {trace.trf[p].stride for p, _ in ran if spatial(p)}
        for p, _c in ran:  # a ModuleList never runs itself: its children do
            if p not in order:
                reductions |= {trace.trf[q].stride for q in order if q.startswith(p + ".") and spatial(q)}
        split = root or len(reductions) >= 3 or (
            isinstance(module, _CONTAINERS) and not _layer_like(module) and len(reductions) >= 2)
        if not split and prefix in order:
            return [(prefix, module)]
        out: list[tuple[str, nn.Module]] = []
        for p, c in ran:
            if root and p in HEADS:
                continue
            if p in order and not list(c.children()):
                out.append((p, c))
            else:
                out.extend(expand(p, c, False))
        return out

    units = []
    for path, module in expand("", model, True):
        if path in order and spatial(path) and not _trivial(module):
            units.append(_Unit(path, module, trace.trf[path].stride))
    units.sort(key=lambda u: order[u.path])
    return units


def _blocks(unit: _Unit, ran: set[str]) -> list[str]:
    """Block paths inside one non-layer-like unit (see the module docstring)."""
    def children(path: str, module: nn.Module) -> list[str]:
        return [f"{path}.{n}" for n, c in module.named_children()
                if f"{path}.{n}" in ran and not _layer_like(c) and not _trivial(c)]

    kids = children(unit.path, unit.module)
    if kids and (isinstance(unit.module, _CONTAINERS) or len(kids) >= 2):
        return kids
    queue = [(unit.path, unit.module)]
    while queue:
        path, module = queue.pop(0)
        for name, child in module.named_children():
            cpath = f"{path}.{name}"
            if isinstance(child, _CONTAINERS):
                kids = children(cpath, child)
                if len(kids) >= 2:
                    return kids
            queue.append((cpath, child))
    return [unit.path]


def _holder(unit: _Unit, ran: set[str]) -> str:
    """The stage end for a block-holding unit: the ``Sequential`` of its blocks when the unit is not a container."""
    if isinstance(unit.module, _CONTAINERS):
        return unit.path
    blocks = _blocks(unit, ran)
    parent = blocks[-1].rsplit(".", 1)[0] if "." in blocks[-1] else ""
    if len(blocks) >= 2 and parent != unit.path and parent in ran:
        modules = dict(unit.module.named_modules(prefix=unit.path))
        if isinstance(modules.get(parent), nn.Sequential):
            return parent
    return unit.path


def derive_stages(model: nn.Module, trace: TRFTrace | None = None) -> dict[str, str]:
    """``{stem, stageK, stageK.blockM: module path}`` for any model (see the module docstring).

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)`` images.
        trace: a :class:`~erf.trf.tracer.TRFTrace` of the model (default: :func:`stage_trace`).

    Returns:
        The names in forward order (empty when the model cannot be traced or has no spatial layer).
    """
    trace = trace if trace is not None else stage_trace(model)
    if trace is None:
        return {}
    units = _units(model, trace)
    if not units:
        return {}
    ran = set(trace.trf)
    runs: list[list[_Unit]] = []
    for u in units:
        if runs and runs[-1][-1].reduction == u.reduction:
            runs[-1].append(u)
        else:
            runs.append([u])
    first = runs[0]
    lead = 0
    while lead < len(first) and _layer_like(first[lead].module):
        lead += 1
    stem_units = first[:lead] if lead else first[:1]
    stages = ([first[len(stem_units):]] if first[len(stem_units):] else []) + runs[1:]
    if len(runs) == 1 and not stages and len(stem_units) > 1:  # no reduction at all: first and last layer
        stages, stem_units = [stem_units[1:]], stem_units[:1]
    stem = stem_units[-1].path
    ends: list[str] = []
    blocks: list[list[str]] = []
    for run in stages:
        holders = [u for u in run if not _layer_like(u.module)]
        ends.append(_holder(holders[-1], ran) if holders else run[-1].path)
        blocks.append([b for u in holders for b in _blocks(u, ran)])
    stem, ends = _feature_info(model, stem, [u.path for u in stem_units], stages, ends)
    out = {"stem": stem}
    for k, (end, bl) in enumerate(zip(ends, blocks)):
        out[f"stage{k + 1}"] = end
        for m, b in enumerate(bl):
            out[f"stage{k + 1}.block{m + 1}"] = b
    return out


def _feature_info(model: nn.Module, stem: str, stem_paths: list[str], stages: list[list[_Unit]],
                  ends: list[str]) -> tuple[str, list[str]]:
    """Apply timm's ``feature_info`` (module per feature) to the stem and the stage ends."""
    info = getattr(model, "feature_info", None)
    entries = []
    if isinstance(info, list):
        entries = [e.get("module") for e in info if isinstance(e, dict)]
    elif info is not None and hasattr(info, "module_name"):
        entries = list(info.module_name())
    modules = dict(model.named_modules())
    ends = list(ends)

    def within(path: str, unit: str) -> bool:
        return path == unit or path.startswith(unit + ".") or unit.startswith(path + ".")

    for path in entries:
        if not isinstance(path, str) or path not in modules:
            continue
        if any(within(path, p) for p in stem_paths):
            stem = path
            continue
        for k, run in enumerate(stages):
            if any(within(path, u.path) for u in run):
                ends[k] = path
                break
    return stem, ends


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, str]]] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    return tuple((name, id(m)) for name, m in model.named_modules())


def derived_layers(model: nn.Module) -> dict[str, str]:
    """:func:`derive_stages` of ``model``, cached until its modules change."""
    sig = _signature(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return dict(hit[1])
    names = derive_stages(model)
    _CACHE[model] = (sig, names)
    return dict(names)


__all__ = ["CANDIDATE_SIZES", "HEADS", "derive_stages", "derived_layers", "stage_trace"]
