"""Independent references and small models shared by several test files (no fixtures here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from erf.layers import resolve_layer


def reference_map(model: nn.Module, layer: str, unit: tuple[int, int], x: torch.Tensor,
                  mode: str = "abs") -> np.ndarray:
    """Independent reference: one image at a time, full forward (no crop, no early stop), plain autograd.

    Returns ``(N, H, W)`` float64 maps ``sum_c |d sum_k a_k[i, j] / d x[c]|`` (mode ``abs``) or RepLKNet's
    ``sum_c relu(d sum_k relu(a_k[i, j]) / d x[c])`` (mode ``relu``, RepLKNet's script).
    """
    module = dict(model.named_modules())[resolve_layer(model, layer).path]
    maps = []
    for n in range(x.shape[0]):
        xi = x[n: n + 1].clone().requires_grad_(True)
        store = {}
        handle = module.register_forward_hook(lambda m, i, o, store=store: store.setdefault("out", o))
        try:
            model(xi)
        finally:
            handle.remove()
        act = store["out"][0, :, unit[0], unit[1]]
        if mode == "relu":
            act = torch.relu(act)
        (g,) = torch.autograd.grad(act.sum(), xi)
        g = g.abs() if mode == "abs" else torch.relu(g)
        maps.append(g[0].double().sum(0).numpy())
    return np.stack(maps)


class BypassesHooks(nn.Module):
    """Calls its stage as ``self.stage.forward(x)``, bypassing the stage's hooks (as the article's source)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.named_layers = {"stem": "stem", "stage1": "stage"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage.forward(self.stem(x))


TINY_RESNEXT = {"cardinality": 2, "base_width": 1}
"""ResNeXt-29 at reduced width: same topology (3 stages x 3 bottlenecks, strides, CBAM), 2 groups of width 1."""


def tiny_model(name: str) -> nn.Module:
    """Registered model ``name`` in eval mode, seeded weights; ResNeXt-29 entries at :data:`TINY_RESNEXT` width."""
    from erf.models import get_entry

    entry = get_entry(name)
    torch.manual_seed(0)
    model = entry.build(**TINY_RESNEXT) if entry.family == "resnext29" else entry.build()
    return model.eval()


def assert_cli_error(run_cli, argv: list[str], command: str, fragments: list[str]) -> str:
    """Run ``erf argv``; expect exit 2, one ``erf COMMAND: error:`` line naming every fragment, no traceback."""
    code, _, err = run_cli(*argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"erf {command}: error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
