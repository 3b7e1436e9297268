"""The compatibility matrix: checks (rows) x images (columns) x hosts.

Built on the controller from test reports (``pytest_runtest_logreport``), so it is the
same with and without xdist; written as versioned JSON and merged across hosts.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from typing import Any, TypedDict, cast

import pytest

CELL_KEY = "containercheck"
"""Key of the ``user_properties`` entry that carries a test's matrix cell."""

SCHEMA = "containercheck-matrix"
SCHEMA_VERSION = 1
STATUSES = ("pass", "fail", "error", "skip")
_RANK = {"pass": 0, "skip": 1, "fail": 2, "error": 3}


class CellRecord(TypedDict):
    """A cell as a test fills it in and its reports carry it (``user_properties``).

    Builtins only, so it crosses the xdist boundary unchanged; the controller folds it into
    a :class:`Cell` with :meth:`Matrix.update_from_report`.
    """

    row: str
    column: str
    status: str | None
    """Set only for an ``error`` (the check could not be carried out); else the report decides."""
    detail: str | None
    fix: str | None
    fault: str | None
    evidence: dict[str, Any]
    artifacts: dict[str, str]
    probes: dict[str, Any]
    column_facts: dict[str, Any]
    """How the image was launched (runtime, GPU outcome, container): the column's facts."""


def new_cell(row: str, column: str) -> CellRecord:
    """A blank cell for *row* of image *column*."""
    return {"row": row, "column": column, "status": None, "detail": None, "fix": None, "fault": None,
            "evidence": {}, "artifacts": {}, "probes": {}, "column_facts": {}}


def cell_record(report: pytest.TestReport) -> CellRecord | None:
    """The cell a test attached to *report*, if any."""
    for key, value in reversed(report.user_properties):
        if key == CELL_KEY and isinstance(value, dict):
            return cast(CellRecord, value)
    return None


@dataclasses.dataclass(eq=False)
class Cell:
    """One check on one image on one host."""

    row: str
    column: str
    host: str
    status: str
    detail: str = ""
    fix: str | None = None
    fault: str | None = None
    duration: float = 0.0
    nodeid: str = ""
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    probes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class Column:
    """One image as run on one host."""

    id: str
    host: str
    spec: str = ""
    runtime: str = ""
    ref: str = ""
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.host)


class Matrix:
    """Rows x columns of cells, plus host facts; order of first appearance is kept."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.columns: dict[tuple[str, str], Column] = {}
        self.cells: dict[tuple[str, str, str], Cell] = {}
        self.conflicts: list[Cell] = []
        """Cells that arrived for an existing (row, column, host): kept and shown, never dropped."""
        self.hosts: dict[str, dict[str, Any]] = {}
        self.complete = True
        self.meta: dict[str, Any] = {}

    # -- building -------------------------------------------------------------------------

    def add_column(self, column: Column) -> None:
        if column.key not in self.columns:
            self.columns[column.key] = column
        else:
            self.columns[column.key].facts.update(column.facts)

    def put(self, cell: Cell, *, conflict: bool = False) -> None:
        """Add or replace a cell; with *conflict*, an existing cell with another verdict is kept too.

        Only the status decides a conflict: details carry timings and versions, so two
        passing runs of one image on one host are duplicates (listed by merge), not a conflict.
        """
        if cell.row not in self.rows:
            self.rows.append(cell.row)
        if (cell.column, cell.host) not in self.columns:
            self.add_column(Column(cell.column, cell.host))
        key = (cell.row, cell.column, cell.host)
        old = self.cells.get(key)
        if conflict and old is not None and old.status != cell.status:
            self.conflicts.append(cell)
            if _RANK[cell.status] > _RANK[old.status]:  # the worse verdict is shown in the grid
                self.conflicts[-1] = old
                self.cells[key] = cell
            return
        self.cells[key] = cell

    def get(self, row: str, column: tuple[str, str]) -> Cell | None:
        return self.cells.get((row, column[0], column[1]))

    def update_from_report(self, report: pytest.TestReport, host: str) -> None:
        """Fold one setup/call/teardown report into its cell."""
        raw = cell_record(report)
        if raw is None:
            return
        key = (raw["row"], raw["column"], host)
        cell = self.cells.get(key)
        if cell is None:
            if report.when != "setup":
                return
            cell = Cell(row=raw["row"], column=raw["column"], host=host, status="pass", nodeid=report.nodeid)
            self.put(cell)
        cell.duration += report.duration
        for attr in ("fix", "fault"):
            if raw.get(attr):
                setattr(cell, attr, raw[attr])
        cell.evidence.update(raw.get("evidence") or {})
        cell.artifacts.update(raw.get("artifacts") or {})
        cell.probes.update(raw.get("probes") or {})
        detail = raw.get("detail")
        if report.passed:
            if report.when == "call":
                cell.status = "pass"
                cell.detail = detail or ""
            return
        if report.skipped:
            cell.status = "skip"
            cell.detail = detail or _skip_reason(report)
            return
        # failed
        if report.when == "call":
            cell.status = raw.get("status") or "fail"
        elif report.when == "setup" or cell.status == "pass":
            cell.status = "error"
        cell.detail = detail or _failure_line(report)

    # -- queries --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for c in self.cells.values():
            out[c.status] += 1
        return out

    def problems(self) -> list[Cell]:
        """Failed and errored cells, in row order."""
        return [c for r in self.rows for col in self.columns
                if (c := self.get(r, col)) is not None and c.status in ("fail", "error")]

    # -- (de)serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "complete": self.complete,
            "meta": self.meta,
            "hosts": self.hosts,
            "columns": [dataclasses.asdict(c) for c in self.columns.values()],
            "rows": list(self.rows),
            "cells": [c.to_dict() for c in self.cells.values()],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "summary": self.counts(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Matrix:
        if data.get("schema") != SCHEMA:
            raise ValueError("not a containercheck matrix file (no 'schema': 'containercheck-matrix')")
        if int(data.get("version", 0)) > SCHEMA_VERSION:
            raise ValueError(f"matrix schema version {data.get('version')} is newer than this "
                             f"containercheck understands ({SCHEMA_VERSION}); upgrade pytest-containercheck")
        m = cls()
        m.complete = bool(data.get("complete", True))
        m.meta = dict(data.get("meta") or {})
        m.hosts = dict(data.get("hosts") or {})
        for c in data.get("columns") or []:
            m.add_column(Column(**c))
        m.rows = list(data.get("rows") or [])
        for c in data.get("cells") or []:
            m.put(Cell.from_dict(c))
        for c in data.get("conflicts") or []:
            m.conflicts.append(Cell.from_dict(c))
        return m


def merge(matrices: Iterable[Matrix]) -> Matrix:
    """Join runs (typically from several hosts) into one matrix; disagreeing duplicate
    cells are kept in ``conflicts`` and the worse verdict is shown."""
    out = Matrix()
    for m in matrices:
        out.complete = out.complete and m.complete
        out.hosts.update(m.hosts)
        for col in m.columns.values():
            out.add_column(col)
        for row in m.rows:
            if row not in out.rows:
                out.rows.append(row)
        for cell in m.cells.values():
            out.put(cell, conflict=True)
        out.conflicts.extend(m.conflicts)
    return out


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr or "skipped").splitlines()[0]


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    msg = getattr(crash, "message", None) if crash is not None else None
    if not msg:
        msg = report.longreprtext
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    first = lines[0] if lines else "failed"
    return first.removeprefix("Failed: ")[:300]
