"""Plugin state kept in ``config.stash`` (never on ``config`` itself)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from .runtimes.base import LaunchOptions
from .targets import Target


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """Policy options the checks read (``container.options``)."""

    require_gpu: bool = False
    require_hw_render: bool = False
    probe_timeout: float = 300.0
    artifacts_dir: str = "containercheck-artifacts"
    baseline_dir: str | None = None
    update_baselines: str | None = None
    """``missing``, ``failed``, ``all`` or None."""
    hf_model: str | None = None
    container_python: tuple[str, ...] = ("python3", "python")
    required_rows: tuple[str, ...] = ()
    probe_jobs: int = 2
    """Probes run at once per image (``--probe-jobs``); 1 runs them one by one, on demand."""
    probe_dirs: tuple[str, ...] = ()
    """``--probe-dir``: directories of users' own probes, searched before the built-in ones."""
    keep_render_images: bool = False
    """Save render results as artifacts also when they pass (``--matrix-html`` shows them)."""


@dataclasses.dataclass
class RunState:
    """Everything one pytest process knows about the run."""

    targets: list[Target]
    launch: LaunchOptions
    checks: CheckOptions
    host: dict[str, Any]
    runtime_facts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Per target id: what preflight learned (runtime version, image id), controller only."""
    probe_plan: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """Per target id: the :class:`~pytest_containercheck.fixtures.PlannedProbe` list of its checks."""
    pool: Any = None
    """The :class:`~pytest_containercheck.fixtures.SessionPool` of this process."""


STATE = pytest.StashKey[RunState]()
