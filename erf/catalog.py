"""A torch-free copy of the model registry's table for ``erf models`` (which then answers in a fraction of a second
instead of importing torch): ``erf/catalog.json``, written from the registry by ``python -m erf.catalog``.

The copy is used only while it is current: it records a fingerprint of the sources that register models
(``erf/models/*.py``); when they differ from the fingerprint (a model added, a description changed),
:func:`read_catalog` returns ``None`` and ``erf models`` asks the registry itself (slower, never wrong).
``tests/test_voc_mat_crowd.py`` checks that the committed copy is current and equal to the registry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("catalog.json")
MODEL_SOURCES = Path(__file__).with_name("models")
WEIGHTS = Path(__file__).with_name("weights")
BUNDLED_SUFFIXES = (".safetensors", ".pt")
"""Suffixes of bundled weights ``erf/weights/NAME{suffix}``, in the order they are looked up (safetensors, which
cannot carry code, first)."""
FIELDS = ("name", "params", "family", "attention", "twin", "aliases", "description")
"""The columns of one model in the catalog (bundled weights are looked up as files at run time)."""


def fingerprint() -> str:
    """SHA-256 over the names and bytes of ``erf/models/*.py`` (the modules that register models)."""
    digest = hashlib.sha256()
    for path in sorted(MODEL_SOURCES.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_catalog() -> dict[str, Any]:
    """The catalog from the live registry (imports torch and every model family)."""
    from erf.models import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        rows.append({"name": name, "params": entry.parameter_count(), "family": entry.family,
                     "attention": entry.attention, "twin": entry.twin, "aliases": list(entry.aliases),
                     "description": entry.description})
    return {"schema": "erf.catalog/1", "fingerprint": fingerprint(), "models": rows}


def read_catalog() -> list[dict[str, Any]] | None:
    """The catalog's rows when the file exists and is current (fingerprint equal), else ``None``."""
    try:
        doc = json.loads(CATALOG.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("fingerprint") != fingerprint() or not isinstance(doc.get("models"), list):
        return None
    return [dict(row) for row in doc["models"]]


def has_bundled_weights(name: str) -> bool:
    """Whether the package ships trained weights for registry model ``name`` (``erf/weights/NAME.safetensors`` or
    ``NAME.pt``)."""
    return any((WEIGHTS / f"{name}{suffix}").is_file() for suffix in BUNDLED_SUFFIXES)


def write_catalog() -> Path:
    """Write :data:`CATALOG` from the registry; returns its path."""
    CATALOG.write_text(json.dumps(build_catalog(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return CATALOG


if __name__ == "__main__":
    print(f"wrote {write_catalog()}")
