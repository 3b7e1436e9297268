"""What got worse: one image's column against another's (the image in production against the new
one), row by row.  Pure functions of :class:`~.matrix.Matrix` columns; ``containercheck diff``
prints them and exits non-zero on regressions only.

Kinds of change, from the old verdict to the new one:

* ``regression``: it passed (or did not apply) before and fails or errors now;
* ``no longer checked``: it passed before and skips now (not a failure, but the gate lost it);
* ``fixed``: it failed or errored before and passes now;
* ``still failing``, ``unchanged pass``; ``skipped on both``: never run on either side, so not
  an "unchanged pass" (a GPU row on a host without a GPU, say);
* ``gone``: it passed before and the new run has no such row (its check deselected, removed, or
  never collected): the gate lost it, and that fails the diff like a regression unless accepted
  (``containercheck diff --accept-gone``);
* ``allowed failure``: it passed or skipped before and now fails as the image's expectations
  allow (``xfail``): shown with its allowance, not a regression -- the gate's own rule
  (:mod:`.gate`), so an image that passed its gate does not fail the diff;
* ``new row`` / ``dropped``: the row exists on one side only (``dropped``: it did not pass before).

An expected failure on the old side counts as failing (a row that was allowed to fail and now
passes is ``fixed``).  Every text from the matrices (rows, details, column ids) goes through the
same escaping as ``containercheck show``: :func:`~.textsafe.visible` on the terminal, and
:func:`~.report.markdown.escape_md` in Markdown.
"""

from __future__ import annotations

import dataclasses

from .expectations import allowance
from .matrix import Cell, Column, Matrix
from .report.markdown import escape_md
from .textsafe import visible

REGRESSION = "regression"
GONE = "gone"
ALLOWED = "allowed failure"
KINDS = (REGRESSION, GONE, ALLOWED, "no longer checked", "fixed", "still failing", "unchanged pass",
         "skipped on both", "new row", "dropped")
_BAD = ("fail", "error", "interrupted", "xfail")


@dataclasses.dataclass(frozen=True)
class RowChange:
    """One row's old and new verdicts and what kind of change that is."""

    row: str
    kind: str
    old: str | None
    new: str | None
    detail: str = ""
    """The new cell's detail (the old one's when the row is gone)."""


def classify(old: str | None, new: str | None) -> str:
    """The kind of change from verdict *old* to verdict *new* (None: no such row on that side)."""
    if old is None:
        return "new row"
    if new is None:
        return GONE if old == "pass" else "dropped"
    if new == "xfail":
        return "still failing" if old in _BAD else ALLOWED
    if new in _BAD:
        return "still failing" if old in _BAD else REGRESSION
    if new == "pass":
        return "fixed" if old in _BAD else "unchanged pass"
    # new == "skip"
    return "no longer checked" if old == "pass" else "still failing" if old in _BAD else "skipped on both"


def diff_columns(old_matrix: Matrix, old: Column, new_matrix: Matrix, new: Column) -> list[RowChange]:
    """Every row of either column, in the new matrix's row order, then rows only the old one has."""
    rows = [*new_matrix.rows, *(r for r in old_matrix.rows if r not in new_matrix.rows)]
    out = []
    for row in rows:
        o: Cell | None = old_matrix.get(row, old.key)
        n: Cell | None = new_matrix.get(row, new.key)
        if o is None and n is None:
            continue
        kind = classify(o.status if o else None, n.status if n else None)
        detail = n.detail if n else o.detail if o else ""
        if kind == ALLOWED and n is not None:
            detail = f"{detail} (allowed to fail by {allowance(new_matrix, n) or 'its expectations'})"
        out.append(RowChange(row, kind, o.status if o else None, n.status if n else None, detail))
    return out


def failing(changes: list[RowChange], *, accept_gone: bool = False) -> list[RowChange]:
    """The changes that fail the diff: regressions, and rows gone after passing unless *accept_gone*."""
    return [c for c in changes if c.kind == REGRESSION or (c.kind == GONE and not accept_gone)]


def _render_markdown(changes: list[RowChange], old: Column, new: Column, accept_gone: bool = False) -> str:
    """The changes as Markdown for a CI job summary: regressions and gone rows first, then the rest by kind."""
    regressions = [c for c in changes if c.kind == REGRESSION]
    gone = [c for c in changes if c.kind == GONE]
    head = f"### containercheck diff: {escape_md(old.id)} → {escape_md(new.id)}\n\n"
    head += (f"**{len(regressions)} regression(s)**\n\n" if regressions else "No regressions.\n\n")
    allowed = sum(c.kind == ALLOWED for c in changes)
    if allowed:
        head += f"{allowed} allowed failure(s): failing as the image's expectations allow, not regressions\n\n"
    if gone:
        verdict = " (accepted: --accept-gone)" if accept_gone else ": they fail the diff (--accept-gone accepts them)"
        head += f"**{len(gone)} row(s) gone** that passed before{verdict}\n\n"
    lines = ["| row | change | old | new | detail |", "|---|---|---|---|---|"]
    for kind in KINDS:
        for c in changes:
            if c.kind == kind:
                lines.append(f"| {escape_md(c.row)} | {c.kind} | {c.old or '—'} | {c.new or '—'} | "
                             f"{escape_md(c.detail)} |")
    return head + "\n".join(lines) + "\n"


def render_markdown(changes: list[RowChange], old: Column, new: Column, accept_gone: bool = False) -> str:
    """What changed between two columns, as Markdown (see :func:`_render_markdown`).

    Every control character from the image, an archive or a merged file is shown as an escape
    (:func:`~pytest_containercheck.engine.textsafe.visible`), never sent raw.
    """
    return visible(_render_markdown(changes, old, new, accept_gone))
