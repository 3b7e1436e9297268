"""The host itself: probes run with the local interpreter, no container.

This is the embedded default (``--image host``): it needs nothing installed and shows what
the current environment can do, with the same probes and checks as an image.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from .base import ExecResult, LaunchOptions, Runtime, Session, Target, run_bounded


class HostRuntime(Runtime):
    """Runs probes as local subprocesses."""

    names = ("host",)
    family = "host"

    def check_options(self, options: LaunchOptions) -> None:
        if options.host_python:
            check_host_python(options.host_python)

    def preflight(self, target: Target) -> dict[str, Any]:
        # The "runtime" of the host column is its interpreter.
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


def check_host_python(path: str) -> None:
    """Raise a usage error when ``--host-python`` names no runnable interpreter."""
    if os.path.sep in path:
        ok = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        ok = shutil.which(path) is not None
    if not ok:
        raise pytest.UsageError(f"--host-python {path!r}: not an executable file; give the interpreter's path")


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
