"""``pytest --containercheck-rows [PATHS]``: every row a run can have, with one line on what it
proves, instead of a run (as ``pytest --markers`` lists markers).

The built-in rows come from their registry (:func:`~.checks.builtin_rows`); the user's own
checks (tests that take ``container``) from collecting *PATHS* (or ``testpaths``, or the current
directory, as a run would), each with the first paragraph of its docstring.  Registered by the
plugin only when the option is given; no image is looked at and nothing starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .engine.report import fit, line_width
from .rows import CHECKS_DIR, row_name


def _doc(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "obj", None), "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split()) or "(no docstring)"


def rows_text(items: list[pytest.Item], root: Path, width: int | None = None) -> list[str]:
    """The listing: built-in rows, then the user's own checks among *items* (paths shown from *root*);
    wrapped to *width* (the terminal's), each row's text under its own column, or whole lines for None."""
    from .checks import builtin_rows

    builtin = [(r.name, r.doc) for r in builtin_rows()]
    own: dict[str, str] = {}
    for item in items:
        if "container" not in getattr(item, "fixturenames", ()):
            continue
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(CHECKS_DIR):
            continue
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        own.setdefault(row_name(item), f"{_doc(item)} ({shown})")
    names = max(len(name) for name in [*(n for n, _ in builtin), *own, "row"])

    def said(text: str, indent: str = "    ") -> list[str]:
        return fit(text, width, indent) if width else [text]

    lines = [*said("containercheck rows: the names -k and --require take (and the labels and expectation files)"),
             "built-in:"]
    for name, doc in builtin:
        lines += said(f"  {name.ljust(names)}  {doc}", " " * (names + 4))
    lines += said("your own checks:" if own else "your own checks: none collected (give the paths of your test files)")
    for name, doc in own.items():
        lines += said(f"  {name.ljust(names)}  {doc}", " " * (names + 4))
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> bool:
    """Collect, list the rows, and run nothing."""
    session.perform_collect()
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    width = line_width() if tr is None else (line_width() and tr._tw.fullwidth)
    for line in rows_text(list(session.items), session.config.rootpath.resolve(), width):
        if tr is not None:
            tr.write_line(line)
    session.config.option.collectonly = True  # nothing runs (pytest's own run loop honours it)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK  # a listing of the built-in rows alone is a success
