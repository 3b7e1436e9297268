"""The one small interface every runtime family implements.

``Runtime.preflight(target)`` checks (once, on the xdist controller) that the runtime is
installed, reachable and has the image, raising :class:`UsageProblem` with a one-line
fix otherwise. ``Runtime.start(target, options)`` returns a :class:`Session`;
``Session.exec(argv, ...)`` runs one process inside the image; ``Session.stop()`` removes
everything the session started.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import difflib
import os
import re
import select
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, ClassVar, Final

from ..archives import ArchiveError, ArchiveInfo, inspect_archive
from ..errors import Problem

#: Bytes of a stream kept from its start, and from its end, when output is huge.  The
#: result line is the last line, so the tail must be able to hold a PNG or two.
HEAD_LIMIT = 64 * 1024
TAIL_LIMIT = 16 * 1024 * 1024


FAMILIES: Final = ("oci", "sif", "host")
"""Runtime families: OCI engines (docker, podman), SIF runners (apptainer, singularity), the host."""

_REGISTRY: dict[str, type[Runtime]] = {}
"""Runtime name -> class; filled by each :class:`Runtime` subclass's ``names``."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One image to check: which runtime launches it, and what it is called."""

    runtime: str
    """A registered runtime name (``docker``, ``podman``, ``apptainer``, ``singularity``, ``host``)."""
    ref: str
    """What the runtime is given: an image reference, a ``.sif`` path, or ``host``."""
    spec: str
    """The ``--image`` value exactly as the user wrote it."""
    archive: str = ""
    """For an image archive (*ref* is its path): ``docker-archive``, ``oci-archive``, or ``archive``
    (recognised as a tar, its format read when it is used); empty for everything else."""

    @property
    def family(self) -> str:
        """The runtime's family (one of :data:`FAMILIES`)."""
        return family_of(self.runtime)

    @property
    def id(self) -> str:
        """The column name in the matrix and the test-id suffix, e.g. ``docker://img:tag``."""
        if self.archive:
            where = "" if self.runtime == "docker" else f"{self.runtime}+"
            return f"{where}{self.archive}://{os.path.basename(self.ref)}"
        if self.family == "host":
            return "host" if self.ref == "host" else f"host://{self.ref}"
        if self.family == "sif":
            return f"{self.runtime}://{os.path.basename(self.ref)}"
        return f"{self.runtime}://{self.ref}"


def target_archive(target: Target, *, verify: bool = False) -> ArchiveInfo:
    """What the archive of an archive *target* holds (*verify*: hashed, see :func:`inspect_archive`);
    :class:`RuntimeFault` if it became unusable since the controller checked it at the start of the run."""
    try:
        return inspect_archive(target.ref, target.spec, verify=verify,
                               kind=None if target.archive == "archive" else target.archive)
    except ArchiveError as exc:
        raise RuntimeFault(str(exc), fix="copy the archive again", fault="image") from None


def runtime_names() -> tuple[str, ...]:
    """Every registered runtime name: by family (:data:`FAMILIES` order), then as each class lists them."""
    return tuple(sorted(_REGISTRY, key=lambda n: FAMILIES.index(_REGISTRY[n].family)))


def family_of(name: str) -> str:
    """The family of runtime *name*; KeyError for an unknown name."""
    return _REGISTRY[name].family


def names_in_family(family: str) -> tuple[str, ...]:
    """The runtime names of *family*, e.g. ``("docker", "podman")`` for ``oci``."""
    return tuple(n for n, cls in _REGISTRY.items() if cls.family == family)


def get_runtime(name: str) -> Runtime:
    """A fresh Runtime for *name*; KeyError for an unknown name."""
    return _REGISTRY[name](name)


class RuntimeFault(Problem):
    """The runtime itself failed (could not start a container, daemon gone, ...).

    The message is one line meant for a matrix cell; ``fix`` says what to do about it, ``fault``
    whose it is when known (a runtime that cannot start anything is the host's).
    """


@dataclasses.dataclass
class LaunchOptions:
    """Everything about *how* to launch that comes from options, not from the image."""

    run_id: str
    gpus: str = "all"
    """Docker ``--gpus`` value; ``none`` disables GPU flags for every runtime."""
    gpus_auto: bool = False
    """``--gpus`` was not given: ``all``, or ``none`` on a host without GPU evidence."""
    gpus_why: str = ""
    """Why no GPU is requested, when :func:`..options.gpus_for_host` decided so."""
    apptainer_gpu: str = "nv"
    """``nv``, ``nvccli``, ``rocm`` or ``none``: which Apptainer GPU flag to pass."""
    apptainer_gpu_auto: bool = False
    """``--apptainer-gpu`` was not given: ``nv``, or ``rocm`` on a host whose GPU is AMD's."""
    gpu_vendor: str = "nvidia"
    """The host's GPU vendor (``nvidia`` or ``amd``, from the host facts): which devices a GPU
    request names (Docker/Podman: NVIDIA's ``--gpus``/CDI, or AMD's ``/dev/kfd`` and ``/dev/dri``)."""
    network: str = "none"
    runtime_args: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Variables set in every process started in the image."""
    host_python: str | None = None
    keep_loaded: bool = False
    """Keep images that the run loaded from archives (``--keep-loaded-images``)."""
    job_gpus: str = ""
    """The global ids of the GPUs the batch system gave this job (``SLURM_STEP_GPUS`` or
    ``SLURM_JOB_GPUS``), when ``--gpus`` was not given: Docker and Podman request these instead
    of all, since their daemons are outside the job's cgroup and would hand over every GPU of
    the node; Apptainer runs inside the job and sees only its GPUs anyway."""
    job_gpus_from: str = ""
    """The variable *job_gpus* came from."""
    job_devices: tuple[str, ...] = ()
    """*job_gpus* as the runtime must name them (:func:`~..gpumap.map_job_gpus`): NVIDIA GPU or MIG
    UUIDs (``GPU-...``, ``MIG-...``), or AMD render nodes (``/dev/dri/renderD128``); empty when
    there is no job selection or it could not be mapped."""
    job_gpus_how: str = ""
    """How *job_devices* were found, one line for the report."""
    job_gpus_problem: str = ""
    """Why the job's GPUs could not be mapped: then no GPU is requested at all, rather than
    another GPU than the scheduler gave (the GPU rows fail with this)."""
    lifetime: int = 24 * 3600
    """Seconds a long-lived container may live at most, even if pytest is SIGKILLed."""


@dataclasses.dataclass
class ExecResult:
    """The outcome of one process run inside an image."""

    argv: list[str]
    returncode: int | None
    """Exit status; negative for a signal (host runtime); ``None`` if it timed out."""
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False
    dropped: int = 0
    """Bytes of output dropped from the middle to keep memory bounded."""


@dataclasses.dataclass
class Health:
    """What became of a session's container since some moment (see :meth:`Session.health`)."""

    running: bool
    """Whether processes can still be started in it."""
    reason: str = ""
    """One line for a cell: why it stopped, or what it survived (an OOM kill of a process)."""
    oom_killed: bool = False
    """The kernel's OOM killer ended a process in it (its memory limit was reached)."""
    stopped_at: float | None = None
    """``time.time()`` when it stopped, when the runtime says."""
    runtime_down: bool = False
    """The runtime itself (the Docker daemon) no longer answers: restarting cannot help."""


class _BoundedSink:
    """Keeps the first HEAD_LIMIT and the last TAIL_LIMIT bytes of a stream.

    The tail is a queue of the chunks as read, trimmed whole-chunk at the front: a
    bytearray trimmed at the front would be copied into a fresh buffer on every growth,
    and the allocator's churn would cost several times the limit in resident memory.
    """

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = HEAD_LIMIT - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail.append(chunk)
            self.tail_len += len(chunk)
            while self.tail_len - len(self.tail[0]) >= TAIL_LIMIT:
                first = self.tail.popleft()
                self.tail_len -= len(first)
                self.dropped += len(first)

    def value(self) -> bytes:
        excess = self.tail_len - TAIL_LIMIT
        if excess > 0:  # less than the first chunk: trim it
            self.tail[0] = self.tail[0][excess:]
            self.tail_len -= excess
            self.dropped += excess
        parts = [bytes(self.head)]
        if self.dropped:
            parts.append(b"\n[... %d bytes dropped by containercheck ...]\n" % self.dropped)
        return b"".join(parts + list(self.tail))  # one copy of the kept bytes


def _pump(stream: IO[bytes], sink: _BoundedSink) -> None:
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        sink.feed(chunk)
    stream.close()


def run_bounded(
    argv: Sequence[str],
    *,
    stdin: bytes | Callable[[IO[bytes]], None] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    new_session: bool = True,
    pass_fds: Sequence[int] = (),
) -> ExecResult:
    """Run *argv* (never through a shell) with bounded output and a hard timeout.

    *stdin* is the bytes to send, or a function that writes them to the pipe it is given
    (for streams too large to hold, such as an image archive): it runs in a thread, so the
    timeout also bounds a process that stops reading.

    On timeout the whole process group is killed; the caller is responsible for anything
    the process left *inside* a container (see :meth:`Session.kill_inside`).  *pass_fds* are
    inherited by the process under the same numbers (``/dev/fd/N`` there names them).
    """
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError:
        return ExecResult(list(argv), 127, b"", f"{argv[0]}: not found\n".encode(), 0.0)
    except PermissionError as exc:
        return ExecResult(list(argv), 126, b"", f"{argv[0]}: {exc}\n".encode(), 0.0)
    sinks = (_BoundedSink(), _BoundedSink())
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, sinks[0]), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, sinks[1]), daemon=True),
    ]
    for p in pumps:
        p.start()
    feeder: threading.Thread | None = None
    if stdin is not None:
        assert proc.stdin is not None
        feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
        if callable(stdin):
            feeder.start()
        else:
            feeder.run()
    timed_out = False
    try:
        _wait(proc, timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc, new_session)
        proc.wait()
    except BaseException:  # Ctrl-C while waiting: take the process down with us
        _kill_tree(proc, new_session)
        proc.wait()
        raise
    deadline = time.monotonic() + 5
    if feeder is not None and feeder.ident is not None:
        feeder.join(timeout=5)
    for p in pumps:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    if new_session and any(p.is_alive() for p in pumps):
        # The process is gone but something it started still holds our pipes (e.g. a probe's
        # child after the in-image SIGALRM watchdog fired): take the rest of its group down.
        _kill_tree(proc, new_session)
        for p in pumps:
            p.join(timeout=5)
    return ExecResult(
        argv=list(argv),
        returncode=None if timed_out else proc.returncode,
        stdout=sinks[0].value(),
        stderr=sinks[1].value(),
        duration=time.monotonic() - t0,
        timed_out=timed_out,
        dropped=sinks[0].dropped + sinks[1].dropped,
    )


def _feed(pipe: IO[bytes], data: bytes | Callable[[IO[bytes]], None]) -> None:
    try:
        if callable(data):
            data(pipe)
        else:
            pipe.write(data)
    except (OSError, ValueError, EOFError, tarfile.TarError):
        # The process exited early (or was killed), or the stream could not be read to its
        # end: the process sees its input cut short, and its exit status tells the story.
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> None:
    """``proc.wait(timeout)``, woken by the exit itself: ``Popen.wait`` with a timeout polls with
    sleeps growing to 50 ms, so it notices an exit up to 50 ms late.  A pidfd (Linux 5.3+)
    becomes readable when the process exits; without one, the poll it is."""
    if timeout is not None:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd here (older kernel or Python, not Linux)
            proc.wait(timeout=timeout)
            return
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(proc.args, timeout)
        finally:
            os.close(pidfd)
    proc.wait()


def _kill_tree(proc: subprocess.Popen[bytes], new_session: bool) -> None:
    try:
        if new_session:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether process *pid* exists on this host (another user's counts: it is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def text(data: bytes) -> str:
    """Decode process output for humans: never fails on invalid UTF-8."""
    return data.decode("utf-8", errors="replace")


def last_line(data: bytes | str) -> str:
    """The last non-empty line of some output, for one-line error messages."""
    s = text(data) if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Session(abc.ABC):
    """One launched image: processes run in it until :meth:`stop`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.facts: dict[str, Any] = {"runtime": target.runtime, "ref": target.ref}
        """Launch facts (GPU passthrough outcome, container id, command line), builtins only."""

    @abc.abstractmethod
    def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run *argv* inside the image; *argv[0]* is looked up on the image's PATH."""

    def python_candidates(self, preferred: Sequence[str]) -> list[str]:
        """Interpreters to try, in order, when looking for Python in the image."""
        return list(preferred)

    def kill_inside(self, pid: int, python: str) -> None:
        """Kill process group *pid* inside the image (after a timed-out exec).

        Killing the runtime's client (``docker exec``) does not stop the process in the
        container, so runtimes with a long-lived container override this.  The default
        does nothing: each exec is its own process tree on the host (Apptainer).
        """
        return None

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and remove whatever the session started; safe to call twice."""

    def alive(self) -> bool:
        """Whether the session can still run processes (a container may be killed)."""
        return True

    def health(self, since: float) -> Health:
        """Whether the session still runs, and what happened to it since *since* (``time.time()``).

        Asked only after a probe failed without a result, so it may cost a runtime call or two.
        """
        return Health(running=self.alive())


_HELP_FLAG = re.compile(r"^\s{1,8}(?:-(?P<short>[A-Za-z0-9]),\s+)?--(?P<long>[a-z0-9][a-z0-9-]*)\b", re.M)


def help_flags(help_text: str) -> tuple[set[str], set[str]]:
    """The long and short flags a cobra/pflag ``--help`` page lists (Docker, Podman, Apptainer
    all print ``  -a, --attach list   Attach ...`` lines)."""
    longs: set[str] = set()
    shorts: set[str] = set()
    for found in _HELP_FLAG.finditer(help_text):
        longs.add(found.group("long"))
        if found.group("short"):
            shorts.add(found.group("short"))
    return longs, shorts


def unknown_flag(args: Sequence[str], longs: set[str], shorts: set[str], command: str) -> str | None:
    """The one-line usage error for the first of *args* (``--runtime-arg`` values) that is a flag
    *command* does not have, naming the closest one; None when all are known (a value that is not
    a flag is left to the flag before it)."""
    if not longs:
        return None  # the help page could not be read: the runtime will say it at start
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0]
            if name not in longs:
                near = difflib.get_close_matches(name, sorted(longs), n=1)
                hint = f"; did you mean --{near[0]}?" if near else ""
                return (f"--runtime-arg={arg}: '{command}' has no flag --{name}{hint} ('{command} --help' lists "
                        "them)")
        elif arg.startswith("-") and len(arg) > 1 and not arg[1].isdigit():
            if arg[1] not in shorts:
                return f"--runtime-arg={arg}: '{command}' has no flag -{arg[1]} ('{command} --help' lists them)"
    return None


class Runtime(abc.ABC):
    """A family of container runtimes (docker+podman, apptainer+singularity, host).

    A subclass registers itself for every name in ``names``; ``family`` groups names that
    take the same kind of image (``--image apptainer://x.sif --runtime singularity`` is fine).
    """

    names: ClassVar[tuple[str, ...]] = ()
    """The ``--runtime`` values / ``--image`` prefixes this class serves."""
    family: ClassVar[str] = ""
    """One of :data:`FAMILIES`."""
    verifies_archives: ClassVar[bool] = False
    """Whether its preflight hashes every archive target (a runtime that caches what it derives from
    one, by content): the start-up check then hashes it once, for both."""

    name: str
    """The runtime's name as used in ``--runtime`` and in target ids."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.names:
            _REGISTRY[name] = cls

    def __init__(self, name: str) -> None:
        self.name = name

    def check_options(self, options: LaunchOptions) -> None:
        """Raise :class:`UsageProblem` when *options* cannot work with this runtime."""
        return None

    def check_launch(self, options: LaunchOptions) -> None:
        """Raise :class:`UsageProblem` when the runtime itself would refuse *options* at once (a
        network it does not have, a ``--runtime-arg`` flag it does not know): asked of the
        runtime before anything starts, so a typo is one line, not an error on every row."""
        return None

    def gpu_flags_for(self, options: LaunchOptions) -> list[str]:
        """The flags that give a session GPUs under *options* (empty: none requested)."""
        return []

    def reap_stale(self) -> list[str]:
        """Remove sessions that earlier, killed runs on this host left behind; their names."""
        return []

    @abc.abstractmethod
    def preflight(self, target: Target) -> dict[str, Any]:
        """Check the runtime and the image are usable; return runtime facts.

        Raises :class:`UsageProblem` with a one-line message naming the fix.
        """

    @abc.abstractmethod
    def start(self, target: Target, options: LaunchOptions) -> Session:
        """Launch *target*; raises :class:`RuntimeFault` if it cannot be started."""

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        """The exact command that runs *argv* in *target* (for docs, tests and evidence)."""
        raise NotImplementedError
