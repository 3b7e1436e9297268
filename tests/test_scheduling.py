"""Probe scheduling (engine/scheduling.py) against the fake runtime of tests/fakes.py: the plan on
worker threads, heaviest first; a probe awaited, not run twice; bundles; a bundle's outer limit.
Probes really run (on this host); the container is the fake's."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, FakeSession, Gate, blocked_waiting, eventually, finished, probe_dir

from pytest_containercheck.engine import probing
from pytest_containercheck.engine.lifecycle import ImageSession
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.probing import PlannedProbe, ProbeResult, canonical_params, probe_key
from pytest_containercheck.engine.runtimes import get_runtime
from pytest_containercheck.engine.runtimes.base import LaunchOptions
from pytest_containercheck.engine.scheduling import BACKGROUND_NICE

MakeImage = Callable[..., ImageSession]


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine() as e:
        yield e


@pytest.fixture
def probes(tmp_path: Path) -> str:
    return probe_dir(tmp_path / "probes")


@pytest.fixture
def make(engine: FakeEngine, probes: str) -> Iterator[MakeImage]:
    """``make(plan, **checks)``: an image of *engine* with the test probes; stopped afterwards."""
    made: list[ImageSession] = []

    def make(plan: list[PlannedProbe], **checks: Any) -> ImageSession:
        options = CheckOptions(**{"probe_dirs": (probes,), "probe_timeout": 60, **checks})
        made.append(ImageSession(engine.target, LaunchOptions(run_id="t"), options, plan))
        return made[-1]

    yield make
    for image in made:
        image.stop()


def planned(name: str, weight: float, **params: Any) -> PlannedProbe:
    return PlannedProbe(name, canonical_params(params), weight)


def order_of(session: FakeSession, *tags: str) -> list[str]:
    """*tags* in the order the probes carrying them were run in *session*."""
    first = {tag: next(i for i, (_argv, stdin) in enumerate(session.execs) if f'"{tag}"'.encode() in stdin)
             for tag in tags}
    return sorted(tags, key=first.__getitem__)


def test_planned_probes_run_on_workers_heaviest_first_and_the_others_beside_it_at_lower_priority(
        engine: FakeEngine, make: MakeImage, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "heavy")
    plan = [planned("echo", 1, tag="light"), planned("gate", 10, **gate.params), planned("echo", 5, tag="mid")]
    image = make(plan, probe_jobs=2)
    image.ensure_started()
    image.start_workers()
    results = image.scheduler.results
    try:
        gate.wait_running()
        # The heaviest holds one worker; the other takes the rest, heaviest first.
        eventually(lambda: {p.key for p in plan} - results.keys() == {plan[1].key}, what="light and mid ran")
    finally:
        gate.open()
    eventually(lambda: plan[1].key in results, what="the heaviest ran")
    heavy, mid, light = (results[p.key] for p in (plan[1], plan[2], plan[0]))
    assert all(r.ok for r in (heavy, mid, light)), [r.summary() for r in (heavy, mid, light)]
    assert (heavy.nice, mid.nice, light.nice) == (0, BACKGROUND_NICE, BACKGROUND_NICE)
    own = os.nice(0)
    assert (heavy.facts["nice"], mid.facts["nice"]) == (own, min(19, own + BACKGROUND_NICE))  # really lowered
    assert order_of(engine.started[0], "mid", "light") == ["mid", "light"]
    assert len({r.facts["pid"] for r in (heavy, mid, light)}) == 3


def test_a_probe_asked_for_while_a_worker_runs_it_is_awaited_not_run_again(
        engine: FakeEngine, make: MakeImage, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "slow")
    image = make([planned("gate", 10, **gate.params)], probe_jobs=2)
    image.ensure_started()
    image.start_workers()
    got: list[ProbeResult] = []
    try:
        gate.wait_running()
        asker = threading.Thread(target=lambda: got.append(image.probe("gate", gate.params)), daemon=True)
        asker.start()
        eventually(lambda: blocked_waiting(asker, "scheduling.py", "probe"),
                   what="the second request waits for the first")
    finally:
        gate.open()
    finished(asker)
    assert got[0] is image.scheduler.results[probe_key("gate", gate.params)] and got[0].ok
    assert engine.started[0].ran('"slow"') == 1


def test_planned_probes_sharing_imports_run_as_one_bundle_and_each_result_is_kept(
        engine: FakeEngine, make: MakeImage) -> None:
    plan = [planned("share_a", 1), planned("echo", 1, tag="loner"), planned("share_b", 2)]
    image = make(plan, probe_jobs=1)
    a = image.probe("share_a", {})
    session = engine.started[0]
    runs = len(session.execs)  # the interpreter search, then one bundle
    b = image.probe("share_b", {})
    assert len(session.execs) == runs == 2  # share_b came with share_a
    loner = image.probe("echo", {"tag": "loner"})
    assert a.ok and b.ok and loner.ok, (a.summary(), b.summary(), loner.summary())
    assert a.bundle == b.bundle == {"with": ["share_a", "share_b"], "shared_imports": ["json"], "shared": True}
    assert loner.bundle == {} and len(session.execs) == 3
    assert a.facts["pid"] != b.facts["pid"]


def test_a_bundles_outer_limit_keeps_the_results_of_the_probes_that_had_finished(
        engine: FakeEngine, probes: str, tmp_path: Path) -> None:
    """The bundle's own time limit ends it while its second probe hangs (its watchdog off): the
    first probe's result stands, the second timed out, the third never began."""
    session = get_runtime(engine.name).start(engine.target, LaunchOptions(run_id="t"))
    assert isinstance(session, FakeSession)
    python = probing.find_python(session, session.python_candidates(()))
    hangs = tmp_path / "hangs"
    session.time_out_when = hangs.exists  # the limit is reached once the second probe hangs
    done, hung, never = probing.run_bundle(
        session, python, [("share_a", {}), ("share_deaf", {"ready": str(hangs)}), ("share_b", {})],
        ("json",), timeout=60, extra_dirs=(probes,))
    session.stop()
    assert done.ok and done.facts["params"] == {} and done.returncode == 0, done.summary()
    assert (hung.status, hung.started) == ("timeout", True), hung.summary()
    assert (never.started, never.status) == (False, "no-result")
