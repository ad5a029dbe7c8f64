"""Shared fixtures (kept small on purpose)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_PREFIX = Path(
    os.environ.get("ERF_CIFAR10_PREFIX", Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_prefix.npz")
)
"""Real CIFAR-10 prefix (4660 train / 932 test images) shared next to the repository, if present."""


@pytest.fixture
def cifar10_prefix() -> Path:
    """Path of the shared real CIFAR-10 prefix npz; skips the test (with the reason) when it is absent."""
    if not SHARED_PREFIX.is_file():
        pytest.skip(f"real CIFAR-10 prefix not found at {SHARED_PREFIX} (set ERF_CIFAR10_PREFIX)")
    return SHARED_PREFIX


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit_code, stdout, stderr)`` through :func:`erf.cli.main`."""
    from erf.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own usage errors (bad choices, missing arguments): exit 2
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine many tiny float64 ops are faster so (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
