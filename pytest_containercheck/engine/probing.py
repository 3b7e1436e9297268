"""Host side of the probe protocol: ship a probe into a Session, run it, read its result.

A probe is ``probes/<name>.py`` defining ``run(params, ctx) -> dict``.  It is sent on the
interpreter's stdin together with ``probes/_envelope.py`` (``python3 -``), so nothing is
mounted or copied into the image, and it works the same under every runtime.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

from .errors import Problem
from .runtimes.base import ExecResult, Session, last_line, text

RESULT_MARKER = "@@containercheck-result"
PID_MARKER = "@@containercheck-pid"
BEGIN_MARKER = "@@containercheck-begin"
EXIT_MARKER = "@@containercheck-exit"
SHARED_MARKER = "@@containercheck-shared"
MIN_PYTHON = (3, 7)

PYTHON_MARKER = "@@containercheck-python"
#: Runs on any Python from 2.6 on, so an old interpreter is reported, not misread.  Its answer
#: is a marker line with a nonce: an image may print banners on every interpreter start
#: (sitecustomize), even lines shaped like ours.
_DISCOVER = ("import sys; sys.stdout.write('\\n" + PYTHON_MARKER + " %s %d.%d.%d|%s\\n' % "
             "((sys.argv[1],) + tuple(sys.version_info[:3]) + (sys.executable,)))")

#: Exit statuses of a process ended by SIGALRM: the in-image watchdog of _envelope.main.
_ALARM_EXITS = (-14, 128 + 14)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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


class ProbeError(Problem):
    """The probe could not be run at all (no Python, unknown probe, runtime fault)."""


def probe_dirs() -> list[Path]:
    """Where probe sources live: inside the installed package, or the source checkout."""
    package = Path(__file__).resolve().parent.parent  # pytest_containercheck/
    # The wheel carries them in the package; a checkout has them beside it.
    return [p for p in (package / "probes", package.parent / "probes") if (p / "_envelope.py").is_file()]


@cache
def probe_source(name: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """The source of probe *name*, looked up in *extra_dirs* (``--probe-dir``) first.

    Raises :class:`ProbeError` for an unknown name.
    """
    if not _NAME.match(name):
        raise ProbeError(f"invalid probe name {name!r}")
    for d in [*map(Path, extra_dirs), *probe_dirs()]:
        f = d / f"{name}.py"
        if f.is_file():
            return f.read_text(encoding="utf-8")
    raise ProbeError(f"unknown probe {name!r}; available: {', '.join(available_probes(extra_dirs))}")


HARNESS: Final = ("_envelope", "_depth")
"""What every probe travels with, in this order: the envelope (protocol, ``ProbeContext``) and the
analysis of a library that is there but does not work (``ctx.import_library``, ``ctx.explain_load``)."""


def harness() -> str:
    """The source sent before every probe (or bundle): :data:`HARNESS`, joined."""
    return "\n\n".join(probe_source(part) for part in HARNESS)


def available_probes(extra_dirs: tuple[str, ...] = ()) -> list[str]:
    """Names of every probe (built-in and in *extra_dirs*)."""
    names: set[str] = set()
    for d in [*map(Path, extra_dirs), *probe_dirs()]:
        names.update(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))
    return sorted(names)


def _niceness(nice: int) -> str:
    """The statement that lowers the probe's CPU priority first (nothing when *nice* is 0)."""
    return f"\nlower_priority({int(nice)})\n" if nice else ""


def compose(name: str, params: Mapping[str, Any], nonce: str, timeout: float | None,
            extra_dirs: tuple[str, ...] = (), nice: int = 0) -> bytes:
    """The complete program sent on stdin for one probe run (at niceness +*nice*)."""
    if name.startswith("_"):
        raise ProbeError(f"invalid probe name {name!r}")
    body = probe_source(name, extra_dirs)
    call = f"\nmain(run, json.loads({json.dumps(dict(params))!r}), {nonce!r}, {timeout!r})\n"
    return (harness() + _niceness(nice) + "\n\n" + body + "\n" + call).encode("utf-8")


@cache
def _declared_modules(source: str, name: str) -> tuple[str, ...]:
    """A probe's top-level ``NAME = ("module", ...)`` (a tuple of module names, nothing else), or ()."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return ()
            if isinstance(value, (tuple, list)) and all(isinstance(v, str) and _MODULE.match(v) for v in value):
                return tuple(value)
            return ()
    return ()


def shared_imports(name: str, extra_dirs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The modules probe *name* declares it can share with other probes (``SHARED_IMPORTS = (...)``
    at its top level): probes declaring the same modules may run as one bundle."""
    try:
        return _declared_modules(probe_source(name, extra_dirs), "SHARED_IMPORTS")
    except ProbeError:
        return ()


def library_modules() -> tuple[str, ...]:
    """The libraries the built-in probes judge (each probe's ``LIBRARIES = (...)``): the modules whose
    absence skips a built-in row, which the ``pythons`` probe looks for in the image's other
    interpreters.  Read from the probes, never listed elsewhere."""
    found: list[str] = []
    for name in available_probes():
        for module in _declared_modules(probe_source(name), "LIBRARIES"):
            if module not in found:
                found.append(module)
    return tuple(found)


def creates_cuda_context(name: str, extra_dirs: tuple[str, ...] = ()) -> bool:
    """Whether probe *name* declares ``CUDA_CONTEXT = True`` at its top level: it creates a CUDA
    context, which a GPU in ``Exclusive_Process`` compute mode grants one process at a time."""
    try:
        tree = ast.parse(probe_source(name, extra_dirs))
    except (ProbeError, SyntaxError):
        return False
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "CUDA_CONTEXT"):
            return isinstance(node.value, ast.Constant) and node.value.value is True
    return False


def compose_bundle(calls: Sequence[tuple[str, Mapping[str, Any], str]], shared: Sequence[str],
                   timeout: float | None, extra_dirs: tuple[str, ...] = (), nice: int = 0) -> bytes:
    """The program for a bundle: *calls* ``(name, params, nonce)`` one after the other in forked
    children, after importing *shared* once (see ``bundle`` in ``probes/_envelope.py``); all
    at niceness +*nice*."""
    docs = []
    for name, params, nonce in calls:
        if name.startswith("_"):
            raise ProbeError(f"invalid probe name {name!r}")
        docs.append({"name": name, "source": probe_source(name, extra_dirs), "params": dict(params),
                     "nonce": nonce, "timeout": timeout})
    call = f"\nbundle(json.loads({json.dumps(docs)!r}), {list(shared)!r})\n"
    return (harness() + _niceness(nice) + "\n" + call).encode("utf-8")


ON_DEMAND: Final = ("pythons",)
"""Probes no check declares: the plugin runs them when a verdict asks (``pythons``: other
interpreters in the image, when a row skips because its library is absent)."""


@dataclasses.dataclass
class PythonInfo:
    """The interpreter found in an image."""

    command: str
    version: tuple[int, int, int]
    executable: str


#: Where images keep interpreters that are not on PATH, for the shell of an image without a
#: python3 on it (probes/pythons.py looks in the same places, with Python).
_ELSEWHERE_SH = (
    'for p in /opt/*/bin/python3 /opt/*/envs/*/bin/python3 /venv/bin/python3 /.venv/bin/python3 '
    '/app/.venv/bin/python3 /root/.venv/bin/python3 /opt/conda/bin/python3 /usr/local/bin/python3 '
    '/usr/local/bin/python3.[0-9]* /usr/bin/python3.[0-9]*; do [ -x "$p" ] && [ ! -d "$p" ] && echo "$p"; done'
)
#: Variables of the user's ``--container-env`` that change which Python runs, or whether it can.
_PYTHON_ENV = ("PATH", "PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
_NOT_FOUND = re.compile(r"not found|no such file|executable file not found|exit 127\b", re.IGNORECASE)


def find_python(session: Session, candidates: Sequence[str], timeout: float = 120,
                user_env: Mapping[str, str] | None = None) -> PythonInfo:
    """Find a usable interpreter in the image, trying *candidates* in order.

    Raises :class:`ProbeError` when none runs, or the one found is older than 3.7.  The error
    says whether a candidate was missing or ran and failed, names the variables of the user's
    ``--container-env`` (*user_env*) that decide which Python runs, and the interpreters the
    image holds off PATH (a venv or conda environment its entrypoint activates), with the
    ``--container-python`` to use.
    """
    tried: list[str] = []
    evidence: list[str] = []
    broken: list[tuple[str, str]] = []
    for cand in candidates:
        nonce = secrets.token_hex(8)
        res = session.exec([cand, "-c", _DISCOVER, nonce], timeout=timeout)
        tried.append(cand)
        m = re.search(rf"^{PYTHON_MARKER} {nonce} (\d+)\.(\d+)\.(\d+)\|(.*)$", text(res.stdout), re.MULTILINE)
        if res.returncode == 0 and m:
            version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            info = PythonInfo(cand, version, m.group(4))
            if version[:2] < MIN_PYTHON:
                raise ProbeError(
                    f"unsupported Python {'.'.join(map(str, version))} at {info.executable} "
                    f"(probes need {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+)",
                    fix="install python3 (3.7 or newer) in the image, or name it with --container-python",
                )
            return info
        said = last_line(res.stderr) or last_line(res.stdout)
        evidence.append(f"$ {cand} -c ...: exit {res.returncode}: {said}")
        if res.returncode not in (126, 127) and not _NOT_FOUND.search(said or ""):
            # A Python that cannot start says why first ("Fatal Python error: ..."), then more.
            lines = [ln.strip() for ln in (text(res.stderr) or text(res.stdout)).splitlines() if ln.strip()]
            why = next((ln for ln in lines if "error" in ln.lower()), said or "no output")
            broken.append((cand, f"exit {res.returncode}: {why[:160]}"))
        if res.timed_out:
            break
    env = {k: v for k, v in (user_env or {}).items() if k in _PYTHON_ENV}
    yours = (f"; your --container-env sets {', '.join(f'{k}={v}' for k, v in env.items())}, which decides "
             "which Python runs and whether it can start" if env else "")
    drop = f"drop or fix --container-env {', '.join(env)}; " if env else ""
    if broken:
        raise ProbeError(
            f"{broken[0][0]} is in the image but is not a working Python ({broken[0][1]}){yours}",
            fix=f"{drop}name a working interpreter with --container-python PATH",
            evidence="\n".join(evidence),
        )
    found = session.exec(["sh", "-c", _ELSEWHERE_SH], timeout=30)
    elsewhere = [ln.strip() for ln in text(found.stdout).splitlines() if ln.strip().startswith("/")][:5]
    if elsewhere:
        evidence.append(f"interpreters off PATH: {', '.join(elsewhere)}")
        raise ProbeError(
            f"no {' or '.join(tried)} on the image's PATH, but it holds {', '.join(elsewhere)}{yours}",
            fix=f"{drop}--container-python {elsewhere[0]} (the environment the image's entrypoint activates), "
                "or put its bin directory on PATH in the image (ENV PATH)",
            evidence="\n".join(evidence),
        )
    raise ProbeError(
        f"no Python interpreter found in image; tried {', '.join(tried)}{yours}",
        fix=f"{drop}install python3 in the image, or name its interpreter with --container-python",
        evidence="\n".join(evidence),
    )


@dataclasses.dataclass
class ProbeResult:
    """What one probe run produced: its facts, or why there are none.

    ``status`` is ``ok``; ``error`` (the probe raised: ``error`` says what); ``timeout``;
    ``crashed`` (the interpreter died: ``returncode`` says how); or ``no-result`` (it
    exited without a result line).
    """

    name: str
    status: str
    facts: dict[str, Any]
    error: str | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    warnings: list[dict[str, str]] = dataclasses.field(default_factory=list)
    artifacts_b64: dict[str, str] = dataclasses.field(default_factory=dict)
    returncode: int | None = None
    duration: float = 0.0
    stdout: str = ""
    """Everything the probe printed besides its result line: evidence, never parsed."""
    stderr: str = ""
    traceback: str = ""
    started: bool = True
    """Whether the interpreter got as far as running the probe (it printed its pid line)."""
    restarted: str = ""
    """Set when the probe ran in a new container because the previous one stopped: why it stopped."""
    nice: int = 0
    """The niceness it ran at, when lowered (it started while the image's heaviest probe ran)."""
    guess_dropped: str = ""
    """The interpreter it first ran with while the image's was looked for, when the search found
    another: that run was dropped, and this result is from the interpreter found."""
    bundle: dict[str, Any] = dataclasses.field(default_factory=dict)
    """When it ran in a bundle: ``with`` (the probes, in order), ``shared_imports``, and
    ``shared`` (whether they were imported once, or each probe imported them itself)."""

    @property
    def ok(self) -> bool:
        """True when the probe ran to the end and reported facts."""
        return self.status == "ok"

    def artifact(self, name: str) -> bytes:
        """A binary artifact (e.g. ``"png"``) the probe attached; KeyError if absent."""
        return base64.b64decode(self.artifacts_b64[name])

    def summary(self) -> str:
        """One line saying why there are no facts (empty when ok)."""
        if self.status == "ok":
            return ""
        if self.status == "error":
            return f"probe {self.name} raised {self.error}"
        if self.status == "timeout":
            return f"probe {self.name} timed out after {self.duration:.0f} s (killed)"
        # error, when set here, says what happened around the probe (its container stopped,
        # the OOM killer ended it): see fixtures.ImageSession.
        why = f": {self.error}" if self.error else ""
        if self.status == "crashed":
            return f"probe {self.name} crashed ({describe_exit(self.returncode)}){why}"
        last = last_line(self.stderr)
        if not why:
            why = f": {last}" if last else " (nothing on stderr)"
        return f"probe {self.name} exited {self.returncode} without a result{why}"


def describe_exit(code: int | None) -> str:
    """``-11`` -> ``killed by signal 11 (SIGSEGV)``; ``137`` -> the same for SIGKILL."""
    import signal

    if code is None:
        return "no exit status"
    sig = -code if code < 0 else code - 128 if 128 < code < 160 else 0
    if sig:
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {code}"


def parse_result(name: str, res: ExecResult, nonce: str) -> ProbeResult:
    """Find this run's result line (by nonce) and build a :class:`ProbeResult`."""
    # Output may be megabytes (run_bounded keeps up to 16 MiB of each stream's tail): find the
    # lines by regex and cut them out, rather than splitting and joining every line.
    out = text(res.stdout)
    err = text(res.stderr)
    envelope: dict[str, Any] | None = None
    for m in re.finditer(rf"^{re.escape(RESULT_MARKER)} {re.escape(nonce)} (.*)$", out, re.MULTILINE):
        try:
            envelope = json.loads(m.group(1))
        except ValueError:
            continue
        out = out[:m.start()] + out[m.end():]
        break
    pid_line = re.compile(rf"^{re.escape(PID_MARKER)} {re.escape(nonce)} .*$\n?", re.MULTILINE)
    started = pid_line.search(err) is not None
    if started:
        err = pid_line.sub("", err)
    base: dict[str, Any] = {"name": name, "returncode": res.returncode, "duration": res.duration,
            "stdout": out.strip(), "stderr": err.strip(), "started": started}
    if res.timed_out:
        return ProbeResult(status="timeout", facts={}, **base)
    if envelope is None:
        if res.returncode in _ALARM_EXITS:  # our own in-image SIGALRM watchdog fired
            return ProbeResult(status="timeout", facts={}, **base)
        crashed = res.returncode is not None and (res.returncode < 0 or 128 < res.returncode < 160)
        return ProbeResult(status="crashed" if crashed else "no-result", facts={}, **base)
    return ProbeResult(
        status="ok" if envelope.get("status") == "ok" else "error",
        facts=envelope.get("facts") or {},
        error=envelope.get("error"),
        timings=envelope.get("timings") or {},
        warnings=envelope.get("warnings") or [],
        artifacts_b64=envelope.get("artifacts") or {},
        traceback=envelope.get("traceback") or "",
        **base,
    )


def run_probe(session: Session, python: PythonInfo, name: str, params: Mapping[str, Any],
              *, timeout: float, env: Mapping[str, str] | None = None,
              extra_dirs: tuple[str, ...] = (), nice: int = 0) -> ProbeResult:
    """Run probe *name* in *session* (at niceness +*nice*) and return its result; never raises
    for probe faults."""
    nonce = secrets.token_hex(8)
    program = compose(name, params, nonce, timeout, extra_dirs, nice)
    res = session.exec([python.command, "-"], stdin=program, env=env, timeout=timeout + 5)
    if res.timed_out or res.returncode in _ALARM_EXITS:
        # Either side's timeout killed only the interpreter; its children (same process
        # group, see _envelope.main) may still run inside the image.
        m = re.search(rf"^{PID_MARKER} {nonce} (\d+)$", text(res.stderr), re.MULTILINE)
        if m:
            session.kill_inside(int(m.group(1)), python.command)
    result = parse_result(name, res, nonce)
    result.nice = nice
    return result


def _segments(stream: str, nonces: Sequence[str]) -> dict[str, str]:
    """A bundle's output cut at its begin lines: each probe's own part (empty if it never began)."""
    marks = sorted((m.start(), m.end(), m.group(1)) for m in
                   re.finditer(rf"^{re.escape(BEGIN_MARKER)} (\S+)$\n?", stream, re.MULTILINE)
                   if m.group(1) in nonces)
    out = dict.fromkeys(nonces, "")
    for i, (_start, end, nonce) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(stream)
        out[nonce] = stream[end:stop]
    return out


def run_bundle(session: Session, python: PythonInfo, calls: Sequence[tuple[str, Mapping[str, Any]]],
               shared: Sequence[str], *, timeout: float, extra_dirs: tuple[str, ...] = (),
               nice: int = 0) -> list[ProbeResult]:
    """Run *calls* as one bundle (see :func:`compose_bundle`); one result per call, in order.

    Each result is what :func:`run_probe` would give for that probe alone: its own stdout and
    stderr (cut from the bundle's by the begin lines), its own exit status and time.  A probe
    the bundle never began (an earlier one hung until the outer limit) is ``started=False``.
    """
    nonces = [secrets.token_hex(8) for _ in calls]
    program = compose_bundle([(n, p, nonce) for (n, p), nonce in zip(calls, nonces)], shared, timeout, extra_dirs,
                             nice)
    res = session.exec([python.command, "-"], stdin=program, timeout=len(calls) * (timeout + 5))
    out, err = text(res.stdout), text(res.stderr)
    m = re.search(rf"^{re.escape(SHARED_MARKER)} \S+ (yes|no)$", err, re.MULTILINE)
    shared_ok = bool(m and m.group(1) == "yes")
    err = re.sub(rf"^{re.escape(SHARED_MARKER)} .*$\n?", "", err, flags=re.MULTILINE)
    exits = {g[0]: (int(g[1]), float(g[2])) for g in
             re.findall(rf"^{re.escape(EXIT_MARKER)} (\S+) (-?\d+) ([0-9.]+)$", err, re.MULTILINE)}
    err = re.sub(rf"^{re.escape(EXIT_MARKER)} .*$\n?", "", err, flags=re.MULTILINE)
    outs, errs = _segments(out, nonces), _segments(err, nonces)
    results = []
    for (name, _params), nonce in zip(calls, nonces):
        code, seconds = exits.get(nonce, (None, 0.0))
        pid = re.search(rf"^{re.escape(PID_MARKER)} {re.escape(nonce)} (\d+)$", errs[nonce], re.MULTILINE)
        began = pid is not None
        one = ExecResult(argv=res.argv, returncode=code, stdout=outs[nonce].encode(), stderr=errs[nonce].encode(),
                         duration=seconds if code is not None else res.duration,
                         timed_out=res.timed_out and began and code is None)
        result = parse_result(name, one, nonce)
        if res.timed_out or code is None:
            if pid is not None:
                # The outer limit ended it: its process group is the bundle's.
                session.kill_inside(int(pid.group(1)), python.command)
            else:
                result.started = False
        result.bundle = {"with": [n for n, _ in calls], "shared_imports": list(shared), "shared": shared_ok}
        result.nice = nice
        results.append(result)
    return results
