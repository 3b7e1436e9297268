"""The built-in checks, one module per row family, collected with ``--image``.

:func:`builtin_rows` is their registry: each row and the probes it declares, read from the
checks' own markers, for whatever needs the list outside a pytest run (the GPU kit, tests, docs).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

import pytest

from ..engine.policy import CheckOptions
from ..engine.probing import canonical_params
from ..rows import ORDER_MARKER, PROBE_MARKER, ROW_MARKER, USER_ORDER

__all__ = ["BuiltinRow", "builtin_rows"]


@dataclasses.dataclass(frozen=True)
class BuiltinRow:
    """One built-in row: its name, where it goes, and the probes its check declares."""

    name: str
    order: int
    probes: tuple[tuple[str, str], ...]
    """``(probe, canonical params JSON)`` per ``containercheck_probe`` marker (module's first)."""
    doc: str = ""
    """What the row proves: the first paragraph of its check's docstring, on one line."""
    module: str = ""
    """The check module that declares it (``test_system``)."""


def _marks(obj: object) -> list[pytest.Mark]:
    # A module's pytestmark holds MarkDecorators (one or a list); a function's, Marks.
    found = getattr(obj, "pytestmark", [])
    marks = [getattr(m, "mark", m) for m in (found if isinstance(found, list) else [found])]
    return [m for m in marks if isinstance(m, pytest.Mark)]


def _named(marks: Iterable[pytest.Mark], name: str) -> list[pytest.Mark]:
    return [m for m in marks if m.name == name]


def builtin_rows(options: CheckOptions | None = None) -> list[BuiltinRow]:
    """Every built-in row in matrix order, with the probes it reads; probe parameters that are
    functions of the options are evaluated with *options* (default: the default options)."""
    options = options or CheckOptions()
    rows: list[BuiltinRow] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module_marks = _marks(module)
        for attr, fn in vars(module).items():  # definition order, as pytest collects them
            if not (attr.startswith("test_") and callable(fn)):
                continue
            marks = _marks(fn)
            row = _named(marks, ROW_MARKER)
            order = _named(marks, ORDER_MARKER) or _named(module_marks, ORDER_MARKER)
            probes = []
            for mark in _named(module_marks, PROBE_MARKER) + _named(marks, PROBE_MARKER):
                params: Any = mark.kwargs.get("params") or {}
                probes.append((str(mark.args[0]), canonical_params(params(options) if callable(params) else params)))
            doc = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
            rows.append(BuiltinRow(str(row[0].args[0]) if row else attr.removeprefix("test_"),
                                   int(order[0].args[0]) if order else USER_ORDER, tuple(probes), doc, info.name))
    return sorted(rows, key=lambda r: r.order)  # stable: each module keeps its own order
