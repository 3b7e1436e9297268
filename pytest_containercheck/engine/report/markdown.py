"""Matrix -> compact Markdown for a CI job summary (GitHub ``$GITHUB_STEP_SUMMARY``, GitLab, ...).

One table (checks x images, or images x hosts after a merge) of status symbols and one-line
details, then the failures with their fault and fix, then any conflicting duplicate cells.
Everything that comes from a run is escaped: job summaries render inline HTML, so a detail
such as ``<img src=...>`` must stay text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..expectations import allowance, describe, gate_note, required_by, unused_tables
from ..matrix import Cell, Matrix, same_image
from ..textsafe import capped, visible
from .terminal import column_titles, launch_differences

SYMBOL = {"pass": "✅", "fail": "❌", "error": "⚠️", "skip": "⏭", "interrupted": "⏹", "xfail": "❎"}
"""Status -> the symbol shown in Markdown and HTML cells."""

#: Longest detail kept in a table cell; the failure list below the table has them in full.
DETAIL_WIDTH = 90

# Markdown punctuation that could start emphasis, links, code or break the table, and the
# HTML characters that would otherwise be rendered as tags or entities.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def escape_md(text: str) -> str:
    """*text* as literal Markdown on one line: HTML and Markdown syntax neutralised, and at most
    :data:`~..textsafe.TEXT_CAP` characters of it (the JSON report has it whole)."""
    one_line = " ".join(capped(str(text)).split())
    html_safe = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", html_safe)


def _clip(text: str, width: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1].rstrip() + "…"


def _render_markdown(matrix: Matrix) -> str:
    """The matrix as Markdown: a status table, the failures with their fixes, and conflicts."""
    keys = list(matrix.columns)
    counts = ", ".join(f"{n} {s}" for s, n in matrix.counts().items() if n) or "no cells"
    hosts = sorted({h for _, h in keys})
    lines = ["## containercheck matrix", ""]
    lines.append(f"{escape_md(counts)} · {len(keys)} image column(s) on {len(hosts)} host(s): "
                 + ", ".join(escape_md(h) for h in hosts))
    made = provenance(matrix.meta)
    if made:
        lines += [""] + [f"{escape_md(line)}  " for line in made]
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
            symbol = SYMBOL[c.status] + (" *required*" if required_by(matrix, c) else "")
            if c.status == "skip" and c.detail in notes:
                text = f"{symbol} [{notes[c.detail]}]"
            else:
                text = symbol + (" " + escape_md(_clip(c.detail, DETAIL_WIDTH)) if c.detail else "")
            if (row, *key) in conflicted:
                text += " **(conflict)**"
            cells.append(text)
        lines.append(f"| {escape_md(row)} | " + " | ".join(cells) + " |")
    lines += ["", " · ".join(f"{sym} {status}" for status, sym in SYMBOL.items())]
    if notes:
        lines += [""] + [f"[{n}] skipped: {escape_md(d)}  " for d, n in notes.items()]

    lines += _expectations(matrix, keys, titles)
    unlike = [line for key, title in zip(keys, titles) if (line := launch_differences(matrix, key, title))]
    if unlike:
        lines += ["", "### Launched unlike their users", ""] + [f"- {escape_md(line)}" for line in unlike]
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


def _expectations(matrix: Matrix, keys: list[tuple[str, str]], titles: list[str]) -> list[str]:
    """What the gate asked of each image (or that it asked nothing), and every expected failure
    with why it is allowed."""
    said = [line for key, title in zip(keys, titles) if (line := describe(matrix, key, title))]
    said += [f"not applied: {line}" for line in unused_tables(matrix)]
    expected = [c for r in matrix.rows for key in keys if (c := matrix.get(r, key)) is not None and c.status == "xfail"]
    noted = [c for r in matrix.rows for key in keys if (c := matrix.get(r, key)) is not None and gate_note(c)]
    if not said and not expected and not noted:
        return []
    lines = ["", "### Expectations", ""] + [f"- {escape_md(line)}" for line in said]
    for c in noted:
        lines.append(f"- {SYMBOL[c.status]} **{escape_md(c.row)}** on {escape_md(cell_where(matrix, c))}: "
                     f"{escape_md(gate_note(c))}")
    for c in expected:
        where = escape_md(cell_where(matrix, c))
        lines.append(f"- {SYMBOL['xfail']} expected failure of **{escape_md(c.row)}** on {where}: "
                     f"{escape_md(c.detail) or 'failed'}; allowed to fail by {escape_md(allowance(matrix, c) or '')}")
    return lines


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


def provenance(meta: Mapping[str, Any]) -> list[str]:
    """Which containercheck made the matrix, when and where: one line for a run
    (``containercheck 0.1.0, started 2026-12-01T09:30:00+00:00, on node-a``); after a merge, the
    merging version, then one line per run that was merged.  Empty for a matrix that says nothing."""

    def one(run: Mapping[str, Any]) -> str:
        parts = [f"{label}{run[key]}" for key, label in (("version", "containercheck "), ("started", "started "),
                                                         ("host", "on ")) if run.get(key)]
        return ", ".join(parts)

    if meta.get("merged_from"):
        runs = [r for r in meta.get("runs") or [] if isinstance(r, Mapping)]
        head = f"merged by containercheck {meta['version']}" if meta.get("version") else "merged"
        return [f"{head} from {len(runs)} run(s)"] + [f"run {i}: {one(r) or 'no version recorded'}"
                                                     for i, r in enumerate(runs, 1)]
    line = one(meta)
    return [line] if line else []


def cell_where(matrix: Matrix, cell: Cell) -> str:
    """Where a cell is: its image, plus ``@ host`` when the matrix spans several hosts."""
    multi_host = len({h for _, h in matrix.columns}) > 1
    return f"{cell.column} @ {cell.host}" if multi_host else cell.column


def render_markdown(matrix: Matrix) -> str:
    """The matrix as Markdown (see :func:`_render_markdown`).

    Every control character from the image, an archive or a merged file is shown as an escape
    (:func:`~pytest_containercheck.engine.textsafe.visible`), never sent raw.
    """
    return visible(_render_markdown(matrix))
