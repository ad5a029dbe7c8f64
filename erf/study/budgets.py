"""The controlled study's grid sizes: the budgets registry (:data:`BUDGETS`), and its default data.

Plain data, no torch: ``erf study --budget``'s choices and help come from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Budget:
    """One grid size (a registry entry of :data:`BUDGETS`).

    Attributes:
        name: registry key; ``help``: one line for ``--budget``'s help.
        sizes: object sides (px); ``dilations``: dilation twins; ``seeds``: seeds per cell.
        epochs, batch_size, lr: the training recipe (SGD, momentum 0.9, wd 5e-4, cosine).
        train_images, test_images: CIFAR-10 images used (``None``: all of the source).
        erf_images: test canvases the ERF is measured on.
        canvas: canvas side (px).
        control_gates: gating controls; ``control_points``: their ``(d, s)`` (each in the main grid).
        pc_distances: positive-control distances (px), the last beyond the plain twin's TRF.
        pc_images, pc_test_images, pc_epochs, pc_dilation: positive-control data and recipe.
        widths, blocks: the dilation twins' widths and blocks per stage.
        smoke: a pipeline check only (its report says its numbers mean nothing).
        rule: the version of the rule that judges this grid (:data:`erf.study.interaction.RULES`; it also names
            the arms its plateau cells train).
    """

    name: str
    help: str
    sizes: tuple[int, ...]
    dilations: tuple[int, ...]
    seeds: int
    epochs: int
    batch_size: int
    lr: float
    train_images: int | None
    test_images: int | None
    erf_images: int
    canvas: int = 64
    control_gates: tuple[str, ...] = ("se", "cbam_spatial", "localgate")
    control_points: tuple[tuple[int, int], ...] = ()
    pc_distances: tuple[int, ...] = (8, 48)
    pc_images: int = 3000
    pc_test_images: int = 1000
    pc_epochs: int = 8
    pc_dilation: int = 1
    widths: tuple[int, int] = (16, 32)
    blocks: tuple[int, int] = (1, 2)
    smoke: bool = False

    def training(self) -> dict[str, Any]:
        """The settings a finished cell must match to be reused (everything but the grid's extent)."""
        d = asdict(self)
        for k in ("name", "help", "sizes", "dilations", "seeds", "control_gates", "control_points", "pc_distances",
                  "smoke"):
            d.pop(k)
        return d


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("tiny", "seconds: a pipeline check (tiny data, 1 epoch, 1 seed; numbers mean nothing)",
           sizes=(16, 32), dilations=(1, 4), seeds=1, epochs=1, batch_size=16, lr=0.05, train_images=48,
           test_images=32, erf_images=8, control_gates=("localgate",), control_points=((1, 32),),
           pc_images=48, pc_test_images=32, pc_epochs=1, widths=(4, 8), blocks=(1, 1), smoke=True),
    Budget("cpu", "the real run on a 2-core CPU (about 100 min with OMP_NUM_THREADS=1): d 1/2/4 x s 16/32 x 3 seeds, "
                  "controls at d=1 s=32, positive control at D 8/48",
           sizes=(16, 32), dilations=(1, 2, 4), seeds=3, epochs=8, batch_size=64, lr=0.05, train_images=None,
           test_images=None, erf_images=64, control_points=((1, 32),)),
    Budget("gpu", "the same grid scaled for one GPU: sizes 16/32/48, 5 seeds, 30 epochs, controls at both "
                  "extreme dilations",
           sizes=(16, 32, 48), dilations=(1, 2, 4), seeds=5, epochs=30, batch_size=128, lr=0.1, train_images=None,
           test_images=None, erf_images=256, control_points=((1, 32), (4, 32), (1, 16), (4, 16)),
           pc_images=5000, pc_epochs=20),
)}
"""The budgets registry: ``--budget`` choices and help come from here."""


def default_controlled_source() -> str:
    """``cifar10:/work/shared/data/cifar10_prefix.npz``-style source when present, else ``bundled``."""
    for p in (Path("../shared/data/cifar10_prefix.npz"), Path("/work/shared/data/cifar10_prefix.npz"),
              Path("runs/study_data/cifar10_prefix.npz")):
        if p.exists():
            return f"cifar10:{p}"
    return "bundled"


@dataclass(frozen=True)
class InteractionBudget:
    """One size of the second hypothesis-2 grid (issue #24; a registry entry of :data:`INTERACTION_BUDGETS`).

    Attributes:
        name: registry key; ``help``: one line for ``--budget``'s help.
        scales: object scales (the same CIFAR object resampled to ``scale * base`` px on a fixed canvas).
        levels: ERF levels of :class:`erf.models.dilated.PatchDilatedNet` (dilation schedules).
        arms: the gates trained in every cell (``plain`` = no gate).
        seeds: seeds per design point; ``plateau_seeds``: seeds per design point also trained for twice the
            epochs (the plateau check).
        epochs, batch_size, lr: the recipe (SGD, momentum 0.9, wd 5e-4, cosine to 0, no crop: positions,
            backgrounds and flips are redrawn every epoch).
        train_images, test_images: CIFAR-10 images used (``None``: all of the source).
        erf_images: test canvases the ERF is measured on; ``canvas``: canvas side (px); ``base``: object side
            (px) at scale 1; ``width``: channels of the twins.
        pc_distances, pc_images, pc_test_images, pc_epochs, pc_level: the positive control.
        precision: the training arithmetic passed to :func:`erf.training.train` (``fp32``, ``bf16`` or ``auto``:
            bf16 where the device has bf16 units, so machine-dependent); the precision that ran is in every model's
            record.
        smoke: a pipeline check only (its report says its numbers mean nothing).
    """

    name: str
    help: str
    scales: tuple[float, ...]
    levels: tuple[int, ...]
    seeds: int
    epochs: int
    train_images: int | None
    test_images: int | None
    erf_images: int
    arms: tuple[str, ...] = ("plain", "cbam", "localgate", "cbam_spatial")
    plateau_seeds: int = 1
    batch_size: int = 64
    lr: float = 0.05
    canvas: int = 96
    base: int = 32
    width: int = 24
    pc_distances: tuple[int, ...] = (8, 48)
    pc_images: int = 3000
    pc_test_images: int = 1000
    pc_epochs: int = 10
    pc_level: int = 1
    precision: str = "auto"
    smoke: bool = False
    rule: str = "interaction/1"

    def training(self) -> dict[str, Any]:
        """The settings a finished cell must match to be reused (everything but the grid's extent and its rule)."""
        d = asdict(self)
        for k in ("name", "help", "scales", "levels", "seeds", "plateau_seeds", "pc_distances", "smoke", "rule"):
            d.pop(k)
        return d


INTERACTION_BUDGETS: dict[str, InteractionBudget] = {b.name: b for b in (
    InteractionBudget("grid_tiny", "seconds: a pipeline check of the second grid (tiny data, 1 epoch, 1 seed; "
                                   "numbers mean nothing)",
                      scales=(0.5, 1.0), levels=(1, 3), seeds=1, epochs=1, train_images=48, test_images=32,
                      erf_images=8, batch_size=16, canvas=32, base=16, width=8, pc_distances=(8, 24), pc_images=48,
                      pc_test_images=32, pc_epochs=1, smoke=True),
    InteractionBudget("grid_cpu", "the second grid on a 2-core CPU (two single-thread workers, see "
                                  "figures/h2_grid/design.md): 4 object scales x 3 ERF levels x 5 seeds x 4 arms, "
                                  "10 epochs, plateau check at 20 (stopped at 16 of 60 main cells: the recipe does not "
                                  "reach its plateau; see figures/h2_grid/design.md)",
                      scales=(0.5, 1.0, 2.0, 3.0), levels=(1, 2, 3), seeds=5, epochs=10, train_images=None,
                      test_images=None, erf_images=64, precision="fp32"),
    InteractionBudget("grid_gpu", "the same grid scaled for one GPU: width 32, 40 epochs (plateau at 80), 8 seeds",
                      scales=(0.5, 1.0, 2.0, 3.0), levels=(1, 2, 3), seeds=8, epochs=40, train_images=None,
                      test_images=None, erf_images=256, width=32, batch_size=128, lr=0.1, pc_epochs=20,
                      pc_images=5000),
    InteractionBudget("grid3_tiny", "seconds: a pipeline check of the third grid and its rule interaction/2 (tiny "
                                    "data, 1 epoch, 1 seed; numbers mean nothing)",
                      scales=(0.5, 1.0), levels=(1, 3), seeds=1, epochs=1, train_images=48, test_images=32,
                      erf_images=8, batch_size=16, canvas=32, base=16, width=8, pc_distances=(8, 24), pc_images=48,
                      pc_test_images=32, pc_epochs=1, arms=("plain", "cbam", "localgate"), lr=0.2, smoke=True,
                      rule="interaction/2"),
    InteractionBudget("grid3_cpu", "the third grid on a 2-core CPU (figures/h2_grid3/design.md; rule interaction/2): "
                                   "3 object scales x 2 ERF levels x 8 seeds x 3 arms on 80 px canvases, lr 0.2, "
                                   "40 epochs, operating-point check at 80",
                      scales=(0.5, 1.0, 2.5), levels=(1, 3), seeds=8, epochs=40, train_images=None, test_images=None,
                      erf_images=64, arms=("plain", "cbam", "localgate"), lr=0.2, canvas=80, precision="fp32",
                      rule="interaction/2"),
    InteractionBudget("grid3_gpu", "the third grid scaled for one GPU (not yet run on one): 12 seeds, the "
                                   "spatial-only arm too, 80 epochs (check at 160)",
                      scales=(0.5, 1.0, 2.5), levels=(1, 3), seeds=12, epochs=80, train_images=None,
                      test_images=None, erf_images=256, lr=0.2, canvas=80, pc_epochs=20, pc_images=5000,
                      rule="interaction/2"),
)}
"""The second grid's budgets registry: ``erf study --interaction --budget`` choices and help come from here."""
