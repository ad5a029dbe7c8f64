"""(Not a test) closed forms the TRF tests compare the tracer with, computed independently of it."""

from __future__ import annotations

from collections.abc import Sequence


def receptive_field_size_formula(kernels: Sequence[int], strides: Sequence[int],
                                 dilations: Sequence[int] | None = None) -> int:
    """Side in input px of a chain of windows: ``r_0 = 1 + sum_l (k_eff_l - 1) prod_{i<l} s_i`` (Araujo et al.)."""
    dilations = dilations or [1] * len(kernels)
    r, jump = 1, 1
    for k, s, d in zip(kernels, strides, dilations):
        r += (d * (k - 1)) * jump
        jump *= s
    return r
