"""Build notebooks/explore.ipynb from the cells below (run: python notebooks/build_explore.py).

The notebook is committed without outputs; CI executes it top to bottom (tests/test_notebook.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Exploring receptive fields with `erf`

This notebook loads the bundled plain and attention models (CIFAR ResNet-20 with and without CBAM,
trained on CPU on real CIFAR-10 images), lists their layers with theoretical receptive fields (TRF),
measures effective receptive fields (ERF) layer by layer, compares the two models, overlays the
object-size distribution of the images and reproduces the study's figure on a small budget.
It runs on CPU in a few minutes."""),
    ("code", """import matplotlib.pyplot as plt
import numpy as np
import torch

import erf
from erf import load_checkpoint, load_source
from erf.measure import measure
from erf.probes import theoretical_rf

torch.set_num_threads(2)
print(erf.__version__)
plain = load_checkpoint("resnet20")
cbam = load_checkpoint("resnet20_cbam")
for loaded in (plain, cbam):
    print(loaded.name, "trained:", loaded.trained, "test accuracy:", loaded.metadata.get("test_accuracy"))"""),
    ("md", """## Layers and their theoretical receptive fields
The TRF is computed analytically from the real graph. CBAM's channel gate pools over the whole map,
so every block after the first CBAM has a *global* TRF."""),
    ("code", """for loaded in (plain, cbam):
    trf = theoretical_rf(loaded.model)
    print(loaded.name)
    for name, t in trf.items():
        size = "global" if t.is_global else f"{t.size[0]} px"
        print(f"  {name:<15} map {t.feature_size}  TRF {size:<8} stride {t.stride[0]}")"""),
    ("md", """## ERF layer by layer
Luo et al.'s gradient ERF over 32 real test images, embedded in a 64 px canvas so the border does not
clip the deeper layers."""),
    ("code", """images = load_source("bundled", count=32)
layers = ["stem", "stage1.block3", "stage2.block3", "stage3.block3"]
results = {loaded.name: measure(loaded.model, layers, images, input_size=(64, 64), bootstrap=100)
           for loaded in (plain, cbam)}
from erf.plotting import draw_erf

fig, axes = plt.subplots(2, len(layers), figsize=(3 * len(layers), 6))
for row, (name, result) in enumerate(results.items()):
    for col, layer in enumerate(result.layers):
        draw_erf(axes[row, col], layer, title=f"{name} {layer.name}")
fig.tight_layout()"""),
    ("code", """fig, ax = plt.subplots(figsize=(6, 3.5))
for name, result in results.items():
    r95 = [layer.metrics.radius[0.95] for layer in result.layers]
    lo = [layer.ci["radius.95"][0] for layer in result.layers]
    hi = [layer.ci["radius.95"][1] for layer in result.layers]
    x = np.arange(len(layers))
    ax.errorbar(x, r95, yerr=[np.subtract(r95, lo), np.subtract(hi, r95)], marker="o", label=name, capsize=3)
ax.set_xticks(x, layers)
ax.set_ylabel("ERF radius holding 95% of the mass (px)")
ax.legend();"""),
]


def build(path: Path) -> None:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


if __name__ == "__main__":
    build(Path(__file__).with_name("explore.ipynb"))
