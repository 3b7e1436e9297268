"""The host itself: probes run with the local interpreter, no container.

This is the embedded default (``--image host``): it needs nothing installed and shows what
the current environment can do, with the same probes and checks as an image.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageProblem
from .base import ExecResult, LaunchOptions, Runtime, Session, Target, last_line, run_bounded, text


class HostRuntime(Runtime):
    """Runs probes as local subprocesses."""

    names = ("host",)
    family = "host"

    def check_options(self, options: LaunchOptions) -> None:
        if options.host_python:
            check_host_python(options.host_python)

    def preflight(self, target: Target) -> dict[str, Any]:
        # The "runtime" of the host column is its interpreter: host:///PATH names one (and
        # --runtime host makes every --image value a path to one), so it is checked here,
        # once, instead of failing every cell with advice about an image.
        if target.ref not in ("", "host"):
            version = check_host_python(target.ref, flag=f"--image {target.spec}",
                                        runtime_flag="://" not in target.spec)
            return {"runtime": "host", "runtime_version": f"Python {version}"}
        return {"runtime": "host", "runtime_version": f"Python {platform.python_version()}"}

    def python_for(self, target: Target, options: LaunchOptions) -> str:
        """``--host-python``, else ``host://PATH``, else the interpreter running pytest."""
        if options.host_python:
            return options.host_python
        if target.ref not in ("", "host"):
            return target.ref
        return sys.executable

    def start(self, target: Target, options: LaunchOptions) -> Session:
        return HostSession(target, options, self.python_for(target, options))

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        return list(argv)


#: Prints the interpreter's version on any Python from 2.6 on, so an old one is named, not misread.
_VERSION = "import sys; sys.stdout.write('@@containercheck-host-python %d.%d.%d\\n' % tuple(sys.version_info[:3]))"
_VERSION_LINE = re.compile(r"^@@containercheck-host-python (\d+)\.(\d+)\.(\d+)$", re.MULTILINE)
MIN_PYTHON = (3, 7)


def check_host_python(path: str, flag: str = "--host-python", *, runtime_flag: bool = False) -> str:
    """The version of the host interpreter *path*; a usage error when it is none we can use.

    Not an executable file, not a Python (``/bin/false``), or older than 3.7: each is the
    host's interpreter, not an image, so the message names *flag*, never ``--container-python``.
    *runtime_flag*: the path came from ``--runtime host`` applied to an ``--image`` value.
    """
    where = f"{flag}: {path!r}" if flag.startswith("--image") else f"{flag} {path!r}"
    if os.path.sep in path:
        ok = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        ok = shutil.which(path) is not None
    if not ok:
        hint = "; for a Docker/Podman image, drop --runtime host" if runtime_flag else ""
        raise UsageProblem(f"{where} is not an executable file on this host; give a Python interpreter's "
                                f"path{hint}")
    res = run_bounded([path, "-c", _VERSION], timeout=60)
    m = _VERSION_LINE.search(text(res.stdout))
    if res.returncode != 0 or m is None:
        why = "did not answer in 60 s" if res.timed_out else (
            f"exit {res.returncode}: {last_line(res.stderr) or last_line(res.stdout) or 'no output'}")
        raise UsageProblem(f"{where} is not a working Python interpreter ({why}); "
                                "give the path of a Python 3.7+ interpreter")
    version = tuple(int(g) for g in m.groups())
    dotted = ".".join(map(str, version))
    if version[:2] < MIN_PYTHON:
        raise UsageProblem(f"{where} is Python {dotted}; probes need {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+, "
                                "give a newer interpreter")
    return dotted


class HostSession(Session):
    """Processes run directly on this machine; ``python3``/``python`` mean *python*."""

    def __init__(self, target: Target, options: LaunchOptions, python: str) -> None:
        super().__init__(target)
        self.options = options
        self.python = python
        self.facts.update(python=python, gpu={"requested": "host", "attached": True, "error": None})

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, timeout: float | None = None) -> ExecResult:
        full_env = dict(os.environ)
        full_env.update(self.options.env)
        full_env.update(env or {})
        return run_bounded(list(argv), stdin=stdin, env=full_env, timeout=timeout)

    def python_candidates(self, preferred: Sequence[str]) -> list[str]:
        return [self.python]

    def kill_inside(self, pid: int, python: str) -> None:
        try:
            os.killpg(pid, 9)
        except OSError:
            pass

    def stop(self) -> None:
        """Nothing to stop: every probe process is waited for or killed."""
