"""Rules of linear maps and contractions: ``linear``, the ``matmul`` family, ``einsum`` and attention.

Per position when they contract a dim without spatial factors (ConvNeXt's channels-last MLP, a ViT's per-token
MLP, layer scale); global when they contract a spatial dim, when a product of two input-dependent tensors pairs
positions (attention scores ``q k^T``), when a weight depends on the input, and for attention ops over tokens.
"""

from __future__ import annotations

import torch

from erf.trf.layout import Dim, Layout, fits, merge_dims, plain, plain_layout
from erf.trf.rules.registry import Call, register_rule
from erf.trf.state import FieldState, RuleResult, TraceState, relaid

_MATMULS = ("matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "inner", "outer",
            "rmatmul")
_ATTENTION = ("scaled_dot_product_attention", "multi_head_attention_forward", "_native_multi_head_attention")


@register_rule("linear", signature="input, weight, bias=None")
def linear(state: TraceState, call: Call) -> RuleResult:
    """``F.linear``: per position over a dim without spatial factors."""
    x, union, outs, weight, bias = call.x, call.union, call.outs, call.params["weight"], call.params["bias"]
    assert x is not None
    if state.get(x) is None or state.get(weight) is not None or state.get(bias) is not None:
        return state.global_(union, "linear", "input-dependent weight")
    lay = state.layout(x)
    new = lay[:-1] + (plain(outs[0].shape[-1]),) if outs and outs[0].ndim == x.ndim else None
    if x.ndim and lay[-1].spatial:
        return state.global_(union, "linear", "over a spatial axis", new)
    return relaid(union, new)


def _mm_layout(state: TraceState, a: torch.Tensor, b: torch.Tensor) -> tuple[Layout | None, str | None]:
    """Layout of ``a @ b`` and, when positions are mixed, why."""
    la = list(state.layout(a) if state.get(a) is not None else plain_layout(a.shape))
    lb = list(state.layout(b) if state.get(b) is not None else plain_layout(b.shape))
    a1, b1 = a.ndim == 1, b.ndim == 1
    if a1:
        la = [plain(1)] + la
    if b1:
        lb = lb + [plain(1)]
    ka, n_dim = la[-1], la[-2]
    kb, m_dim = lb[-2], lb[-1]
    reason = None
    if ka.spatial or kb.spatial:
        reason = "contracts a spatial axis"
    if n_dim.spatial and m_dim.spatial:
        reason = reason or "pairs positions of two input-dependent tensors (attention scores)"
        m_dim = plain(m_dim.size)
    batch_a, batch_b = la[:-2], lb[:-2]
    nb = max(len(batch_a), len(batch_b))
    batch: list[Dim] = []
    for d in range(nb):
        ka_ = d - (nb - len(batch_a))
        kb_ = d - (nb - len(batch_b))
        da = batch_a[ka_] if ka_ >= 0 else None
        db = batch_b[kb_] if kb_ >= 0 else None
        found, bad = merge_dims([da, db])
        if bad:
            reason = reason or "operands' spatial axes disagree"
        size = max(da.size if da else 1, db.size if db else 1)
        batch.append(found if found is not None else plain(size))
    dims = batch + ([] if a1 else [n_dim]) + ([] if b1 else [m_dim])
    spatial_labels = [f[0] for dim in dims for f in dim.factors if f[0] is not None]
    if len(spatial_labels) != len(set(spatial_labels)):
        reason = reason or "pairs positions"
    return tuple(dims), reason


@register_rule(*_MATMULS, signature="*operands", needs_input=False)
def matmul(state: TraceState, call: Call) -> RuleResult:
    """Matrix products (``x @ w``, ``addmm``...): per position unless a spatial dim is contracted or paired."""
    base, union, outs = call.name, call.union, call.outs
    tens = [t for t in call.args if isinstance(t, torch.Tensor)]
    if base in ("addmm", "baddbmm", "addbmm", "addmv"):
        extra, pair = tens[:1], tens[1:3]
    else:
        extra, pair = [], tens[:2]
    if base == "rmatmul":
        pair = pair[::-1]
    if len(pair) != 2 or not outs:
        return state.global_(union, base)
    a, b = pair
    if base in ("dot", "vdot", "inner"):
        spatial = any(state.get(t) is not None and state.layout(t)[-1].spatial for t in (a, b))
        return state.global_(union, base, "contracts a spatial axis") if spatial else union
    if base == "outer":
        a, b = a.reshape(-1, 1), b.reshape(1, -1)
    lay, reason = _mm_layout(state, a, b)
    if base == "addbmm" and lay is not None:
        if lay[0].spatial:
            reason = reason or "sums over a spatial axis"
        lay = lay[1:]
    if lay is not None and extra:
        ext_lay, bad = state.broadcast(extra, outs[0].shape)
        merged = []
        for d, e in zip(lay, ext_lay):
            found, conflict = merge_dims([d, e])
            bad = bad or conflict
            merged.append(found if found is not None else d)
        lay = tuple(merged)
        if bad:
            reason = reason or "operands' spatial axes disagree"
    if lay is not None and not fits(lay, outs[0].shape):
        lay = None
    if reason is not None:
        return state.global_(union, base, reason, lay)
    return relaid(union, lay)


@register_rule("einsum", signature="equation, *operands", needs_input=False)
def einsum(state: TraceState, call: Call) -> RuleResult:
    """``einsum``: per position unless a spatial letter is summed or two operands' positions are paired."""
    union, outs = call.union, call.outs
    equation = str(call.params["equation"]).replace(" ", "")
    operands = list(call.params["operands"])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands) or "..." in equation or not outs:
        return state.global_(union, "einsum", layout=None)
    if not rhs and "->" not in equation:
        letters = [c for c in lhs if c.isalpha()]
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    seen: dict[str, list[tuple[int, Dim]]] = {}
    for k, (term, op) in enumerate(zip(terms, operands)):
        if state.get(op) is None:
            continue
        lay = state.layout(op)
        for letter, dim in zip(term, lay):
            if dim.spatial:
                seen.setdefault(letter, []).append((k, dim))
    reason = None
    if any(letter not in rhs for letter in seen):
        reason = "contracts a spatial axis"
    owners = {letter: {k for k, _ in seen[letter]} for letter in rhs if letter in seen}
    pairs = any(not (owners[a] & owners[b]) for a in owners for b in owners)
    if pairs:
        reason = reason or "pairs positions of two input-dependent tensors (attention scores)"
    keep = min(min(o) for o in owners.values()) if owners else None
    dims: list[Dim] = []
    for letter, size in zip(rhs, outs[0].shape):
        cands = seen.get(letter, [])
        if pairs:  # keep the positions of one operand only (the scores are global anyway)
            cands = [(k, d) for k, d in cands if k == keep]
        found, bad = merge_dims([d for _, d in cands])
        if bad:
            reason = reason or "operands' spatial axes disagree"
        dims.append(found if found is not None else plain(size))
    out = tuple(dims) if fits(tuple(dims), outs[0].shape) else None
    if reason is not None:
        return state.global_(union, "einsum", reason, out)
    return relaid(union, out)


@register_rule(*_ATTENTION, signature="query=None, *rest", needs_input=False)
def attention(state: TraceState, call: Call) -> RuleResult:
    """Attention over tokens (``scaled_dot_product_attention``, multi-head attention): global; the first
    output keeps the query's positions."""
    q, union, outs = call.params["query"], call.union, call.outs
    lay: Layout | None = None
    if isinstance(q, torch.Tensor) and outs and outs[0].ndim == q.ndim:
        ql = state.layout(q)
        lay = ql[:-1] + (plain(outs[0].shape[-1]),)
        if not fits(lay, outs[0].shape):
            lay = None
    first: FieldState | None = state.global_(union, call.name, "attention over tokens", lay)
    return [first] + [state.global_(union, call.name, "attention over tokens")] * (len(outs) - 1)


__all__ = ["attention", "einsum", "linear", "matmul"]
