"""Plugin state kept in ``config.stash`` (never on ``config`` itself)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from .engine.expectations import Expectation
from .engine.lifecycle import SessionPool
from .engine.policy import CheckOptions
from .engine.runtimes import LaunchOptions, Target

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
    expectations: dict[str, Expectation] = dataclasses.field(default_factory=dict)
    """Per target id: what the CI gate expects of the image (:mod:`.require`); workers get the controller's."""
    names_pending: bool = False
    """A row the expectations name is no built-in row: it must be one of the user's own checks,
    known at the end of collection (:func:`.require.check_collected`); the images do not start
    before that."""
    collected_rows: list[str] = dataclasses.field(default_factory=list)
    """Every row collected in this process, before ``-k``/``-m`` deselected any."""
    unused_tables: list[str] = dataclasses.field(default_factory=list)
    """One line per table of the repository's expectations that matched no image of the run
    (controller only): named in the summary, not an error (a job may gate some images only)."""
    repeated_images: list[str] = dataclasses.field(default_factory=list)
    """One line per image the ``--image`` values name more than once (controller only): it is
    checked once, and the reporter says so once, at the start."""


STATE = pytest.StashKey[RunState]()
