"""The CI gate's rules, in one place: what each cell's outcome means for the run, given the
image's expectations (:mod:`.expectations`).

A check *observes* an outcome (``pass``, ``fail``, ``error``, ``skip``, ``interrupted``; ``xfail``
for a test's own ``xfail`` mark; ``missing`` when it never ran) and the gate *decides* the
cell's status from it (:func:`decide`):

* a required row that did not pass -- skipped, expected to fail by a mark, missing -- fails, with
  who required it; one that failed or errored stays so;
* a row allowed to fail that *failed* is an expected failure (``xfail``), with who allowed it and
  why; one that errored, was interrupted or never ran is not what an allowance allows: it stays an
  error (or fails, when missing), and says so;
* an allowance the image's own label gave, which the repository does not accept
  (``trust-image-allowances``), changes nothing: the outcome records it as ignored;
* everything else is what the check observed.

The same :class:`Outcome` record is decided in the pytest run (the plugin converts each test
report to an observed status and back) and by ``containercheck gate``/``diff`` on a result file
(:func:`judge`, from each cell's observed status), so the pytest run, a merged matrix of many
runs and a diff reach the same verdicts with the same reasons.  No pytest here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .expectations import IGNORED, Expectation
from .matrix import Cell, Matrix

OBSERVED = ("pass", "fail", "error", "skip", "interrupted", "xfail", "missing")
FAILING = ("fail", "error", "interrupted")
"""Statuses that fail a run (``interrupted`` as pytest's exit code 2)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 2


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One cell as the gate judged it: what the check observed, the status it gets, and who
    required or allowed the row.  Builtins only in :meth:`to_dict` (it travels on pytest reports
    across xdist, and in the matrix JSON as the cell's ``gate``)."""

    row: str
    observed: str
    status: str
    reason: str = ""
    """Why the gate gave another status than the observed one (or why it did not), one line; ''
    when it had nothing to say."""
    required_by: tuple[str, ...] = ()
    allowed_by: tuple[tuple[str, str], ...] = ()
    """(source, reason) of each allowance that applied."""
    ignored: tuple[tuple[str, str], ...] = ()
    """(source, reason) of each allowance of the image's own that the repository does not accept."""
    detail: str = ""
    """What the check itself said (its skip reason, say), kept when the gate's reason replaces it
    as the cell's detail: judging the cell again starts from it."""

    @property
    def changed(self) -> bool:
        return self.status != self.observed

    def to_dict(self) -> dict[str, Any]:
        return {"observed": self.observed, "status": self.status, "reason": self.reason,
                "required_by": list(self.required_by),
                "allowed_by": [{"source": s, "reason": r} for s, r in self.allowed_by],
                "ignored": [{"source": s, "reason": r} for s, r in self.ignored], "detail": self.detail}

    @classmethod
    def from_dict(cls, row: str, data: Mapping[str, Any]) -> Outcome:
        """The inverse of :meth:`to_dict`; ValueError (one line) on a malformed record."""
        def pairs(key: str) -> tuple[tuple[str, str], ...]:
            items = data.get(key) or []
            if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
                raise ValueError(f"gate.{key} is not a list of objects")
            return tuple((str(i.get("source", "")), str(i.get("reason", ""))) for i in items)

        observed, status = data.get("observed"), data.get("status")
        if observed not in OBSERVED or status not in (*OBSERVED, "xfail"):
            raise ValueError(f"gate of row {row!r}: observed {observed!r}, status {status!r}")
        required = data.get("required_by") or []
        if not isinstance(required, list):
            raise ValueError("gate.required_by is not a list")
        return cls(row, str(observed), str(status), str(data.get("reason") or ""),
                   tuple(str(s) for s in required), pairs("allowed_by"), pairs("ignored"),
                   str(data.get("detail") or ""))


def _sources(pairs: tuple[tuple[str, str], ...]) -> str:
    return "; ".join(f"{s}: {r}" for s, r in pairs)


def allowance_text(outcome: Outcome) -> str:
    """``allowed to fail by pyproject.toml: EGL only`` (each allowance), for the reports."""
    return f"allowed to fail by {_sources(outcome.allowed_by)}" if outcome.allowed_by else ""


def decide(row: str, observed: str, detail: str, exp: Expectation | None) -> Outcome:
    """The status of one cell whose check observed *observed* (with *detail*), under *exp*.
    ``missing`` is observed only for a row *exp* requires or allows (:func:`missing_rows`)."""
    if observed not in OBSERVED:
        raise ValueError(f"observed status {observed!r}; one of {', '.join(OBSERVED)}")
    exp = exp if exp is not None else Expectation()
    required = tuple(exp.required.get(row, ()))
    allowed = tuple((a["source"], a["reason"]) for a in exp.allowed.get(row, ()))
    ignored = tuple((a["source"], a["reason"]) for a in exp.ignored.get(row, ()))

    said = " ".join(detail.split())

    def outcome(status: str, reason: str = "") -> Outcome:
        return Outcome(row, observed, status, reason, required, allowed, ignored, said)

    if observed == "missing":
        never = "did not run (deselected, or no such check on this image)"
        if required:
            return outcome("fail", f"required row {never}; required by {', '.join(required)}")
        return outcome("fail", f"row allowed to fail {never}; allowed to fail by {_sources(allowed)}")
    if required:
        who = f"required by {', '.join(required)}"
        if observed == "skip":
            return outcome("fail", f"required row {row!r} was skipped ({who}): {said}")
        if observed == "xfail":
            return outcome("fail", f"required row {row!r} is expected to fail ({who}): {said}")
        return outcome(observed)
    if allowed:
        if observed == "fail":
            return outcome("xfail", f"allowed to fail by {_sources(allowed)}")
        if observed in ("error", "interrupted"):
            what = "errored" if observed == "error" else "was interrupted"
            return outcome(observed, f"row {row!r} is allowed to fail, but it {what}: the check was not carried "
                                     "out, and an allowance covers a failure only")
    if ignored and observed in ("fail", "error"):
        return outcome(observed, f"the image's own allowance ({_sources(ignored)}) is {IGNORED}")
    return outcome(observed)


def observed_of(cell: Cell) -> str:
    """What *cell*'s check observed, before any gate: its recorded ``gate.observed``, else its
    status (a matrix written before the gate was recorded; an ``xfail`` there is read as the
    failure it was)."""
    gate = cell.gate if isinstance(cell.gate, Mapping) else None
    found = gate.get("observed") if gate is not None else None
    if isinstance(found, str) and found in OBSERVED:
        return found
    if cell.status == "xfail" and str(cell.evidence.get("xfail") or "").startswith("allowed to fail by "):
        return "fail"  # an allowance applied by a version that did not record the gate
    return cell.status


def observed_detail(cell: Cell) -> str:
    """What *cell*'s check said itself: the gate's record of it, else the cell's detail."""
    gate = cell.gate if isinstance(cell.gate, Mapping) else {}
    found = gate.get("detail")
    return found if isinstance(found, str) and found else cell.detail


def missing_rows(exp: Expectation) -> list[str]:
    """The rows *exp* names that must have a cell: required and allowed rows."""
    return list(dict.fromkeys([*exp.required, *exp.allowed]))


@dataclasses.dataclass
class Judgement:
    """A matrix judged: the gated matrix, each cell's outcome, and the exit code a run gets."""

    matrix: Matrix
    outcomes: dict[tuple[str, str, str], Outcome]
    """(row, column, host) -> its outcome."""
    exit_code: int


def judge(matrix: Matrix, expectations: Callable[[tuple[str, str]], Expectation | None]) -> Judgement:
    """*matrix* judged anew under *expectations* (column key -> its expectations, or None): every
    cell decided from what its check observed, a failed cell for every required or allowed row
    that has none, and the exit code of a pytest run that had these outcomes (2 when the matrix
    is incomplete: a run was interrupted)."""
    out = Matrix()
    out.meta, out.hosts, out.complete = dict(matrix.meta), dict(matrix.hosts), matrix.complete
    out.rows = list(matrix.rows)
    outcomes: dict[tuple[str, str, str], Outcome] = {}
    for key, col in matrix.columns.items():
        exp = expectations(key)
        out.add_column(dataclasses.replace(col, facts=dict(col.facts),
                                           expectations=exp.to_dict() if exp is not None else col.expectations))
    for (row, image, host), cell in matrix.cells.items():
        outcome = decide(row, observed_of(cell), observed_detail(cell), expectations((image, host)))
        outcomes[(row, image, host)] = outcome
        out.put(gated_cell(cell, outcome))
    for cell, outcome in fill_missing(out, expectations):
        outcomes[(cell.row, cell.column, cell.host)] = outcome
    out.conflicts = [gated_cell(c, decide(c.row, observed_of(c), observed_detail(c), expectations((c.column, c.host))))
                     for c in matrix.conflicts]
    code = EXIT_INTERRUPTED if not matrix.complete or any(o.status == "interrupted" for o in outcomes.values()) \
        else EXIT_FAILED if any(o.status in FAILING for o in outcomes.values()) or out.conflicts else EXIT_OK
    return Judgement(out, outcomes, code)


def fill_missing(matrix: Matrix, expectations: Callable[[tuple[str, str]], Expectation | None]
                 ) -> list[tuple[Cell, Outcome]]:
    """Put into *matrix* a failed cell (:func:`missing_cell`) for every row its column's expectations
    require or allow that has no cell there (deselected, or no such check on that image); each cell
    put, with its outcome."""
    added = []
    for key in list(matrix.columns):
        exp = expectations(key)
        for row in missing_rows(exp) if exp is not None else []:
            if matrix.get(row, key) is None:
                outcome = decide(row, "missing", "", exp)
                added.append((missing_cell(row, key, outcome), outcome))
                matrix.put(added[-1][0])
    return added


def gated_cell(cell: Cell, outcome: Outcome) -> Cell:
    """*cell* with the status *outcome* gives it, the gate's reason as its detail where the gate
    changed the status of a check that did not fail by itself, and the outcome recorded."""
    new = dataclasses.replace(cell, evidence=dict(cell.evidence), gate=outcome.to_dict())
    new.status = outcome.status
    if outcome.changed and outcome.status == "fail":
        new.detail = outcome.reason[:300]
    elif not outcome.changed:
        new.detail = outcome.detail or cell.detail
    return new


def missing_cell(row: str, key: tuple[str, str], outcome: Outcome) -> Cell:
    """The failed cell of a required (or allowed) row that never ran on its image."""
    return Cell(row=row, column=key[0], host=key[1], status=outcome.status, detail=outcome.reason[:300],
                fix="run the check that fills it, or stop naming the row in the expectations there",
                gate=outcome.to_dict())
