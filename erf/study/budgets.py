"""Registries of the controlled experiment: its twin pairs (:data:`PAIRS`) and grid sizes (:data:`BUDGETS`).

Plain data, no torch: the command line's ``--pairs`` and ``--budget`` choices and help come from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PairSpec:
    """A twin pair of the controlled grid: registry names and constructor overrides shared by both."""

    key: str
    plain: str
    attention: str
    kwargs: tuple[tuple[str, Any], ...] = ()


PAIRS: dict[str, PairSpec] = {p.key: p for p in (
    PairSpec("twoconv", "twoconv", "twoconv_cbam"),
    PairSpec("twoconv_narrow", "twoconv", "twoconv_cbam", (("widths", (16, 32)),)),
    PairSpec("resnet8_narrow", "resnet20", "resnet20_cbam", (("depth", 8), ("widths", (8, 16, 32)))),
    PairSpec("resnet20_s2", "resnet20", "resnet20_cbam", (("stages", 2),)),
    PairSpec("resnet20", "resnet20", "resnet20_cbam"),
)}


@dataclass(frozen=True)
class Budget:
    """Size of the controlled grid. ``None`` image counts mean every image of the source."""

    name: str
    sizes: tuple[int, ...]
    seeds: int
    pairs: tuple[str, ...]
    train_images: int | None
    test_images: int | None
    epochs: int
    batch_size: int
    lr: float
    erf_images: int
    bootstrap: int
    canvas: int = 64
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """The budget's entry of ``cells.json`` and ``study.json`` (every field but the description)."""
        out = asdict(self)
        out.pop("description")
        return out

    def replace(self, **changes: Any) -> Budget:
        """A copy with ``changes`` applied."""
        return Budget(**{**asdict(self), **changes})


BUDGETS: dict[str, Budget] = {
    "tiny": Budget("tiny", (8, 24), 1, ("twoconv_narrow",), 64, 64, 1, 32, 0.05, 8, 20,
                   description="seconds, a pipeline check"),
    "cpu": Budget("cpu", (12, 16, 32), 3, ("twoconv_narrow", "resnet8_narrow"), None, None, 5, 64, 0.05, 32, 100,
                  description="about an hour on a 2-core CPU"),
    "gpu": Budget("gpu", (8, 12, 16, 24, 32, 48), 3, ("twoconv", "resnet20_s2", "resnet20"), None, None, 15, 128,
                  0.1, 64, 200, description="the full grid, about 35 min on one H200"),
}
