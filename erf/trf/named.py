"""The TRF of named layers (:func:`theoretical_rf`): the tracer of :mod:`erf.trf.tracer` read at the
layers of :mod:`erf.layers` (stable names, module paths, or every named layer)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from erf.errors import LayerDidNotRunError
from erf.layers import named_layers, resolve_layer
from erf.trf.field import TRF
from erf.trf.tracer import trace_receptive_fields


def theoretical_rf(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    input_size: Sequence[int] = (32, 32),
    channels: int = 3,
) -> dict[str, TRF]:
    """TRF of each layer (stable names or module paths; default: every named layer).

    Without ``layers``: every name of :func:`erf.layers.named_layers` (for models without
    a convention, the stages derived by :mod:`erf.stages`: ``stem``, ``stageN``,
    ``stageN.blockM``, then the heads) that ran.

    Returns:
        ``{layer name: TRF}`` in the order given.

    Raises:
        LayerNotFoundError: an unknown layer name.
        LayerDidNotRunError: the layer's hook never fired (e.g. it is called via ``.forward``).
    """
    trace = trace_receptive_fields(model, input_size, channels)
    names = list(layers) if layers is not None else list(named_layers(model))
    out: dict[str, TRF] = {}
    for name in names:
        layer = resolve_layer(model, name)
        if layer.path not in trace.trf:
            raise LayerDidNotRunError(
                f"layer {name!r} ({layer.path}) never ran through its forward hook; the model may call "
                "it as `module.forward(x)`, which bypasses hooks"
            )
        out[name] = trace.trf[layer.path]
    return out
