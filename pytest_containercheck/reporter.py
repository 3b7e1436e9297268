"""The controller's reporter: builds the matrix from test reports, prints progress per image,
flattens cells into JUnit properties, renders the matrix at the end and writes its files.

Registered only on the controller (``not hasattr(config, "workerinput")``); the same code
path serves runs with and without xdist, because cells travel on the reports.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
import socket
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from . import __version__, junit, options, require
from .engine.expectations import UNUSED_KEY
from .engine.matrix import STATUSES, CellRecord, Column, Matrix, cell_record
from .engine.outputs import Output, write_outputs
from .engine.redact import command_line_warning, redact_args
from .engine.report import fit, line_width, render_html, render_json, render_markdown, render_terminal
from .rows import image_of_nodeid, target_id
from .state import RunState

MATRIX_KEY = pytest.StashKey["MatrixReporter"]()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM end the run (exit 2) while the reports are rendered, written or printed.

    The end of a run holds both signals off (:func:`.plugin.pytest_sessionfinish`), so that a
    second Ctrl-C cannot cut the removal of a container short; the reports are no such clean-up,
    and a report that takes long (an image's hostile label, a huge merged file) must not make the
    run unstoppable.  A report file is written whole or not at all (:func:`.engine.outputs.write_file`),
    so those written before the signal are kept; the containers are still removed, with the signals
    held off again.  Main thread only (a signal handler can be set nowhere else).
    """

    def end(signum: int, frame: FrameType | None) -> None:
        pytest.exit(f"{signal.Signals(signum).name} while the reports were written: the run ends here; the "
                    "report files written before it are kept", returncode=pytest.ExitCode.INTERRUPTED)

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, end)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

_FLAG = {"cc_matrix_json": "--matrix-json", "cc_matrix_md": "--matrix-md", "cc_matrix_html": "--matrix-html"}


def host_key(host: dict[str, Any]) -> str:
    """The matrix's name for this run's host: the hostname, and the Slurm job when there is one.

    Two Slurm jobs on one node (two partitions sharing it, say) are two runs with their own GPU
    allocation and job ids: merged, they must stay two columns, not one with the last job's ids.
    """
    name = str(host.get("hostname") or socket.gethostname())
    slurm = host.get("slurm") or {}
    job = slurm.get("SLURM_JOB_ID")
    if slurm.get("SLURM_ARRAY_JOB_ID"):
        job = f"{slurm['SLURM_ARRAY_JOB_ID']}_{slurm.get('SLURM_ARRAY_TASK_ID')}"
    return f"{name} (job {job})" if job else name


class MatrixReporter:
    """Builds the matrix from reports, prints a progress line per image, renders the reports."""

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.host = host_key(state.host)
        self.matrix = Matrix()
        self.matrix.hosts[self.host] = state.host
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")  # configured: started
        self.matrix.meta = {"run_id": state.launch.run_id, "pytest_args": redact_args(config.invocation_params.args),
                            "version": __version__, "started": started, "host": self.host}
        if state.unused_tables:
            self.matrix.meta[UNUSED_KEY] = list(state.unused_tables)
        for t in state.targets:
            exp = state.expectations.get(t.id)
            self.matrix.add_column(Column(id=t.id, host=self.host, spec=t.spec, runtime=t.runtime, ref=t.ref,
                                          facts=dict(state.runtime_facts.get(t.id, {})),
                                          expectations=exp.to_dict() if exp is not None else None))
        # Progress per image: its tests' node ids, those finished, when it began, whether it is ready.
        self._expected: dict[str, set[str]] = {}
        self._finished: dict[str, set[str]] = {}
        self._began: dict[str, float] = {}
        self._ready: set[str] = set()
        self._done: set[str] = set()
        self._image_of: dict[str, str | None] = {}
        self._pending: list[str] = []
        self.written: list[tuple[str, str]] = []
        """(option dest, path) of each report file written at the end."""
        self.write_errors: list[str] = []
        """One line per report file that could not be written."""

    # -- the start ----------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session: pytest.Session) -> Generator[None, None, None]:
        """After pytest's header (at every verbosity): each image named by several ``--image``
        values, said once; it is one column, checked once."""
        result = yield
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        for line in self.state.repeated_images:
            for part in fit(f"containercheck: {line}", (line_width() or 1 << 20)):
                if tr is not None:
                    tr.write_line(part, yellow=True)
        return result

    # -- which image a test belongs to ----------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            image = target_id(item)
            if image is not None:
                self._image_of[item.nodeid] = image
                self._expected.setdefault(image, set()).add(item.nodeid)

    def expect(self, nodeids: list[str]) -> None:
        """Node ids collected by an xdist worker: map them to images (every worker sends all)."""
        for nodeid in nodeids:
            image = self._image_for(nodeid)
            if image is not None:
                self._expected.setdefault(image, set()).add(nodeid)

    def _image_for(self, nodeid: str) -> str | None:
        if nodeid not in self._image_of:
            self._image_of[nodeid] = image_of_nodeid(nodeid, [t.id for t in self.state.targets])
        return self._image_of[nodeid]

    # -- reports ------------------------------------------------------------------------------------

    # tryfirst: our lines go out before the terminal reporter starts the next test's line.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self._flush()
        image = self._image_for(nodeid)
        if image is not None and image in self._expected and image not in self._began:
            self._began[image] = time.monotonic()
            self._progress(f"{image} starting")
            self._flush()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        result = yield
        self._flush()  # the last image's "done", after the terminal reporter's [100%]
        return result

    # tryfirst: junitxml writes a test case's properties from its teardown report, so the
    # cell must be read into the matrix and flattened into properties before junitxml runs.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.matrix.update_from_report(report, self.host)
        raw = cell_record(report)
        if raw is not None and raw.get("column_facts"):
            col = self.matrix.columns.get((raw["column"], self.host))
            if col is not None and "launch" not in col.facts:
                col.facts["launch"] = raw["column_facts"]
        self._track(report, raw)
        if raw is not None and junit.finalizes_case(report):
            cell = self.matrix.cells.get((raw["row"], raw["column"], self.host))
            if cell is not None:
                junit.put_properties(report, cell)

    # -- progress -----------------------------------------------------------------------------------

    def _track(self, report: pytest.TestReport, raw: CellRecord | None) -> None:
        image = self._image_for(report.nodeid)
        if image is None or image not in self._expected:
            return
        if report.when == "setup" and image not in self._ready:
            launch = raw["column_facts"] if raw is not None else {}
            if launch:
                self._ready.add(image)
                started = launch.get("started_in_s")
                after = f" after {started:.1f} s" if isinstance(started, (int, float)) else ""
                parts = [f"container {launch['container']}" if launch.get("container") else "",
                         f"instance {launch['instance']}" if launch.get("instance") else "",
                         str((launch.get("archive") or {}).get("prepared") or "")]
                where = f" ({'; '.join(p for p in parts if p)})" if any(parts) else ""
                self._progress(f"{image} ready{after}{where}")
            elif report.failed:
                self._ready.add(image)
                cell = self.matrix.cells.get((raw["row"] if raw is not None else "", image, self.host))
                self._progress(f"{image} did not start: {cell.detail if cell else report.head_line or 'error'}")
        if report.when == "teardown":
            finished = self._finished.setdefault(image, set())
            finished.add(report.nodeid)
            if finished >= self._expected[image] and image not in self._done:
                self._done.add(image)
                cells = [c for c in self.matrix.cells.values() if (c.column, c.host) == (image, self.host)]
                counts = {s: sum(c.status == s for c in cells) for s in STATUSES}
                took = time.monotonic() - self._began.get(image, time.monotonic())
                self._progress(f"{image} done: {len(cells)} checks ("
                               + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f") in {took:.1f} s")

    def _progress(self, message: str) -> None:
        # Held until the next test starts: written now, it would cut the line of dots (or the
        # "nodeid PASSED" line under -v) of the test whose report announced it.
        if self.config.get_verbosity() >= 0:
            self._pending.append(f"containercheck: {message}")

    def _flush(self) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        for line in self._pending:
            if tr is not None:
                tr.ensure_newline()
                if tr._tw.width_of_current_line:  # xdist writes its dots with no file prefix to end
                    tr.write("\n")
                for part in fit(line, (line_width() or 1 << 20)):
                    tr.write_line(part)
        self._pending.clear()

    # -- the end of the run -------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.USAGE_ERROR:
            return  # stopped before any check (a wrong row name at collection's end): nothing to report
        with interruptible():
            self._write_reports(session, exitstatus)

    def _write_reports(self, session: pytest.Session, exitstatus: int) -> None:
        self.matrix.complete = exitstatus != pytest.ExitCode.INTERRUPTED
        if require.fill_missing(self.matrix, self.state.expectations) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.config.hook.pytest_containercheck_matrix(matrix=self.matrix, config=self.config)
        if self.config.option.collectonly:
            return  # nothing ran: an existing matrix file is not replaced by an empty one
        # Artifact paths in the cells are relative to where pytest (and its workers) ran.
        dirs = [self.config.invocation_params.dir, Path.cwd()]
        items: list[tuple[Output, str]] = []
        dest_of: dict[str, str] = {}
        for dest, render in (("cc_matrix_json", render_json), ("cc_matrix_md", render_markdown),
                             ("cc_matrix_html", lambda m: render_html(m, artifact_dirs=dirs))):
            path = options.value(self.config, dest)
            if path:
                append = dest == "cc_matrix_md" and options.md_append(self.config, str(path))
                items.append((Output(_FLAG[dest], str(path), append=append), render(self.matrix)))
                dest_of[_FLAG[dest]] = dest
        # Checked at start (options.output_paths); one that still fails (the directory went
        # away, the disk filled up) keeps its old file, is reported in one line that names what
        # was written, and costs no other output.
        done = write_outputs(items)
        self.written += [(dest_of[out.flag], out.path) for out in done.written]
        self.write_errors += done.problems()
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        tr = terminalreporter
        if exitstatus == pytest.ExitCode.USAGE_ERROR:
            return  # the one ERROR line says it all
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.config.option.keyword:
            for part in fit(require.nothing_selected(self.config.option.keyword, self.state.collected_rows),
                            (line_width() or 1 << 20)):
                tr.write_line(part)
        tr.write_sep("=", "containercheck matrix")
        for line in render_terminal(self.matrix, width=tr._tw.fullwidth, verbosity=self.config.get_verbosity()):
            tr.write_line(line)
        what = {"cc_matrix_json": "JSON", "cc_matrix_md": "Markdown", "cc_matrix_html": "HTML"}
        width = (line_width() or 1 << 20)
        if self.config.option.collectonly and any(options.value(self.config, d) for d in what):
            tr.write_line("containercheck: --collect-only: no matrix file written (nothing ran)")
        for dest, path in self.written:
            for part in fit(f"matrix {what[dest]}: {path}", width):
                tr.write_line(part)
        for line in self.write_errors:
            for part in fit(f"ERROR: {line}", width):
                tr.write_line(part, red=True)
        warning = command_line_warning(self.state.launch.runtime_args)
        if warning:
            for part in fit(f"containercheck: {warning}", width):
                tr.write_line(part, yellow=True)



class QuietFailures:
    """Under ``-q``, a check's reason is said once: in the matrix's problems, with its fix and
    every row and image that share it.  pytest's FAILURES/ERRORS sections and its short summary
    would say it twice more; there each failed check's report points at the matrix instead.

    Only a report whose failure is its reason alone (``container.fail``/``error``, the gate's
    verdict: no traceback) is shortened, and only for the terminal: JUnit and other plugins read
    the report when it was made (``pytest_runtest_logreport``), before this runs.
    """

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int,
                                config: pytest.Config) -> Generator[None, None, None]:
        if config.get_verbosity() < 0:
            for key in ("failed", "error"):
                for report in terminalreporter.stats.get(key, []):
                    cell = _row_and_image(report) if isinstance(report, pytest.TestReport) else None
                    if cell is not None and _reason_alone(report):
                        said = f"{cell[0]} on {cell[1]}: the reason and the fix are in the containercheck matrix"
                        report.longrepr = "\n".join(fit(said, line_width() or 1 << 20))
        return (yield)


def _row_and_image(report: pytest.TestReport) -> tuple[str, str] | None:
    """The row and image of a check's *report*: from its cell, or from the JUnit properties the
    cell became (:func:`.junit.put_properties`)."""
    raw = cell_record(report)
    if raw is not None:
        return str(raw["row"]), str(raw["column"])
    props = {k: v for k, v in report.user_properties if isinstance(k, str)}
    row, image = props.get(junit.ROW_PROPERTY), props.get(junit.IMAGE_PROPERTY)
    return (str(row), str(image)) if row and image else None


def _reason_alone(report: pytest.TestReport) -> bool:
    """Whether *report*'s failure is a message alone: a string (the gate's), or pytest's repr of
    ``pytest.fail(..., pytrace=False)`` (style "value"), never a traceback."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        return True
    return getattr(getattr(longrepr, "reprtraceback", None), "style", None) == "value"
