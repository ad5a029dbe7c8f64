"""Object canvases for the controlled study, redrawn every epoch, vectorised on the training device.

A canvas is ``canvas x canvas`` px (64 in the study) of label-free smooth noise (a
:data:`BACKGROUND_GRID` x :data:`BACKGROUND_GRID` grid of random grey levels per channel in
[0.2, 0.8], bilinearly upsampled, plus N(0, 0.03) pixel noise, clamped to [0, 1]; the
background of :mod:`erf.controlled`), with one object pasted at a uniformly random position:
a CIFAR-10 image (its own background included) resized to ``size x size`` px (bilinear,
antialiased when shrinking; ``size = 32`` is the native resolution, nothing resampled).

* **Training** canvases are redrawn every epoch (:class:`EpochCanvases`): new positions,
  new backgrounds and a random horizontal flip of each object, from a generator seeded by
  ``(seed, epoch)``, so two models trained with the same seed see the same canvases
  (paired twins) and any epoch can be regenerated (exact resume). Random crops are not
  needed: the position is redrawn anyway.
* **Test** canvases are drawn once (:func:`draw_canvases` with a fixed seed, no flip) and
  shared by every model evaluated at that object size.

Boxes are kept: ``(x0, y0, x1, y1)`` canvas px, ``x1 = x0 + size`` exclusive, so the
object's centre is ``(y0 + (size - 1) / 2, x0 + (size - 1) / 2)`` in pixel coordinates
(pixel ``y`` covers ``[y - 0.5, y + 0.5]``), which the object-centred ERF uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erf.data.sources import ImageSet
from erf.errors import InputError

BACKGROUND_GRID = 4
"""Side of the grid of random grey levels each background is upsampled from (as :mod:`erf.controlled`)."""
PIXEL_NOISE = 0.03
"""Standard deviation of the per-pixel background noise (image values in [0, 1])."""


@dataclass
class CanvasSet:
    """Canvases with known object boxes.

    Attributes:
        data: raw ImageSet ``(N, 3, canvas, canvas)`` in [0, 1] with the objects' labels.
        boxes: int64 ``(N, 4)`` ``x0, y0, x1, y1`` in canvas px (``x1``, ``y1`` exclusive).
        size: object side in px; ``canvas``: canvas side in px.
    """

    data: ImageSet
    boxes: torch.Tensor
    size: int
    canvas: int

    def __len__(self) -> int:
        return len(self.data)

    def centres(self) -> torch.Tensor:
        """Object centres ``(N, 2)`` float64 ``(y, x)`` in canvas pixel coordinates."""
        b = self.boxes.to(torch.float64)
        return torch.stack([(b[:, 1] + b[:, 3] - 1) / 2, (b[:, 0] + b[:, 2] - 1) / 2], dim=1)


def resize_objects(images: torch.Tensor, size: int) -> torch.Tensor:
    """Raw objects ``(N, 3, h, w)`` in [0, 1] -> ``(N, 3, size, size)`` (bilinear, antialiased when shrinking).

    ``size`` equal to the images' side returns them unchanged (native resolution).
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < images.shape[-1]).clamp_(0.0, 1.0)


def backgrounds(n: int, canvas: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` label-free smooth-noise backgrounds ``(n, 3, canvas, canvas)`` in [0, 1] (see the module docstring)."""
    coarse = torch.rand(n, 3, BACKGROUND_GRID, BACKGROUND_GRID, generator=generator, device=device).mul_(0.6).add_(0.2)
    out = F.interpolate(coarse, size=(canvas, canvas), mode="bilinear", align_corners=False)
    noise = torch.randn(n, 3, canvas, canvas, generator=generator, device=device)
    return out.add_(noise, alpha=PIXEL_NOISE).clamp_(0.0, 1.0)


def paste(canvases: torch.Tensor, objects: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Paste ``objects (N, C, s, s)`` into ``canvases (N, C, H, W)`` at top-left ``(y0, x0)`` ``(N,)``, in place.

    One scatter for the whole batch (no per-image loop). Returns ``canvases``.
    """
    n, c, h, w = canvases.shape
    s = objects.shape[-1]
    ar = torch.arange(s, device=canvases.device)
    rows = y0.to(canvases.device)[:, None] + ar  # (N, s)
    cols = x0.to(canvases.device)[:, None] + ar
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, s * s).expand(n, c, s * s)
    canvases.view(n, c, h * w).scatter_(2, index, objects.reshape(n, c, s * s))
    return canvases


def draw_canvases(objects: torch.Tensor, labels: torch.Tensor, canvas: int, generator: torch.Generator,
                  flip: bool = False, description: str = "", classes: tuple[str, ...] = ()) -> CanvasSet:
    """One canvas per object: a fresh background and a uniformly random position (and flip).

    Args:
        objects: resized raw objects ``(N, 3, s, s)`` in [0, 1], on the target device.
        labels: ``(N,)`` int64.
        canvas: canvas side in px (``>= s``).
        generator: the random source (on ``objects``' device); its draws decide everything.
        flip: flip each object horizontally with probability 1/2 (training canvases).
        description, classes: for reports.

    Raises:
        InputError: an object larger than the canvas.
    """
    n, _, s, _ = objects.shape
    if not 1 <= s <= canvas:
        raise InputError(f"object size {s} px must be between 1 and the {canvas} px canvas")
    dev = objects.device
    out = backgrounds(n, canvas, generator, dev)
    y0 = torch.randint(0, canvas - s + 1, (n,), generator=generator, device=dev)
    x0 = torch.randint(0, canvas - s + 1, (n,), generator=generator, device=dev)
    if flip:
        mask = torch.rand(n, generator=generator, device=dev) < 0.5
        objects = torch.where(mask[:, None, None, None], objects.flip(-1), objects)
    paste(out, objects, y0, x0)
    boxes = torch.stack([x0, y0, x0 + s, y0 + s], dim=1).cpu()
    desc = description or f"{n} objects of {s} px on {canvas} px smooth-noise canvases"
    return CanvasSet(ImageSet(out, labels.to(dev), desc, tuple(classes), raw=True), boxes, int(s), int(canvas))


def seeded_generator(device: torch.device | str, *key: int) -> torch.Generator:
    """A generator on ``device`` seeded by the integers ``key`` (stable across runs and platforms)."""
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k) + 1) % (2 ** 63 - 1)
    return torch.Generator(device=device).manual_seed(seed)


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


def fixed_canvases(objects: torch.Tensor, labels: torch.Tensor, size: int, canvas: int, seed: int,
                  device: torch.device | str = "cpu", description: str = "",
                  classes: tuple[str, ...] = ()) -> CanvasSet:
    """The fixed test canvases of one object size (no flip): generator ``(seed, size, -1)``."""
    g = seeded_generator(device, seed, size, -1)
    return draw_canvases(resize_objects(objects.to(device), int(size)), labels, canvas, g, flip=False,
                         description=f"{description or str(len(labels)) + ' objects'} at {size} px on {canvas} px "
                                     f"canvases (fixed, seed {seed})", classes=classes)


__all__ = ["BACKGROUND_GRID", "CanvasSet", "EpochCanvases", "backgrounds", "draw_canvases", "paste",
           "fixed_canvases", "resize_objects", "seeded_generator"]
