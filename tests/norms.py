"""Random norm layers for tests (not a test): one randomiser, shared by every test file that needs one.

A freshly built model's norm layers are the identity in eval mode (running mean 0, variance 1, weight 1,
bias 0): a test that loses a buffer, mixes up train and eval mode or applies batch norm at the wrong
place would still pass. :func:`randomise_norms` makes them non-trivial.
"""

from __future__ import annotations

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_GATES = ("SqueezeExcit", "SEModule", "SqueezeExcite")


def randomise_norms(model: nn.Module, rng: int | torch.Generator | None = 0, *, open_gates: bool = False,
                    batches_tracked: int | None = None) -> nn.Module:
    """Random norm statistics and affine parameters, random layer scales; returns ``model`` in eval mode.

    Module by module, in ``model.modules()`` order, drawing uniformly in this order:

    - every batch norm with running statistics: ``running_mean`` in [-0.5, 0.5], ``running_var`` in
      [0.5, 2.0] (and ``num_batches_tracked`` set to ``batches_tracked`` when given: a round trip that
      loses that buffer then shows);
    - every batch norm, ``LayerNorm`` and ``GroupNorm``: ``weight`` in [0.5, 1.5], ``bias`` in [-0.2, 0.2]
      (where they exist);
    - every parameter named ``gamma*``, ``scale`` or ``*layer_scale*`` (ConvNeXt, timm): [0.5, 1.5];
    - ``open_gates`` (the zoo oracle's use): the first convolution or linear layer of every
      squeeze-and-excitation block (class name ``SqueezeExcit*`` / ``SEModule``) gets its weights / 10
      and a bias of +1, so its hidden ReLUs are on and its gate is far from the flat parts of a hard
      sigmoid (no draw).

    ``rng``: a seed (a fresh generator, so the values depend on the seed alone), a generator (advanced:
    the caller may go on drawing from it) or ``None``, torch's global generator (the draws continue the
    stream of the last ``torch.manual_seed``).
    """
    gen = torch.Generator().manual_seed(rng) if isinstance(rng, int) else rng
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                if batches_tracked is not None and m.num_batches_tracked is not None:
                    m.num_batches_tracked.fill_(batches_tracked)
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if isinstance(m, _NORMS):
                if weight is not None:
                    weight.uniform_(0.5, 1.5, generator=gen)
                if bias is not None:
                    bias.uniform_(-0.2, 0.2, generator=gen)
            for name, p in m.named_parameters(recurse=False):
                if name in ("gamma", "layer_scale", "scale") or "layer_scale" in name or name.startswith("gamma"):
                    p.uniform_(0.5, 1.5, generator=gen)
            if open_gates and any(key in type(m).__name__ for key in _GATES):
                first = next((c for c in m.modules() if isinstance(c, (nn.Conv2d, nn.Linear))), None)
                if first is not None and first.bias is not None:
                    first.weight.mul_(0.1)  # pre-activations near +1: on, and the gate far from saturation
                    first.bias.fill_(1.0)
    return model.eval()
