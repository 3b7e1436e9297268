"""pytest entry point: options, configuration, collection and the matrix reporter.

Only wiring lives here; runtimes, probing, the fixture and the matrix are their own modules.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType
from typing import Any, cast

import pytest

from . import hooks, hostinfo
from .fixtures import CELL_KEY, Container, SessionPool, new_cell, plan_from_markers
from .matrix import Cell, Column, Matrix
from .report import render_html, render_json, render_markdown, render_terminal
from .runtimes import LaunchOptions, get_runtime
from .runtimes.base import RuntimeFault
from .runtimes.host import check_host_python
from .runtimes.oci import reap_stale
from .state import STATE, CheckOptions, RunState
from .targets import OCI_RUNTIMES, RUNTIME_NAMES, parse_targets

CHECKS_DIR = Path(__file__).resolve().parent / "checks"
MATRIX_KEY = pytest.StashKey["MatrixReporter"]()
SIGTERM_KEY = pytest.StashKey[Any]()
ROW_MARKER = "containercheck_row"


# -- options -------------------------------------------------------------------------------


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if f <= 0:
        raise pytest.UsageError(f"--probe-timeout {value!r}: give a number of seconds > 0, e.g. --probe-timeout 600")
    return f


def _positive_int(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise pytest.UsageError(f"--probe-jobs {value!r}: give a whole number >= 1, e.g. --probe-jobs 2")
    return int(value)


def _gpus(value: str) -> str:
    v = value.strip()
    if v in ("all", "none") or v.isdigit() or v.startswith("device="):
        return v
    raise pytest.UsageError(f"--gpus {value!r}: use 'all', 'none', a count like 2, or 'device=0,1'")


def _choice(option: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise pytest.UsageError(f"{option} {value!r}: choose one of {', '.join(choices)}")
        return value
    parse.__name__ = option.lstrip("-").replace("-", "_")
    return parse


_RUNTIMES = ("auto", *RUNTIME_NAMES)
_UPDATE = ("missing", "failed", "all")
_APPTAINER_GPU = ("nv", "nvccli", "rocm", "none")

#: (flag, dest, ini name, ini type, default, argparse kwargs, help)
_OPTIONS: list[tuple[str, str, str, str | None, Any, dict[str, Any], str]] = [
    ("--image", "cc_images", "containercheck_images", "args", [], {"action": "append", "metavar": "REF"},
     "image to check (repeatable): 'host', a .sif path, an image reference, or with a docker://, "
     "podman://, apptainer:// prefix"),
    ("--runtime", "cc_runtime", "containercheck_runtime", None, "auto",
     {"type": _choice("--runtime", _RUNTIMES), "metavar": "NAME"},
     f"runtime for every --image ({', '.join(_RUNTIMES)}); default: detect from the image"),
    ("--gpus", "cc_gpus", "containercheck_gpus", None, "all", {"type": _gpus, "metavar": "VALUE"},
     "GPUs for Docker/Podman (--gpus value; 'none' disables GPU flags for every runtime); default all"),
    ("--apptainer-gpu", "cc_apptainer_gpu", "containercheck_apptainer_gpu", None, "nv",
     {"type": _choice("--apptainer-gpu", _APPTAINER_GPU), "metavar": "FLAG"},
     "Apptainer GPU support: nv (--nv, default), nvccli (--nv --nvccli), rocm, none"),
    ("--require-gpu", "cc_require_gpu", "containercheck_require_gpu", "bool", False, {"action": "store_true"},
     "fail GPU checks instead of skipping them when the host has no GPU (CI gate on GPU runners)"),
    ("--require-hw-render", "cc_require_hw_render", "containercheck_require_hw_render", "bool", False,
     {"action": "store_true"}, "fail render checks that ran on a software renderer (llvmpipe)"),
    ("--require", "cc_require", "containercheck_require", "args", [], {"action": "append", "metavar": "ROW"},
     "matrix row that must pass: a skip or absence fails the run (repeatable), e.g. torch.cuda"),
    ("--probe-timeout", "cc_probe_timeout", "containercheck_probe_timeout", None, "300",
     {"type": _positive_float, "metavar": "SECONDS"},
     "seconds one probe may run before it is killed inside the image; default 300"),
    ("--runtime-arg", "cc_runtime_args", "containercheck_runtime_args", "args", [],
     {"action": "append", "metavar": "ARG"},
     "extra flag for 'docker run' / 'apptainer exec' (repeatable; use --runtime-arg=--flag=value)"),
    ("--container-python", "cc_container_python", "containercheck_container_python", None, None,
     {"metavar": "PATH"}, "interpreter inside the image; default: try python3, then python"),
    ("--host-python", "cc_host_python", "containercheck_host_python", None, None, {"metavar": "PATH"},
     "interpreter for --image host; default: the one running pytest"),
    ("--container-env", "cc_container_env", "containercheck_container_env", "args", [],
     {"action": "append", "metavar": "NAME[=VALUE]"},
     "pass a variable into the image (repeatable); host variables are not passed unless named"),
    ("--network", "cc_network", "containercheck_network", None, "none", {"metavar": "MODE"},
     "Docker/Podman network for the container; default none (no network)"),
    ("--matrix-json", "cc_matrix_json", "containercheck_matrix_json", None, None, {"metavar": "PATH"},
     "write the compatibility matrix as JSON (schema: docs/matrix-schema.md)"),
    ("--matrix-md", "cc_matrix_md", "containercheck_matrix_md", None, None, {"metavar": "PATH"},
     "write the matrix as compact Markdown for a CI job summary (e.g. $GITHUB_STEP_SUMMARY)"),
    ("--matrix-html", "cc_matrix_html", "containercheck_matrix_html", None, None, {"metavar": "PATH"},
     "write the matrix as one self-contained HTML page (evidence and render images inline)"),
    ("--artifacts-dir", "cc_artifacts_dir", "containercheck_artifacts_dir", None, "containercheck-artifacts",
     {"metavar": "DIR"}, "where failing checks save images and diffs; default ./containercheck-artifacts"),
    ("--baseline-dir", "cc_baseline_dir", "containercheck_baseline_dir", None, None, {"metavar": "DIR"},
     "directory of render baselines, looked up before the shipped ones"),
    ("--update-baselines", "cc_update_baselines", "containercheck_update_baselines", None, None,
     {"type": _choice("--update-baselines", _UPDATE), "metavar": "WHICH"},
     "write render baselines for this renderer: missing, failed or all"),
    ("--hf-model", "cc_hf_model", "containercheck_hf_model", None, None, {"metavar": "PATH"},
     "a transformers model directory inside the image to run instead of the tiny built-in model"),
    ("--probe-jobs", "cc_probe_jobs", "containercheck_probe_jobs", None, None,
     {"type": _positive_int, "metavar": "N"},
     "probes run at once per image (default: CPU count, at most 4; 1 = one by one, on demand)"),
    ("--probe-dir", "cc_probe_dirs", "containercheck_probe_dirs", "paths", [],
     {"action": "append", "metavar": "DIR"},
     "directory of your own probes (NAME.py defining run(params, ctx)), for container.probe(NAME)"),
    ("--no-builtin-checks", "cc_no_builtin", "containercheck_no_builtin_checks", "bool", False,
     {"action": "store_true"}, "do not collect the built-in checks; run only your own container tests"),
]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("containercheck", "container image checks (pytest-containercheck)")
    for flag, dest, ini, ini_type, default, kwargs, help_ in _OPTIONS:
        group.addoption(flag, dest=dest, default=None, help=help_, **kwargs)
        parser.addini(ini, help=f"default for {flag}", type=ini_type, default=default)  # type: ignore[arg-type]


def _get(config: pytest.Config, dest: str) -> Any:
    """Command line first, ini second; ini strings go through the option's own parser."""
    for _flag, d, ini, ini_type, _default, kwargs, _h in _OPTIONS:
        if d != dest:
            continue
        value = config.getoption(dest)
        if value not in (None, []):
            return value
        value = config.getini(ini)
        if ini_type is None and value is not None and "type" in kwargs:
            return kwargs["type"](str(value))
        return value
    raise KeyError(dest)


# -- configuration -----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{ROW_MARKER}(name): the matrix row this container check fills")
    config.addinivalue_line(
        "markers", "containercheck_probe(name, params=None, weight=1.0): a probe this check reads; declared "
        "probes of an image start together, heaviest first (params: dict, or function of the options)")
    specs = list(_get(config, "cc_images") or [])
    if not specs:
        return
    runtime = _get(config, "cc_runtime")
    oci_default = "docker" if shutil.which("docker") or not shutil.which("podman") else "podman"
    targets = parse_targets(specs, runtime, oci_default)
    env = _container_env(list(_get(config, "cc_container_env") or []))
    host_python = _get(config, "cc_host_python")
    if host_python:
        check_host_python(host_python)
    launch = LaunchOptions(
        run_id="", gpus=_get(config, "cc_gpus"), apptainer_gpu=_get(config, "cc_apptainer_gpu"),
        network=_get(config, "cc_network"), runtime_args=tuple(_get(config, "cc_runtime_args") or ()),
        env=env, host_python=host_python,
    )
    cpy = _get(config, "cc_container_python")
    checks = CheckOptions(
        require_gpu=bool(_get(config, "cc_require_gpu")),
        require_hw_render=bool(_get(config, "cc_require_hw_render")),
        probe_timeout=float(_get(config, "cc_probe_timeout")),
        artifacts_dir=str(_get(config, "cc_artifacts_dir")),
        baseline_dir=_get(config, "cc_baseline_dir"),
        update_baselines=_get(config, "cc_update_baselines"),
        hf_model=_get(config, "cc_hf_model"),
        container_python=(cpy,) if cpy else ("python3", "python"),
        probe_jobs=_get(config, "cc_probe_jobs") or _default_probe_jobs(config),
        probe_dirs=tuple(str(Path(d).resolve()) for d in (_get(config, "cc_probe_dirs") or [])),
        keep_render_images=bool(_get(config, "cc_matrix_html")),
        required_rows=tuple(r for v in (_get(config, "cc_require") or []) for r in v.replace(",", " ").split()),
    )
    if checks.update_baselines and not checks.baseline_dir:
        raise pytest.UsageError(
            "--update-baselines needs --baseline-dir DIR: baselines are never written into the installed package")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # xdist worker: the controller already checked everything
        shared = workerinput["containercheck"]
        launch.run_id, host, runtime_facts = shared["run_id"], shared["host"], {}
    else:
        launch.run_id = secrets.token_hex(4)
        host = hostinfo.gather(t.runtime for t in targets)
        runtime_facts = {t.id: get_runtime(t.runtime).preflight(t) for t in targets}
        for exe in sorted({t.runtime for t in targets if t.runtime in OCI_RUNTIMES}):
            reap_stale(exe)
    state = RunState(targets=targets, launch=launch, checks=checks, host=host, runtime_facts=runtime_facts)
    state.pool = SessionPool(state)
    config.stash[STATE] = state

    if config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR and workerinput is None:
        # Bare "pytest --image X" in some directory (a cluster home, say): run the built-in
        # suite only, instead of collecting whatever test files happen to lie around.  Your
        # own container tests join when named on the command line or in testpaths.
        config.args[:] = []
    if not _get(config, "cc_no_builtin") and str(CHECKS_DIR) not in config.args:
        config.args.append(str(CHECKS_DIR))
    if workerinput is None:
        reporter = MatrixReporter(config, state)
        config.stash[MATRIX_KEY] = reporter
        config.pluginmanager.register(reporter, "containercheck-matrix")
    if config.pluginmanager.hasplugin("xdist"):
        # Also schedules each image's items on one worker (see XdistHooks).
        config.pluginmanager.register(XdistHooks(state), "containercheck-xdist")
    _install_sigterm(config)


def _default_probe_jobs(config: pytest.Config) -> int:
    """CPUs (at most 4) per pytest process: xdist workers share the machine's CPUs, and
    probes past that only compete for them."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    return max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))


def _container_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name.isidentifier():
            raise pytest.UsageError(f"--container-env {item!r}: expected NAME or NAME=VALUE")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
        else:
            raise pytest.UsageError(f"--container-env {name}: not set on the host; give NAME=VALUE")
    return env


def _install_sigterm(config: pytest.Config) -> None:
    """SIGTERM (Slurm time limits, CI cancel) behaves like Ctrl-C: clean up, write reports."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, on_term)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None and state.pool is not None:
        state.pool.stop_all()
    if SIGTERM_KEY in config.stash:
        signal.signal(signal.SIGTERM, config.stash[SIGTERM_KEY])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None and state.pool is not None:
        state.pool.stop_all()


# -- collection ------------------------------------------------------------------------------


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Without --image the built-in checks have nothing to run against.
    if STATE not in config.stash and collection_path.is_relative_to(CHECKS_DIR):
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash.get(STATE, None)
    if state is None or "container" not in metafunc.fixturenames:
        return
    metafunc.parametrize("container", state.targets, ids=[t.id for t in state.targets], indirect=True)


#: Built-in check modules in the order their rows are shown: the image, then rendering, then ML.
_MODULE_ORDER = ("test_system", "test_render", "test_ml")


def _module_rank(item: pytest.Item) -> int:
    path = Path(str(item.path))
    if path.parent != CHECKS_DIR:
        return len(_MODULE_ORDER)  # users' own tests come after the built-in rows
    return _MODULE_ORDER.index(path.stem) if path.stem in _MODULE_ORDER else len(_MODULE_ORDER) - 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STATE not in config.stash:
        return
    items.sort(key=_module_rank)  # stable: keeps each module's own order
    state = config.stash[STATE]
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "container" in callspec.params:
            plan = state.probe_plan.setdefault(callspec.params["container"].id, [])
            plan += [p for p in plan_from_markers(item, state.checks) if p not in plan]


def row_name(item: pytest.Item) -> str:
    """The matrix row of a test: its ``containercheck_row`` marker, else its name."""
    marker = item.get_closest_marker(ROW_MARKER)
    if marker is not None and marker.args:
        return str(marker.args[0])
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        extra = [f"{k}={v}" for k, v in callspec.params.items() if k != "container"]
        if extra:
            name += "[" + ",".join(extra) + "]"
    return name


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Container:
    """The image under test (one test per ``--image``): run commands and probes in it.

    See the README ("The container fixture") for the API: ``run``, ``python``, ``probe``,
    ``facts``, ``note``, ``fail``, ``skip``, ``gpu_expected``.
    """
    state = request.config.stash.get(STATE, None)
    if state is None or not hasattr(request, "param"):
        pytest.skip("no --image given (e.g. pytest --image host)")
    target = request.param
    cell = new_cell(row_name(request.node), target.id)
    request.node.user_properties.append((CELL_KEY, cell))
    image = state.pool.get(target)
    c = Container(image, state, cell)
    # Start the image now, so a launch failure is an error in setup, not a failed check.
    cell["column_facts"] = dict(c.session_facts)
    return c


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    state = item.config.stash.get(STATE, None)
    if state is None or not state.checks.required_rows or not report.skipped:
        return report
    if row_name(item) in state.checks.required_rows:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"required row {row_name(item)!r} was skipped: {reason}"
    return report


# -- xdist --------------------------------------------------------------------------------


class XdistHooks:
    """Registered only when xdist is installed: hands run id and host facts to workers,
    and tells the matrix reporter which tests each image has (for the progress lines)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["containercheck"] = {"run_id": self.state.launch.run_id, "host": self.state.host}

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Keep each image whole on one worker, so every image starts once."""
        if config.getoption("dist") not in ("load", "loadgroup"):
            return None  # the user chose another distribution: respect it
        return _image_scheduler(config, log, [t.id for t in self.state.targets])

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing under xdist: the workers' node ids are all it gets.
        reporter = node.config.stash.get(MATRIX_KEY, None)
        if reporter is not None:
            reporter.expect(ids)


# -- the matrix (controller only) ------------------------------------------------------------


class MatrixReporter:
    """Builds the matrix from reports, prints a progress line per image, renders the reports."""

    #: Evidence values longer than this are cut in JUnit properties (the JSON/HTML have them whole).
    JUNIT_VALUE_WIDTH = 300
    #: At most this many ``containercheck.evidence.*`` properties per test case.
    JUNIT_EVIDENCE_LIMIT = 30

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.host = str(state.host.get("hostname") or socket.gethostname())
        self.matrix = Matrix()
        self.matrix.hosts[self.host] = state.host
        self.matrix.meta = {"run_id": state.launch.run_id, "pytest_args": list(config.invocation_params.args)}
        for t in state.targets:
            self.matrix.add_column(Column(id=t.id, host=self.host, spec=t.spec, runtime=t.runtime, ref=t.ref,
                                          facts=dict(state.runtime_facts.get(t.id, {}))))
        # Progress per image: its tests' node ids, those finished, when it began, whether it is ready.
        self._expected: dict[str, set[str]] = {}
        self._finished: dict[str, set[str]] = {}
        self._began: dict[str, float] = {}
        self._ready: set[str] = set()
        self._done: set[str] = set()
        self._image_of: dict[str, str | None] = {}
        self._pending: list[str] = []

    # -- which image a test belongs to ----------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "container" in callspec.params:
                image = callspec.params["container"].id
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
            self._image_of[nodeid] = _image_of_nodeid(nodeid, [t.id for t in self.state.targets])
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
        raw = _cell_of(report)
        if raw is not None and raw.get("column_facts"):
            col = self.matrix.columns.get((raw["column"], self.host))
            if col is not None and "launch" not in col.facts:
                col.facts["launch"] = raw["column_facts"]
        self._track(report, raw)
        # junitxml finalizes a test case from its teardown report, or from the failed call
        # report when the teardown fails too.
        if raw is not None and (report.when == "teardown" or (report.when == "call" and report.failed)):
            cell = self.matrix.cells.get((raw["row"], raw["column"], self.host))
            if cell is not None:
                flat = self.junit_properties(cell)
                props = list(report.user_properties)
                at = next(i for i, (k, _v) in enumerate(props) if k == CELL_KEY)
                report.user_properties = [*props[:at], *flat, *(p for p in props[at + 1:] if p[0] != CELL_KEY)]

    @classmethod
    def junit_properties(cls, cell: Cell) -> list[tuple[str, str]]:
        """A cell as flat string properties for ``--junitxml`` (a dict would be written as its repr)."""
        props = [("containercheck.row", cell.row), ("containercheck.image", cell.column),
                 ("containercheck.host", cell.host), ("containercheck.status", cell.status),
                 ("containercheck.detail", cell.detail)]
        props += [(f"containercheck.{k}", v) for k, v in (("fix", cell.fix), ("fault", cell.fault)) if v]
        evidence: list[tuple[str, str]] = []
        for key, value in cell.evidence.items():
            # Scalars, and the scalars one level down: the key facts (renderer, versions, devices).
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, v in items:
                if v is None or isinstance(v, (dict, list)) or v == "":
                    continue
                text = " ".join(str(v).split())
                if len(text) > cls.JUNIT_VALUE_WIDTH:
                    text = text[: cls.JUNIT_VALUE_WIDTH - 1] + "…"
                evidence.append((f"containercheck.evidence.{key}" + (f".{sub}" if sub else ""), text))
        return props + evidence[: cls.JUNIT_EVIDENCE_LIMIT]

    # -- progress -----------------------------------------------------------------------------------

    def _track(self, report: pytest.TestReport, raw: dict[str, Any] | None) -> None:
        image = self._image_for(report.nodeid)
        if image is None or image not in self._expected:
            return
        if report.when == "setup" and image not in self._ready:
            launch = (raw or {}).get("column_facts") or {}
            if launch:
                self._ready.add(image)
                started = launch.get("started_in_s")
                after = f" after {started:.1f} s" if isinstance(started, (int, float)) else ""
                where = f" (container {launch['container']})" if launch.get("container") else ""
                self._progress(f"{image} ready{after}{where}")
            elif report.failed:
                self._ready.add(image)
                cell = self.matrix.cells.get(((raw or {}).get("row", ""), image, self.host))
                self._progress(f"{image} did not start: {cell.detail if cell else report.head_line or 'error'}")
        if report.when == "teardown":
            finished = self._finished.setdefault(image, set())
            finished.add(report.nodeid)
            if finished >= self._expected[image] and image not in self._done:
                self._done.add(image)
                cells = [c for c in self.matrix.cells.values() if (c.column, c.host) == (image, self.host)]
                counts = {s: sum(c.status == s for c in cells) for s in ("pass", "fail", "error", "skip")}
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
                tr.write_line(line)
        self._pending.clear()

    # -- the end of the run -------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.matrix.complete = exitstatus != pytest.ExitCode.INTERRUPTED
        missing = False
        for row in self.state.checks.required_rows:
            for key in self.matrix.columns:
                if self.matrix.get(row, key) is None:
                    missing = True
                    self.matrix.put(Cell(row=row, column=key[0], host=key[1], status="fail",
                                         detail="required row did not run (deselected, or no such check)",
                                         fix="run the check that fills it, or drop it from containercheck_require"))
        if missing and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.config.hook.pytest_containercheck_matrix(matrix=self.matrix, config=self.config)
        # Artifact paths in the cells are relative to where pytest (and its workers) ran.
        dirs = [self.config.invocation_params.dir, Path.cwd()]
        for dest, render in (("cc_matrix_json", render_json), ("cc_matrix_md", render_markdown),
                             ("cc_matrix_html", lambda m: render_html(m, artifact_dirs=dirs))):
            path = _get(self.config, dest)
            if path:
                out = Path(path)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(render(self.matrix), encoding="utf-8")
                os.chmod(out, 0o644)  # never world-writable, whatever the umask (CI runners may use 000)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.write_sep("=", "containercheck matrix")
        for line in render_terminal(self.matrix, width=tr._tw.fullwidth, verbosity=self.config.get_verbosity()):
            tr.write_line(line)
        for dest, what in (("cc_matrix_json", "JSON"), ("cc_matrix_md", "Markdown"), ("cc_matrix_html", "HTML")):
            path = _get(self.config, dest)
            if path:
                tr.write_line(f"matrix {what}: {path}")


def _cell_of(report: pytest.TestReport) -> dict[str, Any] | None:
    """The cell dict a test attached to its report, if any."""
    for key, value in report.user_properties:
        if key == CELL_KEY and isinstance(value, dict):
            return cast(dict[str, Any], value)
    return None


def _image_scheduler(config: pytest.Config, log: Any, image_ids: list[str]) -> Any:
    """xdist's LoadScope scheduling with the image as the scope: each image's items go to one
    worker, images spread over workers.

    Not ``--dist loadgroup`` with ``xdist_group`` marks: that works by rewriting node ids on
    the workers, which pytest 9.2 no longer honours (xdist 3.8 then silently runs every image
    on every worker).  The image is recognised from the node id's parameter id instead.
    """
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # xdist is present here

    class ImageScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _image_of_nodeid(nodeid, image_ids) or nodeid

    return ImageScheduling(config, log)


def _image_of_nodeid(nodeid: str, image_ids: list[str]) -> str | None:
    """The image a node id belongs to, from its ``@group`` suffix (``--dist loadgroup`` adds the
    image id) or else its parameter id (``test_x[docker://img:1]``, ``test_y[docker://img:1-a]``)."""
    for image in sorted(image_ids, key=len, reverse=True):
        if nodeid.endswith("@" + image):
            return image
    start, end = nodeid.find("["), nodeid.rfind("]")
    if start < 0 or end < start:
        return None
    params = nodeid[start + 1:end]
    for image in sorted(image_ids, key=len, reverse=True):
        if params == image or params.startswith(image + "-") or params.endswith("-" + image) \
                or f"-{image}-" in params:
            return image
    return None


__all__ = ["RuntimeFault", "container"]
