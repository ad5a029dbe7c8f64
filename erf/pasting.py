"""Canvases: images placed on a larger field, the one place erf builds them.

* :func:`embed`: images at the centre of a larger canvas (zero or mean fill), so that an ERF larger
  than the image is not clipped by its border when probing;
* :func:`draw_canvases`: objects (images resized to ``s x s`` px) pasted at uniformly random positions of
  label-free smooth-noise backgrounds, the whole batch in one scatter on the device (the controlled study's
  canvases, redrawn every epoch by :class:`erf.study.canvases.EpochCanvases`);
* :func:`paste_objects`: the same with a background chosen from :data:`BACKGROUNDS` (``study`` is the
  controlled study's own), for numpy images too: the canvases on which the object-size estimator's error
  is measured.

The ``study`` background is a :data:`BACKGROUND_GRID` x :data:`BACKGROUND_GRID` grid of random grey levels per
channel in [0.2, 0.8], bilinearly upsampled, plus N(0, :data:`PIXEL_NOISE`) pixel noise, clamped to [0, 1];
objects are resized bilinearly (antialiased when shrinking; ``s = 32`` is CIFAR's native resolution, nothing
resampled). Boxes are ``(x0, y0, x1, y1)`` in canvas px, ``x1 = x0 + s`` exclusive, so ``sqrt(area) = longer
side = s`` and the object's centre is ``(y0 + (s - 1) / 2, x0 + (s - 1) / 2)``. Everything is deterministic given
its seed (:func:`seeded_generator`).
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
PIXEL_NOISE = 0.03
"""Standard deviation of the per-pixel noise of the ``study`` background (image values in [0, 1])."""
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
    check_object_size(s, canvas)
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
            resized = Image.fromarray(other).resize((canvas, canvas), Image.Resampling.BILINEAR)
            bg = np.asarray(resized, dtype=np.float64)
        else:
            raise InputError(f"background {background!r}: use flat, noise, gray, photo or study")
        obj = np.asarray(Image.fromarray(images[i]).resize((s, s), Image.Resampling.BILINEAR), dtype=np.float64)
        y, x = (int(v) for v in rng.integers(0, canvas - s + 1, size=2))
        bg[y: y + s, x: x + s] = obj
        out[i] = np.clip(np.round(bg), 0, 255).astype(np.uint8)
        boxes[i] = (x, y, x + s, y + s)
    return out, boxes


def fixed_canvases(objects: torch.Tensor, labels: torch.Tensor, size: int, canvas: int, seed: int,
                  device: torch.device | str = "cpu", description: str = "",
                  classes: tuple[str, ...] = ()) -> CanvasSet:
    """The fixed test canvases of one object size (no flip): generator ``(seed, size, -1)``."""
    g = seeded_generator(device, seed, size, -1)
    return draw_canvases(resize_objects(objects.to(device), int(size)), labels, canvas, g, flip=False,
                         description=f"{description or str(len(labels)) + ' objects'} at {size} px on {canvas} px "
                                     f"canvases (fixed, seed {seed})", classes=classes)


def paste_objects(
    images: np.ndarray | torch.Tensor,
    sizes: int | Sequence[int],
    canvas: int = 64,
    background: str = "study",
    seed: int = 0,
    labels: np.ndarray | torch.Tensor | None = None,
    description: str = "CIFAR-10",
    classes: tuple[str, ...] = (),
) -> CanvasSet:
    """Paste each image, rescaled to ``s x s`` px, at a uniformly random position of a ``canvas`` px canvas.

    Args:
        images: the objects, ``uint8 (N, H, W, 3)`` or raw float ``(N, 3, H, W)`` in [0, 1].
        sizes: the object side ``s`` in px, or several: with the ``study`` background the images of
            size ``sizes[k]`` are every ``len(sizes)``-th image from ``k`` (each size on the canvases the controlled
            study tests at that size with this seed); with the others ``s`` cycles through ``sizes`` image by image.
        canvas: canvas side in px.
        background: a key of :data:`BACKGROUNDS`.
        seed: seed of positions and backgrounds.
        labels: ``(N,)`` integer labels kept with the canvases (default: -1, unknown).
        description: where the objects came from (for reports); classes: class names.

    Returns:
        :class:`CanvasSet` (raw images, true boxes).

    Raises:
        InputError: a size outside ``[1, canvas]``, an unknown background, or mis-shaped images.
    """
    size_list = [int(sizes)] if isinstance(sizes, (int, np.integer)) else [int(s) for s in sizes]
    n = len(images)
    labels_t = torch.as_tensor(np.asarray(np.full(n, -1) if labels is None else labels), dtype=torch.long)
    if background == "study":
        x = _as_float_nchw(images)
        out = torch.zeros(n, 3, canvas, canvas)
        boxes = torch.zeros(n, 4, dtype=torch.long)
        for k, s in enumerate(size_list):
            check_object_size(s, canvas)
            idx = torch.arange(k, n, len(size_list))
            if len(idx):  # the controlled study's fixed test canvases of size s
                made = fixed_canvases(x[idx], labels_t[idx], s, canvas, seed)
                out[idx], boxes[idx] = made.data.images, made.boxes
        desc = f"{n} {description} objects of sizes {size_list} px on {canvas} px smooth-noise canvases (seed {seed})"
        return CanvasSet(ImageSet(out, labels_t, desc, tuple(classes), raw=True), boxes, size_list[0], canvas)
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r}: use {', '.join(BACKGROUNDS)}")
    x8 = to_uint8(_as_float_nchw(images)) if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.uint8)
    canv, boxes_np = _paste_pil(x8, size_list, canvas, background, seed)
    data = ImageSet(torch.from_numpy(canv).permute(0, 3, 1, 2).float() / 255.0, labels_t,
                    f"{n} {description} objects of sizes {size_list} px on a {canvas} px {background} canvas "
                    f"(seed {seed})", tuple(classes), raw=True)
    return CanvasSet(data, torch.from_numpy(boxes_np).long(), size_list[0], canvas)
