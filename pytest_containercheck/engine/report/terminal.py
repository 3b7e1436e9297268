"""Matrix -> terminal text that fits the terminal: the grid, numbered notes, then the problems.

* The grid has one line per row.  With one image, a cell shows its status and detail when that
  fits; a detail that does not fit, or a skip reason shared by several cells (``host has no
  NVIDIA GPU (...)`` on every GPU row), becomes a numbered note said once under the grid, as
  the Markdown report does.  With several images the grid holds statuses under numbered
  columns (in as many grids side by side as the width needs), with a legend.
* Then one line (wrapped) per distinct problem, naming every row and image that shares it,
  with its fix.
* ``-q`` (verbosity < 0) prints no grid: the counts and the problems only.  ``-v`` prints every
  cell in full after the grid, passes and skips too.

No line is wider than *width* (80 when the terminal's is unknown): long text is wrapped, in time
linear in its length, never cut; but no one text (a detail, a fix, a reason from an image's label)
shows more than :data:`~..textsafe.TEXT_CAP` characters: the JSON report has it whole.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Final

from ..expectations import allowance, describe, gate_note, required_by, unused_tables
from ..matrix import Cell, Matrix
from ..textsafe import TEXT_CAP, capped, visible

LABEL = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "skip", "interrupted": "INTR", "xfail": "XFAIL"}
DEFAULT_WIDTH = 80
_ORDER = {"error": 0, "fail": 1, "interrupted": 2, "xfail": 3, "skip": 4, "pass": 5}
REQUIRED_MARK = "*"
"""After the status of a cell whose row the image's expectations require."""
_INDENT = "      "


def launch_differences(matrix: Matrix, key: tuple[str, str], title: str) -> str:
    """``<title>: launched unlike `docker run --gpus all IMAGE`: <difference>; ...`` for a column whose
    launch differed from its users' plain one (:mod:`..plainlaunch`), else "" (a plain run says nothing)."""
    column = matrix.columns.get(key)
    launch = (column.facts.get("launch") if column is not None else None) or {}
    diffs = [str(d) for d in launch.get("launch_differences") or []] if isinstance(launch, dict) else []
    if not diffs:
        return ""
    return f"{title}: launched unlike `{launch.get('plain_launch') or 'the plain launch'}`: " + "; ".join(diffs)


def column_titles(matrix: Matrix) -> list[str]:
    """Column names: the image id, plus ``@ host`` when the matrix spans several hosts."""
    multi_host = len({h for _, h in matrix.columns}) > 1
    return [f"{i} @ {h}" if multi_host else i for i, h in matrix.columns]


def _wrap(text: str, width: int, indent: str = _INDENT, first: str = "") -> list[str]:
    """*text* as lines of at most *width* characters, the first starting with *first*, the
    others indented; long words (paths) are broken rather than overflowing."""
    return wrap(text, max(width, len(indent) + 20), first, indent) or [first.rstrip()]


#: The whitespace ``textwrap`` breaks at (its ``_whitespace``): other Unicode spaces are part of words.
_SPACES: Final = "\t\n\x0b\x0c\r "
_TO_SPACE: Final = {ord(c): " " for c in _SPACES}
_CHUNKS: Final = re.compile(f"([{re.escape(_SPACES)}]+)")


def wrap(text: str, width: int, initial_indent: str = "", subsequent_indent: str = "") -> list[str]:
    """The lines ``textwrap.wrap(text, width, initial_indent=..., subsequent_indent=...,
    break_long_words=True, break_on_hyphens=False)`` gives, in time linear in *text*.

    textwrap cuts a word longer than a line by slicing off one line at a time and keeping the
    rest as a new string (``_handle_long_word``): a copy of what remains per line, so a 30 MB
    word (an image's label) takes hours.  Here a long word is read through an offset instead.
    """
    chunks = [c for c in _CHUNKS.split(text.expandtabs(8).translate(_TO_SPACE)) if c]
    blank_from: dict[int, int] = {}

    def blank(i: int, off: int) -> bool:  # what is left of chunk i is whitespace only (str.strip's)
        if i not in blank_from:
            blank_from[i] = len(chunks[i].rstrip())
        return off >= blank_from[i]

    lines: list[str] = []
    i, off, n = 0, 0, len(chunks)  # the next chunk, and how much of it is used already
    while i < n:
        indent = subsequent_indent if lines else initial_indent
        room = width - len(indent)
        line: list[str] = []
        used = 0
        if lines and blank(i, off):  # no line but the first starts with whitespace
            i, off = i + 1, 0
        while i < n and used + len(chunks[i]) - off <= room:
            line.append(chunks[i][off:])
            used += len(chunks[i]) - off
            i, off = i + 1, 0
        if i < n and len(chunks[i]) - off > room:  # a word longer than a line: as much as fits
            take = 1 if room < 1 else room - used
            line.append(chunks[i][off:off + take])
            off += take
        if line and not line[-1].strip():
            line.pop()
        if line:
            lines.append(indent + "".join(line))
    return lines


def _render_terminal(matrix: Matrix, *, width: int = DEFAULT_WIDTH, verbosity: int = 0) -> list[str]:
    keys = list(matrix.columns)
    if not keys or not matrix.rows:
        return ["no containercheck cells were recorded"]
    width = width if width and width > 0 else DEFAULT_WIDTH
    titles = column_titles(matrix)
    lines: list[str] = []
    if verbosity >= 0:
        lines += _grid(matrix, keys, titles, width, full=verbosity > 0)
        lines.append("")
    lines += _wrap(", ".join(f"{n} {s}" for s, n in matrix.counts().items() if n)
                   + ("" if matrix.complete else "  (INCOMPLETE: the run was interrupted)"), width, "  ")
    # What the gate asked of each image, or that it asked nothing: at every verbosity.
    for key, title in zip(keys, titles):
        said = describe(matrix, key, title)
        if said:
            lines += _wrap(capped(said, 4 * TEXT_CAP), width, "  ")
        unlike = launch_differences(matrix, key, title)
        if unlike:
            lines += _wrap(capped(unlike, 4 * TEXT_CAP), width, "  ")
    for unused in unused_tables(matrix):
        lines += _wrap(capped(f"not applied: {unused}"), width, "  ")
    # An interrupted check is listed at every verbosity: it did not run, whatever pytest counted;
    # so is an expected failure, with why it is allowed: it is never hidden.
    shown = {"fail", "error", "interrupted", "xfail"} | (set(LABEL) if verbosity > 0 else set())
    # One entry per distinct verdict: the rows and images that share it are listed together.
    groups: dict[tuple[str, str, str | None, str | None, str], list[Cell]] = {}
    for c in sorted(matrix.cells.values(), key=lambda c: (_ORDER[c.status], matrix.rows.index(c.row))):
        if c.status in shown:
            groups.setdefault((c.status, c.detail, c.fix, c.fault, gate_note(c)), []).append(c)
    if groups:
        lines.append("")
    for (status, detail, fix, fault, note), members in groups.items():
        rows = list(dict.fromkeys(c.row for c in members))
        where = list(dict.fromkeys(titles[keys.index((c.column, c.host))] for c in members))
        tag = f" [{fault} fault]" if fault else ""
        said = f"{capped(', '.join(rows))} on {capped(', '.join(where))}:{tag} {capped(detail)}"
        lines += _wrap(said.rstrip(), width, first=f"{LABEL[status]:5} ")
        if fix and status in ("fail", "error"):
            lines += _wrap(capped(fix), width, first=f"{_INDENT}fix: ")
        if note:
            lines += _wrap(capped(note), width, first=f"{_INDENT}gate: ")
        if status == "xfail":
            for why in dict.fromkeys(allowance(matrix, c) or "allowed" for c in members):
                lines += _wrap(capped(why), width, first=f"{_INDENT}allowed to fail by ")
        for member in members:
            for name, path in member.artifacts.items():
                lines += _wrap(capped(f"{member.row} {name}: {path}"), width, first=_INDENT)
    for c in matrix.conflicts:
        lines += _wrap(capped(f"{c.row} on {c.column} @ {c.host}: another result said {c.status}: {c.detail}").rstrip(),
                       width, first="CONFLICT ")
    return lines


def _grid(matrix: Matrix, keys: list[tuple[str, str]], titles: list[str], width: int, *, full: bool) -> list[str]:
    roww = max(len(r) for r in [*matrix.rows, "check"])
    if len(keys) > 1:
        return _grid_of_statuses(matrix, keys, titles, width, roww)
    lines = [f"{'check'.ljust(roww)}  {titles[0]}"]
    if len(lines[0]) > width:
        lines = _wrap(f"{'check'.ljust(roww)}  {titles[0]}", width, " " * (roww + 2))
    cells = {row: matrix.get(row, keys[0]) for row in matrix.rows}
    shared = _shared_skips(list(cells.values()))
    notes: dict[str, int] = {}
    for row, cell in cells.items():
        if cell is None:
            lines.append(f"{row.ljust(roww)}  -")
            continue
        label, detail = _label(matrix, cell), capped(cell.detail)
        text = f"{row.ljust(roww)}  {label} {detail}".rstrip()
        if (detail in shared or len(text) > width) and detail and not full:
            number = notes.setdefault(detail, len(notes) + 1)
            text = f"{row.ljust(roww)}  {label} [{number}]"
        if full and len(text) > width:
            lines += _wrap(f"{label} {detail}", width, " " * (roww + 7), first=f"{row.ljust(roww)}  ")
        else:
            lines.append(text)
    if notes:
        lines.append("")
        for detail, number in notes.items():
            lines += _wrap(detail, width, " " * (len(str(number)) + 3), first=f"[{number}] ")
    return lines + _required_legend(matrix)


def _label(matrix: Matrix, cell: Cell) -> str:
    return LABEL[cell.status] + (REQUIRED_MARK if required_by(matrix, cell) else "")


def _required_legend(matrix: Matrix) -> list[str]:
    if any(required_by(matrix, c) for c in matrix.cells.values()):
        return ["", f"{REQUIRED_MARK} required by the image's expectations (below)"]
    return []


def _grid_of_statuses(matrix: Matrix, keys: list[tuple[str, str]], titles: list[str], width: int,
                      roww: int) -> list[str]:
    heads = [f"[{n}]" for n in range(1, len(keys) + 1)]
    colw = max(6, *(len(h) for h in heads))
    per_grid = max(1, (width - roww) // (colw + 2))
    lines: list[str] = []
    for start in range(0, len(keys), per_grid):
        part = range(start, min(start + per_grid, len(keys)))
        if start:
            lines.append("")
        lines.append("  ".join(["check".ljust(roww), *(heads[i].ljust(colw) for i in part)]).rstrip())
        for row in matrix.rows:
            cells = [_label(matrix, c) if (c := matrix.get(row, keys[i])) else "-" for i in part]
            lines.append("  ".join([row.ljust(roww), *(c.ljust(colw) for c in cells)]).rstrip())
    lines.append("")
    for head, title in zip(heads, titles):
        lines += _wrap(title, width, " " * (len(head) + 1), first=f"{head} ")
    return lines + _required_legend(matrix)


def _shared_skips(cells: list[Cell | None]) -> set[str]:
    """Skip reasons that two or more cells share: said once, as a note."""
    seen: dict[str, int] = {}
    for c in cells:
        if c is not None and c.status == "skip" and c.detail:
            seen[capped(c.detail)] = seen.get(capped(c.detail), 0) + 1
    return {d for d, n in seen.items() if n > 1}


def line_width() -> int | None:
    """How wide the plugin's own lines may be: the terminal's, when there is one (a tty, or
    ``COLUMNS`` says); None in a pipe or a CI log, where whole lines serve tools that grep them."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    return None


def fit(text: str, width: int = DEFAULT_WIDTH, indent: str = "    ") -> list[str]:
    """One line of the plugin's own output (a progress line, a report's path, an error) as lines
    of at most *width* characters, control characters shown as escapes."""
    return [visible(line, lines=False) for line in _wrap(text, width if width > 0 else DEFAULT_WIDTH, indent)]


def render_terminal(matrix: Matrix, *, width: int = DEFAULT_WIDTH, verbosity: int = 0) -> list[str]:
    """Lines for ``pytest_terminal_summary``, at most *width* characters each (see the module).

    Every control character from the image, an archive or a merged file is shown as an escape
    (:func:`~pytest_containercheck.engine.textsafe.visible`), never sent raw.
    """
    return [visible(line, lines=False) for line in _render_terminal(matrix, width=width, verbosity=verbosity)]
