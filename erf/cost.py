"""What a measurement will cost, said before it starts.

``measure`` does a forward and a backward pass per image through the model up to its deepest probed layer; on a
CPU a 4000 x 4000 image through a 20k-parameter model takes about a minute, 100 images at ``--input-size 4096``
hours. :func:`probe_flops` counts the floating-point operations of one forward pass on the **meta device** (shapes
only: nothing is computed or allocated, whatever the input size) with ``torch.utils.flop_counter``, and
:func:`warn_if_costly` turns a large total into a :class:`CostWarning` (one ``warning:`` line on the command
line, printed before the work starts) naming the arguments that set it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

COSTLY_FLOP = {"cpu": 1e12, "cuda": 1e15}
"""Total floating-point operations (forward and backward) above which :func:`warn_if_costly` warns, per device
type: 1 TFLOP is about half a minute to a few minutes on a CPU core."""
BACKWARD_FACTOR = 3.0
"""Forward plus backward pass as a multiple of the forward pass alone (the usual estimate: backward ~ 2x)."""


class CostWarning(UserWarning):
    """A measurement will take long (many images, large inputs): said before it starts."""


def probe_flops(model: nn.Module, channels: int, size: tuple[int, int]) -> float | None:
    """Floating-point operations of one forward pass of ``model`` on one ``channels x H x W`` image, counted on
    the meta device (no computation, no memory).

    Returns:
        The count (convolutions, matrix products, attention: what ``FlopCounterMode`` knows), or ``None`` where the
        model cannot run on the meta device (custom kernels, data-dependent control flow).
    """
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    try:
        state = {k: torch.empty_like(v, device="meta") for k, v in
                 [*model.named_parameters(), *model.named_buffers()]}
        x = torch.empty(1, channels, size[0], size[1], device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, state, (x,))
        return float(counter.get_total_flops())
    except Exception:
        return None


def warn_if_costly(model: nn.Module, channels: int, size: tuple[int, int], images: int, device: torch.device) -> None:
    """Warn (:class:`CostWarning`) when ``images`` forward and backward passes at ``size`` exceed
    :data:`COSTLY_FLOP` for ``device``'s type; silent when the count is unknown."""
    flops = probe_flops(model, channels, size)
    if flops is None:
        return
    total = BACKWARD_FACTOR * flops * images
    if total <= COSTLY_FLOP.get(device.type, COSTLY_FLOP["cpu"]):
        return
    where = "a CPU" if device.type == "cpu" else device.type
    warnings.warn(CostWarning(
        f"this measurement needs about {total / 1e12:,.1f} TFLOP ({images} image(s) of {size[0]}x{size[1]} px "
        f"through the model, forward and backward): minutes to hours on {where}; fewer --images or a smaller "
        "--input-size cost less"), stacklevel=3)
