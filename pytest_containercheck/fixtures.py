"""The ``container`` fixture: one image, seen from a test.

Sessions (running containers) are pooled per process: the first test that needs an image
starts it, every probe for that image runs in it, and the pool stops them all at the end
of the run (also on Ctrl-C).  Probe results are cached per image and parameters, so the
checks that read the same facts run the probe once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from . import probing
from .probing import ProbeError, ProbeResult, PythonInfo
from .runtimes import LaunchOptions, RuntimeFault, Session, get_runtime
from .runtimes.base import text
from .state import CheckOptions, RunState
from .targets import Target

CELL_KEY = "containercheck"
"""Key of the ``user_properties`` entry that carries a test's matrix cell."""
MAX_RESTARTS = 3
"""How often one image's container is started again after it stopped mid-run."""
FAULTS = ("image", "host", "pair")


@dataclasses.dataclass(frozen=True)
class PlannedProbe:
    """A probe some collected check will read, declared with ``containercheck_probe``."""

    name: str
    params_json: str
    weight: float = 1.0

    @property
    def params(self) -> dict[str, Any]:
        return dict(json.loads(self.params_json))

    @property
    def key(self) -> str:
        return self.name + self.params_json


def canonical_params(params: Mapping[str, Any]) -> str:
    """Probe parameters as canonical JSON: equal parameters give equal text."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def probe_key(name: str, params: Mapping[str, Any]) -> str:
    """The cache key of a probe run: its name and canonical parameters (= ``PlannedProbe.key``)."""
    return name + canonical_params(params)


def plan_from_markers(item: pytest.Item, options: CheckOptions) -> list[PlannedProbe]:
    """The probes *item* declares with ``@pytest.mark.containercheck_probe(name, params=, weight=)``.

    ``params`` may be a dict or a function of the :class:`CheckOptions` returning one (for
    probes whose parameters come from options, like ``--hf-model``).
    """
    plan = []
    for mark in item.iter_markers("containercheck_probe"):
        name = str(mark.args[0])
        params = mark.kwargs.get("params") or {}
        if callable(params):
            params = params(options)
        plan.append(PlannedProbe(name, canonical_params(params), float(mark.kwargs.get("weight", 1.0))))
    return plan


class ImageSession:
    """One image in this process: its runtime session, interpreter and probe results.

    Probes run at most once per parameter set.  When the checks declared the probes they
    will read (the *plan*), the first probe request starts them all on ``probe_jobs``
    worker threads inside the image, heaviest first, so imports of torch, VTK and
    transformers overlap instead of queueing.  A check asking for a probe that no worker
    has picked up yet runs it at once itself; one that is running is waited for.
    """

    def __init__(self, target: Target, launch: LaunchOptions, checks: CheckOptions,
                 plan: Sequence[PlannedProbe] = ()) -> None:
        self.target = target
        self.launch = launch
        self.checks = checks
        self.session: Session | None = None
        self.start_error: RuntimeFault | None = None
        self.python_info: PythonInfo | None = None
        self.python_error: ProbeError | None = None
        self.probes: dict[str, ProbeResult] = {}
        self._lock = threading.Lock()
        self._queue = sorted(dict.fromkeys(plan), key=lambda p: -p.weight)  # stable: declaration order
        self._running: dict[str, threading.Event] = {}
        self._failures: dict[str, ProbeError] = {}
        self._workers: list[threading.Thread] = []
        self.restarts: list[str] = []
        """Why each earlier container of this image stopped (it was replaced by a new one)."""
        self._restart_lock = threading.Lock()

    def ensure_started(self) -> Session:
        """Start the image once; re-raise the same fault for every later test."""
        if self.start_error is not None:
            raise self.start_error
        if self.session is None:
            t0 = time.monotonic()
            try:
                self.session = get_runtime(self.target.runtime).start(self.target, self.launch)
            except RuntimeFault as exc:
                self.start_error = exc
                raise
            self.session.facts["started_in_s"] = round(time.monotonic() - t0, 3)
        return self.session

    def ensure_python(self) -> PythonInfo:
        """Find the image's interpreter once; re-raise the same error later."""
        session = self.ensure_started()
        if self.python_error is not None:
            raise self.python_error
        if self.python_info is None:
            try:
                self.python_info = probing.find_python(
                    session, session.python_candidates(self.checks.container_python))
            except ProbeError as exc:
                self.python_error = exc
                raise
            session.facts["python"] = {"command": self.python_info.command,
                                       "version": ".".join(map(str, self.python_info.version)),
                                       "executable": self.python_info.executable}
        return self.python_info

    def probe(self, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ProbeResult:
        """The result of probe *name* with *params*: cached, awaited, or run now."""
        key = probe_key(name, params)
        self.ensure_python()
        self._start_workers()
        with self._lock:
            done = key in self.probes or key in self._failures
            event = self._running.get(key)
            mine = not done and event is None
            if mine:
                self._queue = [p for p in self._queue if p.key != key]
                event = self._running[key] = threading.Event()
        if mine:
            self._run(key, name, params, env)
        elif event is not None:
            event.wait()
        if key in self._failures:
            raise self._failures[key]
        return self.probes[key]

    def _probe_in(self, session: Session, name: str, params: Mapping[str, Any],
                  env: Mapping[str, str] | None) -> ProbeResult:
        assert self.python_info is not None
        return probing.run_probe(session, self.python_info, name, params, timeout=self.checks.probe_timeout,
                                 env=env, extra_dirs=self.checks.probe_dirs)

    def _run(self, key: str, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None) -> None:
        try:
            session, since = self._current(), time.time()
            result = self._probe_in(session, name, params, env)
            result = self._recover(session, since, result, name, params, env)
        except ProbeError as exc:
            with self._lock:
                self._failures[key] = exc
        else:
            with self._lock:
                self.probes[key] = result
        finally:
            with self._lock:
                self._running.pop(key).set()

    # -- faults around a probe: OOM kills, a container that stopped, a daemon that went away --

    def _current(self) -> Session:
        """The container to run the next probe in; ProbeError once the image is gone for good."""
        with self._restart_lock:
            if self.session is not None:
                return self.session
            fault = self.start_error
        raise ProbeError(str(fault) if fault else "the image is not running",
                         fix=fault.fix if fault else None, evidence=fault.evidence if fault else "")

    def _recover(self, session: Session, since: float, result: ProbeResult, name: str,
                 params: Mapping[str, Any], env: Mapping[str, str] | None) -> ProbeResult:
        """Explain a probe that ended without a result, and replace a container that stopped.

        A probe that was running when its container stopped says so (its cell errors); the
        next probes run in a new container.  A probe whose container was already gone
        before it started runs again in the new one.
        """
        restarts = session.facts.get("restarts")
        if restarts:
            result.restarted = restarts[-1]
        if result.ok or result.status in ("error", "timeout"):
            return result
        health = session.health(since)
        if health.running:
            if health.oom_killed:
                result.error = f"{health.reason}; give it more with --runtime-arg=--memory=SIZE"
            return result
        self._replace(session, health.reason, health.runtime_down)
        if health.runtime_down:
            result.error = health.reason
            return result
        if result.started:
            result.error = f"the container stopped while the probe ran: {health.reason}"
            return result
        with self._restart_lock:
            current = self.session
        if current is None:
            result.error = f"the container had stopped before the probe ran: {health.reason}; {self.start_error}"
            return result
        again = self._probe_in(current, name, params, env)
        again.restarted = health.reason
        return again

    def _replace(self, session: Session, reason: str, runtime_down: bool) -> None:
        """*session* stopped: start a new container for what follows, unless that cannot help."""
        with self._restart_lock:
            if self.session is not session:  # another probe thread saw it first
                return
            self.restarts.append(reason)
            try:
                session.stop()  # frees its name; it may already be gone
            except Exception:
                pass
            # start_error is set before session is cleared: ensure_started checks it first.
            if runtime_down:
                self.start_error = RuntimeFault(
                    f"{reason} during the run", fix="start the daemon again and rerun; check its log for why "
                    "it stopped (journalctl -u docker)")
            elif len(self.restarts) > MAX_RESTARTS:
                self.start_error = RuntimeFault(
                    f"the container stopped {len(self.restarts)} times (last: {reason}); not starting it again",
                    fix="look at the evidence of the cells that ran when it stopped")
            else:
                try:
                    new = get_runtime(self.target.runtime).start(self.target, self.launch)
                except RuntimeFault as exc:
                    self.start_error = RuntimeFault(f"{reason}; starting it again failed: {exc}", fix=exc.fix,
                                                    evidence=exc.evidence)
                else:
                    new.facts.update(python=session.facts.get("python"), restarts=list(self.restarts))
                    self.session = new
                    return
            self.session = None

    def _start_workers(self) -> None:
        if self._workers or self.checks.probe_jobs < 2 or not self._queue:
            return
        for i in range(min(self.checks.probe_jobs, len(self._queue))):
            t = threading.Thread(target=self._work, name=f"containercheck-probe-{i}", daemon=True)
            self._workers.append(t)
            t.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._queue and (self._queue[0].key in self.probes or self._queue[0].key in self._running):
                    self._queue.pop(0)
                if not self._queue or self.session is None:
                    return
                planned = self._queue.pop(0)
                self._running[planned.key] = threading.Event()
            self._run(planned.key, planned.name, planned.params, None)

    def stop(self) -> None:
        with self._lock:
            self._queue.clear()  # workers finish their current probe and exit
        if self.session is not None:
            self.session.stop()


class SessionPool:
    """Every image session of this process, stopped together at the end."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.sessions: dict[str, ImageSession] = {}

    def get(self, target: Target) -> ImageSession:
        if target.id not in self.sessions:
            self.sessions[target.id] = ImageSession(target, self.state.launch, self.state.checks,
                                                    self.state.probe_plan.get(target.id, ()))
        return self.sessions[target.id]

    def stop_all(self) -> None:
        for s in self.sessions.values():
            try:
                s.stop()
            except Exception:  # one broken session must not keep the others alive
                pass


@dataclasses.dataclass
class CommandResult:
    """The outcome of :meth:`Container.run` / :meth:`Container.python`."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0


class Container:
    """What a test gets as ``container``: one image on this host, plus its matrix cell."""

    def __init__(self, image: ImageSession, state: RunState, cell: dict[str, Any]) -> None:
        self._image = image
        self._state = state
        self._cell = cell

    # -- about the image and the host -------------------------------------------------

    @property
    def target(self) -> Target:
        """The image under test."""
        return self._image.target

    @property
    def id(self) -> str:
        """The image's column id, e.g. ``docker://img:tag``."""
        return self._image.target.id

    @property
    def host(self) -> dict[str, Any]:
        """Host facts (see :mod:`pytest_containercheck.hostinfo`)."""
        return self._state.host

    @property
    def options(self) -> CheckOptions:
        """Policy options (``--require-gpu`` and friends)."""
        return self._state.checks

    @property
    def session_facts(self) -> dict[str, Any]:
        """How the image was launched: runtime, GPU passthrough outcome, container id."""
        return self._started().facts

    # -- running things ------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: bytes | str | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None) -> CommandResult:
        """Run *argv* (a list, never a shell string) inside the image."""
        if isinstance(argv, str):
            raise TypeError("container.run() takes an argv list, e.g. ['nvidia-smi', '-L']")
        session = self._started()
        data = input.encode() if isinstance(input, str) else input
        res = session.exec(list(argv), stdin=data, env=env,
                           timeout=timeout if timeout is not None else self.options.probe_timeout)
        return CommandResult(res.argv, res.returncode, text(res.stdout), text(res.stderr),
                             res.duration, res.timed_out)

    def python(self, code: str, *, env: Mapping[str, str] | None = None,
               timeout: float | None = None) -> CommandResult:
        """Run Python *code* with the image's interpreter (sent on stdin)."""
        python = self._python()
        return self.run([python.command, "-"], input=code, env=env, timeout=timeout)

    def probe(self, name: str, **params: Any) -> ProbeResult:
        """Run built-in probe *name* (cached per image and parameters)."""
        self._python()
        problem: ProbeError | None = None
        try:
            result = self._image.probe(name, params)
        except ProbeError as exc:
            problem = exc
        if problem is not None:
            self.error(str(problem), fix=problem.fix, evidence=problem.evidence)
        self._cell["probes"][name] = {"status": result.status, "duration": round(result.duration, 3),
                                      "timings": result.timings}
        if result.restarted:
            self._cell["evidence"]["container_restarted"] = (
                f"probe {name} ran in a new container: the previous one stopped ({result.restarted})")
        return result

    def facts(self, name: str, **params: Any) -> dict[str, Any]:
        """The facts of probe *name*; a probe that did not finish makes this cell an error."""
        result = self.probe(name, **params)
        if not result.ok:
            evidence = result.traceback or result.stderr[-3000:] or result.stdout[-3000:]
            fix = None
            if result.status == "timeout":
                fix = "raise --probe-timeout if the image is just slow, or look at the evidence for a hang"
            self.error(result.error if result.status == "error" and result.error and not result.traceback
                       else result.summary(), fix=fix, evidence=evidence)
        return result.facts

    # -- the cell --------------------------------------------------------------------------

    def note(self, text_: str) -> None:
        """Set the one-line detail shown in this test's matrix cell."""
        self._cell["detail"] = " ".join(str(text_).split())[:300]

    def evidence(self, key: str, value: Any) -> None:
        """Attach small evidence (builtins only) to the cell, for JSON and HTML reports."""
        self._cell["evidence"][key] = _builtins(value)

    def artifact(self, name: str, data: bytes, suffix: str = ".png") -> Path:
        """Write *data* under ``--artifacts-dir`` and reference it from the cell."""
        base = Path(self.options.artifacts_dir)
        sub = base / _slug(self.id) / _slug(self._cell["row"])
        created = [d for d in (base, sub.parent, sub) if not d.exists()]
        sub.mkdir(parents=True, exist_ok=True)
        for d in created:  # not world-writable under any umask; directories we did not create are left alone
            d.chmod(0o755)
        path = sub / f"{_slug(name)}{suffix}"
        path.write_bytes(data)
        os.chmod(path, 0o644)
        self._cell["artifacts"][name] = str(path)
        return path

    def fail(self, reason: str, *, fix: str | None = None, fault: str | None = None) -> NoReturn:
        """Fail this check: *reason* is the cell's detail, *fix* what to do, *fault* whose."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        self._cell.update(detail=" ".join(reason.split())[:300], fix=fix, fault=fault)
        msg = f"[{fault} fault] {reason}" if fault else reason
        if fix:
            msg += f"\nFix: {fix}"
        pytest.fail(msg, pytrace=False)

    def error(self, reason: str, *, fix: str | None = None, evidence: str = "") -> NoReturn:
        """The check could not be carried out (image would not start, probe crashed)."""
        self._cell.update(status="error", detail=" ".join(reason.split())[:300], fix=fix)
        if evidence:
            self._cell["evidence"]["output"] = evidence[-4000:]
        msg = reason + (f"\nFix: {fix}" if fix else "")
        if evidence:
            msg += f"\n--- evidence ---\n{evidence[-4000:]}"
        pytest.fail(msg, pytrace=False)

    def skip(self, reason: str) -> NoReturn:
        """Skip this check with *reason* (shown in the cell)."""
        self._cell["detail"] = " ".join(reason.split())[:300]
        pytest.skip(reason)

    def gpu_expected(self) -> bool:
        """Gate a GPU row: return True only when a GPU is attached to the image.

        No GPU on the host skips (fails under ``--require-gpu``); a host GPU that the image
        cannot see fails, naming the fix.
        """
        gpu = self.session_facts.get("gpu") or {}
        if not self.host.get("has_gpu"):
            reason = self.host.get("gpu_summary") or "host has no NVIDIA GPU"
            if self.options.require_gpu:
                self.fail(f"--require-gpu: {reason}", fault="host",
                          fix="run on a GPU node (Slurm: --gres=gpu:1 or --gpus=1)")
            self.skip(reason)
        if not gpu.get("attached"):
            self.fail(f"host has {self.host.get('gpu_summary')}, but the image was started without GPU access: "
                      f"{gpu.get('error') or 'GPU flags disabled (--gpus none)'}",
                      fix=gpu.get("fix") or "drop '--gpus none'", fault="host")
        return True

    # -- internals -------------------------------------------------------------------------

    # The error() calls sit outside the except blocks so reports show one clean message,
    # not "during handling of the above exception, another exception occurred".

    def _started(self) -> Session:
        fault: RuntimeFault | None = None
        try:
            return self._image.ensure_started()
        except RuntimeFault as exc:
            fault = exc
        self.error(str(fault), fix=fault.fix, evidence=fault.evidence)

    def _python(self) -> PythonInfo:
        self._started()
        problem: ProbeError | None = None
        try:
            return self._image.ensure_python()
        except ProbeError as exc:
            problem = exc
        self.error(str(problem), fix=problem.fix, evidence=problem.evidence)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "x"


def _builtins(value: Any) -> Any:
    """Coerce *value* to builtins so it crosses the xdist boundary unchanged."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _builtins(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_builtins(v) for v in value]
    return str(value)


def new_cell(row: str, column: str) -> dict[str, Any]:
    """A blank cell as it travels on ``user_properties``."""
    return {"row": row, "column": column, "status": None, "detail": None, "fix": None, "fault": None,
            "evidence": {}, "artifacts": {}, "probes": {}}
