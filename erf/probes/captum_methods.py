"""The one table of captum methods that erf offers as probes (plain data, no torch or captum at import).

:mod:`erf.probes.registry` registers one probe per entry; :class:`erf.probes.captum_probes.CaptumProbe` reads
the class and options of its method here (a module of its own, so that neither imports the other).
"""

from __future__ import annotations

from typing import Any

CAPTUM_METHODS: dict[str, tuple[str, dict[str, Any], str]] = {
    "captum-gradient": ("NeuronGradient", {}, "captum's NeuronGradient (equal to gradient, slower)"),
    "integrated-gradients": ("NeuronIntegratedGradients", {"n_steps": 16},
                             "captum's NeuronIntegratedGradients (16 steps)"),
    "guided-backprop": ("NeuronGuidedBackprop", {}, "captum's NeuronGuidedBackprop"),
    "deconvolution": ("NeuronDeconvolution", {}, "captum's NeuronDeconvolution"),
}
"""Captum probe name -> (captum class, extra ``attribute`` kwargs, description): the one table of captum
methods (:class:`erf.probes.captum_probes.CaptumProbe` reads it)."""
