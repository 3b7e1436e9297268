"""Probe scheduling: which probe of an image runs when, on which thread, and with which others.

No pytest in here.  Each :class:`~.lifecycle.ImageSession` owns one :class:`ProbeScheduler`;
the scheduler asks the image (:class:`Image`) for the container to run in and the
interpreter to run with, and hands every probe that ended without a result back to it
(:meth:`Image.recover`): starting, replacing and stopping containers is the lifecycle's,
never the scheduler's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from . import probing
from .policy import CheckOptions
from .probing import PlannedProbe, ProbeError, ProbeResult, PythonInfo, probe_key
from .runtimes import RuntimeFault, Session

BACKGROUND_NICE = 10
"""Niceness (inside the image) of probes started while the image's heaviest probe runs."""

#: nvidia-smi's compute modes that grant one CUDA context at a time (``Exclusive_Thread`` is the
#: older, deprecated one): driver_types.h ``cudaComputeModeExclusiveProcess``, "Only one context used
#: by a single process can be present on this device at a time".
EXCLUSIVE_MODES = ("Exclusive_Process", "Exclusive_Thread")


def exclusive_gpus(host: Mapping[str, Any]) -> str:
    """Why this run's probes that create a CUDA context must run one at a time, or "": a GPU of the
    host in an exclusive compute mode (``hostinfo`` ``gpu_modes``, read before any probe starts).
    Two such probes at once would meet there, and the second would be refused as "busy": the
    tool's own load, never the host's fault."""
    modes = host.get("gpu_modes") or {}
    held = [f"GPU {i} is {m.get('compute_mode')}" for i, m in sorted(modes.items())
            if isinstance(m, Mapping) and str(m.get("compute_mode", "")) in EXCLUSIVE_MODES]
    if not held:
        return ""
    return (f"{', '.join(held)} (nvidia-smi compute mode): one CUDA context at a time, so the probes that create one "
            "run one after another")


class Image(Protocol):
    """What the scheduler needs of its image (:class:`~.lifecycle.ImageSession`)."""

    python_info: PythonInfo | None
    """The image's interpreter, once found."""

    def ensure_started(self) -> Session:
        """Start the image once; raises :class:`RuntimeFault` when it cannot run."""

    def ensure_python(self) -> PythonInfo:
        """Find the image's interpreter once; raises :class:`ProbeError` when there is none."""

    def current(self) -> Session:
        """The container to run the next probe in; :class:`ProbeError` once the image is gone."""

    def is_current(self, session: Session) -> bool:
        """Whether *session* is still the image's container (not replaced, not stopped)."""

    def takes_probes(self) -> bool:
        """Whether workers may start another planned probe (a container runs, the run is not
        ending, an interpreter was not found missing)."""

    def recover(self, session: Session, since: float, result: ProbeResult,
                again: Callable[[Session], ProbeResult]) -> ProbeResult:
        """Explain *result* (run in *session* from *since*), replacing a container that stopped;
        *again* runs the probe once more, in the container given."""


class ProbeScheduler:
    """The probes of one image: each runs at most once per parameter set.

    When the checks declared the probes they will read (the *plan*), the first probe
    request starts them all on ``probe_jobs`` worker threads inside the image, heaviest
    first, so imports of torch, VTK and transformers overlap instead of queueing.  A check
    asking for a probe that no worker has picked up yet runs it at once itself; one that is
    running is waited for.  Planned probes declaring the same ``SHARED_IMPORTS`` run as one
    bundle (``probe_bundles``).

    Two things keep the heaviest probe (the longest chain: torch, then transformers) from
    waiting on anything else:

    * The workers start as soon as the image runs, while its interpreter is still being
      looked for, with the first candidate (``python3``).  When the search settles on
      another interpreter, or on none, what they ran with the guess is thrown away: they
      run again with the one found, or fail with the search's error.
    * Probes that start while the heaviest one runs get a lower CPU priority inside the
      image (``nice`` +10), so on a small machine they take the CPU time it leaves over.

    Locking: one lock, ``_lock``, guards the plan queue, the keys running, the results and
    failures, the workers list and the lead; ``_done``, a condition on that lock, wakes
    whoever waits for a running probe.  It is held only to read or change that state: never
    while a probe runs, and never while the image is asked for anything but
    :meth:`Image.takes_probes` (which only reads flags), so it cannot deadlock with the
    image's own locks.
    """

    def __init__(self, image: Image, checks: CheckOptions, plan: Sequence[PlannedProbe] = ()) -> None:
        self.image = image
        self.checks = checks
        self.results: dict[str, ProbeResult] = {}
        """Probe key -> its result (see :func:`~.probing.probe_key`)."""
        self._failures: dict[str, ProbeError] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._queue: list[PlannedProbe] = []
        self._running: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._lead: str | None = None
        """The key of the first probe a worker took (the heaviest) while it runs; "" after."""
        self._cuda_turn = threading.Lock()
        """Held while a probe that creates a CUDA context runs, when they must run one at a time
        (``checks.serial_gpu_probes``): never together with ``_lock``."""
        self.set_plan(plan)

    def set_plan(self, plan: Sequence[PlannedProbe]) -> None:
        """The probes the selected checks declared, heaviest first (stable: declaration order);
        given later to a session created before collection ended (see
        :meth:`~.lifecycle.SessionPool.start_early`), too late once its workers run."""
        with self._lock:
            if not self._workers:
                self._queue = sorted(dict.fromkeys(plan), key=lambda p: -p.weight)

    def drop_queue(self) -> None:
        """Start no more planned probes: the workers finish their current one and exit."""
        with self._lock:
            self._queue.clear()

    def start_workers(self) -> None:
        """Start the workers of the planned probes (once; they may start before the image's
        interpreter is known, see :meth:`_python_for_worker`)."""
        with self._lock:
            if self._workers or self.checks.probe_jobs < 2 or not self._queue:
                return
            workers = self._workers = [
                threading.Thread(target=self._work, name=f"containercheck-probe-{i}", daemon=True)
                for i in range(min(self.checks.probe_jobs, len(self._queue)))]
        for t in workers:
            t.start()

    def probe(self, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ProbeResult:
        """The result of probe *name* with *params*: cached, awaited, or run now."""
        key = probe_key(name, params)
        self.image.ensure_started()
        self.start_workers()
        python = self.image.ensure_python()
        group: list[PlannedProbe] = []
        shared: tuple[str, ...] = ()
        nice = 0
        with self._lock:
            mine = key not in self.results and key not in self._failures and key not in self._running
            if mine:
                if env is None:  # a planned probe: the planned ones sharing its imports come along
                    group, shared = self._take_bundle(next((p for p in self._queue if p.key == key), None))
                self._queue = [p for p in self._queue if p.key != key]
                self._running.add(key)
                self._running.update(p.key for p in group)
                nice = BACKGROUND_NICE if self._lead else 0  # the heaviest planned probe runs meanwhile
            else:
                self._done.wait_for(lambda: key not in self._running)
        if mine and len(group) > 1:
            self._run_bundle(sorted(group, key=lambda p: p.weight), shared, python, nice=nice)
        elif mine:
            self._run(key, name, params, env, python, nice=nice)
        with self._lock:
            if key in self._failures:
                raise self._failures[key]
            return self.results[key]

    # -- running probes ----------------------------------------------------------------------

    def _record(self, key: str, outcome: ProbeResult | ProbeError) -> None:
        with self._lock:
            if isinstance(outcome, ProbeError):
                self._failures[key] = outcome
            else:
                self.results[key] = outcome

    def _release(self, keys: Iterable[str]) -> None:
        """*keys* no longer run: wake whoever waits for them."""
        with self._lock:
            self._running.difference_update(keys)
            self._done.notify_all()

    def _turn(self, names: Iterable[str]) -> contextlib.AbstractContextManager[Any]:
        """The CUDA turn for probes *names*: the lock when they create a CUDA context and such probes
        must run one at a time (:func:`exclusive_gpus`), else nothing to wait for."""
        if self.checks.serial_gpu_probes and any(probing.creates_cuda_context(n, self.checks.probe_dirs)
                                                 for n in names):
            return self._cuda_turn
        return contextlib.nullcontext()

    def _probe_in(self, session: Session, name: str, params: Mapping[str, Any],
                  env: Mapping[str, str] | None, python: PythonInfo | None = None, nice: int = 0) -> ProbeResult:
        python = python or self.image.python_info
        assert python is not None
        with self._turn([name]):
            return probing.run_probe(session, python, name, params, timeout=self.checks.probe_timeout,
                                     env=env, extra_dirs=self.checks.probe_dirs, nice=nice)

    def _again(self, name: str, params: Mapping[str, Any],
               env: Mapping[str, str] | None) -> Callable[[Session], ProbeResult]:
        """What runs probe *name* once more, alone, in the container given (see :meth:`Image.recover`)."""
        return lambda session: self._probe_in(session, name, params, env)

    def _run(self, key: str, name: str, params: Mapping[str, Any], env: Mapping[str, str] | None,
             python: PythonInfo, guessed: bool = False, nice: int = 0) -> None:
        try:
            session, since = self.image.current(), time.time()
            result = self._probe_in(session, name, params, env, python, nice)
            if guessed:
                found = self._confirmed(python)
                if found is not None:
                    session, since = self.image.current(), time.time()
                    result = self._probe_in(session, name, params, env, found)
                    result.guess_dropped = python.command
            result = self.image.recover(session, since, result, self._again(name, params, env))
        except ProbeError as exc:
            self._record(key, exc)
        else:
            self._record(key, result)
        finally:
            self._release([key])

    def _run_bundle(self, group: Sequence[PlannedProbe], shared: tuple[str, ...], python: PythonInfo,
                    guessed: bool = False, nice: int = 0) -> None:
        """Run *group* as one bundle; each result is then treated as if its probe had run alone."""
        try:
            try:
                session, since = self.image.current(), time.time()
                calls = [(p.name, p.params) for p in group]
                with self._turn(p.name for p in group):
                    results = probing.run_bundle(session, python, calls, shared, timeout=self.checks.probe_timeout,
                                                 extra_dirs=self.checks.probe_dirs, nice=nice)
                found = self._confirmed(python) if guessed else None
                if found is not None:
                    session, since = self.image.current(), time.time()
                    with self._turn(p.name for p in group):
                        results = probing.run_bundle(session, found, calls, shared,
                                                     timeout=self.checks.probe_timeout,
                                                     extra_dirs=self.checks.probe_dirs)
                    for result in results:
                        result.guess_dropped = python.command
            except ProbeError as exc:
                for p in group:
                    self._record(p.key, exc)
                return
            for p, result in zip(group, results):
                try:
                    if not result.started and self.image.is_current(session) and session.alive():
                        # Never began (an earlier probe of the bundle used up its time): alone.
                        result = self._probe_in(session, p.name, p.params, None)
                    else:
                        result = self.image.recover(session, since, result, self._again(p.name, p.params, None))
                except ProbeError as exc:
                    self._record(p.key, exc)
                else:
                    self._record(p.key, result)
        finally:
            self._release(p.key for p in group)

    # -- workers -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._queue and (self._queue[0].key in self.results or self._queue[0].key in self._running):
                    self._queue.pop(0)
                if not self._queue or not self.image.takes_probes():
                    return
                planned = self._queue.pop(0)
                group, shared = self._take_bundle(planned)
                self._running.update(p.key for p in group)
                lead = self._lead is None
                nice = 0 if lead or not self._lead else BACKGROUND_NICE  # beside the heaviest: lower
                if lead:
                    self._lead = planned.key
            try:
                try:
                    python, guessed = self._python_for_worker()
                except ProbeError as exc:  # the container is gone for good
                    for p in group:
                        self._record(p.key, exc)
                    self._release(p.key for p in group)
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
        queue; the caller holds ``_lock`` and marks them running), and those imports."""
        if planned is None:
            return [], ()
        shared = probing.shared_imports(planned.name, self.checks.probe_dirs) if self.checks.probe_bundles else ()
        group = [planned]
        if shared:
            group += [p for p in self._queue if p is not planned and p.key not in self._running
                      and p.key not in self.results and p.key not in self._failures
                      and probing.shared_imports(p.name, self.checks.probe_dirs) == shared]
            self._queue = [p for p in self._queue if p not in group]
        return group, shared

    # -- the interpreter, while it is still being looked for -----------------------------------

    def _python_for_worker(self) -> tuple[PythonInfo, bool]:
        """The interpreter a worker runs with, and whether it is the first candidate, guessed
        while the search runs (see :meth:`_confirmed`)."""
        info = self.image.python_info
        if info is not None:
            return info, False
        session = self.image.current()
        return PythonInfo(session.python_candidates(self.checks.container_python)[0], (0, 0, 0), ""), True

    def _confirmed(self, guessed: PythonInfo) -> PythonInfo | None:
        """After a run with a *guessed* interpreter: None when the search found that one (the
        results stand), else the interpreter found, to run again with; ProbeError when none, or
        when the image is gone (the run ended while the search waited for it)."""
        try:
            info = self.image.ensure_python()
        except RuntimeFault as exc:
            raise ProbeError(str(exc), fix=exc.fix, evidence=exc.evidence) from None
        return None if info.command == guessed.command else info
