"""A data set whose object size is controlled: real CIFAR-10 images pasted on a larger canvas.

Each 32 x 32 CIFAR-10 image (the *object*, its own background included) is
rescaled to ``size x size`` px (bilinear, antialiased) and pasted at a uniformly
random position on a ``canvas x canvas`` px canvas (default 64). The canvas
background is per-image random smooth noise drawn independently of the label
(a 4 x 4 grid of random grey levels per channel, bilinearly upsampled, mean 0.5,
plus a little pixel noise), so the label is carried by the object alone and the
only label-relevant extent is the pasted square. The true box of every object
is known by construction: ``(x0, y0, x1, y1)`` in canvas pixels, ``x1 = x0 +
size`` exclusive, so ``sqrt(area) = longer side = size``.

Everything is deterministic given ``seed`` (a ``numpy`` generator drives the
positions and the backgrounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from erf.data.sources import ImageSet
from erf.errors import InputError

BACKGROUND_GRID = 4
"""Side of the grid of random grey levels the background is upsampled from."""


@dataclass
class ControlledSet:
    """Images with objects of known size.

    Attributes:
        data: raw (un-normalised, values in [0, 1]) images ``(N, 3, canvas, canvas)`` with labels.
        boxes: float64 ``(N, 4)`` true boxes ``x0, y0, x1, y1`` in canvas px (``x1``, ``y1`` exclusive).
        size: object side ``s`` in px.
        canvas: canvas side in px.
        seed: the seed that made the positions and backgrounds.
    """

    data: ImageSet
    boxes: np.ndarray
    size: int
    canvas: int
    seed: int

    def __len__(self) -> int:
        return len(self.data)

    def uint8(self) -> np.ndarray:
        """The images as ``uint8`` ``(N, H, W, 3)`` (for object-extent estimators)."""
        x = (self.data.images.clamp(0, 1) * 255).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()


def _as_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` or raw float ``(N, 3, H, W)`` in [0, 1] -> float32 NCHW."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"controlled set: expected uint8 images (N, H, W, 3), got {images.shape}")
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"controlled set: expected float images (N, 3, H, W), got {tuple(images.shape)}")
    return images.float()


def smooth_backgrounds(n: int, canvas: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` label-free backgrounds ``(n, 3, canvas, canvas)`` in [0, 1]: smooth noise around grey 0.5."""
    coarse = torch.from_numpy(rng.uniform(0.2, 0.8, size=(n, 3, BACKGROUND_GRID, BACKGROUND_GRID))).float()
    smooth = F.interpolate(coarse, size=(canvas, canvas), mode="bilinear", align_corners=False)
    fine = torch.from_numpy(rng.normal(0.0, 0.03, size=(n, 3, canvas, canvas))).float()
    return (smooth + fine).clamp_(0.0, 1.0)


def make_controlled(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    size: int,
    canvas: int = 64,
    seed: int = 0,
    description: str = "CIFAR-10",
    classes: tuple[str, ...] = (),
) -> ControlledSet:
    """Paste each image, rescaled to ``size`` px, at a random position of a ``canvas`` px canvas.

    Args:
        images: the objects, ``uint8 (N, H, W, 3)`` or raw float ``(N, 3, H, W)`` in [0, 1].
        labels: ``(N,)`` integer labels (kept as they are).
        size: object side in px, ``1 <= size <= canvas``.
        canvas: canvas side in px.
        seed: seed of positions and backgrounds.
        description: where the objects came from (for reports).
        classes: class names.

    Returns:
        A :class:`ControlledSet` (raw images, true boxes).

    Raises:
        InputError: ``size`` outside ``[1, canvas]`` or mis-shaped images.
    """
    size, canvas = int(size), int(canvas)
    if not 1 <= size <= canvas:
        raise InputError(f"--sizes {size}: object size must be between 1 and the {canvas} px canvas")
    x = _as_float_nchw(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(y) != len(x):
        raise InputError(f"controlled set: {len(x)} images but {len(y)} labels")
    n = len(x)
    rng = np.random.default_rng([int(seed), size, canvas])
    canvases = smooth_backgrounds(n, canvas, rng)
    objects = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=size < x.shape[-1]).clamp_(0.0, 1.0)
    y0 = rng.integers(0, canvas - size + 1, size=n)
    x0 = rng.integers(0, canvas - size + 1, size=n)
    for i in range(n):
        canvases[i, :, y0[i]: y0[i] + size, x0[i]: x0[i] + size] = objects[i]
    boxes = np.stack([x0, y0, x0 + size, y0 + size], axis=1).astype(np.float64)
    desc = f"{n} {description} objects rescaled to {size} px on a {canvas} px smooth-noise canvas (seed {seed})"
    data = ImageSet(canvases.contiguous(), y, desc, tuple(classes), raw=True)
    return ControlledSet(data, boxes, size, canvas, int(seed))


def controlled_from(data: ImageSet, size: int, canvas: int = 64, seed: int = 0) -> ControlledSet:
    """:func:`make_controlled` on the images of a raw :class:`~erf.data.ImageSet` (e.g. from ``load_source``)."""
    if not data.raw:
        raise InputError(f"{data.description}: the controlled set needs raw images in [0, 1], not normalised ones")
    return make_controlled(data.images, data.labels.numpy(), size, canvas, seed, data.description, data.classes)
