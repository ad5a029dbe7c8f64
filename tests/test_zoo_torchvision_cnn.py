"""torchvision CNNs without attention (AlexNet, ConvNeXt, DenseNet, GoogLeNet, Inception, MNASNet, MobileNet v2/v3,
ResNet/ResNeXt/Wide ResNet, ShuffleNet, SqueezeNet, VGG): named stages; TRF == gradient support on each, global only
at the head (MobileNet v3's squeeze-and-excitation blocks: global from there, with the reason).
Builders, coverage table and method: tests/zoo_torchvision.py."""

from __future__ import annotations

import pytest
from zoo_torchvision import NAMES, check, family

_CHECKED: dict[tuple, str] = {}


def test_every_name_has_a_builder() -> None:
    from zoo_torchvision import BUILT

    assert set(BUILT) == set(NAMES) and len(NAMES) == 80


@pytest.mark.parametrize("name", [n for n in NAMES if family(n) == "cnn"])
def test_stages_and_trf_equal_gradient_support(name: str, one_thread) -> None:
    check(name, _CHECKED)
