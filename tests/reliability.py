"""Shared by test_bad_checkpoints.py, test_bad_inputs.py and test_safe_outputs.py (not a test).

The reliability suite (issues 9 and 17): bad checkpoints, bad inputs, outputs that are never half written.
"""

from __future__ import annotations

import signal
from pathlib import Path

import torch

from erf.models import create_model

FAST = ["--images", "4", "--bootstrap", "0", "--no-plots"]
"""``erf measure`` arguments of a run that takes a second: 4 images, no bootstrap, no figures."""


def as_from_a_terminal() -> None:
    """``preexec_fn`` of a child a test will Ctrl-C: SIGINT at its default, as a terminal gives it. A suite started
    in the background (``cmd &``, ``nohup``) inherits SIGINT ignored; its children would then never see the signal
    and a Ctrl-C test would pass or fail for a reason outside erf."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def model_state(name: str = "twoconv", seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of registered model ``name`` built after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return create_model(name).state_dict()


def nan_checkpoint(tmp: Path) -> Path:
    """A raw ``twoconv`` state dict with one NaN weight and one infinite bias (``tmp / "nan.pth"``)."""
    state = model_state()
    state["conv1.weight"] = state["conv1.weight"].clone()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"] = state["fc.bias"].clone()
    state["fc.bias"][1] = float("inf")
    torch.save(state, tmp / "nan.pth")
    return tmp / "nan.pth"
