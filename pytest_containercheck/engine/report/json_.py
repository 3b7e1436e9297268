"""Matrix -> JSON (schema documented in docs/matrix-schema.md)."""

from __future__ import annotations

import json
import math
from typing import Any

from ..matrix import Matrix


def render_json(matrix: Matrix) -> str:
    """The matrix as a strict JSON document (schema ``containercheck-matrix`` v1).

    Strict: a fact of NaN or infinity (a probe may measure one) is written as ``null``,
    never as the bare ``NaN`` that JavaScript's ``JSON.parse`` and ``jq`` reject.
    """
    return json.dumps(finite(matrix.to_dict()), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    """*value* with every non-finite float replaced by None (containers rebuilt, others as they are)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
