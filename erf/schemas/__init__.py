"""JSON Schemas (draft 2020-12) of the documents ``erf`` writes, one per command.

``erf/schemas/<name>.schema.json`` describes the ``"erf.<name>/1"`` document
(``measure`` -> ``measure.json`` of ``erf measure --json --out DIR``).

>>> from erf.schemas import load_schema, validate
>>> validate(doc, "measure")        # raises jsonschema.ValidationError when invalid

``jsonschema`` is a test-only dependency: :func:`validate` uses it when it is
installed and otherwise does nothing (returns ``False``); library code never needs it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _load(name: str) -> str:
    return resources.files("erf.schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``erf/schemas/<name>.schema.json`` as a dict (``FileNotFoundError`` if absent)."""
    return json.loads(_load(name))


def validate(doc: Any, name: str) -> bool:
    """Validate ``doc`` against ``<name>.schema.json`` with jsonschema's Draft 2020-12 validator.

    Returns:
        True when validated, False when jsonschema is not installed (nothing checked).

    Raises:
        jsonschema.ValidationError: ``doc`` does not match the schema.
    """
    schema = load_schema(name)
    try:
        import jsonschema
    except ImportError:
        return False
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(doc)
    return True


__all__ = ["load_schema", "validate"]
