"""pytest entry point: wires the pieces together, and nothing else.

The pipeline of ``pytest --image X``, one module per step:

* :mod:`.options`  -- options and ini keys -> targets, launch options, check policy
* :mod:`.targets`  -- ``--image`` strings -> :class:`~.runtimes.Target` (runtime registry in :mod:`.runtimes`)
* :mod:`.collect`  -- built-in checks, one test per image, row names and order, probe plans
* :mod:`.sessions` -- per image: start the runtime session, run probes in it, stop it
* :mod:`.container` -- the ``container`` fixture: probes -> verdicts -> the test's cell
* :mod:`.matrix`   -- cells -> the matrix; :mod:`.report` renders it
* :mod:`.reporter` -- the controller's reporter; :mod:`._xdist` the xdist scheduling
* :mod:`.junit` -- JUnit properties and case names (``--junit-names``); :mod:`.require` -- ``--require``
* report files are checked and written by :mod:`.engine.outputs` (so are the ``containercheck`` command's)
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import pytest

from . import __version__, collect, hints, hooks, junit, listing, options, require, rows
from .container import container, redact_report, shadowing_fixture
from .engine import hostinfo
from .engine.errors import UsageProblem
from .engine.expectations import Expectation, unused_line
from .engine.lifecycle import SessionPool
from .engine.report import fit
from .engine.runtimes import LaunchOptions, Target, get_runtime
from .hints import usage_error
from .reporter import MATRIX_KEY, MatrixReporter, QuietFailures, interruptible
from .state import STATE, RunState

SIGTERM_KEY = pytest.StashKey[Any]()

__all__ = ["container"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """The plugin's version in pytest's header, when it checks images in this run; the images
    one per line, so that the header fits the terminal however many there are."""
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    return [f"containercheck: {__version__}, {len(state.targets)} image(s)",
            *(f"  {line}" for t in state.targets for line in fit(t.id, 78))]


def pytest_configure(config: pytest.Config) -> None:
    try:
        _configure(config)
    except UsageProblem as exc:  # the engine's usage errors become pytest's, here only
        raise usage_error(str(exc)) from None


def _configure(config: pytest.Config) -> None:
    for line in rows.MARKERS:
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(collect, "containercheck-collect")
    if config.getoption("cc_list_rows", False):
        config.pluginmanager.register(listing, "containercheck-rows")  # lists rows instead of a run
        return
    if not options.images(config):
        if not hasattr(config, "workerinput"):
            config.pluginmanager.register(hints.NoImageHint(), "containercheck-no-image")
        return
    given, launch, checks = options.read(config)
    targets = given.targets
    problem = shadowing_fixture(config)
    if problem:
        raise usage_error(problem)
    workerinput = getattr(config, "workerinput", None)
    runtime_facts: dict[str, dict[str, Any]] = {}
    if workerinput is not None:  # xdist worker: the controller already checked everything
        shared = workerinput["containercheck"]
        launch.run_id, host = shared["run_id"], shared["host"]
        expectations = {k: Expectation.from_dict(v) for k, v in (shared.get("expectations") or {}).items()}
    else:
        launch.run_id = secrets.token_hex(4)
        expectations_file = options.expectations_file(config)
        host, runtime_facts = _look_around(config, targets, launch)
        # The images' labels are known now (preflight read them), and nothing has started.
        expectations, unused = require.load(targets, runtime_facts, checks.required_rows, expectations_file)
    options.gpus_for_host(launch, host)
    checks = options.checks_for_host(checks, host)
    state = RunState(targets=targets, launch=launch, checks=checks, host=host,
                     pool=SessionPool(launch, checks), runtime_facts=runtime_facts, expectations=expectations)
    if workerinput is None:
        state.unused_tables = [unused_line(e) for e in unused]
        state.repeated_images = list(given.repeated)
    config.stash[STATE] = state

    if config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR and workerinput is None:
        # Bare "pytest --image X" in some directory (a cluster home, say): run the built-in
        # suite only, instead of collecting whatever test files happen to lie around.  Your
        # own container tests join when named on the command line or in testpaths.
        config.args[:] = []
    if not options.value(config, "cc_no_builtin") and str(rows.CHECKS_DIR) not in config.args:
        config.args.append(str(rows.CHECKS_DIR))
    if workerinput is None:
        require.check_names(config, state)  # a wrong row name: a usage error now, or at collection's end
        reporter = MatrixReporter(config, state)
        config.stash[MATRIX_KEY] = reporter
        config.pluginmanager.register(reporter, "containercheck-matrix")
        config.pluginmanager.register(QuietFailures(), "containercheck-quiet-failures")
        junit.register(config, str(options.value(config, "cc_junit_names")))  # a bad value: usage error now
    if config.pluginmanager.hasplugin("xdist"):
        from ._xdist import XdistHooks  # only with xdist loaded

        # Also schedules each image's items on one worker (see XdistHooks).
        config.pluginmanager.register(XdistHooks(state), "containercheck-xdist")
    _install_sigterm(config)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """A test run in this process (not xdist, not --collect-only): start the images now, while
    their checks are collected, instead of at the first test.  Not while a row the expectations
    name may be one of the user's own checks: then collection decides first
    (:func:`.require.check_collected` starts them)."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.names_pending and config.pluginmanager.getplugin("dsession") is not None:
        # xdist's controller collects nothing, and a worker's usage error is an INTERNALERROR:
        # the controller collects once itself to check the names, before any worker runs a test.
        session.perform_collect()
        session.items = []
        return
    if not state.names_pending and collect.starts_early(config):
        state.pool.start_early(state.targets)


def _look_around(config: pytest.Config, targets: list[Target],
                 launch: LaunchOptions) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Host facts, each image's preflight (a usage error if it is unusable), the launch options
    the runtimes would refuse (``--network``, ``--runtime-arg``) and the removal of what killed
    earlier runs left behind, all at once: each mostly waits on a runtime's command line
    (``docker info``, ``docker version``, ``docker image inspect``, ``docker ps``)."""
    runtimes = list(dict.fromkeys(t.runtime for t in targets))

    def preflight() -> dict[str, dict[str, Any]]:
        archives = options.check_archives(config, targets)
        facts = {t.id: {**archives.get(t.id, {}), **get_runtime(t.runtime).preflight(t)} for t in targets}
        for name in runtimes:
            get_runtime(name).check_launch(launch)
        return facts

    with ThreadPoolExecutor(max_workers=2 + len(runtimes), thread_name_prefix="containercheck-setup") as pool:
        host = pool.submit(hostinfo.gather, runtimes)
        facts = pool.submit(preflight)
        swept = [pool.submit(get_runtime(name).reap_stale) for name in runtimes]
        runtime_facts = facts.result()  # its usage error first
        for sweep in swept:
            sweep.result()
        return host.result(), runtime_facts


def _install_sigterm(config: pytest.Config) -> None:
    """SIGTERM (Slurm time limits, CI cancel) behaves like Ctrl-C: clean up, write reports."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, on_term)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.pool.stop_all()
    if SIGTERM_KEY in config.stash:
        signal.signal(signal.SIGTERM, config.stash[SIGTERM_KEY])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    """Every container is removed while the reports are written (all tests are over), with
    SIGINT/SIGTERM held off until both are done: a second Ctrl-C (or the SIGTERM after it)
    during the clean-up would cut a ``docker rm`` short and leave its container running, and
    turn the end of the run into a traceback.  Writing and printing the reports is the exception
    (:func:`.reporter.interruptible`): there a signal ends the run, exit 2, and the removal still
    finishes, held off again."""
    held = _hold_signals()
    state = session.config.stash.get(STATE, None)
    stopped: Callable[[], None] | None = None
    try:
        # Every test is over: the containers are removed while the reports are written.
        stopped = state.pool.begin_stop() if state is not None else None
        yield
    finally:
        try:
            if stopped is not None:
                stopped()
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Generator[None, None, None]:
    """The summary is a report like the files: SIGINT and SIGTERM end the run there (exit 2), held
    off as they are around it (:func:`.reporter.interruptible`).  Runs that check no image are left
    as pytest has them."""
    if terminalreporter.config.stash.get(STATE, None) is None:
        yield
        return
    with interruptible():
        yield


def _hold_signals() -> dict[int, Any]:
    """Ignore SIGINT and SIGTERM until the handlers returned are put back (main thread only)."""
    held: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            held[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to hold
            break
    return held


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    require.apply(item, report, call)
    redact_report(item.config, report)
    return report
