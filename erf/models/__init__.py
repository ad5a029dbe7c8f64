"""The model zoo: the article's ResNeXt-29 family, CIFAR ResNet-20, a two-conv toy and the
dilation twins of the controlled study, each plain and with attention, behind one registry."""

from __future__ import annotations

from erf.models.dilated import DilatedNet
from erf.models.registry import (
    ModelEntry,
    canonical_name,
    create_model,
    get_entry,
    is_model,
    list_models,
    register_model,
)
from erf.models.resnet_cifar import ResNetCifar
from erf.models.resnext import ResNeXtCifar
from erf.models.twoconv import TwoConv

__all__ = [
    "DILATIONS",
    "DILNET_GATES",
    "DilatedNet",
    "ModelEntry",
    "ResNeXtCifar",
    "ResNetCifar",
    "TwoConv",
    "canonical_name",
    "create_model",
    "get_entry",
    "is_model",
    "list_models",
    "register_model",
]


def _register_defaults() -> None:
    for width in (8, 16, 32, 64):
        for prefix, attention in (("norm", None), ("cbam", "cbam")):
            register_model(
                ModelEntry(
                    name=f"{prefix}_{width}d",
                    constructor=ResNeXtCifar,
                    kwargs=dict(cardinality=16, base_width=width, depth=29, attention=attention),
                    family="resnext29",
                    attention=attention,
                    twin=f"norm_{width}d" if attention else None,
                    aliases=(f"{prefix}_resnext29_16x{width}d",),
                    description=f"ResNeXt-29 16x{width}d"
                    + (" with CBAM in every bottleneck" if attention else " (plain)"),
                )
            )
    names = {None: "", "cbam": "_cbam", "cbam_spatial": "_cbam_spatial", "se": "_se"}
    words = {
        None: "(plain)",
        "cbam": "with CBAM",
        "cbam_spatial": "with CBAM's spatial gate only (local attention)",
        "se": "with squeeze-and-excitation",
    }
    for attention, suffix in names.items():
        register_model(
            ModelEntry(
                name=f"resnet20{suffix}",
                constructor=ResNetCifar,
                kwargs=dict(depth=20, attention=attention),
                family="resnet_cifar",
                attention=attention,
                twin="resnet20" if attention else None,
                description=f"CIFAR ResNet-20 (He et al. 2016) {words[attention]}",
            )
        )
        register_model(
            ModelEntry(
                name=f"twoconv{suffix}",
                constructor=TwoConv,
                kwargs=dict(attention=attention),
                family="twoconv",
                attention=attention,
                twin="twoconv" if attention else None,
                description=f"two 3x3 conv layers {words[attention]}",
            )
        )


DILATIONS = (1, 2, 4)
"""Dilations of the registered dilation twins ``dilnet_d{d}`` (the controlled study's grid)."""
DILNET_GATES = {None: "", "cbam": "_cbam", "se": "_se", "cbam_spatial": "_spatial", "localgate": "_localgate"}
"""Attention kind -> name suffix of the dilation twins."""


def _register_dilated() -> None:
    words = {
        None: "(plain)",
        "cbam": "with CBAM in every block",
        "se": "with squeeze-and-excitation in every block",
        "cbam_spatial": "with CBAM's spatial gate only in every block (local)",
        "localgate": "with CBAM whose channel gate pools locally (3x3; same parameters, no global path)",
    }
    for d in DILATIONS:
        for attention, suffix in DILNET_GATES.items():
            register_model(
                ModelEntry(
                    name=f"dilnet_d{d}{suffix}",
                    constructor=DilatedNet,
                    kwargs=dict(dilation=d, attention=attention),
                    family="dilnet",
                    attention=attention,
                    twin=f"dilnet_d{d}" if attention else None,
                    description=f"dilation twin d={d} (stage-2 3x3 convs dilated {d}) {words[attention]}",
                )
            )


_register_defaults()
_register_dilated()
