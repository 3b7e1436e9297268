"""A scripted container runtime for millisecond tests of the session lifecycle and the scheduler.

:class:`FakeEngine` plays the container engine (the Docker daemon): what each start does,
whether it still answers, which containers it started.  Used as a context manager it
registers a runtime under a fresh name for the duration of a test, so the engine's own
``get_runtime(target.runtime)`` finds it, exactly as it finds Docker.

:class:`FakeSession` is one container.  What runs in it runs on this host for real (as in
:mod:`pytest_containercheck.engine.runtimes.host`), so probe programs, their marker lines
and their exit statuses are the real ones; only its liveness and health are scripted.
Every process it starts carries an environment variable naming it, so when the container
"stops" (from outside, by an OOM kill, with the daemon, or removed), exactly the processes
that ran in it are killed, as a real container's would be.

Test probes (:data:`PROBES`) are written into a ``--probe-dir`` with :func:`probe_dir`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from pytest_containercheck.engine.runtimes import base
from pytest_containercheck.engine.runtimes.base import (
    ExecResult,
    Health,
    LaunchOptions,
    Runtime,
    RuntimeFault,
    Session,
    Target,
    run_bounded,
)

from helpers import WAIT_LIMIT

CONTAINER_VAR = "CONTAINERCHECK_FAKE_CONTAINER"
"""Set in every process a :class:`FakeSession` starts: the name of its container."""

_numbers = itertools.count(1)


def blocked_waiting(thread: threading.Thread, file: str, function: str) -> bool:
    """Whether *thread* waits in ``threading`` (an Event or a Condition) called from *function* of
    *file* (a base name) itself, not from something it called (``Thread.start`` waits too)."""
    frame = sys._current_frames().get(thread.ident or -1)
    stack = []
    while frame is not None:
        stack.append((os.path.basename(frame.f_code.co_filename), frame.f_code.co_name))
        frame = frame.f_back
    caller = next((where for where in stack if where[0] != "threading.py"), None)
    return stack[:1] == [("threading.py", "wait")] and caller == (file, function)


def eventually(predicate: Callable[[], object], timeout: float = WAIT_LIMIT, what: str = "") -> None:
    """Wait until *predicate()* is true (checked every 2 ms); AssertionError after *timeout* s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.002)


def finished(thread: threading.Thread, timeout: float = WAIT_LIMIT) -> None:
    """Wait for *thread* to end; AssertionError (the test fails, the suite goes on) after *timeout* s."""
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"thread {thread.name} did not end within {timeout} s")


class FakeEngine:
    """The scripted engine: its starts, whether it answers, and the containers it started.

    Script it before or during a test:

    * :meth:`fail_next_start` -- the next start raises this fault;
    * :attr:`hold_starts` -- clear it and every start waits (a slow start) until it is set;
      :attr:`start_began` is set when a start is waiting on it;
    * :meth:`go_down` -- the daemon stops answering: every container stops, nothing starts;
    * on the containers in :attr:`started`: :meth:`FakeSession.stop_from_outside`,
      :meth:`FakeSession.oom_kill`, :attr:`FakeSession.hold_removal` (a slow removal) and
      :attr:`FakeSession.time_out_when` (a command's time limit, reached on cue).
    """

    def __init__(self, *, python: str = sys.executable) -> None:
        self.name = f"fake{next(_numbers)}"
        """The runtime name registered for this engine (``Target.runtime``)."""
        self.python = python
        """The interpreter every container offers (``python_candidates``)."""
        self.started: list[FakeSession] = []
        """Every container started, in order."""
        self.start_attempts = 0
        self.start_faults: list[RuntimeFault] = []
        self.hold_starts = threading.Event()
        self.hold_starts.set()
        self.start_began = threading.Event()
        self.down = ""
        """Why the daemon stopped answering; empty while it answers."""
        self._lock = threading.Lock()

    @property
    def target(self) -> Target:
        """An image of this engine."""
        return Target(self.name, "fake-image:1", f"{self.name}://fake-image:1")

    def fail_next_start(self, fault: RuntimeFault) -> RuntimeFault:
        """The next start raises *fault* (this very object)."""
        self.start_faults.append(fault)
        return fault

    def go_down(self, reason: str = "the fake daemon stopped answering (connection refused)") -> None:
        """The daemon is gone: every container with it, and nothing starts again."""
        self.down = reason
        for s in self.started:
            s.kill_processes()

    def start(self, target: Target) -> FakeSession:
        with self._lock:
            self.start_attempts += 1
        self.start_began.set()
        if not self.hold_starts.wait(WAIT_LIMIT):
            raise RuntimeFault(f"the test held this start for {WAIT_LIMIT:.0f} s and never released it")
        if self.down:
            raise RuntimeFault(f"cannot start {target.ref}: {self.down}", fix="start the daemon", fault="host")
        if self.start_faults:
            raise self.start_faults.pop(0)
        session = FakeSession(target, self, f"fake-{os.getpid()}-{secrets.token_hex(3)}-{len(self.started) + 1}")
        self.started.append(session)
        return session

    def __enter__(self) -> FakeEngine:
        engine = self

        class Registered(FakeRuntime):
            pass

        Registered.engine = engine
        # The registry has no public way out; leaving the name in would show it to every other
        # test of this process (the --image prefixes, the runtime lists).
        base._REGISTRY[self.name] = Registered
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        base._REGISTRY.pop(self.name, None)
        self.hold_starts.set()
        for s in self.started:
            if s.hold_removal is not None:
                s.hold_removal.set()
            s.kill_processes()


class FakeRuntime(Runtime):
    """The runtime :class:`FakeEngine` registers: each instance starts containers of its engine."""

    family = "oci"
    engine: ClassVar[FakeEngine]

    def preflight(self, target: Target) -> dict[str, Any]:
        return {"runtime": self.name, "runtime_version": "fake"}

    def start(self, target: Target, options: LaunchOptions) -> Session:
        return self.engine.start(target)

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        return list(argv)


class FakeSession(Session):
    """One container of a :class:`FakeEngine`: commands run on this host, marked as its own."""

    def __init__(self, target: Target, engine: FakeEngine, name: str) -> None:
        super().__init__(target)
        self.engine = engine
        self.name = name
        self.facts["container"] = name
        self.stopped = ""
        """Why it stopped; empty while it runs."""
        self.stopped_at: float | None = None
        self.removed = False
        """Set once :meth:`stop` has removed it."""
        self.stop_calls = 0
        self.removal_began = threading.Event()
        self.hold_removal: threading.Event | None = None
        """When set to an Event, :meth:`stop` waits for it before removing anything."""
        self.oom_kills: list[float] = []
        """``time.time()`` of each OOM kill in it."""
        self.execs: list[tuple[list[str], bytes]] = []
        """Every command run in it, with its stdin."""
        self.time_out_when: Callable[[], object] | None = None
        """When set, a command running in it times out as soon as this is true (the runtime
        command's own limit, reached at a moment the test chooses)."""

    def ran(self, text: str) -> int:
        """How many commands run in it had *text* on their stdin (a probe's tag)."""
        return sum(text.encode() in stdin for _argv, stdin in self.execs)

    # -- the script ---------------------------------------------------------------------------

    def stop_from_outside(self, reason: str = "it exited with status 137 (killed from outside)") -> None:
        """The container stops (``docker kill``): what runs in it dies, nothing runs in it again."""
        self.stopped, self.stopped_at = reason, time.time()
        self.kill_processes()

    def oom_kill(self) -> None:
        """The OOM killer ends the processes running in it; the container itself keeps running."""
        self.oom_kills.append(time.time())
        self.kill_processes()

    def kill_processes(self) -> None:
        """SIGKILL every live process started in this container (and their children)."""
        mark = f"{CONTAINER_VAR}={self.name}\0".encode()
        for _ in range(20):  # again, in case one forked meanwhile
            found = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if mark in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
            if not found:
                return
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)

    # -- the Session interface ----------------------------------------------------------------

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, timeout: float | None = None) -> ExecResult:
        self.execs.append((list(argv), stdin or b""))
        if self.engine.down:
            return ExecResult(list(argv), 1, b"", f"{self.engine.down}\n".encode(), 0.0)
        if self.stopped or self.removed:
            return ExecResult(list(argv), 1, b"",
                              f"Error response from daemon: container {self.name} is not running\n".encode(), 0.0)
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env[CONTAINER_VAR] = self.name
        if self.time_out_when is None:
            return run_bounded(list(argv), stdin=stdin, env=full_env, timeout=timeout)
        # What run_bounded does when the limit is reached: kill it all, report no exit status.
        ended, fired = threading.Event(), threading.Event()
        due = self.time_out_when

        def watch() -> None:
            while not ended.wait(0.002):
                if due():
                    fired.set()
                    self.kill_processes()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            res = run_bounded(list(argv), stdin=stdin, env=full_env, timeout=timeout)
        finally:
            ended.set()
            finished(watcher)
        return dataclasses.replace(res, returncode=None, timed_out=True) if fired.is_set() else res

    def python_candidates(self, preferred: Sequence[str]) -> list[str]:
        return [self.engine.python]

    def kill_inside(self, pid: int, python: str) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    def alive(self) -> bool:
        return not (self.engine.down or self.stopped or self.removed)

    def health(self, since: float) -> Health:
        if self.engine.down:
            return Health(running=False, reason=self.engine.down, runtime_down=True)
        if self.stopped:
            return Health(running=False, reason=self.stopped, stopped_at=self.stopped_at)
        if any(t >= since for t in self.oom_kills):
            return Health(running=True, reason="the OOM killer ended a process in it (memory limit 64 MiB)",
                          oom_killed=True)
        return Health(running=True)

    def stop(self) -> None:
        self.stop_calls += 1
        self.removal_began.set()
        if self.hold_removal is not None and not self.hold_removal.wait(WAIT_LIMIT):
            raise RuntimeError(f"the test held this removal for {WAIT_LIMIT:.0f} s and never released it")
        self.stopped = self.stopped or "removed"
        self.kill_processes()
        self.removed = True


# -- probes for the tests ---------------------------------------------------------------------------

_REPORT = f"""
    import os
    return {{"params": params, "pid": os.getpid(), "nice": os.nice(0),
            "container": os.environ.get("{CONTAINER_VAR}")}}
"""

PROBES = {
    # Reports where and how it ran.
    "echo": "def run(params, ctx):\n" + _REPORT,
    # Says it runs (creates params["ready"]), then waits for params["go"] to exist.
    "gate": """
def run(params, ctx):
    import os, time
    open(params["ready"], "w").close()
    deadline = time.time() + 60
    while not os.path.exists(params["go"]) and time.time() < deadline:
        time.sleep(0.002)
""" + _REPORT,
    # Two probes sharing their imports: a bundle.
    "share_a": 'SHARED_IMPORTS = ("json",)\n\ndef run(params, ctx):\n' + _REPORT,
    "share_b": 'SHARED_IMPORTS = ("json",)\n\ndef run(params, ctx):\n' + _REPORT,
    # Shares the bundle's imports, but hangs past every limit (its watchdog is switched off).
    "share_deaf": """
SHARED_IMPORTS = ("json",)

def run(params, ctx):
    import os, signal, time
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    open(params["ready"], "w").close()
    time.sleep(600)
""",
}


def probe_dir(path: Path) -> str:
    """Write :data:`PROBES` into *path* and return it, for ``CheckOptions(probe_dirs=(...,))``."""
    path.mkdir(parents=True, exist_ok=True)
    for name, source in PROBES.items():
        (path / f"{name}.py").write_text(source)
    return str(path)


class Gate:
    """Parameters for the ``gate`` probe, and the two files it talks through."""

    def __init__(self, where: Path, tag: str) -> None:
        self.ready = where / f"{tag}.ready"
        self.go = where / f"{tag}.go"
        self.params = {"tag": tag, "ready": str(self.ready), "go": str(self.go)}

    def wait_running(self) -> None:
        """Until the probe runs (it created its ready file)."""
        eventually(self.ready.exists, what=f"probe {self.params['tag']} runs")

    def open(self) -> None:
        """Let the probe finish."""
        self.go.touch()
