"""Checkpoints: `erf`'s own format, the article's raw state dicts, and library specs.

What ``load_checkpoint(spec)`` accepts:

* a file written by :func:`save_checkpoint` (a dict with ``format: "erf.checkpoint"``);
* a raw ``state_dict`` saved by the article's source code (architecture inferred
  from key names and tensor shapes: width d from ``conv_reduce``, CBAM from
  key presence; fp16/bf16 cast to float32; ``module.`` prefixes stripped);
* a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper around either;
* a registry name (``resnet20_cbam``): its bundled trained weights where the
  package ships them, random initialisation otherwise;
* ``NAME@FILE``: a registry architecture with the weights of ``FILE``;
* ``torchvision:NAME`` / ``timm:NAME``, optionally ``@FILE`` for local weights
  (nothing is ever downloaded);
* ``.safetensors`` files anywhere a file is accepted (``erf train --safetensors`` writes them, with the
  architecture in the header's ``__metadata__``).

Files are read by :mod:`erf.files.checkpoint_io` (pickles scanned before ``torch.load(weights_only=True)``,
safetensors never unpickled, code refused unless ``trust=True``); this module turns what they hold into a model.
Weights are checked: integer, bool and complex tensors where the model has floating weights are refused,
fp16/bf16/fp64 cast with a note; no checkpoint may ask for more than :data:`~erf.files.safeload.MAX_PARAMETERS`
parameters (estimated on the meta device before allocating).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erf import specs
from erf.errors import ArchitectureError, CheckpointError, CheckpointNotFoundError, check_seed
from erf.files.atomic import atomic_path
from erf.files.checkpoint_io import (
    FORMAT,
    FORMAT_VERSION,
    SAFETENSORS_SUFFIX,
    first_line,
    plain_values,
    read_checkpoint_file,
)
from erf.models import create_model, get_entry, infer_family, is_model, list_models
from erf.models.registry import canonical_name

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
        "model_kwargs": plain_values(dict(kwargs or {})),
        "state_dict": state,
        "metadata": plain_values({**dict(metadata or {}), "library_versions": library_versions()}),
    }
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut at ``limit`` characters; an integer too long for ``repr`` (over 4300 digits) by its size."""
    try:
        text = repr(value)
    except ValueError:
        return f"<an integer of {value.bit_length():,} bits>" if isinstance(value, int) else "<unprintable>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


INTEGER_BUFFERS = ("num_batches_tracked",)
"""Key endings of integer buffers every family may hold (batch norm's counter)."""


def _clean_state_dict(state: Mapping[str, Any], source: str, notes: list[str]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes, cast fp16/bf16/fp64 to float32, report non-finite tensors.

    Raises:
        CheckpointError: non-string keys, non-tensor values, complex / quantized / sparse / data-less tensors,
            or more than :data:`~erf.files.safeload.MAX_PARAMETERS` elements in all.
    """
    from erf.files.safeload import MAX_PARAMETERS

    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: the state_dict is a {type(state).__name__}, not a mapping")
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
    stripped, cast, bad, total = strip > 0, set(), [], 0
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is {type(value).__name__}, not a tensor")
        if value.is_complex():
            raise CheckpointError(f"{source}: {key} holds {str(value.dtype).replace('torch.', '')} values; "
                                  "complex weights are refused")
        if value.is_quantized or value.layout != torch.strided or value.is_meta:
            kind = "quantized" if value.is_quantized else "meta (no data)" if value.is_meta else str(value.layout)
            raise CheckpointError(f"{source}: {key} is a {kind} tensor; only dense weights are supported")
        total += value.numel()
        if total > MAX_PARAMETERS:
            raise CheckpointError(f"{source}: holds more than {MAX_PARAMETERS:,} weight elements (e.g. {key} "
                                  f"{tuple(value.shape)}); refused")
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
    scalar = next((k for k, v in state.items() if k.endswith(".weight") and getattr(v, "ndim", 1) == 0), None)
    if scalar is not None:
        raise ArchitectureError(f"{scalar} is a 0-d tensor; a layer's weight has at least one dimension")
    try:
        found = infer_family(state)
    except ArchitectureError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
        # a layout that looks like a family's but is broken: a missing key, a 0-d weight, a zero-sized group
        what = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise ArchitectureError(f"the keys look like a known architecture but do not fit it ({what})") from None
    if found is None:
        sample = ", ".join(_short(k, 60)[1:-1] for k in sorted(state)[:3])
        raise ArchitectureError(f"unknown architecture (keys start {sample}, ...); name the architecture: "
                                "file.py:Class@FILE, package.module:Class@FILE or torchvision:NAME@FILE")
    return found


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first problems."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    dtypes = [k for k in own if k in state and own[k].is_floating_point() and not state[k].is_floating_point()
              and not k.endswith(INTEGER_BUFFERS)]
    if dtypes:
        k = dtypes[0]
        raise ArchitectureError(f"{source}: {k} holds {str(state[k].dtype).replace('torch.', '')} values where the "
                                f"model has {str(own[k].dtype).replace('torch.', '')} weights ({len(dtypes)} such "
                                "tensors); integer and bool weights are refused")
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


def check_model_kwargs(name: str, kwargs: Mapping[str, Any], source: str) -> int:
    """Build registry model ``name`` with ``kwargs`` on the meta device (no memory) and count its parameters.

    Returns:
        The parameter (and buffer) count.

    Raises:
        ArchitectureError: ``kwargs`` do not build the model (negative widths, unknown arguments...) or ask for
            more than :data:`~erf.files.safeload.MAX_PARAMETERS` parameters.
        UnknownModelError: ``name`` is not registered.
    """
    from erf.files.safeload import MAX_MODULES, MAX_PARAMETERS, TooManyModules, estimate_parameters

    entry = get_entry(name)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ArchitectureError(f"{source}: model_kwargs must be a mapping of argument names, got {kwargs!r:.80}")
    shown = ", ".join(f"{k}={_short(v)}" for k, v in list(kwargs.items())[:8])
    try:
        count = estimate_parameters(lambda: entry.build(**kwargs))
    except TooManyModules:
        raise ArchitectureError(f"{source}: model_kwargs ({shown}) ask for more than {MAX_MODULES:,} modules and "
                                "parameters; refused before building") from None
    except Exception as exc:  # whatever the constructor raises for nonsense (negative sizes: RuntimeError)
        raise ArchitectureError(f"{source}: model_kwargs ({shown}) do not build {name}: "
                                f"{type(exc).__name__}: {first_line(str(exc))}") from None
    if count > MAX_PARAMETERS:
        raise ArchitectureError(f"{source}: model_kwargs ({shown}) ask for {count:,} parameters "
                                f"(at most {MAX_PARAMETERS:,}); refused before allocating")
    return count


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
    check_model_kwargs(name, kwargs, source)
    try:
        model = create_model(name, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ArchitectureError(f"{source}: bad model arguments {kwargs}: {first_line(str(exc))}") from None
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
        kwargs, metadata = obj.get("model_kwargs") or {}, obj.get("metadata") or {}
        if not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{source}: model_kwargs is a {type(kwargs).__name__}, not a mapping")
        if not isinstance(metadata, Mapping):
            notes.append(f"metadata is a {type(metadata).__name__}, not a mapping; ignored")
            metadata = {}
        if not isinstance(obj["model"], str):
            raise CheckpointError(f"{source}: model name is a {type(obj['model']).__name__}, not a string")
        return _from_state(obj["state_dict"], source, obj["model"], dict(kwargs), dict(metadata), notes)
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
    """The bundled trained checkpoint of registry model ``name``, if the package ships one (``NAME.safetensors``,
    which cannot carry code, before ``NAME.pt``)."""
    for suffix in (SAFETENSORS_SUFFIX, ".pt"):
        path = WEIGHTS_DIR / f"{canonical_name(name)}{suffix}"
        if path.exists():
            return path
    return None


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


def _registry_with_weights(arch: str, weights: str, trust: bool) -> LoadedModel:
    """``NAME@FILE``: build registry model ``NAME`` (its default arguments, or the file's erf ``model_kwargs``) and
    load the weights of ``FILE`` into it (strictly)."""
    obj = read_checkpoint_file(weights, trust)
    notes: list[str] = []
    kwargs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        if obj.get("model") != canonical_name(arch):
            notes.append(f"{weights} was saved as {obj.get('model')!r}; loaded into {arch}")
        kwargs = dict(obj.get("model_kwargs") or {}) if isinstance(obj.get("model_kwargs"), Mapping) else {}
        metadata = dict(obj.get("metadata") or {}) if isinstance(obj.get("metadata"), Mapping) else {}
        obj = obj.get("state_dict")
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{weights}: not a state_dict")
    loaded = _from_state(obj, weights, canonical_name(arch), kwargs, metadata, notes)
    loaded.source = f"{arch}@{weights}"
    return loaded


MAX_SPEC_CHARS = 4096
"""Characters a model spec may have (Linux's ``PATH_MAX``: no longer path can name a file)."""


def _exists(path: Path) -> bool:
    """``path.exists()``, ``False`` where the name cannot name a file (a component over 255 bytes: ``ENAMETOOLONG``)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def load_checkpoint(spec: str | Path, trust: bool = False, seed: int = 0) -> LoadedModel:
    """Load a model from a checkpoint file, a registry name or a library spec.

    Args:
        spec: path (``.pt``, ``.pth``, ``.safetensors``...), registry name, ``NAME@FILE`` (a registry
            architecture with a file's weights), or a spec of :mod:`erf.specs` (``torchvision:NAME[@FILE]``,
            ``timm:NAME[@FILE]``, ``path/to/file.py:NAME[@FILE]``, ``package.module:NAME[@FILE]``).
        trust: allow arbitrary unpickling (only for files from a trusted author).
        seed: seed of the random initialisation used when no weights exist (registry names without
            bundled weights, specs without ``@FILE``).

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        CheckpointError, UnsafeCheckpointError, ArchitectureError, UnknownModelError.
    """
    check_seed(seed)
    text = str(spec)
    if len(text) > MAX_SPEC_CHARS or "\0" in text:
        what = ("contains a NUL byte" if "\0" in text
                else f"is {len(text):,} characters long (at most {MAX_SPEC_CHARS:,})")
        raise CheckpointError(f"{text[:60]!r}...: the model spec {what}")
    path = Path(text)
    if specs.is_library_spec(text) or (not _exists(path) and specs.is_code_spec(text)):
        return _spec_model(text, trust, seed)
    arch, at, weights = text.partition("@")
    if at and not _exists(path) and is_model(arch):  # NAME@FILE: a registry architecture, the file's weights
        return _registry_with_weights(arch, weights, trust)
    if not _exists(path) and is_model(text):
        bundled = bundled_weights(text)
        if bundled is not None:
            loaded = _from_payload(read_checkpoint_file(bundled), str(bundled))
            loaded.source = f"{text} (bundled weights)"
            # the package stores its own weights as float16 on purpose: the cast back is no news to the user
            loaded.notes = [n for n in loaded.notes if not (n.startswith("cast ") and n.endswith("to float32"))]
            return loaded
        torch.manual_seed(seed)
        model = create_model(text).eval()
        return LoadedModel(
            model, canonical_name(text), text, {}, {}, False,
            [f"no bundled weights for {text}: random initialisation (seed {seed})"],
        )
    if not _exists(path):
        if path.suffix or "/" in text:
            raise CheckpointNotFoundError(f"{text}: no such file")
        canonical_name(text)  # raises UnknownModelError with suggestions
        raise CheckpointNotFoundError(f"{text}: no such file or model (models: {', '.join(list_models()[:4])}, ...)")
    loaded = _from_payload(read_checkpoint_file(path, trust), str(path))
    if any(isinstance(v, float) and not math.isfinite(v) for v in loaded.metadata.values()):
        loaded.notes.append("metadata holds non-finite numbers")
    return loaded
