"""The CI gate in the pytest run: each image's expectations (:mod:`.engine.expectations`: rows
that must pass, rows allowed to fail, intent), from ``--require``, the repository's file and the
image's labels, checked before anything starts; the gate's rules themselves are the engine's
(:mod:`.engine.gate`): this module only converts pytest's reports to the gate's observed
outcomes and its decisions back.

* :func:`parse` -- the ``--require`` values (repeatable, comma- or space-separated) -> row names;
* :func:`load` -- on the controller at configure time, after preflight has read every image's
  labels and names: each image's :class:`~.engine.expectations.Expectation` (a conflict between
  sources, a malformed file or label, an image no table of the repository covers: a usage error);
* :func:`check_names` / :func:`check_collected` -- every row named must exist: against the
  built-in rows at once, or, when the run collects the user's own checks, at the end of their
  collection (the images' early start waits for it), before any container starts;
* :func:`options_for` -- ``container.options`` of one image: its required rows and intent;
* :func:`apply` -- in every pytest process: the test's report as an observed outcome, the gate's
  decision (:func:`~.engine.gate.decide`) applied to the report (a required row that skipped
  fails; a failure of a row allowed to fail is pytest's xfail) and recorded on the cell;
* :func:`fill_missing` -- on the controller at the end: a required or allowed row that did not run
  on an image gets a failed cell (the matrix reporter calls it before the matrix is rendered).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .engine import gate
from .engine.errors import UsageProblem
from .engine.expectations import (
    Entry,
    Expectation,
    closest,
    combine,
    from_labels,
    read_file,
    split_rows,
    uncovered,
    unknown_rows,
)
from .engine.matrix import Column as _Column
from .engine.matrix import Matrix, cell_record, image_labels
from .engine.names import image_names
from .engine.policy import CheckOptions
from .engine.runtimes import Target
from .engine.textsafe import visible
from .hints import usage_error
from .rows import CHECKS_DIR, row_name, target_id
from .state import STATE, RunState


def parse(values: Iterable[str]) -> tuple[str, ...]:
    """Row names from ``--require`` values: ``--require a,b --require c`` -> ``("a", "b", "c")``."""
    return tuple(r for v in values for r in split_rows(v))


def names_of(target: Target, facts: Mapping[str, Any]) -> list[str]:
    """Every name of *target*'s image (:func:`~.engine.names.image_names`), from preflight's facts."""
    return image_names(target.spec, target.ref, target.family, facts, target.id)


def load(targets: Sequence[Target], runtime_facts: Mapping[str, Mapping[str, Any]], option_rows: Sequence[str],
         file: tuple[str, str, bool] | None) -> tuple[dict[str, Expectation], list[Entry]]:
    """Every image's expectations: *option_rows* (``--require``), the entries of *file*
    (``(path, name shown, is a pyproject.toml)``) whose globs match one of the image's names, and
    the image's labels (from preflight: *runtime_facts*); and the file's tables that matched no
    image (named in the summary).  :class:`~.engine.errors.UsageProblem` on a malformed source, a
    conflict, or an image that no table covers while the repository has tables."""
    entries = read_file(*file[:2], pyproject=file[2]) if file else []
    names = {t.id: names_of(t, runtime_facts.get(t.id, {})) for t in targets}
    problem = uncovered([(t.spec, names[t.id]) for t in targets], entries, option_rows)
    if problem:
        raise UsageProblem(problem)
    out: dict[str, Expectation] = {}
    for t in targets:
        facts = dict(runtime_facts.get(t.id, {}))
        labels = from_labels(image_labels(_Column(t.id, "", facts=facts)), t.spec)
        out[t.id] = combine(t.id, names[t.id], option_rows, entries, labels)
    unused = [e for e in entries if not any(e.matches(n) for n in names.values())]
    return out, unused


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
    return usage_error(line)  # row names may come from an image's labels


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


def observed(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str | None:
    """What a test's *report* observed, as the gate reads it (:data:`~.engine.gate.OBSERVED`), or
    None for a report that decides nothing (a setup that passed: the call decides; a teardown).

    A check that raised something other than a failure (``container.fail``, ``pytest.fail``, an
    ``assert``) could not be carried out: an error, like ``container.error``."""
    raw = cell_record(report)
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            return "pass"
        if report.skipped:
            return "xfail" if xfail else "skip"
        if raw is not None and raw.get("status") == "error":
            return "error"
        exc = call.excinfo.value if call.excinfo is not None else None
        if exc is not None and not isinstance(exc, (pytest.fail.Exception, AssertionError)):
            return "error"
        return "fail"
    if report.when == "setup":
        if report.skipped:
            return "xfail" if xfail else "skip"
        if report.failed:
            return "error"
    return None


def _said(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return f"expected to fail ({report.wasxfail or 'xfail'})"
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    raw = cell_record(report)
    return str(raw.get("detail") or "") if raw is not None else ""


def apply(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
    """The gate's decision on this test's report, made by :func:`~.engine.gate.decide` and carried
    out in pytest's terms: a row that must fail the run becomes a failed report with the gate's
    reason, an allowed failure becomes pytest's xfail with who allowed it; the decision is recorded
    on the cell (``gate``).  Called from the plugin's ``pytest_runtest_makereport`` wrapper, in
    every pytest process."""
    state = item.config.stash.get(STATE, None)
    image = target_id(item)
    if state is None or image is None:
        return
    seen = observed(report, call)
    if seen is None:
        return
    raw = cell_record(report)
    outcome = gate.decide(row_name(item), seen, _said(report), state.expectations.get(image))
    if seen == "error" and raw is not None:
        raw["status"] = "error"
    if raw is not None:
        raw["gate"] = outcome.to_dict()
    if not outcome.changed:
        return
    if outcome.status == "fail":
        if hasattr(report, "wasxfail"):
            del report.wasxfail
        report.outcome = "failed"
        report.longrepr = outcome.reason
        if raw is not None:
            raw["detail"] = outcome.reason[:300]
    elif outcome.status == "xfail":
        report.outcome = "skipped"
        report.wasxfail = outcome.reason


def fill_missing(matrix: Matrix, expectations: Mapping[str, Expectation]) -> bool:
    """The gate's failed cell for every required or allowed row that has none on its image's column
    (:func:`~.engine.gate.fill_missing`); True when any was missing."""
    return bool(gate.fill_missing(matrix, lambda key: expectations.get(key[0])))
