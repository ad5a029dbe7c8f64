"""Checkpoints: `erf`'s own format, the article's raw state dicts, and library specs.

What ``load_checkpoint(spec)`` accepts:

* a file written by :func:`save_checkpoint` (a dict with ``format: "erf.checkpoint"``);
* a raw ``state_dict`` saved by the article's source code (architecture inferred
  from key names and tensor shapes: width d from ``conv_reduce``, CBAM from
  key presence; fp16/bf16 cast to float32; ``module.`` prefixes stripped);
* a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper around either;
* a registry name (``resnet20_cbam``): its bundled trained weights where the
  package ships them, random initialisation otherwise;
* ``torchvision:NAME`` / ``timm:NAME``, optionally ``@FILE`` for local weights
  (nothing is ever downloaded).

Files are read with ``torch.load(weights_only=True)``; a file that needs
arbitrary unpickling is refused with :class:`~erf.errors.UnsafeCheckpointError`
unless ``trust=True``.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erf import specs
from erf.atomic import atomic_path
from erf.errors import ArchitectureError, CheckpointError, UnsafeCheckpointError
from erf.models import create_model, infer_family, is_model
from erf.models.registry import canonical_name

FORMAT = "erf.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent / "weights"


class NonFiniteWeightsWarning(UserWarning):
    """A checkpoint holds NaN or Inf values."""


@dataclass
class LoadedModel:
    """A model ready to probe, with where it came from.

    Attributes:
        model: the module, in eval mode, float32, on CPU.
        name: registry name, or ``torchvision:resnet18`` style spec, or ``custom``.
        source: the file or spec it was loaded from.
        kwargs: constructor arguments (for registry models).
        metadata: training metadata (accuracy, data set, recipe...), possibly empty.
        trained: ``True`` for weights with training metadata (erf checkpoints of ``erf train``, bundled
            weights), ``False`` for a random initialisation, ``None`` when the file does not say (a raw
            state dict, a pickled module, ``@FILE`` weights).
        notes: human-readable remarks (casts, stripped prefixes, non-finite values).
        input_size: ``(H, W)`` the model was made for, when known (torchvision, timm, code specs).
        normalization: ``(mean, std)`` per channel of images in [0, 1], when known (default: CIFAR-10's).
    """

    model: nn.Module
    name: str
    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    trained: bool | None = True
    notes: list[str] = field(default_factory=list)
    input_size: tuple[int, int] | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def state(self) -> str:
        """``trained``, ``untrained`` (random initialisation) or ``weights from file`` (training not recorded)."""
        return {True: "trained", False: "untrained", None: "weights from file"}[self.trained]

    @property
    def accuracy(self) -> float | None:
        """Test accuracy in [0, 1] recorded in the metadata (see :func:`metadata_accuracy`), or ``None``."""
        found = metadata_accuracy(self.metadata)
        return found[0] if found else None


ACCURACY_KEYS = ("best_test_accuracy", "test_accuracy", "accuracy")
"""Metadata keys read as test accuracy, in this order (``erf train`` writes the first two)."""


def metadata_accuracy(metadata: Mapping[str, Any]) -> tuple[float, str] | None:
    """The test accuracy recorded in checkpoint ``metadata``: the first of :data:`ACCURACY_KEYS` holding a
    finite non-negative number, as a fraction in [0, 1] (values above 1 are read as percentages).

    Returns:
        ``(accuracy, key)``, or ``None`` when no key holds one.
    """
    for key in ACCURACY_KEYS:
        v = metadata.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            return float(v) / (100.0 if v > 1 else 1.0), key
    return None


def library_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision and numpy, for checkpoint metadata."""
    import platform

    import numpy
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(numpy.__version__),
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    name: str,
    kwargs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    half: bool = False,
) -> None:
    """Write an `erf` checkpoint atomically.

    Args:
        path: destination file.
        model: the module whose ``state_dict`` is saved.
        name: its registry name.
        kwargs: constructor overrides (saved so the same architecture can be rebuilt).
        metadata: JSON-like facts (data set, subset, epochs, best accuracy, recipe).
        extra: further weights-only-safe entries (e.g. optimizer state for ``--resume``).
        half: store floating tensors as float16 (halves the size; loading casts back).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
        "model_kwargs": _plain(dict(kwargs or {})),
        "state_dict": state,
        "metadata": _plain({**dict(metadata or {}), "library_versions": library_versions()}),
    }
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _plain(obj: Any) -> Any:
    """Plain Python (numpy scalars/arrays -> numbers/lists, paths -> str) so ``weights_only`` can load it back."""
    import os

    import numpy as np

    if isinstance(obj, Mapping):
        return {k if isinstance(k, (str, int)) else str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)


def read_checkpoint_file(path: str | Path, trust: bool = False) -> Any:
    """``torch.load`` a file safely, mapping every failure to a typed error naming ``path``.

    Zip-format files are memory-mapped, so a large file is not read into memory twice.

    Raises:
        CheckpointError: missing, empty, truncated or not a checkpoint.
        UnsafeCheckpointError: it needs arbitrary unpickling and ``trust`` is false.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    is_zip = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(
                path, map_location="cpu", weights_only=not trust, mmap=is_zip or None
            )
    except (ModuleNotFoundError, AttributeError) as exc:
        if not trust:
            raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({type(exc).__name__}: "
                                  f"{_first_line(str(exc))})") from None
        raise CheckpointError(
            f"{path}: a pickled model whose class cannot be found ({_first_line(str(exc))}): put the folder of the "
            "module that defines it on PYTHONPATH, or load its state dict with file.py:Class@FILE") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and not any(m in text for m in _CODE_MARKERS):
            # the safe unpickler stopped on a malformed stream (random bytes, JSON, text), not on code
            detail = next((ln for ln in text.splitlines() if re.match(r"(Unsupported operand|String is too|"
                                                                       r"Can only|unsupported persistent)", ln)),
                          "malformed pickle stream")
            raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({detail.strip()})") from None
        if "Weights only load failed" in text:
            raise UnsafeCheckpointError(
                f"{path}: needs arbitrary unpickling, which can run code; refused "
                "(pass --trust only if you trust its author)"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(text)})") from None
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint ({_first_line(str(exc))})"
        ) from None
    except Exception as exc:  # anything a hostile file can make the unpickler raise
        raise CheckpointError(
            f"{path}: corrupt or not a PyTorch checkpoint ({type(exc).__name__}: {_first_line(str(exc))})"
        ) from None


_CODE_MARKERS = ("GLOBAL ", "unrecognized function", "Can only create new object", "Can only build")
"""Phrases of torch's weights-only unpickler that mean the file asks to import or call code."""


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line[:200]


def _clean_state_dict(state: Mapping[str, Any], source: str, notes: list[str]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes, cast fp16/bf16 to float32, report non-finite tensors."""
    if not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{source}: state_dict keys are not all strings")
    out: dict[str, torch.Tensor] = {}
    prefixes = ("module.", "_orig_mod.", "model.")
    strip, keys = 0, list(state)
    while keys:  # a prefix shared by every key, possibly nested (module.module., module._orig_mod.)
        common = next((p for p in prefixes if all(k[strip:].startswith(p) for k in keys)), None)
        if common is None:
            break
        strip += len(common)
    stripped, cast, bad = strip > 0, set(), []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is {type(value).__name__}, not a tensor")
        key = key[strip:]
        if value.is_floating_point():
            if value.dtype != torch.float32:
                cast.add(str(value.dtype).replace("torch.", ""))
                value = value.float()
            if not torch.isfinite(value).all():
                bad.append(key)
        out[key] = value
    if stripped:
        notes.append("stripped a DataParallel/compile prefix from the keys")
    if cast:
        notes.append(f"cast {', '.join(sorted(cast))} tensors to float32")
    if bad:
        msg = f"{source}: non-finite values (NaN/Inf) in {len(bad)} tensors, e.g. {bad[0]}"
        notes.append(msg)
        warnings.warn(msg, NonFiniteWeightsWarning, stacklevel=3)
    return out


def infer_architecture(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Guess ``(registry_name, kwargs)`` from the keys and shapes of a raw state dict: the first model family
    whose registered matcher recognises it (:func:`erf.models.registry.infer_family`; ResNeXt-29 of the
    article's source, CIFAR ResNet, the two-conv toy).

    Raises:
        ArchitectureError: the layout matches no registered family.
    """
    found = infer_family(state)
    if found is None:
        sample = ", ".join(sorted(state)[:3])
        raise ArchitectureError(f"unknown architecture (keys start {sample}, ...); name the architecture: "
                                "file.py:Class@FILE, package.module:Class@FILE or torchvision:NAME@FILE")
    return found


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first problems."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
            f"model {tuple(own[k].shape)})"
        )
    if problems:
        raise ArchitectureError(f"{source}: weights do not fit the architecture: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def _from_state(
    state: Mapping[str, Any],
    source: str,
    name: str | None,
    kwargs: dict[str, Any],
    metadata: dict[str, Any],
    notes: list[str],
) -> LoadedModel:
    clean = _clean_state_dict(state, source, notes)
    if name is None:
        try:
            name, kwargs = infer_architecture(clean)
        except ArchitectureError as exc:
            raise ArchitectureError(f"{source}: {exc}") from None
        notes.append(f"architecture inferred from keys: {name} {kwargs or ''}".strip())
    try:
        model = create_model(name, **kwargs)
    except TypeError as exc:
        raise ArchitectureError(f"{source}: bad model arguments {kwargs}: {exc}") from None
    _load_into(model, clean, source)
    trained = True if (metadata_accuracy(metadata) is not None or "epochs" in metadata) else None
    return LoadedModel(model.eval(), canonical_name(name), source, kwargs, metadata, trained, notes)


def _from_payload(obj: Any, source: str) -> LoadedModel:
    notes: list[str] = []
    if isinstance(obj, nn.Module):
        notes.append("the file holds a whole pickled module (loaded with --trust)")
        return LoadedModel(obj.float().eval(), "custom", source, {}, {}, None, notes)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state_dict or checkpoint")
    if obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{source}: checkpoint format version {version!r} is newer than this erf")
        for key in ("model", "state_dict"):
            if key not in obj:
                raise CheckpointError(f"{source}: erf checkpoint without {key!r}")
        return _from_state(
            obj["state_dict"], source, str(obj["model"]), dict(obj.get("model_kwargs") or {}),
            dict(obj.get("metadata") or {}), notes,
        )
    for wrapper in ("state_dict", "model", "model_state_dict", "net"):
        inner = obj.get(wrapper)
        if isinstance(inner, nn.Module):
            return _from_payload(inner, source)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            notes.append(f"weights taken from the {wrapper!r} entry")
            meta = {k: v for k, v in obj.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
            return _from_state(inner, source, None, {}, meta, notes)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_state(obj, source, None, {}, {}, notes)
    raise CheckpointError(f"{source}: a dict without a state_dict (keys: {', '.join(map(str, list(obj)[:5]))})")


def bundled_weights(name: str) -> Path | None:
    """The bundled trained checkpoint of registry model ``name``, if the package ships one."""
    path = WEIGHTS_DIR / f"{canonical_name(name)}.pt"
    return path if path.exists() else None


def _spec_model(spec: str, trust: bool, seed: int = 0) -> LoadedModel:
    """A library or code spec (:mod:`erf.specs`), with its ``@FILE`` weights when given."""
    built = specs.build(spec, seed)
    notes = list(built.notes)
    trained: bool | None = False
    if built.weights:
        obj = read_checkpoint_file(built.weights, trust)
        state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{built.weights}: not a state_dict")
        _load_into(built.model, _clean_state_dict(state, built.weights, notes), built.weights)
        trained = None  # weights from a file: whether they were trained is not recorded
    else:
        notes.append(f"no weights given: random initialisation (seed {seed}; add @FILE for local weights)")
    return LoadedModel(built.model, built.name, spec, {}, {}, trained, notes, built.input_size, built.normalization)


def load_checkpoint(spec: str | Path, trust: bool = False, seed: int = 0) -> LoadedModel:
    """Load a model from a checkpoint file, a registry name or a library spec.

    Args:
        spec: path, registry name, or a spec of :mod:`erf.specs` (``torchvision:NAME[@FILE]``,
            ``timm:NAME[@FILE]``, ``path/to/file.py:NAME[@FILE]``, ``package.module:NAME[@FILE]``).
        trust: allow arbitrary unpickling (only for files from a trusted author).
        seed: seed of the random initialisation used when no weights exist (registry names without
            bundled weights, specs without ``@FILE``).

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        CheckpointError, UnsafeCheckpointError, ArchitectureError, UnknownModelError.
    """
    text = str(spec)
    path = Path(text)
    if specs.is_library_spec(text) or (not path.exists() and specs.is_code_spec(text)):
        return _spec_model(text, trust, seed)
    if not path.exists() and is_model(text):
        weights = bundled_weights(text)
        if weights is not None:
            loaded = _from_payload(read_checkpoint_file(weights), str(weights))
            loaded.source = f"{text} (bundled weights)"
            return loaded
        torch.manual_seed(seed)
        model = create_model(text).eval()
        return LoadedModel(
            model, canonical_name(text), text, {}, {}, False,
            [f"no bundled weights for {text}: random initialisation (seed {seed})"],
        )
    if not path.exists():
        from erf.models import list_models

        if path.suffix or "/" in text:
            raise CheckpointError(f"{text}: no such file")
        canonical_name(text)  # raises UnknownModelError with suggestions
        raise CheckpointError(f"{text}: no such file or model (models: {', '.join(list_models()[:4])}, ...)")
    loaded = _from_payload(read_checkpoint_file(path, trust), str(path))
    if any(isinstance(v, float) and not math.isfinite(v) for v in loaded.metadata.values()):
        loaded.notes.append("metadata holds non-finite numbers")
    return loaded
