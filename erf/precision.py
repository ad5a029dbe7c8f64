"""Numeric precision of training and measurement: the precisions registry and the device's bf16 support.

``bf16`` means mixed precision: float32 master weights and optimizer state, the forward pass (and so the
backward's matmuls and convolutions) under :func:`torch.autocast` with ``dtype=torch.bfloat16``, activations in
the channels-last memory format (oneDNN's fast bf16 convolutions on CPU need it). ``fp32`` is plain float32.
``auto`` picks ``bf16`` where the device has native bf16 arithmetic (a CPU with AVX512-BF16 or AMX-BF16, a CUDA
device with ``torch.cuda.is_bf16_supported()``), else ``fp32``.

Plain data and stdlib at import: ``--precision``'s choices and help come from :data:`PRECISIONS` without torch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from erf.errors import InputError


@dataclass(frozen=True)
class Precision:
    """One way to run the arithmetic.

    Attributes:
        name: registry key (``--precision`` value).
        help: one line for ``--help``.
    """

    name: str
    help: str


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("auto", "bf16 where the device has native bf16 units (AVX512-BF16/AMX CPUs, CUDA), else fp32"),
    Precision("bf16", "bfloat16 autocast + channels-last, float32 master weights (mixed precision)"),
    Precision("fp32", "plain float32 everywhere (the reference path)"),
)}
"""The precisions registry: ``--precision`` choices and help come from here."""


MEASURE_PRECISIONS = ("fp32", "bf16")
"""The precisions ``erf measure`` / ``erf compare`` offer (``--precision``): fp32 is the default and the reference;
bf16 is offered because ``erf bench --parts precision`` showed it pays on this project's reference machine."""
MEASURE_PRECISION_HELP = ("arithmetic of the ERF maps: fp32 (default, the reference) or bf16 (bf16 autocast + "
                          "channels-last on CPUs with bf16 units and CUDA: 2-5x faster here, r50/r95/sigma within "
                          "about 0.3 %% of fp32 though single pixels of the maps differ more; check with "
                          "`erf bench --parts precision --model YOURS`)")


def precision_help() -> str:
    """``--precision``'s help text, from :data:`PRECISIONS`."""
    return "; ".join(f"{p.name}: {p.help}" for p in PRECISIONS.values())


@functools.lru_cache(maxsize=1)
def cpu_bf16_units() -> list[str]:
    """The bf16 instruction sets of this machine's CPU (``avx512_bf16``, ``amx_bf16``) from ``/proc/cpuinfo``
    (empty where the file is absent, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [u for u in ("avx512_bf16", "amx_bf16") if u in flags]
    except OSError:
        pass
    return []


def bf16_supported(device: Any) -> bool:
    """Whether ``device`` (a :class:`torch.device` or its string) has native bf16 arithmetic."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return bool(cpu_bf16_units()) and torch.backends.mkldnn.is_available()
    return False


def resolve_precision(precision: str, device: Any) -> str:
    """``"bf16"`` or ``"fp32"`` for the requested ``precision`` on ``device``.

    Raises:
        InputError: an unknown name (param ``precision``).
    """
    if precision not in PRECISIONS:
        raise InputError(f"{precision!r}: use one of {', '.join(PRECISIONS)}", param="precision")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: Any) -> Iterator[None]:
    """The forward-pass context of a resolved ``precision`` (``bf16``: :func:`torch.autocast` in bfloat16 on
    ``device``'s type; ``fp32``: nothing)."""
    import torch

    if precision == "bf16":
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            yield
    else:
        yield
