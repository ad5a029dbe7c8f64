"""The controlled study's data: object canvases redrawn every epoch (:class:`EpochCanvases`) and the fixed test
canvases of each object size (:func:`erf.pasting.fixed_canvases`, re-exported here), built by
:func:`erf.pasting.draw_canvases`.

* **Training** canvases are redrawn every epoch: new positions, new backgrounds and a random horizontal flip of
  each object, from a generator seeded by ``(seed, size, epoch)``, so two models trained with the same seed see
  the same canvases (paired twins) and any epoch can be regenerated (exact resume). Random crops are not needed:
  the position is redrawn anyway.
* **Test** canvases are drawn once (generator ``(seed, size, -1)``, no flip) and shared by every model evaluated
  at that object size; their boxes give the object-centred unit.
"""

from __future__ import annotations

import torch

from erf.data.sources import ImageSet
from erf.pasting import CanvasSet, draw_canvases, fixed_canvases, resize_objects, seeded_generator


class EpochCanvases:
    """Training canvases redrawn every epoch: ``canvases(epoch)`` -> raw :class:`~erf.data.ImageSet`.

    Args:
        objects: raw source images ``(N, 3, 32, 32)`` in [0, 1] (CIFAR-10 training images).
        labels: ``(N,)`` labels.
        size: object side in px; ``canvas``: canvas side in px.
        seed: the cell's seed; epoch ``e`` uses the generator :func:`seeded_generator` ``(seed, size, e)``.
        device: where the canvases are made and kept (the training device).
        description, classes: for reports.
    """

    def __init__(self, objects: torch.Tensor, labels: torch.Tensor, size: int, canvas: int, seed: int,
                 device: torch.device | str = "cpu", description: str = "", classes: tuple[str, ...] = ()) -> None:
        self.objects = resize_objects(objects.to(device), int(size))
        self.labels = labels.to(device)
        self.size, self.canvas, self.seed, self.device = int(size), int(canvas), int(seed), device
        self.description = description or f"{len(labels)} objects"
        self.classes = tuple(classes)

    def draw(self, epoch: int) -> CanvasSet:
        """The canvases of ``epoch`` (with boxes)."""
        g = seeded_generator(self.device, self.seed, self.size, epoch)
        return draw_canvases(self.objects, self.labels, self.canvas, g, flip=True,
                             description=f"{self.description} at {self.size} px on {self.canvas} px canvases, "
                                         f"redrawn every epoch (seed {self.seed})", classes=self.classes)

    def __call__(self, epoch: int) -> ImageSet:
        return self.draw(epoch).data

    def __len__(self) -> int:
        return int(self.labels.shape[0])


__all__ = ["EpochCanvases", "fixed_canvases"]
