"""Process-group set-up for ``erf measure --distributed`` (and ``torchrun -m erf measure``).

Images are sharded by batch over ranks; each rank accumulates float64 sums
and they are all-reduced (:func:`erf.measure`), so the result equals a
single-process run up to float rounding. Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from erf.errors import InputError

MAX_WORLD_SIZE = 4096
"""More processes than this in ``WORLD_SIZE`` is taken as a garbage environment, not a real job."""
JOIN_TIMEOUT_S = 300
"""Seconds to wait for every rank to join (``ERF_DIST_TIMEOUT`` overrides): a missing rank ends in an error, not a
hang of the default 30 minutes."""


def _env_int(name: str, low: int, high: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        raise InputError(f"{name} is not set; launch with `torchrun --nproc-per-node K -m erf measure ... "
                         "--distributed`", param="distributed")
    try:
        value = int(text.strip())
    except ValueError:
        raise InputError(f"{name}={text!r} is not an integer (set by torchrun)", param="distributed") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InputError(f"{name}={value} must be {bound}", param="distributed")
    return value


def env_rank() -> int:
    """This process's rank from torchrun's environment (``RANK`` and ``WORLD_SIZE``), checked.

    Raises:
        InputError: a variable is missing, not an integer, or out of range (``0 <= RANK < WORLD_SIZE <=``
            :data:`MAX_WORLD_SIZE`).
    """
    world = _env_int("WORLD_SIZE", 1, MAX_WORLD_SIZE)
    return _env_int("RANK", 0, world - 1)


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment; return ``(rank, world size)``.

    Raises:
        InputError: a garbage environment (see :func:`env_rank`; ``LOCAL_RANK``, ``MASTER_ADDR``,
            ``MASTER_PORT``), or the group cannot be joined (a rank missing after :data:`JOIN_TIMEOUT_S`).
    """
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env_rank()
    local = _env_int("LOCAL_RANK", 0) if "LOCAL_RANK" in os.environ else 0
    if not os.environ.get("MASTER_ADDR"):
        raise InputError("MASTER_ADDR is not set (set by torchrun)", param="distributed")
    _env_int("MASTER_PORT", 1, 65535)
    try:
        timeout = float(os.environ.get("ERF_DIST_TIMEOUT", JOIN_TIMEOUT_S))
    except ValueError:
        timeout = JOIN_TIMEOUT_S
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    try:
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError, OSError) as exc:  # DistNetworkError / DistStoreError are RuntimeErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot join the process group ({first})", param="distributed") from None
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def process_group(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """:func:`init_from_env` for the duration of a ``with`` block; yields ``(rank, world size)``.

    The group is destroyed on the way out (also after an error) when this block created it: a process that
    exits with a live gloo group can abort in its threads' teardown ("terminate called without an active
    exception", exit code -6), which torchrun reports as a failed run although every rank finished.
    """
    import torch.distributed as dist

    created = not dist.is_initialized()
    rank_world = init_from_env(device)
    try:
        yield rank_world
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
