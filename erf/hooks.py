"""Forward hooks that capture layer outputs: the one place erf registers them for probing.

>>> outputs = capture_outputs(model, {"stage3": model.layer3}, x)          # full forward
>>> outputs = capture_outputs(model, targets, x, stop_early=True)          # stop after the deepest one
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class _Stop(Exception):
    """Raised inside a hook to end the forward pass once every wanted output is captured."""


def first_tensor(output: object) -> torch.Tensor | None:
    """The first tensor of a module output (tensor, tuple or list), or ``None``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def capture_outputs(model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor,
                    stop_early: bool = False) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return the first tensor each of ``modules`` produced, by key.

    Each module's output is taken from its first call. With ``stop_early`` the forward pass ends
    as soon as every module has produced an output (no deeper layer runs); the model's own output
    is then never computed. A module whose hook never fired is absent from the result (the caller
    decides whether that is an error).

    Args:
        model: the network.
        modules: ``{key: submodule of model}``.
        x: the input batch.
        stop_early: end the forward after the last wanted output.
    """
    wanted = set(modules)
    captured: dict[str, torch.Tensor] = {}

    def hook(key: str):
        def fn(module: nn.Module, inputs: object, output: object) -> None:
            if key not in captured:
                tensor = first_tensor(output)
                if tensor is not None:
                    captured[key] = tensor
            if stop_early and wanted <= captured.keys():
                raise _Stop

        return fn

    handles = [module.register_forward_hook(hook(key)) for key, module in modules.items()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured
