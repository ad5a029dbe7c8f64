"""The model zoo: the article's ResNeXt-29 family, CIFAR ResNet-20 and a two-conv toy,
each plain and with attention, behind one registry."""

from __future__ import annotations

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


_register_defaults()
