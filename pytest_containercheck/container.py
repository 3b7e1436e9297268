"""The ``container`` fixture and its API: one image, seen from a test.

A test asks for ``container`` (parametrized over the ``--image`` targets by
:mod:`.collect`); the fixture fills in the test's cell (:class:`~.matrix.CellRecord`) and
starts the image through the process's :class:`~.sessions.SessionPool`, so a launch failure
is an error in setup, not a failed check.  Checks judge with pure verdict functions and hand
the :class:`~.verdict.Verdict` to :meth:`Container.apply`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from . import require
from .engine import owncheck
from .engine.errors import Problem
from .engine.lifecycle import ImageSession
from .engine.matrix import CELL_KEY, CellRecord, new_cell
from .engine.outputs import write_file
from .engine.policy import CheckOptions
from .engine.probing import ProbeError, ProbeResult, PythonInfo, library_modules
from .engine.redact import Redactor, runtime_arg_env
from .engine.report import fit, line_width
from .engine.runtimes import RuntimeFault, Session, Target
from .engine.runtimes.base import text
from .engine.textsafe import DETAIL_CAP, EVIDENCE_CAP, capped, visible, visible_all
from .engine.verdict import FAULTS, Verdict, for_host, passed
from .engine.verdicts.system import other_interpreter
from .hints import NO_IMAGE_SKIP
from .rows import row_name
from .state import STATE

__all__ = ["CommandResult", "Container", "container"]

_T = TypeVar("_T")


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

    def __init__(self, image: ImageSession, host: dict[str, Any], options: CheckOptions, cell: CellRecord,
                 redact: Redactor | None = None) -> None:
        self._image = image
        self._host = host
        self._options = options
        self._cell = cell
        self._redact = redact or Redactor({})
        """Keeps ``--container-env`` values out of the cell and the failure message."""
        self._passed: list[str] = []
        """What the helpers (:meth:`file`, :meth:`package`, ...) found as asked: the cell's note."""

    def start(self) -> dict[str, Any]:
        """Start the image (once per run) and return how it was launched; an error cell if it cannot."""
        facts = self._started().facts
        self._cell["column_facts"] = visible_all(self._redact(dict(facts)))
        return facts

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
        """Host facts (see :mod:`pytest_containercheck.engine.hostinfo`)."""
        return self._host

    @property
    def options(self) -> CheckOptions:
        """Policy options (``--require-gpu`` and friends)."""
        return self._options

    @property
    def session_facts(self) -> dict[str, Any]:
        """How the image was launched: runtime, GPU passthrough outcome, container id.

        Empty before :meth:`start` (the fixture starts the image before the test runs).
        """
        session = self._image.session
        return session.facts if session is not None else {}

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
            self.problem(problem)
        self._cell["probes"][name] = {"status": result.status, "duration": round(result.duration, 3),
                                      "timings": result.timings}
        if result.bundle:
            self._cell["probes"][name]["bundle"] = dict(result.bundle)
        if result.nice:
            self._cell["probes"][name]["nice"] = result.nice
        if result.guess_dropped:
            self._cell["probes"][name]["guess_dropped"] = result.guess_dropped
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

    # -- what image owners check most (engine/owncheck.py) --------------------------------------
    #
    # Each runs inside the image through the same launch as every check (container.run), and
    # ends the test with a one-line reason, the image's fault and the fix when the image is not
    # as asked; it returns what it found when it is.  What each one passed is the cell's note
    # (said together, "; "), unless the test sets its own with container.note().

    def file(self, path: str, *, kind: str | None = None, mode: int | str | None = None,
             owner: str | int | None = None, group: str | int | None = None,
             contains: str | re.Pattern[str] | None = None) -> owncheck.FileFacts:
        """The file or directory *path* exists in the image (following symbolic links), and is
        of *kind* (``"file"``, ``"directory"``), has permission bits *mode* (``0o755`` or
        ``"0755"``), *owner* and *group* (a name or an id), and its text *contains* a string or
        matches a ``re.Pattern`` (in its first 16 MiB).  Returns what was found."""
        if kind is not None and kind not in ("file", "directory"):
            raise ValueError(f"kind {kind!r}: give 'file' or 'directory'")
        read = contains is not None
        res = self.run(owncheck.file_argv(path, read))
        found = self._asked(lambda: owncheck.file_facts(path, res.stdout, res.stderr, read))
        self._judged(owncheck.file_verdict(path, found, kind=kind, mode=mode, owner=owner, group=group,
                                           contains=contains, where=self._where()))
        assert isinstance(found, owncheck.FileFacts)
        return found

    def directory(self, path: str, **expected: Any) -> owncheck.FileFacts:
        """:meth:`file` for a directory: ``container.directory("/opt/app", mode=0o755)``."""
        return self.file(path, kind="directory", **expected)

    def package(self, name: str, version: str | None = None) -> owncheck.PackageFacts:
        """The system package *name* is installed in the image (dpkg, rpm or apk, whichever the
        image has), at a *version* the PEP 440 specifier allows (``">=5.1"``: its first dotted
        number is compared, ``7:5.1.6-0+deb12u1`` as 5.1.6).  Returns the manager and the full
        installed version."""
        owncheck.specifier(version)  # a wrong specifier is the test's mistake: before asking the image
        res = self.run(owncheck.manager_argv())
        found = self._asked(lambda: owncheck.manager(res.stdout, res.stderr))
        answer = self.run(owncheck.package_argv(found, name))
        facts = owncheck.PackageFacts(name, owncheck.MANAGERS[found],
                                      owncheck.installed_version(found, name, answer.returncode, answer.stdout))
        self._judged(owncheck.package_verdict(facts, version, self._where()))
        return facts

    def command(self, name: str, version: str | None = None,
                version_args: Sequence[str] = ("--version",)) -> owncheck.CommandFacts:
        """The command *name* is on the image's PATH; with *version* (a PEP 440 specifier,
        ``">=5"``), the first dotted number that ``name --version`` (or *version_args*) prints
        satisfies it.  Returns its path (and the version read)."""
        owncheck.specifier(version)
        res = self.run(owncheck.command_argv(name))
        path, searched = self._asked(lambda: owncheck.command_path(name, res.stdout, res.stderr))
        if path is None:
            self._judged(owncheck.command_missing(name, searched, self._where()))
            raise AssertionError("unreachable: a failed verdict ends the test")
        facts = owncheck.CommandFacts(name, path)
        if version is None:
            self._judged(passed(f"{name} ({path})"))
            return facts
        argv = [path, *version_args]
        out = self.run(argv)
        verdict, facts = self._asked(lambda: owncheck.command_version(
            facts, [name, *version_args], out.returncode, out.stdout + "\n" + out.stderr, version, self._where()))
        self._judged(verdict)
        return facts

    def env(self, name: str, value: str | re.Pattern[str] | None = None) -> str:
        """The environment variable *name* is set in the image (as the image's processes see it:
        its ENV, and any --container-env), equal to *value* or matching it (a ``re.Pattern``).
        Returns its value."""
        res = self.run(owncheck.env_argv(name))
        found = self._asked(lambda: owncheck.env_value(name, res.stdout, res.stderr))
        self._judged(owncheck.env_verdict(name, found, value, self._where()))
        assert found is not None
        return found

    def distribution(self, name: str, version: str | None = None) -> str:
        """The Python distribution *name* is installed for the image's interpreter (the one the
        checks use), at a *version* the PEP 440 specifier allows (``">=2.4"``).  Returns its version."""
        owncheck.specifier(version)
        python = self._python()
        res = self.run([python.command, "-", name], input=owncheck.DISTRIBUTION_PY)
        found = self._asked(lambda: owncheck.distribution_facts(res.stdout, res.stderr, name))
        self._judged(owncheck.distribution_verdict(name, found, version, self._where()))
        return str(found["version"])

    def _where(self) -> owncheck.Where:
        return owncheck.HOST if self.target.runtime == "host" else owncheck.IMAGE

    def _asked(self, answer: Callable[[], _T]) -> _T:
        """*answer*'s value; an error cell (not a failure: the image could not be asked) when it
        raises :class:`~.engine.owncheck.Unanswered`."""
        problem: owncheck.Unanswered | None = None
        try:
            return answer()
        except owncheck.Unanswered as exc:
            problem = exc
        self.problem(problem)

    def _judged(self, verdict: Verdict) -> None:
        """A helper's *verdict*: a failure ends the test; a pass joins the cell's note."""
        if verdict.status != "pass":
            self.apply(verdict)
        self._passed.append(verdict.detail)
        self.note("; ".join(self._passed))

    # -- the cell --------------------------------------------------------------------------

    def _text(self, value: str | None) -> str | None:
        """*value* as the cell and pytest's report may show it: no ``--container-env`` value, no
        raw control character (the text may come from the image's files)."""
        return None if value is None else visible(self._redact.text(value))

    def note(self, text_: str) -> None:
        """Set the one-line detail shown in this test's matrix cell."""
        # Redacted first: collapsing the whitespace of a value that has some would hide it from the redactor.
        self._cell["detail"] = visible(" ".join(self._redact.text(str(text_)).split()), lines=False)[:DETAIL_CAP]

    def evidence(self, key: str, value: Any) -> None:
        """Attach small evidence (builtins only) to the cell, for JSON and HTML reports."""
        self._cell["evidence"][key] = visible_all(self._redact(_builtins(value)))

    def artifact(self, name: str, data: bytes, suffix: str = ".png") -> Path:
        """Write *data* under ``--artifacts-dir`` and reference it from the cell."""
        path = Path(self.options.artifacts_dir) / _slug(self.id) / _slug(self._cell["row"]) / f"{_slug(name)}{suffix}"
        write_file(path, data)  # 0644, and 0755 for the directories it creates, whatever the umask
        self._cell["artifacts"][name] = str(path)
        return path

    def fail(self, reason: str, *, fix: str | None = None, fault: str | None = None) -> NoReturn:
        """Fail this check: *reason* is the cell's detail, *fix* what to do, *fault* whose."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        reason, fix = self._text(reason) or "", self._text(fix)
        self._cell.update({"detail": " ".join(reason.split())[:DETAIL_CAP], "fix": fix, "fault": fault})
        msg = f"[{fault} fault] {capped(reason)}" if fault else capped(reason)
        if fix:
            msg += f"\nFix: {capped(fix)}"
        pytest.fail(_fit(msg), pytrace=False)

    def error(self, reason: str, *, fix: str | None = None, evidence: str = "", fault: str | None = None) -> NoReturn:
        """The check could not be carried out (image would not start, probe crashed)."""
        reason, fix, evidence = self._text(reason) or "", self._text(fix), self._text(evidence) or ""
        self._cell.update({"status": "error", "detail": " ".join(reason.split())[:DETAIL_CAP], "fix": fix,
                           "fault": fault})
        if evidence:
            self._cell["evidence"]["output"] = evidence[-EVIDENCE_CAP:]
        msg = capped(reason) + (f"\nFix: {capped(fix)}" if fix else "")
        if evidence:
            msg += f"\n--- evidence ---\n{evidence[-EVIDENCE_CAP:]}"
        pytest.fail(_fit(msg), pytrace=False)

    def apply(self, verdict: Verdict) -> None:
        """Make *verdict* this cell's outcome: a fail or skip ends the test, a pass sets the note."""
        if self.target.runtime == "host":
            verdict = for_host(verdict)
        if verdict.status == "fail":
            self.fail(verdict.detail, fix=verdict.fix, fault=verdict.fault)
        if verdict.status == "skip":
            if verdict.missing:
                elsewhere = self._elsewhere(verdict.missing)
                if elsewhere is not None:
                    self.fail(elsewhere.detail, fix=elsewhere.fix, fault=elsewhere.fault)
            self.skip(verdict.detail)
        self.note(verdict.note or verdict.detail)

    def _elsewhere(self, module: str) -> Verdict | None:
        """Another interpreter in the image that has *module* (see ``probes/pythons.py``), as a
        failing verdict; None when there is none (or the search itself failed)."""
        python = self._image.python_info
        if self.target.runtime == "host" or python is None:
            return None
        try:
            result = self._image.probe("pythons", {"modules": list(library_modules()), "current": python.executable})
        except ProbeError:
            return None
        if not result.ok:
            return None
        self.evidence("other_interpreters", result.facts.get("interpreters"))
        return other_interpreter(module, result.facts, python.executable)

    def gpu_row(self, image_verdict: Verdict | None, gpu_verdict: Callable[[], Verdict]) -> None:
        """The shape of every GPU row: first what the image alone decides (a build that can
        never use a GPU fails even on a host without one), then the GPU gate
        (:meth:`gpu_expected`), then the verdict on the GPU run."""
        if image_verdict is not None:
            self.apply(image_verdict)
        self.gpu_expected()
        self.apply(gpu_verdict())

    def skip(self, reason: str) -> NoReturn:
        """Skip this check with *reason* (shown in the cell)."""
        reason = self._text(reason) or ""
        self._cell["detail"] = " ".join(reason.split())[:DETAIL_CAP]
        pytest.skip(reason)

    def gpu_expected(self) -> bool:
        """Gate a GPU row: return True only when a GPU is attached to the image.

        No GPU on the host skips (fails under ``--require-gpu``); a host GPU that the image
        cannot see fails, naming the fix.
        """
        gpu = self.start().get("gpu") or {}
        if not self.host.get("has_gpu"):
            reason = self.host.get("gpu_summary") or "host has no NVIDIA GPU"
            if self.options.require_gpu:
                self.fail(f"--require-gpu: {reason}", fault="host",
                          fix="run on a GPU node (Slurm: --gres=gpu:1 or --gpus=1)")
            self.skip(reason)
        if not gpu.get("attached"):
            self.fail(f"host has {self.host.get('gpu_summary')}, but the image was started without GPU access: "
                      f"{gpu.get('error') or 'GPU flags disabled (--gpus none)'}",
                      fix=gpu.get("fix") or "drop '--gpus none'",
                      # None when the launch itself was wrong (--gpus naming a GPU the host lacks)
                      fault=gpu["fault"] if "fault" in gpu else "host")
        return True

    # -- internals -------------------------------------------------------------------------

    # The error() calls sit outside the except blocks so reports show one clean message,
    # not "during handling of the above exception, another exception occurred".

    def _started(self) -> Session:
        return self._or_problem(self._image.ensure_started, RuntimeFault)

    def _python(self) -> PythonInfo:
        self._started()
        self._image.start_workers()  # the planned probes start while the interpreter is looked for
        return self._or_problem(self._image.ensure_python, ProbeError)

    def _or_problem(self, call: Callable[[], _T], kind: type[Problem]) -> _T:
        """*call*'s result, or this check's end with the :class:`Problem` of *kind* it raised."""
        problem: Problem | None = None
        try:
            return call()
        except kind as exc:
            problem = exc
        self.problem(problem)

    def problem(self, problem: Problem) -> NoReturn:
        """End this check with an engine :class:`~.engine.errors.Problem` (the image did not start, a probe
        could not run): the one place they become pytest's during a test, as the cell's error with the
        problem's fix, fault and evidence."""
        self.error(str(problem), fix=problem.fix, evidence=problem.evidence, fault=problem.fault)


def _fit(message: str) -> str:
    """*message* wrapped to the terminal's width (pytest prints it as it is): long lines of
    evidence are broken, never cut; the cell keeps them whole.  Whole lines in a pipe."""
    width = line_width()
    if width is None:
        return message
    return "\n".join(part for line in message.splitlines() for part in fit(line, max(width, 40)))

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


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Container:
    """The image under test (one test per ``--image``): check what it ships, run commands and
    probes in it.

    ``container.file(path, mode=, owner=, contains=)``, ``.directory``, ``.package(name, version=)``,
    ``.command(name, version=)``, ``.env(name, value=)``, ``.distribution(name, version=)`` fail the
    check with one line when the image is not so; ``run``, ``python``, ``probe``, ``facts``,
    ``note``, ``fail``, ``skip``, ``apply``, ``gpu_expected`` for the rest.  The docs' page "Own
    checks" has an example and the whole API.
    """
    state = request.config.stash.get(STATE, None)
    if state is None or not hasattr(request, "param"):
        pytest.skip(NO_IMAGE_SKIP)
    target: Target = request.param
    cell = new_cell(row_name(request.node), target.id)
    request.node.user_properties.append((CELL_KEY, cell))
    c = Container(state.pool.get(target), state.host, require.options_for(state, target.id), cell,
                  redactor(request.config))
    c.start()  # a launch failure is an error in setup, not a failed check
    return c


REDACTOR = pytest.StashKey[Redactor]()


def redactor(config: pytest.Config) -> Redactor:
    """What this run keeps out of its records: the ``--container-env`` values and the variables
    ``--runtime-arg`` gives the runtime a value for (``--env=NAME=VALUE``); made once per process."""
    made = config.stash.get(REDACTOR, None)
    if made is None:
        state = config.stash.get(STATE, None)
        env = {**runtime_arg_env(state.launch.runtime_args), **state.launch.env} if state is not None else {}
        made = config.stash[REDACTOR] = Redactor(env)
    return made


def redact_report(config: pytest.Config, report: pytest.TestReport) -> None:
    """Keep the passed values out of *report* where pytest itself shows it (the failure's text in the
    terminal and in JUnit, the captured output): a check of your own may assert on, or print, what the
    image printed.  A report that holds none of them is left as it is (colours and all)."""
    redact = redactor(config)
    if not redact:
        return
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        shown = str(report.longrepr)
        if redact.text(shown) != shown:
            report.longrepr = redact.text(shown)
    elif isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # a skip: (path, line, reason)
        path, line, reason = report.longrepr
        report.longrepr = (path, line, redact.text(str(reason)))
    report.sections = [(title, redact.text(content)) for title, content in report.sections]


def shadowing_fixture(config: pytest.Config) -> str | None:
    """Why a fixture named ``container`` from a conftest.py or another plugin cannot be used, or None.

    Such a fixture hides the plugin's own from every test under it, the built-in checks
    included: they would fail with AttributeError.  One that asks for ``container`` itself
    (the documented way to wrap a fixture) keeps the plugin's and is fine.
    """
    ours = container
    for plugin in config.pluginmanager.get_plugins():
        if not isinstance(plugin, types.ModuleType):
            continue
        for attr, obj in list(vars(plugin).items()):
            if obj is ours:
                continue
            marker = getattr(obj, "_fixture_function_marker", None) or getattr(obj, "_pytestfixturefunction", None)
            if marker is None or (getattr(marker, "name", None) or attr) != "container":
                continue
            try:
                wraps_ours = "container" in inspect.signature(obj).parameters
            except (TypeError, ValueError):
                wraps_ours = False
            if not wraps_ours:
                where = getattr(plugin, "__file__", None) or plugin.__name__
                return (f"{where} defines a fixture named 'container', which hides pytest-containercheck's own "
                        f"from every test under it (the built-in checks too); rename it (e.g. my_container), or "
                        f"make it take 'container' to wrap the plugin's")
    return None
