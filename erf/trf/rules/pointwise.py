"""Pointwise ops: the output at a position depends on the operands at that position only, so the field is
the union of the operands' fields (an operand without a map, a pooled gate, makes it global if it is but does
not widen the box). Pointwise is also what the tracer assumes for an op without a rule whose outputs have the
broadcast shape of its inputs; :data:`POINTWISE` lists the ops known to be pointwise, so that only the others
are reported as assumed (``TRFTrace.assumed_pointwise``).
"""

from __future__ import annotations

POINTWISE = frozenset({
    "add", "sub", "mul", "div", "truediv", "rtruediv", "radd", "rsub", "rmul", "neg", "abs", "relu",
    "relu6", "hardtanh", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "hardsigmoid", "hardswish",
    "elu", "selu", "celu", "softplus", "mish", "exp", "log", "sqrt", "rsqrt", "pow", "clamp", "clip",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "where", "maximum", "minimum", "square", "reciprocal", "addcmul", "addcdiv", "lerp", "sign",
    "floor", "ceil", "round", "zero", "fill", "copy", "masked_fill", "threshold", "prelu", "rrelu",
    "logsigmoid", "erf", "sin", "cos", "softsign", "tanhshrink", "hardshrink", "softshrink",
    "eq", "ne", "lt", "le", "gt", "ge", "clamp_min", "clamp_max", "exp2", "expm1", "log1p", "log2", "log10",
    "floordiv", "remainder", "fmod", "mod", "and", "or", "xor", "invert", "logical_not", "logical_and",
    "logical_or", "nan_to_num", "erfc", "erfinv", "sinh", "cosh", "atan", "asin", "acos", "hypot", "atan2",
    "rpow", "rdiv", "rfloordiv", "sgn", "trunc", "frac", "isnan", "isinf", "isfinite", "float_power",
    "positive", "negative", "dropout_", "sigmoid_", "silu_", "fmax", "fmin", "heaviside", "logit",
})
"""Base names of the known pointwise ops."""

__all__ = ["POINTWISE"]
