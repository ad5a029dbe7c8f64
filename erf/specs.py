"""Model specs that name an architecture in code rather than a checkpoint file or a registry name.

==================================  =====================================================================
``torchvision:NAME[@FILE]``         a torchvision classification model (``torchvision.models.get_model``)
``timm:NAME[@FILE]``                a timm model (``timm.create_model(NAME, pretrained=False)``)
``path/to/file.py:NAME[@FILE]``     a class (or function returning an ``nn.Module``) defined in a file
``package.module:NAME[@FILE]``      the same from an importable module
==================================  =====================================================================

``NAME`` is called without arguments; ``@FILE`` loads a state dict into the result (nothing is ever
downloaded; without ``@FILE`` the weights are the constructor's random initialisation, seeded). Naming
your own file or module runs *that* code, which you chose: no ``--trust`` is needed (``--trust`` is only
for pickled checkpoints, whose code the file itself would choose).

Each built model comes with its native input: torchvision's from the default weights' transforms (crop
size and normalisation, read from torchvision's metadata without downloading anything), timm's from the
model's ``pretrained_cfg``; code specs can define ``input_size`` (an int or ``(H, W)``) and
``normalization`` (``(mean, std)``) attributes on the module.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erf.errors import CheckpointError, CheckpointNotFoundError

LIBRARIES = ("torchvision", "timm")
"""Model libraries a spec can name as ``LIBRARY:NAME``."""
_CODE = re.compile(r"^(?P<target>(?:[^:@]+\.py)|(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)):(?P<name>[A-Za-z_]\w*)"
                   r"(?:@(?P<weights>.+))?$")


@dataclass
class BuiltModel:
    """A module built from a spec, with what is known of its native input.

    Attributes:
        model: the module (float32, eval mode).
        name: ``torchvision:resnet50``, ``file.py:Net``, ``pkg.mod:Net``.
        weights: the ``@FILE`` part, or ``None``.
        input_size: ``(H, W)`` the model was made for (``None`` when unknown).
        normalization: ``(mean, std)`` per channel for images in [0, 1] (``None`` when unknown).
        notes: remarks for the user.
    """

    model: nn.Module
    name: str
    weights: str | None
    input_size: tuple[int, int] | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    notes: list[str] = field(default_factory=list)


def is_library_spec(text: str) -> bool:
    """Whether ``text`` is ``torchvision:NAME[@FILE]`` or ``timm:NAME[@FILE]``."""
    return text.partition(":")[0] in LIBRARIES and ":" in text


def is_code_spec(text: str) -> bool:
    """Whether ``text`` is ``file.py:NAME[@FILE]`` or ``package.module:NAME[@FILE]`` (not a library spec)."""
    return not is_library_spec(text) and _CODE.match(text) is not None


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[-2], values[-1]) if len(values) >= 2 else (values[0], values[0])


def _torchvision(arch: str, spec: str) -> BuiltModel:
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None)
    except (ValueError, KeyError):
        raise CheckpointError(f"{spec}: torchvision has no model {arch!r}") from None
    size = norm = None
    try:  # the default weights' metadata: crop size and normalisation (read locally, nothing downloaded)
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        size = _pair(list(transforms.crop_size))
        norm = (tuple(float(v) for v in transforms.mean), tuple(float(v) for v in transforms.std))
    except (ValueError, KeyError, AttributeError, TypeError):
        pass
    return BuiltModel(model, f"torchvision:{arch}", None, size, norm)


def _timm(arch: str, spec: str) -> BuiltModel:
    try:
        import timm
    except ImportError:
        raise CheckpointError(f"{spec}: timm is not installed (pip install timm)") from None
    try:
        model = timm.create_model(arch, pretrained=False)
    except Exception as exc:  # timm raises RuntimeError for unknown names
        raise CheckpointError(f"{spec}: {exc}") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    norm = (tuple(cfg["mean"]), tuple(cfg["std"])) if "mean" in cfg and "std" in cfg else None
    return BuiltModel(model, f"timm:{arch}", None, _pair(cfg.get("input_size")), norm)


def _import_target(target: str, spec: str) -> Any:
    """The module named by a code spec: a ``.py`` file (imported under a private name) or a dotted module."""
    if target.endswith(".py"):
        path = Path(target)
        try:
            found = path.is_file()
        except (OSError, ValueError):  # a name no file can have (a component over 255 bytes)
            found = False
        if not found:
            raise CheckpointNotFoundError(f"{spec}: no such file {target}")
        name = f"erf_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CheckpointError(f"{spec}: {target} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look classes up by module name
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)  # the file may import its neighbours
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(name, None)
            raise CheckpointError(f"{spec}: importing {target} failed ({type(exc).__name__}: {exc})") from None
        finally:
            sys.path.remove(folder)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise CheckpointError(f"{spec}: cannot import module {target!r} ({exc}); is it installed or on "
                              "PYTHONPATH?") from None
    except Exception as exc:
        raise CheckpointError(f"{spec}: importing {target} failed ({type(exc).__name__}: {exc})") from None


def _code(target: str, attr: str, spec: str) -> BuiltModel:
    module = _import_target(target, spec)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        names = sorted(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        hint = f" (modules defined there: {', '.join(names)})" if names else ""
        raise CheckpointError(f"{spec}: {target} defines no class or function {attr!r}{hint}")
    try:
        model = factory()
    except SystemExit as exc:  # the user's code ending the process would end erf silently, exit code 0
        raise CheckpointError(f"{spec}: {attr}() raised SystemExit({exc.code!r:.40}); a model constructor must "
                              "return a module") from None
    except Exception as exc:
        raise CheckpointError(f"{spec}: {attr}() failed ({type(exc).__name__}: {exc}); the class must build "
                              "without arguments (wrap it in a function that passes them)") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    return BuiltModel(model, f"{target}:{attr}", None, _declared_size(model, spec), _declared_norm(model, spec))


MAX_DECLARED_SIZE = 4096
"""Largest side a code spec's ``input_size`` may declare (px; the same bound as ``--input-size``)."""


def _declared_size(model: nn.Module, spec: str) -> tuple[int, int] | None:
    """A code spec's ``input_size`` attribute as ``(H, W)``: an int or a pair of ints in 1..:data:`MAX_DECLARED_SIZE`.

    Raises:
        CheckpointError: anything else (a string, a fraction, a bool, a negative or huge side), naming the spec.
    """
    value = getattr(model, "input_size", None)
    if value is None:
        return None
    sides = [value] if isinstance(value, int) else list(value) if isinstance(value, (tuple, list)) else None
    if not sides or len(sides) > 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                              and 1 <= v <= MAX_DECLARED_SIZE for v in sides):
        raise CheckpointError(f"{spec}: input_size {value!r:.60} must be an int or an (H, W) pair of ints in "
                              f"1..{MAX_DECLARED_SIZE}")
    return (sides[0], sides[-1])


def _declared_norm(model: nn.Module, spec: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A code spec's ``normalization`` attribute ``(mean, std)``: two equally long sequences of finite numbers,
    every std > 0.

    Raises:
        CheckpointError: anything else, naming the spec.
    """
    import math

    value = getattr(model, "normalization", None)
    if value is None:
        return None
    try:
        mean, std = (tuple(float(v) for v in part) for part in value)
        ok = 0 < len(mean) == len(std) <= 4096 and all(math.isfinite(v) for v in mean + std) and min(std) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise CheckpointError(f"{spec}: normalization {value!r:.60} must be (mean, std): two equally long "
                              "sequences of finite numbers, every std > 0")
    return mean, std


def build(spec: str, seed: int = 0) -> BuiltModel:
    """Build the model a library or code spec names, randomly initialised with ``seed``.

    Raises:
        CheckpointError: unknown library model, missing file or name, a constructor that fails.
    """
    torch.manual_seed(seed)  # reproducible random init when no weights are given
    if is_library_spec(spec):
        library, _, rest = spec.partition(":")
        arch, _, weights = rest.partition("@")
        built = _torchvision(arch, spec) if library == "torchvision" else _timm(arch, spec)
    else:
        m = _CODE.match(spec)
        if m is None:
            raise CheckpointError(f"{spec}: not a model spec (file.py:NAME, package.module:NAME, torchvision:NAME "
                                  "or timm:NAME, each optionally @WEIGHTS)")
        weights = m.group("weights") or ""
        built = _code(m.group("target"), m.group("name"), spec)
    built.weights = weights or None
    built.model = built.model.float().eval()
    return built
