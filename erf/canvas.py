"""Canvases: images placed on a larger field, the one place erf builds them.

* :func:`embed`: images at the centre of a larger canvas (zero or mean fill), so that an ERF larger
  than the image is not clipped by its border when probing;
* :func:`paste_objects`: objects (images rescaled to ``s x s`` px) pasted at uniformly random positions
  on a background chosen from :data:`BACKGROUNDS`, with the true box of every object: the controlled
  study's data and the canvases on which the object-size estimator's error is measured.

Boxes are ``(x0, y0, x1, y1)`` in canvas px, ``x1 = x0 + s`` exclusive, so ``sqrt(area) = longer side = s``.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from erf.data.sources import ImageSet, to_uint8
from erf.errors import InputError

BACKGROUND_GRID = 4
"""Side of the grid of random grey levels the ``study`` background is upsampled from."""
BACKGROUNDS = {
    "study": "per-image smooth noise around grey 0.5, label-free (the controlled study's canvases)",
    "flat": "one random colour per canvas",
    "noise": "a random mean colour plus Gaussian pixel noise (std 20 grey levels)",
    "gray": "grey 128",
    "photo": "another of the images, enlarged to the canvas (a natural, textured background: the hard case)",
}
"""Backgrounds of :func:`paste_objects`, with what each is."""


def embed(images: torch.Tensor, size: Sequence[int], fill: str = "zero") -> tuple[torch.Tensor, np.ndarray | None]:
    """Place ``(N, C, h, w)`` images at the centre of an ``(H, W)`` canvas.

    ``fill="zero"``: 0 in the model's input space (the data-set mean colour for
    normalised data); ``"mean"``: each image's own per-channel mean.

    Returns:
        ``(canvas (N, C, H, W), outside (H, W) bool mask or None when no padding)``.
    """
    n, c, h, w = images.shape
    hh, ww = int(size[0]), int(size[1])
    if (hh, ww) == (h, w):
        return images, None
    if hh < h or ww < w:
        raise InputError(f"{hh}x{ww} is smaller than the {h}x{w} images", param="input_size")
    if fill == "zero":
        canvas = images.new_zeros(n, c, hh, ww)
    elif fill == "mean":
        canvas = images.mean(dim=(2, 3), keepdim=True).expand(n, c, hh, ww).clone()
    else:
        raise InputError(f"{fill!r}: use zero or mean", param="fill")
    top, left = (hh - h) // 2, (ww - w) // 2
    canvas[:, :, top: top + h, left: left + w] = images
    outside = np.ones((hh, ww), dtype=bool)
    outside[top: top + h, left: left + w] = False
    return canvas, outside


@dataclass
class Canvases:
    """Images with pasted objects of known size.

    Attributes:
        data: raw (un-normalised, values in [0, 1]) images ``(N, 3, canvas, canvas)`` with labels.
        boxes: float64 ``(N, 4)`` true boxes ``x0, y0, x1, y1`` in canvas px (``x1``, ``y1`` exclusive).
        size: object side ``s`` in px (the first one when several sizes were cycled).
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
        return to_uint8(self.data.images)


def check_object_size(size: int, canvas: int) -> None:
    """Raise :class:`InputError` unless ``1 <= size <= canvas`` (object side and canvas side in px)."""
    if size > canvas:
        raise InputError(f"object size {size} px exceeds the {canvas} px canvas (sizes must be between 1 and the "
                         f"{canvas} px canvas)")
    if size < 1:
        raise InputError(f"object size {size} px: sizes must be between 1 and the {canvas} px canvas")


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


def _paste_study(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, size: int, canvas: int,
                 seed: int, description: str, classes: tuple[str, ...]) -> Canvases:
    """The ``study`` background, one object size: torch bilinear (antialiased) rescaling, smooth backgrounds."""
    size, canvas = int(size), int(canvas)
    check_object_size(size, canvas)
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
    return Canvases(data, boxes, size, canvas, int(seed))


def _paste_pil(images: np.ndarray, sizes: Sequence[int], canvas: int, background: str,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The other backgrounds: PIL bilinear rescaling of uint8 images, sizes cycled over the images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = len(images)
    out = np.zeros((n, canvas, canvas, 3), dtype=np.uint8)
    boxes = np.zeros((n, 4))
    for i in range(n):
        s = int(sizes[i % len(sizes)])
        check_object_size(s, canvas)
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        if background == "gray":
            bg = np.full((canvas, canvas, 3), 128.0)
        elif background == "flat":
            bg = np.broadcast_to(colour, (canvas, canvas, 3)).copy()
        elif background == "noise":
            bg = colour + rng.normal(0.0, 20.0, size=(canvas, canvas, 3))
        elif background == "photo":
            other = images[(i + 1 + int(rng.integers(0, max(n - 1, 1)))) % n]
            bg = np.asarray(Image.fromarray(other).resize((canvas, canvas), Image.BILINEAR), dtype=np.float64)
        else:
            raise InputError(f"background {background!r}: use flat, noise, gray, photo or study")
        obj = np.asarray(Image.fromarray(images[i]).resize((s, s), Image.BILINEAR), dtype=np.float64)
        y, x = (int(v) for v in rng.integers(0, canvas - s + 1, size=2))
        bg[y: y + s, x: x + s] = obj
        out[i] = np.clip(np.round(bg), 0, 255).astype(np.uint8)
        boxes[i] = (x, y, x + s, y + s)
    return out, boxes


def paste_objects(
    images: np.ndarray | torch.Tensor,
    sizes: int | Sequence[int],
    canvas: int = 64,
    background: str = "study",
    seed: int = 0,
    labels: np.ndarray | torch.Tensor | None = None,
    description: str = "CIFAR-10",
    classes: tuple[str, ...] = (),
) -> Canvases:
    """Paste each image, rescaled to ``s x s`` px, at a uniformly random position of a ``canvas`` px canvas.

    Args:
        images: the objects, ``uint8 (N, H, W, 3)`` or raw float ``(N, 3, H, W)`` in [0, 1].
        sizes: the object side ``s`` in px, or several: with the ``study`` background the images of
            size ``sizes[k]`` are every ``len(sizes)``-th image from ``k``; with the others ``s`` cycles
            through ``sizes`` image by image.
        canvas: canvas side in px.
        background: a key of :data:`BACKGROUNDS`.
        seed: seed of positions and backgrounds.
        labels: ``(N,)`` integer labels kept with the canvases (default: -1, unknown).
        description: where the objects came from (for reports); classes: class names.

    Returns:
        :class:`Canvases` (raw images, true boxes).

    Raises:
        InputError: a size outside ``[1, canvas]``, an unknown background, or mis-shaped images.
    """
    size_list = [int(sizes)] if isinstance(sizes, (int, np.integer)) else [int(s) for s in sizes]
    n = len(images)
    labels_t = np.full(n, -1, dtype=np.int64) if labels is None else labels
    if background == "study":
        if len(size_list) == 1:
            return _paste_study(images, labels_t, size_list[0], canvas, seed, description, classes)
        x = _as_float_nchw(images)
        y = torch.as_tensor(np.asarray(labels_t), dtype=torch.long)
        out = torch.zeros(n, 3, canvas, canvas)
        boxes = np.zeros((n, 4))
        for k, s in enumerate(size_list):
            idx = np.arange(k, n, len(size_list))
            check_object_size(s, canvas)
            if idx.size:
                made = _paste_study(x[idx], y[idx], s, canvas, seed, description, classes)
                out[idx], boxes[idx] = made.data.images, made.boxes
        desc = f"{n} {description} objects of sizes {size_list} px on a {canvas} px smooth-noise canvas (seed {seed})"
        return Canvases(ImageSet(out, y, desc, tuple(classes), raw=True), boxes, size_list[0], canvas, int(seed))
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r}: use {', '.join(BACKGROUNDS)}")
    x8 = to_uint8(_as_float_nchw(images)) if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.uint8)
    canv, boxes = _paste_pil(x8, size_list, canvas, background, seed)
    data = ImageSet(torch.from_numpy(canv).permute(0, 3, 1, 2).float() / 255.0,
                    torch.as_tensor(np.asarray(labels_t), dtype=torch.long),
                    f"{n} {description} objects of sizes {size_list} px on a {canvas} px {background} canvas "
                    f"(seed {seed})", tuple(classes), raw=True)
    return Canvases(data, boxes, size_list[0], canvas, int(seed))
