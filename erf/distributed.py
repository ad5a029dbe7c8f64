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


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment; return ``(rank, world size)``."""
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise InputError("--distributed: RANK/WORLD_SIZE are not set; launch with "
                         "`torchrun --nproc-per-node K -m erf measure ... --distributed`")
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
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
