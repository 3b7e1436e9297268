"""Matrix -> JSON (schema documented in docs/matrix-schema.md)."""

from __future__ import annotations

import json

from ..matrix import Matrix


def render_json(matrix: Matrix) -> str:
    """The matrix as a JSON document (schema ``containercheck-matrix`` v1)."""
    return json.dumps(matrix.to_dict(), indent=2, sort_keys=False, default=str) + "\n"
