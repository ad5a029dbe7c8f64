"""torchvision EfficientNet (v1 b0..b7, v2 s/m/l) and RegNet (X and Y): named stages; TRF == gradient support on
each; the squeeze-and-excitation gate (EfficientNet, RegNet Y) is global with the reason, RegNet X only at the head.
Builders, coverage table and method: tests/zoo_torchvision.py."""

from __future__ import annotations

import pytest
from zoo_torchvision import REPRESENTATIVES, check, family


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if family(n) == "se"])
def test_stages_and_trf_equal_gradient_support(name: str, one_thread) -> None:
    check(name)
