"""Session lifecycle: one running container per image and process, from its start to its removal.

No pytest in here: the ``container`` fixture asks a :class:`SessionPool` for an image's
:class:`ImageSession`; the first request starts the image (unless
:meth:`SessionPool.start_early` did, while the checks were collected), every probe for that
image runs in it (scheduled by its :class:`~.scheduling.ProbeScheduler`), a container that
stops mid-run is replaced (up to :data:`MAX_RESTARTS` times), and the pool stops them all at
the end of the run (also on Ctrl-C).  Once :meth:`SessionPool.stop_all` has begun nothing is
started or restarted again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import plainlaunch, probing
from .policy import CheckOptions
from .probing import PlannedProbe, ProbeError, ProbeResult, PythonInfo
from .runtimes import LaunchOptions, RuntimeFault, Session, Target, get_runtime
from .scheduling import ProbeScheduler

MAX_RESTARTS = 3
"""How often one image's container is started again after it stopped mid-run."""
CLOSED = "the run is ending (teardown or interrupt): nothing is started any more"


class ImageSession:
    """One image in this process: its container, its interpreter, and the probes run in it.

    The image is started once; a start that fails is re-raised, the same fault, to every
    later caller.  A probe that ends without a result is explained from the container's
    health (:meth:`recover`): an OOM kill, a container that stopped (it is replaced, and a
    probe that had not begun runs again in the new one), a runtime daemon that went away (no
    replacement can help).  :meth:`close` and :meth:`stop` end all of that.

    Locks, and what each guards:

    * ``_lock``: :attr:`session`, :attr:`start_error` and :attr:`restarts`.  It is held
      while a container is started, replaced or removed, so a probe asking for the current
      container meanwhile waits for the new one, and a second :meth:`stop` returns only once
      the container is gone.
    * ``_python_lock``: :attr:`python_info` and :attr:`python_error`, held while the
      interpreter is looked for.  Not ``_lock``: the scheduler's workers run with a guessed
      interpreter meanwhile, and need the current container to do so.
    * :attr:`closed` is only ever set, never cleared, and is read without a lock: whoever
      reads it too early starts one more probe, and a start or restart checks it again
      under ``_lock``.

    The scheduler has its own lock, never held while one of these is taken.
    """

    def __init__(self, target: Target, launch: LaunchOptions, checks: CheckOptions,
                 plan: Sequence[PlannedProbe] = ()) -> None:
        self.target = target
        self.launch = launch
        self.checks = checks
        self.session: Session | None = None
        """The running container; None before the start, and once the image is gone for good."""
        self.start_error: RuntimeFault | None = None
        """Why no container runs (and none will): re-raised by every later :meth:`ensure_started`."""
        self.restarts: list[str] = []
        """Why each earlier container of this image stopped (it was replaced by a new one)."""
        self.closed = False
        """Set when teardown or an interrupt began: no container is started after that."""
        self._lock = threading.Lock()
        self.python_info: PythonInfo | None = None
        self.python_error: ProbeError | None = None
        self._python_lock = threading.Lock()
        self.scheduler = ProbeScheduler(self, checks, plan)

    # -- probes (see scheduling) ----------------------------------------------------------------

    def set_plan(self, plan: Sequence[PlannedProbe]) -> None:
        """The probes the selected checks declared (see :meth:`.ProbeScheduler.set_plan`)."""
        self.scheduler.set_plan(plan)

    def start_workers(self) -> None:
        """Start running the planned probes (see :meth:`.ProbeScheduler.start_workers`)."""
        self.scheduler.start_workers()

    def probe(self, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ProbeResult:
        """The result of probe *name* with *params*: cached, awaited, or run now."""
        return self.scheduler.probe(name, params, env)

    # -- the container and its interpreter ------------------------------------------------------

    def ensure_started(self) -> Session:
        """Start the image once; re-raise the same fault for every later test."""
        with self._lock:
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
                self.session.facts.update(launch_facts(self.target.runtime, self.launch,
                                                       self.session.facts.get("gpu")))
                if self.checks.serial_gpu_probes:
                    self.session.facts["serial_gpu_probes"] = self.checks.serial_gpu_probes
                if self.closed:  # close() came while it started: it is ours to remove
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
                    info = probing.find_python(session, session.python_candidates(self.checks.container_python),
                                               user_env=self.launch.env)
                except ProbeError as exc:
                    self.python_error = exc
                    raise
                session.facts["python"] = {"command": info.command, "version": ".".join(map(str, info.version)),
                                           "executable": info.executable}
                self.python_info = info
            return self.python_info

    def current(self) -> Session:
        """The container to run the next probe in; ProbeError once the image is gone for good."""
        with self._lock:
            if self.session is not None:
                return self.session
            fault = self.start_error
        raise ProbeError(str(fault) if fault else "the image is not running",
                         fix=fault.fix if fault else None, evidence=fault.evidence if fault else "")

    def is_current(self, session: Session) -> bool:
        """Whether *session* is still this image's container (not replaced, not stopped)."""
        return self.session is session

    def takes_probes(self) -> bool:
        """Whether workers may start another planned probe: a container runs, the run is not
        ending, and the interpreter search did not fail."""
        return self.session is not None and not self.closed and self.python_error is None

    # -- faults around a probe: OOM kills, a container that stopped, a daemon that went away ----

    def recover(self, session: Session, since: float, result: ProbeResult,
                again: Callable[[Session], ProbeResult]) -> ProbeResult:
        """Explain a probe that ended without a result, and replace a container that stopped.

        *result* is what the probe gave in *session*, started at *since* (``time.time()``).
        A probe that was running when its container stopped says so (its cell errors); the
        next probes run in a new container.  A probe whose container was already gone
        before it started runs again (*again*) in the new one.
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
        with self._lock:
            current = self.session
        if current is None:
            result.error = f"the container had stopped before the probe ran: {health.reason}; {self.start_error}"
            return result
        rerun = again(current)
        rerun.restarted = health.reason
        return rerun

    def _replace(self, session: Session, reason: str, runtime_down: bool) -> None:
        """*session* stopped: start a new container for what follows, unless that cannot help."""
        with self._lock:
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
                    new.facts.update(launch_facts(self.target.runtime, self.launch, new.facts.get("gpu")))
                    self.session = new
                    return
            self.session = None

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """From now on start nothing: no first start, no restart, no queued probe."""
        self.scheduler.drop_queue()  # first: workers finish their current probe and exit
        self.closed = True

    def stop(self) -> None:
        """Close, then remove the running container (if any); a second call meanwhile returns
        once the container is gone, not before."""
        self.close()
        with self._lock:
            session, self.session = self.session, None
            if self.start_error is None:
                self.start_error = RuntimeFault(CLOSED)
            if session is not None:
                session.stop()


class SessionPool:
    """Every image session of this process, stopped together at the end.

    No lock: only pytest's main thread calls it; the threads it starts touch one session each.
    """

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


def launch_facts(runtime: str, launch: LaunchOptions, gpu: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a session records about its launch against the plain one (:mod:`.plainlaunch`):
    ``plain_launch``, ``launch_differences`` (empty for a plain run) and ``container_env_names``."""
    return {"plain_launch": plainlaunch.plain_launch(runtime, launch.gpu_vendor),
            "launch_differences": plainlaunch.differences(runtime, launch, gpu),
            # Names only (values may be secrets): the verdicts attribute these to the deployment.
            "container_env_names": sorted(launch.env)}
