"""The per-image engine: one running image per process, its interpreter and probe results.

No pytest in here: the ``container`` fixture (:mod:`.container`) asks a :class:`SessionPool`
for an image's :class:`ImageSession`; the first request starts the image (unless
:meth:`SessionPool.start_early` did, while the checks were collected), every probe for that
image runs in it, and the pool stops them all at the end of the run (also on Ctrl-C).  Probe
results are cached per image and parameters, so checks that read the same facts run the probe
once.  Once :meth:`SessionPool.stop_all` has begun nothing is started or restarted again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import probing
from .policy import CheckOptions
from .probing import PlannedProbe, ProbeError, ProbeResult, PythonInfo, probe_key
from .runtimes import LaunchOptions, RuntimeFault, Session, Target, get_runtime

MAX_RESTARTS = 3
"""How often one image's container is started again after it stopped mid-run."""
CLOSED = "the run is ending (teardown or interrupt): nothing is started any more"
BACKGROUND_NICE = 10
"""Niceness (inside the image) of probes started while the image's heaviest probe runs."""


class ImageSession:
    """One image in this process: its runtime session, interpreter and probe results.

    Probes run at most once per parameter set.  When the checks declared the probes they
    will read (the *plan*), the first probe request starts them all on ``probe_jobs``
    worker threads inside the image, heaviest first, so imports of torch, VTK and
    transformers overlap instead of queueing.  A check asking for a probe that no worker
    has picked up yet runs it at once itself; one that is running is waited for.

    Two things keep the heaviest probe (the longest chain: torch, then transformers) from
    waiting on anything else:

    * The workers start as soon as the image runs, while its interpreter is still being
      looked for, with the first candidate (``python3``).  When the search settles on
      another interpreter, or on none, what they ran with the guess is thrown away: they
      run again with the one found, or fail with the search's error.
    * Probes that start while the heaviest one runs get a lower CPU priority inside the
      image (``nice`` +10), so on a small machine they take the CPU time it leaves over.
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
        self._python_lock = threading.Lock()
        self._lead: str | None = None
        """The key of the first probe a worker took (the heaviest) while it runs; "" after."""
        self.probes: dict[str, ProbeResult] = {}
        self._lock = threading.Lock()
        self._queue: list[PlannedProbe] = []
        self._running: dict[str, threading.Event] = {}
        self._failures: dict[str, ProbeError] = {}
        self._workers: list[threading.Thread] = []
        self.restarts: list[str] = []
        """Why each earlier container of this image stopped (it was replaced by a new one)."""
        self._restart_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self.closed = False
        """Set when teardown or an interrupt began: no container is started after that."""
        self.set_plan(plan)

    def set_plan(self, plan: Sequence[PlannedProbe]) -> None:
        """The probes the selected checks declared, heaviest first (stable: declaration order);
        given later to a session created before collection ended (see
        :meth:`SessionPool.start_early`), too late once its workers run."""
        with self._lock:
            if not self._workers:
                self._queue = sorted(dict.fromkeys(plan), key=lambda p: -p.weight)

    def ensure_started(self) -> Session:
        """Start the image once; re-raise the same fault for every later test."""
        with self._restart_lock:
            if self.start_error is not None:
                raise self.start_error
            if self.session is None:
                if self.closed:
                    raise RuntimeFault(CLOSED)
                t0 = time.monotonic()
                try:
                    self.session = get_runtime(self.target.runtime).start(self.target, self.launch)
                except RuntimeFault as exc:
                    self.start_error = exc
                    raise
                self.session.facts["started_in_s"] = round(time.monotonic() - t0, 3)
                if self.closed:  # stop() came while it started: it is ours to remove
                    self.session.stop()
                    self.session = None
                    raise RuntimeFault(CLOSED)
            return self.session

    def ensure_python(self) -> PythonInfo:
        """Find the image's interpreter once; re-raise the same error later."""
        session = self.ensure_started()
        with self._python_lock:
            if self.python_error is not None:
                raise self.python_error
            if self.python_info is None:
                try:
                    info = probing.find_python(session, session.python_candidates(self.checks.container_python))
                except ProbeError as exc:
                    self.python_error = exc
                    raise
                session.facts["python"] = {"command": info.command, "version": ".".join(map(str, info.version)),
                                           "executable": info.executable}
                self.python_info = info
            return self.python_info

    def _python_for_worker(self) -> tuple[PythonInfo, bool]:
        """The interpreter a worker runs with, and whether it is the first candidate, guessed
        while the search runs (see :meth:`_confirmed`)."""
        info = self.python_info
        if info is not None:
            return info, False
        session = self._current()
        return PythonInfo(session.python_candidates(self.checks.container_python)[0], (0, 0, 0), ""), True

    def _confirmed(self, guessed: PythonInfo) -> PythonInfo | None:
        """After a run with a *guessed* interpreter: None when the search found that one (the
        results stand), else the interpreter found, to run again with; ProbeError when none, or
        when the image is gone (the run ended while the search waited for it)."""
        try:
            info = self.ensure_python()
        except RuntimeFault as exc:
            raise ProbeError(str(exc), fix=exc.fix, evidence=exc.evidence) from None
        return None if info.command == guessed.command else info

    def probe(self, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ProbeResult:
        """The result of probe *name* with *params*: cached, awaited, or run now."""
        key = probe_key(name, params)
        self.ensure_started()
        self.start_workers()
        python = self.ensure_python()
        group: list[PlannedProbe] = []
        shared: tuple[str, ...] = ()
        with self._lock:
            done = key in self.probes or key in self._failures
            event = self._running.get(key)
            mine = not done and event is None
            if mine:
                if env is None:  # a planned probe: the planned ones sharing its imports come along
                    group, shared = self._take_bundle(next((p for p in self._queue if p.key == key), None))
                self._queue = [p for p in self._queue if p.key != key]
                event = self._running[key] = threading.Event()
                for p in group:
                    self._running.setdefault(p.key, threading.Event())
        nice = BACKGROUND_NICE if self._lead else 0  # the heaviest planned probe runs meanwhile
        if mine and len(group) > 1:
            self._run_bundle(sorted(group, key=lambda p: p.weight), shared, python, nice=nice)
        elif mine:
            self._run(key, name, params, env, python, nice=nice)
        elif event is not None:
            event.wait()
        if key in self._failures:
            raise self._failures[key]
        return self.probes[key]

    def _probe_in(self, session: Session, name: str, params: Mapping[str, Any],
                  env: Mapping[str, str] | None, python: PythonInfo | None = None, nice: int = 0) -> ProbeResult:
        python = python or self.python_info
        assert python is not None
        return probing.run_probe(session, python, name, params, timeout=self.checks.probe_timeout,
                                 env=env, extra_dirs=self.checks.probe_dirs, nice=nice)

    def _run(self, key: str, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None,
             python: PythonInfo, guessed: bool = False, nice: int = 0) -> None:
        try:
            session, since = self._current(), time.time()
            result = self._probe_in(session, name, params, env, python, nice)
            if guessed:
                found = self._confirmed(python)
                if found is not None:
                    session, since = self._current(), time.time()
                    result = self._probe_in(session, name, params, env, found)
                    result.guess_dropped = python.command
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
            elif self.closed:
                self.start_error = RuntimeFault(f"{reason}; {CLOSED}")
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

    def start_workers(self) -> None:
        """Start the workers of the planned probes (once; they may start before the image's
        interpreter is known, see :meth:`_python_for_worker`)."""
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
                if not self._queue or self.session is None or self.closed or self.python_error is not None:
                    return
                planned = self._queue.pop(0)
                group, shared = self._take_bundle(planned)
                for p in group:
                    self._running[p.key] = threading.Event()
                lead = self._lead is None
                nice = 0 if lead or not self._lead else BACKGROUND_NICE  # beside the heaviest: lower
                if lead:
                    self._lead = planned.key
            try:
                try:
                    python, guessed = self._python_for_worker()
                except ProbeError as exc:  # the container is gone for good
                    with self._lock:
                        for p in group:
                            self._failures[p.key] = exc
                            self._running.pop(p.key).set()
                    return
                if len(group) == 1:
                    self._run(planned.key, planned.name, planned.params, None, python, guessed, nice)
                else:
                    self._run_bundle(sorted(group, key=lambda p: p.weight), shared, python, guessed, nice)
            finally:
                if lead:
                    with self._lock:
                        self._lead = ""

    def _take_bundle(self, planned: PlannedProbe | None) -> tuple[list[PlannedProbe], tuple[str, ...]]:
        """*planned* and the queued probes declaring the same shared imports (taken off the
        queue; the caller holds the lock and marks them running), and those imports."""
        if planned is None:
            return [], ()
        shared = probing.shared_imports(planned.name, self.checks.probe_dirs) if self.checks.probe_bundles else ()
        group = [planned]
        if shared:
            group += [p for p in self._queue if p is not planned and p.key not in self._running
                      and p.key not in self.probes and p.key not in self._failures
                      and probing.shared_imports(p.name, self.checks.probe_dirs) == shared]
            self._queue = [p for p in self._queue if p not in group]
        return group, shared

    def _run_bundle(self, group: Sequence[PlannedProbe], shared: tuple[str, ...], python: PythonInfo,
                    guessed: bool = False, nice: int = 0) -> None:
        """Run *group* as one bundle; each result is then treated as if its probe had run alone."""
        try:
            try:
                session, since = self._current(), time.time()
                calls = [(p.name, p.params) for p in group]
                results = probing.run_bundle(session, python, calls, shared, timeout=self.checks.probe_timeout,
                                             extra_dirs=self.checks.probe_dirs, nice=nice)
                found = self._confirmed(python) if guessed else None
                if found is not None:
                    session, since = self._current(), time.time()
                    results = probing.run_bundle(session, found, calls, shared, timeout=self.checks.probe_timeout,
                                                 extra_dirs=self.checks.probe_dirs)
                    for result in results:
                        result.guess_dropped = python.command
            except ProbeError as exc:
                with self._lock:
                    for p in group:
                        self._failures[p.key] = exc
                return
            for p, result in zip(group, results):
                try:
                    if not result.started and self.session is session and session.alive():
                        # Never began (an earlier probe of the bundle used up its time): alone.
                        result = self._probe_in(session, p.name, p.params, None)
                    else:
                        result = self._recover(session, since, result, p.name, p.params, None)
                except ProbeError as exc:
                    with self._lock:
                        self._failures[p.key] = exc
                else:
                    with self._lock:
                        self.probes[p.key] = result
        finally:
            with self._lock:
                for p in group:
                    event = self._running.pop(p.key, None)
                    if event is not None:
                        event.set()

    def close(self) -> None:
        """From now on start nothing: no first start, no restart, no queued probe."""
        with self._lock:
            self._queue.clear()  # workers finish their current probe and exit
        self.closed = True

    def stop(self) -> None:
        """Close, then remove the running container (if any); a second call meanwhile returns
        once the container is gone, not before."""
        self.close()
        with self._stop_lock:
            with self._restart_lock:
                session, self.session = self.session, None
                if self.start_error is None:
                    self.start_error = RuntimeFault(CLOSED)
            if session is not None:
                session.stop()


class SessionPool:
    """Every image session of this process, stopped together at the end."""

    def __init__(self, launch: LaunchOptions, checks: CheckOptions) -> None:
        self.launch = launch
        self.checks = checks
        self.plans: dict[str, list[PlannedProbe]] = {}
        """Per target id: the probes its collected (and selected) checks declared."""
        self.sessions: dict[str, ImageSession] = {}
        self.closed = False

    def get(self, target: Target) -> ImageSession:
        """The session of *target*, created (not started) on first use."""
        if target.id not in self.sessions:
            session = ImageSession(target, self.launch, self.checks, self.plans.get(target.id, ()))
            if self.closed:
                session.close()
            self.sessions[target.id] = session
        return self.sessions[target.id]

    def start_early(self, targets: Sequence[Target]) -> None:
        """Start *targets* now, each on a thread, while pytest collects their checks (this
        process runs them all: no xdist).  A start that fails is kept, and the image's first
        test reports it, as if that test had started it; collection then hands each session
        its plan (:meth:`planned`)."""
        def start(s: ImageSession) -> None:
            try:
                s.ensure_started()
            except Exception:  # kept as the session's start_error; its first test reports it
                pass

        for target in targets:
            threading.Thread(target=start, args=(self.get(target),), name="containercheck-start",
                             daemon=True).start()

    def planned(self) -> None:
        """Collection is over: the sessions started early get their plans, and those of images
        whose checks were all deselected are removed (at once, on threads; :meth:`stop_all`
        waits for them)."""
        for target_id, s in self.sessions.items():
            if target_id in self.plans:
                s.set_plan(self.plans[target_id])
            else:
                s.close()
                threading.Thread(target=s.stop, name="containercheck-stop", daemon=True).start()

    def stop_all(self) -> None:
        """Stop every session, all at once; from now on nothing is started or restarted."""
        self.begin_stop()()

    def begin_stop(self) -> Callable[[], None]:
        """Close every session and start stopping them all at once, on threads (each container's
        removal or instance stop waits on the runtime); returns what waits for them to finish.
        The run's reports are written meanwhile."""
        self.closed = True
        sessions = list(self.sessions.values())
        for s in sessions:
            s.close()  # first: no worker starts another probe while the others are being stopped

        def stop(s: ImageSession) -> None:
            try:
                s.stop()
            except Exception:  # one broken session must not keep the others alive
                pass

        threads = [threading.Thread(target=stop, args=(s,), name="containercheck-stop", daemon=True)
                   for s in sessions]
        for t in threads:
            t.start()

        def wait() -> None:
            for t in threads:
                t.join()

        return wait


