"""Matrix -> terminal text: the grid, then one line (and its fix) per problem."""

from __future__ import annotations

from ..matrix import Cell, Matrix

LABEL = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "skip", "interrupted": "INTR"}


def column_titles(matrix: Matrix) -> list[str]:
    """Column names: the image id, plus ``@ host`` when the matrix spans several hosts."""
    multi_host = len({h for _, h in matrix.columns}) > 1
    return [f"{i} @ {h}" if multi_host else i for i, h in matrix.columns]


def render_terminal(matrix: Matrix, *, width: int = 100, verbosity: int = 0) -> list[str]:
    """Lines for ``pytest_terminal_summary``.

    One column: status and detail in the grid.  Several: the grid holds statuses under
    numbered columns, with a legend, and details follow grouped by identical verdicts.
    ``-q`` lists problems only, the default problems and skips, ``-v`` every cell.
    """
    keys = list(matrix.columns)
    if not keys or not matrix.rows:
        return ["no containercheck cells were recorded"]
    titles = column_titles(matrix)
    roww = max(len(r) for r in [*matrix.rows, "check"])
    lines: list[str] = []
    if len(keys) == 1:
        lines.append(f"{'check'.ljust(roww)}  {titles[0]}")
        for row in matrix.rows:
            c = matrix.get(row, keys[0])
            # Never cut: a pass's detail (renderer, versions) is the evidence; long lines wrap.
            lines.append(f"{row.ljust(roww)}  {_short(c) if c else '-'}".rstrip())
    else:
        heads = [f"[{n}]" for n in range(1, len(keys) + 1)]
        colw = max(6, *(len(h) for h in heads))
        lines.append("  ".join(["check".ljust(roww), *(h.ljust(colw) for h in heads)]).rstrip())
        for row in matrix.rows:
            cells = [LABEL[c.status] if (c := matrix.get(row, k)) else "-" for k in keys]
            lines.append("  ".join([row.ljust(roww), *(c.ljust(colw) for c in cells)]).rstrip())
        lines.append("")
        lines += [f"{h} {t}" for h, t in zip(heads, titles)]
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in matrix.counts().items() if n)
                 + ("" if matrix.complete else "  (INCOMPLETE: the run was interrupted)"))
    # An interrupted check is listed at every verbosity: it did not run, whatever pytest counted.
    shown = ({"fail", "error"} if verbosity < 0 else {"fail", "error", "skip"} if verbosity == 0
             else set(LABEL)) | {"interrupted"}
    if len(keys) == 1 and verbosity >= 0:
        shown.discard("pass")  # already in the grid
    # One line per distinct verdict: the rows and images that share it are listed together.
    groups: dict[tuple[str, str, str | None, str | None], list[Cell]] = {}
    order = {"error": 0, "fail": 1, "interrupted": 2, "skip": 3, "pass": 4}
    for c in sorted(matrix.cells.values(), key=lambda c: (order[c.status], matrix.rows.index(c.row))):
        if c.status in shown:
            groups.setdefault((c.status, c.detail, c.fix, c.fault), []).append(c)
    if groups:
        lines.append("")
    for (status, detail, fix, fault), members in groups.items():
        rows = list(dict.fromkeys(c.row for c in members))
        where = list(dict.fromkeys(titles[keys.index((c.column, c.host))] for c in members))
        tag = f" [{fault} fault]" if fault else ""
        lines.append(f"{LABEL[status]:5} {', '.join(rows)} on {', '.join(where)}:{tag} {detail}")
        if fix and status in ("fail", "error"):
            lines.append(f"      fix: {fix}")
        for member in members:
            for name, path in member.artifacts.items():
                lines.append(f"      {member.row} {name}: {path}")
    for c in matrix.conflicts:
        lines.append(f"CONFLICT {c.row} on {c.column} @ {c.host}: another result said {c.status}: {c.detail}")
    return lines


def _short(cell: Cell) -> str:
    label = LABEL[cell.status]
    return f"{label} {cell.detail}" if cell.detail else label
