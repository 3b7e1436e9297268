"""The compatibility matrix: checks (rows) x images (columns) x hosts.

Built on the controller from test reports (``pytest_runtest_logreport``), so it is the
same with and without xdist; written as versioned JSON and merged across hosts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable
from typing import Any, Protocol, TypedDict, TypeVar, cast

CELL_KEY = "containercheck"
"""Key of the ``user_properties`` entry that carries a test's matrix cell."""

SCHEMA = "containercheck-matrix"
SCHEMA_VERSION = 1
STATUSES = ("pass", "fail", "error", "skip", "interrupted", "xfail")
"""``interrupted``: the check began but the run ended (Ctrl-C, SIGTERM) before it did: not run.
``xfail``: the check failed, and the image's expectations allow that row to fail (an expected
failure, pytest's ``xfailed``): shown with its reason, not counted as a problem."""
_RANK = {"pass": 0, "skip": 1, "xfail": 2, "interrupted": 3, "fail": 4, "error": 5}
INTERRUPTED_DETAIL = "not run to the end: the run was interrupted (Ctrl-C or SIGTERM) while this check ran"


class ReportLike(Protocol):
    """What the matrix reads of a test report: pytest's ``TestReport`` has it, and so does any
    stand-in, so the engine folds reports without importing pytest."""

    @property
    def when(self) -> str | None: ...
    @property
    def nodeid(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def passed(self) -> bool: ...
    @property
    def skipped(self) -> bool: ...
    @property
    def longrepr(self) -> Any: ...
    @property
    def longreprtext(self) -> str: ...
    @property
    def user_properties(self) -> Any: ...


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
    gate: dict[str, Any] | None
    """The gate's outcome for this cell (:meth:`~.gate.Outcome.to_dict`), set by the plugin from
    the test's report: what the check observed, the status it gets, who required or allowed it."""


def new_cell(row: str, column: str) -> CellRecord:
    """A blank cell for *row* of image *column*."""
    return {"row": row, "column": column, "status": None, "detail": None, "fix": None, "fault": None,
            "evidence": {}, "artifacts": {}, "probes": {}, "column_facts": {}, "gate": None}


def cell_record(report: ReportLike) -> CellRecord | None:
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
    gate: dict[str, Any] | None = None
    """What the CI gate made of this cell (:class:`~.gate.Outcome` as builtins): the status the
    check observed, and who required the row or allowed it to fail; None where nothing was gated
    (a matrix written before the gate was recorded)."""

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
    expectations: dict[str, Any] | None = None
    """What the CI gate asked of this image and which source said so
    (:meth:`~.expectations.Expectation.to_dict`); None in a matrix written before it was recorded."""

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

    def update_from_report(self, report: ReportLike, host: str) -> None:
        """Fold one setup/call/teardown report into its cell."""
        raw = cell_record(report)
        if raw is None:
            return
        key = (raw["row"], raw["column"], host)
        cell = self.cells.get(key)
        if cell is None:
            if report.when != "setup":
                return
            # Until its call report says otherwise, a check that was set up has not finished:
            # an interrupt (which ends the run without a call report) leaves it "interrupted".
            cell = Cell(row=raw["row"], column=raw["column"], host=host, status="interrupted",
                        detail=INTERRUPTED_DETAIL, nodeid=report.nodeid)
            self.put(cell)
        cell.duration += report.duration
        for attr in ("fix", "fault"):
            if raw.get(attr):
                setattr(cell, attr, raw[attr])
        cell.evidence.update(raw.get("evidence") or {})
        cell.artifacts.update(raw.get("artifacts") or {})
        cell.probes.update(raw.get("probes") or {})
        detail = raw.get("detail")
        gate = raw.get("gate")
        if gate:
            cell.gate = dict(gate)
        if report.passed:
            if report.when == "call":
                cell.status = "pass"
                cell.detail = detail or ""
            return
        if getattr(report, "wasxfail", None) is not None and report.skipped and report.when == "call":
            cell.status = "xfail"  # failed, as its expectations allow: the failure is what it shows
            cell.detail = detail or _failure_line(report)
            if not (cell.gate or {}).get("allowed_by"):
                cell.evidence["xfail"] = str(getattr(report, "wasxfail", "") or "")  # what the test's mark said
            return
        if report.skipped:
            cell.status = "skip"
            cell.detail = detail or _skip_reason(report)
            return
        # failed
        if report.when == "call":
            cell.status = raw.get("status") or "fail"
        elif report.when == "setup" or cell.status in ("pass", "interrupted"):
            cell.status = "error"
        cell.detail = detail or _failure_line(report)

    # -- queries --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Cells per status: pass, fail, error and skip always; ``interrupted`` and ``xfail`` only
        when some are."""
        out = dict.fromkeys(STATUSES, 0)
        for c in self.cells.values():
            out[c.status] += 1
        for rare in ("interrupted", "xfail"):
            if not out[rare]:
                del out[rare]
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
    def from_dict(cls, data: Any) -> Matrix:
        """Read a matrix written by :meth:`to_dict`; ValueError (one line) on anything else."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not a containercheck matrix file (no 'schema': 'containercheck-matrix')")
        version = data.get("version")
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise ValueError(f"matrix schema version {version} is newer than this containercheck "
                                 f"understands ({SCHEMA_VERSION}); upgrade pytest-containercheck")
            raise ValueError(f"matrix schema version {version!r}, but this containercheck reads version "
                             f"{SCHEMA_VERSION} only; write it again with this version's pytest-containercheck")
        for key, kind in (("meta", dict), ("hosts", dict), ("columns", list), ("rows", list), ("cells", list),
                          ("conflicts", list)):
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise ValueError(f"'{key}' is a {type(data[key]).__name__}, expected a {kind.__name__}")
        m = cls()
        m.complete = bool(data.get("complete", True))
        m.meta = dict(data.get("meta") or {})
        m.hosts = dict(data.get("hosts") or {})
        for name, host in m.hosts.items():
            if not isinstance(host, dict):
                raise ValueError(f"hosts[{name!r}] is a {type(host).__name__}, expected an object")
        for i, c in enumerate(data.get("columns") or []):
            column = _build(Column, c, f"columns[{i}]", ("id", "host"))
            if not isinstance(column.facts, dict):
                raise ValueError(f"columns[{i}]: 'facts' is a {type(column.facts).__name__}, expected an object")
            if column.expectations is not None and not isinstance(column.expectations, dict):
                raise ValueError(f"columns[{i}]: 'expectations' is a {type(column.expectations).__name__}, "
                                 "expected an object")
            m.add_column(column)
        m.rows = [str(r) for r in data.get("rows") or []]
        for i, c in enumerate(data.get("cells") or []):
            m.put(_cell(c, f"cells[{i}]"))
        for i, c in enumerate(data.get("conflicts") or []):
            m.conflicts.append(_cell(c, f"conflicts[{i}]"))
        return m


_T = TypeVar("_T")


def _build(cls: type[_T], data: Any, where: str, required: tuple[str, ...]) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is a {type(data).__name__}, expected an object")
    missing = [k for k in required if not isinstance(data.get(k), str)]
    if missing:
        raise ValueError(f"{where} has no {' or '.join(repr(k) for k in missing)} (a string)")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _cell(data: Any, where: str) -> Cell:
    cell = _build(Cell, data, where, ("row", "column", "host", "status"))
    if cell.status not in STATUSES:
        raise ValueError(f"{where} has status {cell.status!r}; a cell's status is one of {', '.join(STATUSES)}")
    for name in ("evidence", "artifacts", "probes"):
        if not isinstance(getattr(cell, name), dict):
            raise ValueError(f"{where}: '{name}' is a {type(getattr(cell, name)).__name__}, expected an object")
    for name in ("detail", "nodeid"):
        if not isinstance(getattr(cell, name), str):
            raise ValueError(f"{where}: '{name}' is a {type(getattr(cell, name)).__name__}, expected a string")
    if cell.gate is not None and not isinstance(cell.gate, dict):
        raise ValueError(f"{where}: 'gate' is a {type(cell.gate).__name__}, expected an object")
    return cell


def image_identity(column: Column) -> str | None:
    """What makes two columns the same image: its config digest (= the image ID), from an
    archive's manifest, from ``docker image inspect``, or from the archive a SIF was converted from."""
    facts = column.facts
    launch_archive = _obj(_obj(facts.get("launch")).get("archive"))
    found = facts.get("config_digest") or _obj(facts.get("image")).get("id") or launch_archive.get("config_digest")
    return str(found) if found and isinstance(found, (str, int)) else None


def _obj(value: Any) -> dict[str, Any]:
    """*value* when it is a mapping, else an empty one: facts read from a result file may be of
    any shape (a merged file is someone else's), and a wrong one is only not used."""
    return value if isinstance(value, dict) else {}


def image_labels(column: Column) -> dict[str, str]:
    """The image's own labels, without the ``org.label-schema.*`` notes Apptainer adds to a SIF."""
    facts = column.facts
    labels = _obj(facts.get("labels")) or _obj(_obj(facts.get("image")).get("labels"))
    return {str(k): str(v) for k, v in labels.items() if not str(k).startswith("org.label-schema.")}


def same_image(matrix: Matrix) -> list[dict[str, Any]]:
    """Columns that are one image (on several hosts or runtimes), and the rows where that image
    passed on one and failed on another: then the host, or the pair, is to blame, not the image.

    Columns are one image when their config digests are equal; a SIF built by hand keeps no
    digest, only the image's labels, so equal non-empty labels join it to its image too (and the
    group says so: ``by`` is ``digest`` or ``digest+labels``/``labels``).
    """
    cols = list(matrix.columns.values())
    parent = list(range(len(cols)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key_of in (image_identity, lambda c: json.dumps(image_labels(c), sort_keys=True) if image_labels(c) else None):
        first: dict[str, int] = {}
        for i, col in enumerate(cols):
            key = key_of(col)
            if key is None:
                continue
            if key in first and find(first[key]) != find(i):
                parent[find(i)] = find(first[key])
            first.setdefault(key, i)
    groups: dict[int, list[Column]] = {}
    for i, col in enumerate(cols):
        groups.setdefault(find(i), []).append(col)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        digests = {d for c in members if (d := image_identity(c))}
        by = "digest" if len(digests) == 1 and all(image_identity(c) for c in members) else "digest+labels" \
            if digests else "labels"
        disagree = []
        for row in matrix.rows:
            verdicts = {f"{c.id} @ {c.host}": cell.status for c in members if (cell := matrix.get(row, c.key))}
            statuses = set(verdicts.values())
            if "pass" in statuses and statuses & {"fail", "error"}:
                disagree.append({"row": row, "verdicts": verdicts})
        out.append({"identity": sorted(digests)[0] if digests else "labels", "by": by,
                    "columns": [{"column": c.id, "host": c.host} for c in members], "different_verdicts": disagree})
    return out


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


def _skip_reason(report: ReportLike) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr or "skipped").splitlines()[0]


def _failure_line(report: ReportLike) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    msg = getattr(crash, "message", None) if crash is not None else None
    if not msg:
        msg = report.longreprtext
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    first = lines[0] if lines else "failed"
    return first.removeprefix("Failed: ")[:300]
