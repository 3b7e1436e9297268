"""What got worse: one image's column against another's (the image in production against the new
one), row by row.  Pure functions of :class:`~.matrix.Matrix` columns; ``containercheck diff``
prints them and exits non-zero on regressions only.

Kinds of change, from the old verdict to the new one:

* ``regression``: it passed (or did not apply) before and fails or errors now;
* ``no longer checked``: it passed before and skips now (not a failure, but the gate lost it);
* ``fixed``: it failed or errored before and passes now;
* ``still failing``, ``unchanged pass``; ``skipped on both``: never run on either side, so not
  an "unchanged pass" (a GPU row on a host without a GPU, say);
* ``new row`` / ``gone``: the row exists on one side only.
"""

from __future__ import annotations

import dataclasses

from .matrix import Cell, Column, Matrix

REGRESSION = "regression"
KINDS = (REGRESSION, "no longer checked", "fixed", "still failing", "unchanged pass", "skipped on both",
         "new row", "gone")
_BAD = ("fail", "error", "interrupted")


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
        return "gone"
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
        out.append(RowChange(row, kind, o.status if o else None, n.status if n else None,
                             (n.detail if n else o.detail if o else "")))
    return out


def render_markdown(changes: list[RowChange], old: Column, new: Column) -> str:
    """The changes as Markdown for a CI job summary: regressions first, then the rest by kind."""
    regressions = [c for c in changes if c.kind == REGRESSION]
    head = f"### containercheck diff: `{old.id}` → `{new.id}`\n\n"
    head += (f"**{len(regressions)} regression(s)**\n\n" if regressions else "No regressions.\n\n")
    lines = ["| row | change | old | new | detail |", "|---|---|---|---|---|"]
    for kind in KINDS:
        for c in changes:
            if c.kind == kind:
                detail = c.detail.replace("|", "\\|")
                lines.append(f"| `{c.row}` | {c.kind} | {c.old or '—'} | {c.new or '—'} | {detail} |")
    return head + "\n".join(lines) + "\n"
