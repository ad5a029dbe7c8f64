"""Device selection: one reading of ``cpu``, ``cuda``, ``cuda:N`` and ``auto``."""

from __future__ import annotations

import torch

from erf.errors import InputError

DEVICE_TYPES = ("cpu", "cuda")
"""Device types a model can be probed or trained on."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The :class:`torch.device` for ``device``: ``None`` or ``"auto"`` give ``cuda`` when available, else ``cpu``.

    Raises:
        InputError: CUDA asked for but not available, an index beyond the visible devices, or an unknown name.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"{device}: CUDA is not available on this machine", param="device")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"{device!r}: use cpu, cuda, cuda:N or auto", param="device") from None
    if dev.type not in DEVICE_TYPES:  # meta holds no data, others are not supported by the engine
        why = "meta tensors hold no data" if dev.type == "meta" else f"{dev.type} devices are not supported"
        raise InputError(f"{device}: use cpu, cuda, cuda:N or auto ({why})", param="device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)", param="device")
    return dev
