"""notebooks/explore.ipynb runs top to bottom on CPU (executed with nbclient, as CI does)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="test extra nbformat is required (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="test extra nbclient is required (pip install -e '.[test]')")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


def test_notebook_is_committed_without_stale_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_notebook_matches_its_builder(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_explore", NOTEBOOK.with_name("build_explore.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "explore.ipynb")
    built = nbformat.read(tmp_path / "explore.ipynb", as_version=4)
    committed = nbformat.read(NOTEBOOK, as_version=4)

    def cells(nb):  # the builder gives stable ids, so they are compared too (not the JSON layout of nbformat)
        return [(c.cell_type, c.get("id"), c.source) for c in nb.cells]

    assert cells(built) == cells(committed) and built.metadata == committed.metadata, \
        "notebooks/explore.ipynb is stale: run python notebooks/build_explore.py"


def test_notebook_runs_top_to_bottom(tmp_path):
    work = tmp_path / "explore.ipynb"
    shutil.copy(NOTEBOOK, work)
    nb = nbformat.read(work, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5, ("the notebook should draw heatmaps, radius vs depth, the comparison (returned as a "
                              "figure), object sizes and the controlled study's gain")
