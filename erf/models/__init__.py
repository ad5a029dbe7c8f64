"""The model zoo: the article's ResNeXt-29 family, CIFAR ResNet-20, a two-conv toy and the dilation
twins of the controlled study, each plain and with attention, behind one registry.

Each family module registers its own entries and state-dict matcher when imported (below); adding a
family is one module plus its import here.
"""

from __future__ import annotations

# each module registers its family (entries, parameter counts, attention twins, state-dict matcher)
from erf.models import dilated, resnet_cifar, resnext, twoconv  # noqa: F401
from erf.models.dilated import DILATIONS, DILNET_GATES, DilatedNet
from erf.models.registry import (
    ModelEntry,
    canonical_name,
    create_model,
    get_entry,
    infer_family,
    is_model,
    list_models,
    register_family,
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
    "infer_family",
    "is_model",
    "list_models",
    "register_family",
    "register_model",
]
