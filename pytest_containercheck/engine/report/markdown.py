"""Matrix -> compact Markdown for a CI job summary (GitHub ``$GITHUB_STEP_SUMMARY``, GitLab, ...).

One table (checks x images, or images x hosts after a merge) of status symbols and one-line
details, then the failures with their fault and fix, then any conflicting duplicate cells.
Everything that comes from a run is escaped: job summaries render inline HTML, so a detail
such as ``<img src=...>`` must stay text.
"""

from __future__ import annotations

import re

from ..matrix import Cell, Matrix, same_image
from .terminal import column_titles

SYMBOL = {"pass": "✅", "fail": "❌", "error": "⚠️", "skip": "⏭", "interrupted": "⏹"}
"""Status -> the symbol shown in Markdown and HTML cells."""

#: Longest detail kept in a table cell; the failure list below the table has them in full.
DETAIL_WIDTH = 90

# Markdown punctuation that could start emphasis, links, code or break the table, and the
# HTML characters that would otherwise be rendered as tags or entities.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def escape_md(text: str) -> str:
    """*text* as literal Markdown on one line: HTML and Markdown syntax neutralised."""
    one_line = " ".join(str(text).split())
    html_safe = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", html_safe)


def _clip(text: str, width: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1].rstrip() + "…"


def render_markdown(matrix: Matrix) -> str:
    """The matrix as Markdown: a status table, the failures with their fixes, and conflicts."""
    keys = list(matrix.columns)
    counts = ", ".join(f"{n} {s}" for s, n in matrix.counts().items() if n) or "no cells"
    hosts = sorted({h for _, h in keys})
    lines = ["## containercheck matrix", ""]
    lines.append(f"{escape_md(counts)} · {len(keys)} image column(s) on {len(hosts)} host(s): "
                 + ", ".join(escape_md(h) for h in hosts))
    if not matrix.complete:
        lines += ["", "> **⚠️ INCOMPLETE:** the run was interrupted (Ctrl-C, SIGTERM or a time limit); "
                  "missing cells were not run."]
    if not keys or not matrix.rows:
        lines += ["", "No containercheck cells were recorded."]
        return "\n".join(lines) + "\n"

    conflicted = {(c.row, c.column, c.host) for c in matrix.conflicts}
    notes = skip_notes(matrix)
    titles = column_titles(matrix)
    lines += ["", "| check | " + " | ".join(escape_md(t) for t in titles) + " |",
              "|---|" + "---|" * len(keys)]
    for row in matrix.rows:
        cells = []
        for key in keys:
            c = matrix.get(row, key)
            if c is None:
                cells.append("–")
                continue
            if c.status == "skip" and c.detail in notes:
                text = f"{SYMBOL[c.status]} [{notes[c.detail]}]"
            else:
                text = SYMBOL[c.status] + (" " + escape_md(_clip(c.detail, DETAIL_WIDTH)) if c.detail else "")
            if (row, *key) in conflicted:
                text += " **(conflict)**"
            cells.append(text)
        lines.append(f"| {escape_md(row)} | " + " | ".join(cells) + " |")
    lines += ["", " · ".join(f"{sym} {status}" for status, sym in SYMBOL.items())]
    if notes:
        lines += [""] + [f"[{n}] skipped: {escape_md(d)}  " for d, n in notes.items()]

    problems = matrix.problems()
    if problems:
        lines += ["", "### Failures", ""]
        for c in problems:
            fault = f" *[{escape_md(c.fault)} fault]*" if c.fault else ""
            lines.append(f"- {SYMBOL[c.status]} **{escape_md(c.row)}** on {escape_md(cell_where(matrix, c))}:"
                         f"{fault} {escape_md(c.detail) or c.status}")
            if c.fix:
                lines.append(f"  - fix: {escape_md(c.fix)}")
    if matrix.conflicts:
        lines += ["", "### Conflicting results", "",
                  "The same check, image and host gave different results in the merged files; "
                  "the table shows the worse one."]
        lines.append("")
        for other in matrix.conflicts:
            shown = matrix.get(other.row, (other.column, other.host))
            now = f"{SYMBOL[shown.status]} {escape_md(shown.detail)}" if shown else "–"
            lines.append(f"- **{escape_md(other.row)}** on {escape_md(other.column)} @ {escape_md(other.host)}: "
                         f"shown {now}; also {SYMBOL[other.status]} {escape_md(other.detail)}")
    for group in same_image(matrix):
        where = ", ".join(f"{escape_md(c['column'])} @ {escape_md(c['host'])}" for c in group["columns"])
        lines += ["", f"**Same image** `{escape_md(group['identity'][:19])}` (by {group['by']}): {where}"]
        for d in group["different_verdicts"]:
            verdicts = ", ".join(f"{SYMBOL.get(st, st)} {escape_md(col)}" for col, st in d["verdicts"].items())
            lines.append(f"- same image, different verdict on **{escape_md(d['row'])}**: {verdicts} "
                         "(the host, or the pair, not the image)")
    duplicates = matrix.meta.get("duplicates") or []
    if duplicates:
        lines += ["", f"{len(duplicates)} cell(s) came from several merged files:"]
        lines += [f"- **{escape_md(d['row'])}** on {escape_md(d['column'])} @ {escape_md(d['host'])}: "
                  + ", ".join(escape_md(f) for f in d.get("files", [])) for d in duplicates[:20]]
        if len(duplicates) > 20:
            lines.append(f"- … and {len(duplicates) - 20} more")
    return "\n".join(lines) + "\n"


REPEATED_SKIP = 3
"""A skip reason shared by this many cells or more is said once, as a numbered note."""


def skip_notes(matrix: Matrix) -> dict[str, int]:
    """Skip reasons repeated across cells (``host has no NVIDIA GPU (...)`` on every GPU row of
    every image) -> their note number, so the tables say each once and the cells stay short."""
    counts: dict[str, int] = {}
    for c in matrix.cells.values():
        if c.status == "skip" and c.detail:
            counts[c.detail] = counts.get(c.detail, 0) + 1
    repeated = [d for d, n in counts.items() if n >= REPEATED_SKIP]
    return {d: i for i, d in enumerate(repeated, 1)}


def cell_where(matrix: Matrix, cell: Cell) -> str:
    """Where a cell is: its image, plus ``@ host`` when the matrix spans several hosts."""
    multi_host = len({h for _, h in matrix.columns}) > 1
    return f"{cell.column} @ {cell.host}" if multi_host else cell.column
