"""Plugin state kept in ``config.stash`` (never on ``config`` itself)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from .engine.policy import CheckOptions
from .engine.runtimes import LaunchOptions, Target
from .engine.sessions import SessionPool

__all__ = ["STATE", "CheckOptions", "RunState"]


@dataclasses.dataclass
class RunState:
    """Everything one pytest process knows about the run."""

    targets: list[Target]
    launch: LaunchOptions
    checks: CheckOptions
    host: dict[str, Any]
    """Host facts (:mod:`.hostinfo`), gathered once on the controller and handed to workers."""
    pool: SessionPool
    """This process's running images and their probe plans."""
    runtime_facts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Per target id: what preflight learned (runtime version, image id), controller only."""


STATE = pytest.StashKey[RunState]()
