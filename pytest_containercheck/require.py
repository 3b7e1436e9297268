"""The CI gate in the pytest run: each image's expectations (:mod:`.engine.expectations`: rows
that must pass, rows allowed to fail, intent), from ``--require``, the repository's file and the
image's labels, checked before anything starts and applied to every test's outcome.

* :func:`parse` -- the ``--require`` values (repeatable, comma- or space-separated) -> row names;
* :func:`load` -- on the controller at configure time, after preflight has read every image's
  labels: each image's :class:`~.engine.expectations.Expectation` (a conflict between sources,
  a malformed file or label: a usage error);
* :func:`check_names` / :func:`check_collected` -- every row named must exist: against the
  built-in rows at once, or, when the run collects the user's own checks, at the end of their
  collection (the images' early start waits for it), before any container starts;
* :func:`options_for` -- ``container.options`` of one image: its required rows and intent;
* :func:`apply` -- in every pytest process: a required row that skipped fails, with its reason
  and who required it; a failure of a row allowed to fail is an expected failure (pytest's
  xfail), with its reason;
* :func:`fill_missing` -- on the controller at the end: a required row that did not run on an
  image gets a failed cell (the matrix reporter calls it before the matrix is rendered).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .engine.expectations import Expectation, closest, combine, from_labels, read_file, split_rows, unknown_rows
from .engine.matrix import Cell, Matrix, cell_record, image_labels
from .engine.matrix import Column as _Column
from .engine.policy import CheckOptions
from .engine.runtimes import Target
from .engine.textsafe import visible
from .rows import CHECKS_DIR, row_name, target_id
from .state import STATE, RunState


def parse(values: Iterable[str]) -> tuple[str, ...]:
    """Row names from ``--require`` values: ``--require a,b --require c`` -> ``("a", "b", "c")``."""
    return tuple(r for v in values for r in split_rows(v))


def load(targets: Sequence[Target], runtime_facts: Mapping[str, Mapping[str, Any]], option_rows: Sequence[str],
         file: tuple[str, str, bool] | None) -> dict[str, Expectation]:
    """Every image's expectations: *option_rows* (``--require``), the entries of *file*
    (``(path, name shown, is a pyproject.toml)``) whose globs match the image, and the image's
    labels (from preflight: *runtime_facts*).  :class:`~.engine.errors.UsageProblem` on a
    malformed source or a conflict."""
    entries = read_file(*file[:2], pyproject=file[2]) if file else []
    out: dict[str, Expectation] = {}
    for t in targets:
        facts = dict(runtime_facts.get(t.id, {}))
        names = [t.spec, t.id, t.ref, *(str(tag) for tag in facts.get("repo_tags") or [])]
        labels = from_labels(image_labels(_Column(t.id, "", facts=facts)), t.spec)
        out[t.id] = combine(t.id, names, option_rows, entries, labels)
    return out


def builtin_row_names() -> set[str]:
    """The names of the built-in rows (their registry, :func:`~.checks.builtin_rows`)."""
    from .checks import builtin_rows  # imports the check modules: only when names are checked

    return {r.name for r in builtin_rows()}


def _collects_own_checks(config: pytest.Config) -> bool:
    """Whether the run may collect checks of the user's own (any path outside the built-in ones)."""
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path != CHECKS_DIR and not path.is_relative_to(CHECKS_DIR):
            return True
    return False


def _problem(line: str) -> pytest.UsageError:
    return pytest.UsageError(visible(line, lines=False))  # row names may come from an image's labels


def check_names(config: pytest.Config, state: RunState) -> None:
    """Every row the expectations name is a built-in row, or else the run collects the user's own
    checks, which may have it: then the check waits for their collection (``state.names_pending``
    holds the images' early start).  :class:`pytest.UsageError` naming the closest row otherwise."""
    lines = unknown_rows(state.expectations.values(), builtin_row_names())
    if not lines:
        return
    if not _collects_own_checks(config):
        raise _problem(lines[0])
    state.names_pending = True


def check_collected(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Collection is over (before ``-k``/``-m`` deselect anything): the rows are known; a row
    the expectations name that is none of them is a usage error, before any container starts."""
    state = config.stash.get(STATE, None)
    if state is None:
        return
    state.collected_rows = list(dict.fromkeys(row_name(i) for i in items if target_id(i) is not None))
    if not state.names_pending:
        return
    lines = unknown_rows(state.expectations.values(), builtin_row_names() | set(state.collected_rows))
    if lines:
        raise _problem(lines[0])
    state.names_pending = False


def nothing_selected(keyword: str, collected: Sequence[str]) -> str:
    """The line for a ``-k`` that selected no check: the closest rows to its words, and every row."""
    from .checks import builtin_rows

    rows = list(dict.fromkeys([*(r.name for r in builtin_rows()), *collected]))
    words = [w for w in re.findall(r"[^\s()]+", keyword) if w not in ("and", "or", "not")]
    near = list(dict.fromkeys(n for w in words if (n := closest(w, rows)) is not None))
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return visible(f"containercheck: -k {keyword!r} selected no check{hint} Rows: {', '.join(rows)} "
                   "(pytest --containercheck-rows says what each proves)", lines=False)


def options_for(state: RunState, image: str) -> CheckOptions:
    """``container.options`` for *image*: the run's options, with the image's own required rows
    (from every source) and declared intent."""
    exp = state.expectations.get(image)
    if exp is None:
        return state.checks
    return dataclasses.replace(state.checks, required_rows=tuple(exp.required), intent=exp.intent,
                               intent_source=", ".join(exp.intent_sources))


def apply(item: pytest.Item, report: pytest.TestReport) -> None:
    """The image's expectations decide the outcome: a required row that skipped fails (the gate
    asked for it to pass); a row allowed to fail that failed is an expected failure (xfail),
    with its reason.  An error (the check could not be carried out) is not what allow-fail
    allows: it stays an error.  Called from the plugin's ``pytest_runtest_makereport`` wrapper,
    in every pytest process."""
    state = item.config.stash.get(STATE, None)
    image = target_id(item)
    exp = state.expectations.get(image) if state is not None and image is not None else None
    if exp is None or exp.empty:
        return
    row = row_name(item)
    raw = cell_record(report)
    if report.skipped and row in exp.required:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if hasattr(report, "wasxfail"):  # an xfail mark of the user's own: still no pass
            reason = f"expected to fail ({report.wasxfail or 'xfail'})"
            del report.wasxfail
        message = f"required row {row!r} was skipped (required by {', '.join(exp.required[row])}): " \
                  f"{str(reason).removeprefix('Skipped: ')}"
        report.outcome = "failed"
        report.longrepr = message
        if raw is not None:
            raw["detail"] = message[:300]
    elif report.failed and report.when == "call" and row in exp.allowed:
        if raw is not None and raw.get("status") == "error":
            return
        report.outcome = "skipped"
        report.wasxfail = f"allowed to fail by {exp.allowance(row)}"


def fill_missing(matrix: Matrix, expectations: Mapping[str, Expectation]) -> bool:
    """A failed cell for every required row that has none on its image's column; True when any
    was missing."""
    missing = False
    for key in matrix.columns:
        exp = expectations.get(key[0])
        for row, sources in (exp.required.items() if exp is not None else ()):
            if matrix.get(row, key) is None:
                missing = True
                matrix.put(Cell(row=row, column=key[0], host=key[1], status="fail",
                                detail=f"required row did not run (deselected, or no such check); "
                                       f"required by {', '.join(sources)}",
                                fix="run the check that fills it, or stop requiring it there"))
    return missing
