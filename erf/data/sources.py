"""The images of data sources: :class:`ImageSet`, normalisation and preprocessing, and one loader per kind of
source spec (``load_bundled`` ... ``load_tensor``, registered in :mod:`erf.data.registry`, which dispatches
:func:`~erf.data.registry.load_source` to them)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from erf.errors import MAX_SEED, DataError, DataNotFoundError, InputError
from erf.files.images import ImageRefused, open_bounded

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel mean of the article's normalisation (RGB, images in [0, 1])."""
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
"""Per-channel std of the article's normalisation."""
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_SIZES = {"train": 50000, "test": 10000}
BUNDLED_SAMPLE = Path(__file__).parent / "cifar10_sample.npz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_SYNTHETIC_BYTES = 4 * 2**30
"""Bytes of float32 images that ``noise:`` / ``constant:`` may make (``count x channels x side^2 x 4``)."""
MAX_ARRAY_BYTES = 4 * 2**30
"""Bytes of one array read from a ``tensor:`` ``.npy`` file or a CIFAR-10 ``.npz`` member."""
MAX_IMAGE_PIXELS = 64 * 2**20
"""Pixels of one image file in a ``folder:`` source (64 Mpx); larger ones (decompression bombs) are refused
before they are decoded."""


@dataclass
class ImageSet:
    """Images ready for a model.

    Attributes:
        images: float32 tensor ``(N, C, H, W)``; normalised unless ``raw`` is True.
        labels: int64 tensor ``(N,)``, ``-1`` where unknown.
        description: where the images came from (for reports).
        classes: class names, when known.
        raw: True when ``images`` are un-normalised values in [0, 1] (training applies
            augmentation, then :func:`normalize`).
        notes: remarks for the user (subset clamped, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    description: str
    classes: tuple[str, ...] = ()
    raw: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def normalized(self, normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> torch.Tensor:
        """The images in the model's input space: raw images normalised with ``normalization`` =
        ``(mean, std)`` per channel (default: CIFAR-10's, the article's); normalised images as they are."""
        if not self.raw:
            return self.images
        return normalize(self.images, *normalization) if normalization else normalize(self.images)

    def uint8(self) -> np.ndarray:
        """Raw images as ``uint8 (N, H, W, C)`` (see :func:`to_uint8`)."""
        if not self.raw:
            raise InputError(f"{self.description}: holds normalised images; uint8 conversion needs raw images")
        return to_uint8(self.images)

    def head(self, count: int | None) -> ImageSet:
        """The first ``count`` images (all if ``None``)."""
        if count is None or count >= len(self):
            return self
        return ImageSet(self.images[:count], self.labels[:count], self.description, self.classes,
                        self.raw, list(self.notes))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Raw images ``(N, C, H, W)`` in [0, 1] as ``uint8 (N, H, W, C)``: ``round(255 x)``, clamped to [0, 255]."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def normalize(images: torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN,
              std: Sequence[float] = CIFAR10_STD) -> torch.Tensor:
    """Per-channel normalisation ``(x - mean) / std`` of images in [0, 1], ``(N, C, H, W)`` (default: the
    article's CIFAR-10 statistics)."""
    m = torch.tensor(tuple(mean), dtype=images.dtype, device=images.device)[:, None, None]
    s = torch.tensor(tuple(std), dtype=images.dtype, device=images.device)[:, None, None]
    return (images - m) / s


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
"""Resampling modes of :class:`Preprocessing` (``torch.nn.functional.interpolate`` modes, antialiased when
shrinking except ``nearest``)."""


@dataclass(frozen=True)
class Preprocessing:
    """A model's own evaluation preprocessing: resize the shorter side to ``resize`` px, then centre-crop to
    ``crop`` (torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` on tensors: same output sizes and crop
    offsets, antialiased resampling when shrinking).

    Attributes:
        crop: ``(H, W)`` px, the model's input size.
        resize: px of the shorter side before the crop (``>= max(crop)``; equal: no margin cut off).
        interpolation: a mode of :data:`INTERPOLATIONS`.
        origin: where the recipe comes from, for notes and JSON (``torchvision ResNet18_Weights.IMAGENET1K_V1``).
    """

    crop: tuple[int, int]
    resize: int
    interpolation: str = "bilinear"
    origin: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation {self.interpolation!r}: use {', '.join(INTERPOLATIONS)}")
        if min(self.crop) < 1 or self.resize < 1:
            raise InputError(f"preprocessing sizes must be positive, got resize {self.resize}, crop {self.crop}")

    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        """``(h', w')`` after the resize step of an ``h x w`` image (the shorter side becomes ``resize``, the longer
        keeps the aspect ratio, truncated as torchvision does); never smaller than the crop."""
        if h <= w:
            out = (self.resize, int(self.resize * w / h))
        else:
            out = (int(self.resize * h / w), self.resize)
        return (max(out[0], self.crop[0]), max(out[1], self.crop[1]))

    def apply(self, data: ImageSet) -> ImageSet:
        """``data`` resized and centre-cropped to ``crop``: a new :class:`ImageSet` (raw images stay raw, clamped to
        [0, 1]; normalised ones are interpolated as they are: resampling is linear, so it commutes with the
        per-channel normalisation up to the clamp). Images already ``crop``-sized are returned as they are."""
        import torch.nn.functional as F

        h, w = data.images.shape[-2:]
        if (h, w) == tuple(self.crop):
            return data
        rh, rw = self.resized_shape(h, w)
        x = data.images
        if (rh, rw) != (h, w):
            kwargs = {} if self.interpolation == "nearest" else {
                "align_corners": False, "antialias": rh < h or rw < w}
            x = F.interpolate(x, size=(rh, rw), mode=self.interpolation, **kwargs)
        top, left = int(round((rh - self.crop[0]) / 2.0)), int(round((rw - self.crop[1]) / 2.0))
        x = x[:, :, top: top + self.crop[0], left: left + self.crop[1]]
        if data.raw:
            x = x.clamp(0.0, 1.0)
        return ImageSet(x.contiguous(), data.labels, data.description, data.classes, data.raw, list(data.notes))

    def describe(self, h: int, w: int) -> str:
        """In words, what :meth:`apply` does to ``h x w`` images (for the note)."""
        rh, rw = self.resized_shape(h, w)
        scale = rh / h
        kind = "an upsampling" if scale > 1 else "a downsampling" if scale < 1 else "no resampling"
        crop = (f", then centre-cropped to {self.crop[0]}x{self.crop[1]}" if (rh, rw) != tuple(self.crop) else "")
        return (f"resized from {h}x{w} to {rh}x{rw} px ({self.interpolation}, {kind} by {scale:.3g}x){crop}"
                + (f" ({self.origin})" if self.origin else ""))

    def to_json(self, h: int, w: int) -> dict[str, Any]:
        """The ``preprocessing`` entry of ``measure.json`` for ``h x w`` source images."""
        rh, rw = self.resized_shape(h, w)
        return {"kind": "resize", "source_size": [h, w], "resized": [rh, rw], "crop": list(self.crop),
                "resize": self.resize, "interpolation": self.interpolation, "scale": rh / h, "origin": self.origin}


def preprocessing_for(name: str, model: Any, input_size: Sequence[int] | None) -> Preprocessing | None:
    """The evaluation preprocessing of a model with a known ``input_size`` (``None`` when unknown).

    * ``torchvision:ARCH``: its default weights' transforms (``resize_size``, ``crop_size``, interpolation; read
      locally, nothing downloaded), e.g. 256 -> 224 bilinear for ResNet-18, 236 -> 224 for ConvNeXt-T;
    * a model with a timm ``pretrained_cfg``: ``floor(crop / crop_pct)`` and its interpolation;
    * anything else with an input size (a code spec's ``input_size`` attribute): a plain resize to it (no margin).
    """
    if not input_size:
        return None
    crop = (int(input_size[0]), int(input_size[1]))
    if name.startswith("torchvision:"):
        try:
            import torchvision

            weights = torchvision.models.get_model_weights(name.partition(":")[2]).DEFAULT
            t = weights.transforms()
            mode = str(getattr(t.interpolation, "value", t.interpolation)).lower()
            if mode in INTERPOLATIONS and list(t.crop_size) and list(t.resize_size):
                return Preprocessing(crop, int(list(t.resize_size)[0]), mode,
                                     f"the eval transforms of torchvision's {type(weights).__name__}.{weights.name}")
        except (ValueError, KeyError, AttributeError, TypeError, ImportError):
            pass
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("crop_pct"), (int, float)) and cfg["crop_pct"] > 0:
        mode = str(cfg.get("interpolation", "bilinear")).lower()
        return Preprocessing(crop, int(math.floor(max(crop) / cfg["crop_pct"])),
                             mode if mode in INTERPOLATIONS else "bilinear", "timm's pretrained_cfg (crop_pct)")
    return Preprocessing(crop, min(crop), "bilinear", "the model's input_size")


@dataclass(frozen=True)
class LoadOptions:
    """What the caller of :func:`load_source` asks of the images (each loader uses the ones that apply to it).

    Attributes:
        split: ``"train"`` or ``"test"`` (CIFAR-10 sources).
        count: keep the first ``count`` images (noise/constant: how many to make, default 64).
        subset: the article's subset rule (:func:`subset_count`), applied before ``count``.
        image_size: side in pixels for folders, noise and constant images.
        channels: channels of noise/constant images.
        resize: folders: the shorter side before the centre crop to ``image_size``.
    """

    split: str = "test"
    count: int | None = None
    subset: float | int | str | None = None
    image_size: int = 32
    channels: int = 3
    resize: int | None = None


def subset_count(subset: float | int | str | None, split: str, available: int) -> tuple[int, str | None]:
    """Number of leading samples the article's subset rule keeps.

    ``subset`` is a fraction of the official split size (``0.1`` -> 5000 train /
    1000 test) or a count (``"500"`` or ``500``); ``None`` keeps everything.
    The article takes the FIRST samples, never a random draw. When fewer are
    available the count is clamped and a note says so.

    Returns:
        ``(count, note_or_None)``.
    """
    if subset is None:
        return available, None
    try:
        value = float(subset)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{subset!r}: expected a fraction (0.1) or a count (5000)", param="subset") from None
    if not math.isfinite(value):
        raise InputError(f"{subset!r}: must be a finite fraction (0.1) or count (5000)", param="subset")
    if value <= 0:
        raise InputError(f"{subset!r}: must be positive", param="subset")
    if value <= 1.0 and not (isinstance(subset, str) and subset.isdigit()):
        wanted = int(round(value * CIFAR10_SIZES[split]))
    else:
        if value != int(value):
            raise InputError(f"{subset!r}: a count must be an integer", param="subset")
        wanted = int(value)
    if wanted > available:
        return available, (
            f"subset asks for the first {wanted} {split} images but only {available} are available; "
            f"using all {available}"
        )
    return wanted, None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's python batches that only reconstructs numpy arrays (no code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: missing CIFAR-10 batch file") from None
    except Exception as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    return data, labels


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the header of the ``.npy`` stream ``f`` (nothing else is read).

    Raises:
        ValueError: not a ``.npy`` header.
    """
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"bad shape {shape}")
    return tuple(shape), dtype


def _npz_member(archive: np.lib.npyio.NpzFile, key: str, root: Path) -> np.ndarray:
    """``archive[key]`` after checking the member's header: at most :data:`MAX_ARRAY_BYTES` (a member can be
    deflated: a small ``.npz`` may decompress to terabytes)."""
    import zipfile

    try:
        members = archive.zip
        assert members is not None  # np.load of a .npz file
        with members.open(f"{key}.npy") as f:
            shape, dtype = _npy_header(f)
    except KeyError:
        raise DataError(f"{root}: npz without '{key}'") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{root}: {key} is not a readable .npy member ({exc})") from None
    need = math.prod(shape) * dtype.itemsize
    if need > MAX_ARRAY_BYTES:
        raise DataError(f"{root}: {key} has shape {shape} ({need / 2**30:.1f} GiB, at most "
                        f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB)")
    return archive[key]


def _load_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """HWC uint8 images and labels of ``split`` from a torchvision folder or an npz file.

    An ``.npz`` must hold ``x_{split}`` (``N x H x W x 3`` uint8, or integers in 0..255) and ``y_{split}``
    (``N`` integer labels in 0..9).
    """
    if root.is_file():
        try:
            with np.load(root, allow_pickle=False) as d:
                if not hasattr(d, "zip"):
                    raise DataError(f"{root}: a single .npy array, not an .npz archive with x_{split}/y_{split}")
                x, y = _npz_member(d, f"x_{split}", root), _npz_member(d, f"y_{split}", root)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{root}: not a readable npz archive ({type(exc).__name__}: {exc})") from None
        if x.ndim != 4 or x.shape[-1] != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{root}: x_{split} must be N x H x W x 3 with N labels in y_{split}, got {x.shape} "
                            f"and {y.shape}")
        if x.dtype != np.uint8:
            if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
                raise DataError(f"{root}: x_{split} must be uint8 pixels in 0..255, got {x.dtype}")
            x = x.astype(np.uint8)
        if not np.issubdtype(y.dtype, np.integer) and not (np.issubdtype(y.dtype, np.floating)
                                                             and np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{root}: y_{split} must be integer labels, got {y.dtype}")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
            raise DataError(f"{root}: y_{split} holds labels outside 0..{len(CIFAR10_CLASSES) - 1} "
                            f"(min {y.min()}, max {y.max()})")
        return x, y, f"CIFAR-10 {split} images from {root}"
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    if not folder.is_dir():
        raise DataNotFoundError(f"{root}: no such folder or file")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if not (folder / names[0]).exists():
        raise DataError(f"{folder}: no CIFAR-10 python batches (expected {names[0]}, ...)")
    parts = [_read_cifar_batch(folder / n) for n in names]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, f"CIFAR-10 {split} images from {folder} (official release)"


def _to_set(x: np.ndarray, y: np.ndarray, desc: str, classes: tuple[str, ...]) -> ImageSet:
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    return ImageSet(images.contiguous(), torch.from_numpy(y.astype(np.int64)), desc, classes, raw=True)


def _load_folder(root: Path, image_size: int, resize: int | None = None) -> ImageSet:
    """Every image file under ``root`` (recursive; sub-folder names are the classes): the shorter side resized to
    ``resize`` px (default ``image_size``, PIL bilinear), then centre-cropped to ``image_size`` x ``image_size``.

    Symlinks are followed to regular files only; anything else with an image suffix (a device, a FIFO, a broken
    link) is refused, and so is an image over :data:`MAX_IMAGE_PIXELS` before it is decoded.
    """

    from PIL import Image

    if not root.is_dir():
        raise DataNotFoundError(f"{root}: no such folder")
    candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = []
    for p in candidates:
        if p.is_file():
            files.append(p)
        elif p.is_symlink() or not p.is_dir():
            raise DataError(f"{p}: not a regular image file (a broken link, a device or a FIFO)")
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    class_names = sorted({p.parent.name for p in files if p.parent != root})
    arrays, labels = [], []
    for p in files:
        try:
            with open_bounded(p, MAX_IMAGE_PIXELS) as im:
                im = im.convert("RGB")
                scale = (resize or image_size) / min(im.size)
                im = im.resize((max(image_size, round(im.width * scale)),
                                max(image_size, round(im.height * scale))), Image.Resampling.BILINEAR)
                left, top = (im.width - image_size) // 2, (im.height - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
                arrays.append(np.asarray(im, dtype=np.uint8))
        except ImageRefused as exc:
            detail = str(exc) if exc.kind == "too_large" else f"corrupt or unreadable image ({exc})"
            raise DataError(f"{p}: {detail}") from None
        labels.append(class_names.index(p.parent.name) if p.parent != root else -1)
    return _to_set(np.stack(arrays), np.asarray(labels), f"{len(files)} images from {root}", tuple(class_names))


def load_bundled(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``bundled`` (``sample``): the CIFAR-10 test images shipped with the package."""
    if not BUNDLED_SAMPLE.exists():
        raise DataNotFoundError(f"{BUNDLED_SAMPLE}: the bundled sample is missing from this install")
    x, y, _ = _load_cifar10(BUNDLED_SAMPLE, "test")
    n, note = subset_count(options.subset, "test", len(x))
    data = _to_set(x[:n], y[:n], f"bundled CIFAR-10 sample (first {n} official test images)", CIFAR10_CLASSES)
    if note:
        data.notes.append(note)
    if options.split == "train":
        data.notes.append("the bundled sample holds test images only")
    return data


def load_cifar10(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``cifar10:ROOT``: the first images of a split (the subset rule) from a torchvision folder or an npz file."""
    if not arg:
        raise InputError("cifar10:ROOT needs a folder or .npz file, e.g. cifar10:data/")
    x, y, desc = _load_cifar10(Path(arg), options.split)
    n, note = subset_count(options.subset, options.split, len(x))
    data = _to_set(x[:n], y[:n], f"first {n} {desc}", CIFAR10_CLASSES)
    if note:
        data.notes.append(note)
    return data


def load_folder(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``folder:DIR`` (or a bare folder path): its image files (:func:`_load_folder`)."""
    return _load_folder(Path(arg or spec), options.image_size, options.resize)


def _synthetic_shape(kind: str, options: LoadOptions) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of the ``noise`` / ``constant`` images to make: ``count`` (default 64) images of the asked
    size, at most :data:`MAX_SYNTHETIC_BYTES` of float32."""
    n, channels, image_size = options.count or 64, options.channels, options.image_size
    need = n * channels * image_size * image_size * 4
    if need > MAX_SYNTHETIC_BYTES:
        raise InputError(f"{n}: {n} {kind} images of {channels} x {image_size} x {image_size} float32 would "
                         f"need {need / 2**30:,.1f} GiB (at most {MAX_SYNTHETIC_BYTES / 2**30:.0f} GiB)",
                         param="count")
    return (n, channels, image_size, image_size)


def load_noise(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``noise[:SEED]``: Gaussian noise N(0, 1) in normalised space, drawn with ``SEED`` (default 0)."""
    shape = _synthetic_shape("noise", options)
    seed = _parse_number(arg or "0", spec, int)
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"{spec[:60]}: the noise seed must be an integer in 0..2**64 - 1")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(shape, generator=gen)
    return ImageSet(images, torch.full((shape[0],), -1, dtype=torch.long),
                    f"{shape[0]} Gaussian-noise images (seed {seed})")


def load_constant(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``constant[:VALUE]``: images of the one value ``VALUE`` (default 0, the data-set mean) in normalised
    space."""
    shape = _synthetic_shape("constant", options)
    value = _parse_number(arg or "0", spec, float)
    if not math.isfinite(value):
        raise InputError(f"{spec[:60]}: the constant must be a finite number (a tensor: file holding NaN or "
                         "Inf is refused the same way)")
    images = torch.full(shape, value)
    return ImageSet(images, torch.full((shape[0],), -1, dtype=torch.long),
                    f"{shape[0]} constant images (value {value} in normalised space)")


def load_tensor(arg: str, spec: str, options: LoadOptions) -> ImageSet:
    """``tensor:FILE.npy``: the array of the file, used as given (:func:`_load_tensor`)."""
    return _load_tensor(Path(arg))


_Number = TypeVar("_Number", int, float)


def _parse_number(text: str, spec: str, kind: Callable[[str], _Number]) -> _Number:
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"{spec[:60]}: {text[:40]!r} is not a number") from None


def _load_tensor(path: Path) -> ImageSet:
    """An ``N x C x H x W`` float ``.npy`` array (already normalised), header checked against the file size and
    :data:`MAX_ARRAY_BYTES` before the data is read."""
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f)
            need = math.prod(shape) * dtype.itemsize
            if need > MAX_ARRAY_BYTES:
                raise DataError(f"{path}: shape {shape} {dtype} is {need / 2**30:,.1f} GiB "
                                f"(at most {MAX_ARRAY_BYTES / 2**30:.0f} GiB)")
            if need > path.stat().st_size:
                raise DataError(f"{path}: truncated: its header says {shape} {dtype} ({need:,} bytes) but the file "
                                f"has {path.stat().st_size:,}")
            f.seek(0)
            array = np.load(f, allow_pickle=False)  # read once, straight into the array
            if not isinstance(array, np.ndarray):  # an .npz archive: np.load returned a lazy NpzFile
                raise ValueError("an .npz archive, not a single .npy array")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a .npy array ({type(exc).__name__}: {exc})") from None
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: expected an N x C x H x W float array, got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or Inf values")
    images = torch.from_numpy(array.astype(np.float32, copy=False))
    return ImageSet(images, torch.full((len(images),), -1, dtype=torch.long), f"{len(images)} images from {path}")
