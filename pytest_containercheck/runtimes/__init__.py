"""Runtime registry: ``--runtime`` / target prefix -> one Runtime object per family."""

from __future__ import annotations

from .apptainer import ApptainerRuntime
from .base import ExecResult, LaunchOptions, Runtime, RuntimeFault, Session
from .host import HostRuntime
from .oci import OCIRuntime

__all__ = ["ExecResult", "LaunchOptions", "Runtime", "RuntimeFault", "Session", "get_runtime"]


def get_runtime(name: str) -> Runtime:
    """A fresh Runtime for *name* (docker, podman, apptainer, singularity, host)."""
    if name in ("docker", "podman"):
        return OCIRuntime(name)
    if name in ("apptainer", "singularity"):
        return ApptainerRuntime(name)
    if name == "host":
        return HostRuntime(name)
    raise KeyError(name)
