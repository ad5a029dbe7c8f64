"""The op-rule registry: :data:`RULES` maps a torch op name to the :class:`Rule` that propagates receptive
fields through it, filled by :func:`register_rule` (as torch's ``flop_registry`` by
``@register_flop_formula``).

A rule is one function ``rule(state, call) -> RuleResult`` decorated with the op names it serves and the
signature its arguments are read by. The arguments are bound once, by :func:`bind` (``inspect.Signature``
of that signature, the way torch binds an op's schema), so a rule reads ``call.params["stride"]`` and never
counts positions. Adding an op::

    @register_rule("pixel_shuffle", signature="input, upscale_factor")
    def pixel_shuffle(state: TraceState, call: Call) -> RuleResult:
        ...

Op names are the tracer's *base* names (:func:`erf.trf.tracer.base_name`): ``add`` serves ``add``,
``add_``, ``__add__``, ``__iadd__`` and ``__radd__`` is ``radd``.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch

from erf.trf.state import FieldState, RuleResult, TraceState


@dataclass
class Call:
    """One torch call as a rule sees it.

    Attributes:
        name: the op's base name (``conv2d``, ``add``, ``getitem``).
        func: the torch callable.
        args, kwargs: as called.
        out: what it returned; ``outs`` its tensors in order.
        x: the first positional argument when it is a tensor (the input), else ``None``.
        xinfo: the state of ``x``; ``union``: the union of every tracked argument's state.
        params: the arguments bound to the rule's signature (defaults applied); keywords it does not name in
            ``params["extra"]``.
    """

    name: str
    func: Any
    args: tuple
    kwargs: dict
    out: Any
    outs: list[torch.Tensor]
    flat: list[Any]
    x: torch.Tensor | None
    xinfo: FieldState | None
    union: FieldState | None
    params: dict[str, Any] = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor argument, in order."""
        return [t for t in self.flat if isinstance(t, torch.Tensor)]


RuleFunction = Callable[[TraceState, Call], RuleResult]


@dataclass(frozen=True)
class Rule:
    """An op rule: its function, the signature its arguments are bound to, and whether it needs a tensor
    first argument (without one the call is read as a broadcast, as the tracer does for any op)."""

    function: RuleFunction
    signature: str
    needs_input: bool = True


RULES: dict[str, Rule] = {}
"""Op base name -> its rule; the one place an op's treatment is chosen (ops absent here are pointwise when
their output has the broadcast shape of their tensor inputs, else global)."""


def register_rule(*names: str, signature: str = "input, *args", needs_input: bool = True
                  ) -> Callable[[RuleFunction], RuleFunction]:
    """Register the decorated function as the rule of every op in ``names`` (a name registered twice is an
    error: each op has one rule). ``signature``: the op's parameters as in a ``def`` (``"input, dim=None,
    keepdim=False"``); stack decorators for ops whose parameters differ."""
    _signature(signature)  # fail at import on a malformed signature

    def wrap(function: RuleFunction) -> RuleFunction:
        for name in names:
            if name in RULES:
                raise ValueError(f"op {name!r} already has a rule ({RULES[name].function.__name__})")
            RULES[name] = Rule(function, signature, needs_input)
        return function

    return wrap


@cache
def _signature(text: str) -> inspect.Signature:
    """``inspect.Signature`` of ``def f(TEXT, **extra)`` (and ``*extra_args`` unless ``TEXT`` has a ``*``
    parameter: positional arguments a rule does not read are accepted); defaults are Python literals."""
    if "*" not in text:
        text += ", *extra_args"
    tree = ast.parse(f"def f({text}, **extra): pass").body[0]
    assert isinstance(tree, ast.FunctionDef)
    a = tree.args
    params: list[inspect.Parameter] = []
    positional = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults)) + [ast.literal_eval(d)
                                                                                 for d in a.defaults]
    for arg, default in zip(positional, defaults):
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    if a.vararg is not None:
        params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY,
                                        default=inspect.Parameter.empty if default is None
                                        else ast.literal_eval(default)))
    params.append(inspect.Parameter("extra", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def bind(signature: str, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """``args`` and ``kwargs`` bound to ``signature`` with its defaults applied, or ``None`` when they do not
    fit (a required one missing): the one place arguments are read."""
    try:
        bound = _signature(signature).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


__all__ = ["Call", "RULES", "Rule", "RuleFunction", "bind", "register_rule"]
