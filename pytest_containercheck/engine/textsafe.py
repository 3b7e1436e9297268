"""Text from images, archives and result files never reaches a terminal or a report raw.

An image's files (``/etc/os-release``, a library's error message), an archive's member names and
a merged JSON are written by someone else: an escape sequence in them could retitle or clear the
terminal that shows the matrix, hide a line (carriage return), reorder text (bidirectional
overrides), or sit in the Markdown a CI page renders.  :func:`visible` shows each such character
as an escape (``\\x1b``, ``\\u202e``) instead; tabs and newlines stay where text may have lines.
"""

from __future__ import annotations

import re
from typing import Any, Final

DETAIL_CAP: Final = 300
"""A cell's one-line detail, as the check records it (docs/reference/reports.md, "Caps")."""
TEXT_CAP: Final = 1000
"""Any one text the terminal, Markdown, HTML and JUnit reports show (a detail read from a merged
file, a fix, a reason an image's label gives, a label): past this, the rest is counted, not shown.
The JSON report keeps every text whole."""
EVIDENCE_CAP: Final = 4000
"""Each string of a cell's evidence as the HTML page shows it (the JSON report keeps it whole), and
the output a failed probe leaves as evidence."""

#: C0 controls but tab and newline, DEL, C1 controls, line/paragraph separators and the
#: bidirectional embeddings, overrides and isolates.
_CONTROL: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, lines: bool = True) -> str:
    """*text* with every control character shown as an escape; with ``lines=False`` newlines and
    tabs too (for one-line places: a cell's detail, a progress line)."""
    return (_CONTROL if lines else _CONTROL_OR_NEWLINE).sub(_escape, text)


def visible_all(value: Any) -> Any:
    """A copy of *value* (builtins, nested) with :func:`visible` applied to every string, keys too."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible_all(k): visible_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [visible_all(v) for v in value]
    if isinstance(value, tuple):
        return tuple(visible_all(v) for v in value)
    return value


def capped(text: str, limit: int = TEXT_CAP) -> str:
    """*text* cut after *limit* characters, with how many more there were: ``…[12345 more characters]``.
    Linear in *limit*, whatever the size of *text* (a 30 MB label costs what a short one does)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def capped_all(value: Any, limit: int = EVIDENCE_CAP) -> Any:
    """A copy of *value* (builtins, nested) with :func:`capped` applied to every string, keys too."""
    if isinstance(value, str):
        return capped(value, limit)
    if isinstance(value, dict):
        return {capped_all(k, limit): capped_all(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(capped_all(v, limit) for v in value)
    return value
