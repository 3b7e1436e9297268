"""Runtime registry: ``--runtime`` / target prefix -> one Runtime class per family.

Each runtime module defines a :class:`~.base.Runtime` subclass that declares its ``names``
and ``family``; importing it registers it.  Add a runtime by adding a module here.
"""

from __future__ import annotations

from . import apptainer, host, oci
from .base import (
    ExecResult,
    LaunchOptions,
    Runtime,
    RuntimeFault,
    Session,
    Target,
    family_of,
    get_runtime,
    names_in_family,
    runtime_names,
)

__all__ = ["ExecResult", "LaunchOptions", "Runtime", "RuntimeFault", "Session", "Target", "apptainer", "family_of",
           "get_runtime", "host", "names_in_family", "oci", "runtime_names"]
