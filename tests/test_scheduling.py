"""Probe scheduling (engine/scheduling.py) against the fake runtime of tests/fakes.py: the plan on
worker threads, heaviest first; a probe awaited, not run twice; bundles; a bundle's outer limit.
Probes really run (on this host); the container is the fake's."""

from __future__ import annotations

import json
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


# -- a GPU in Exclusive_Process compute mode (issue 29, item 3) ----------------------------------------
#: Two probes that create a "CUDA context" on a simulated exclusive GPU: holding it is owning the file
#: gpu.lock (O_EXCL), as the driver grants one context at a time; the second refuses with CUDA's own
#: text for cudaErrorDevicesUnavailable ("CUDA-capable device(s) is/are busy or unavailable").
_EXCLUSIVE = """CUDA_CONTEXT = True

def run(params, ctx):
    import os
    import time
    while params.get("after") and not os.path.exists(params["after"]):  # the other holds its context first
        time.sleep(0.002)
    lock = os.path.join(params["dir"], "gpu.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RuntimeError("CUDA error: CUDA-capable device(s) is/are busy or unavailable")
    try:
        if params.get("ready"):
            open(params["ready"], "w").close()
            while not os.path.exists(params["go"]):
                time.sleep(0.002)
        return {"held": True}
    finally:
        os.close(fd)
        os.unlink(lock)
"""


def _exclusive_probes(path: Path) -> str:
    for name in ("ctx_a", "ctx_b"):
        (path / f"{name}.py").write_text(_EXCLUSIVE)
    return str(path)


def _waiting_for_the_cuda_turn(name_prefix: str = "containercheck-probe-") -> bool:
    import sys

    for thread in threading.enumerate():
        frame = sys._current_frames().get(thread.ident or -1) if thread.name.startswith(name_prefix) else None
        if frame is not None and (os.path.basename(frame.f_code.co_filename), frame.f_code.co_name) == (
                "scheduling.py", "_probe_in"):
            return True
    return False


@pytest.mark.parametrize("exclusive", [True, False])
def test_cuda_probes_on_an_exclusive_gpu_run_one_at_a_time(engine: FakeEngine, probes: str, tmp_path: Path,
                                                           exclusive: bool) -> None:
    """The compute mode comes from the host facts before any probe starts: the recorded H200's, with its
    mode set to Exclusive_Process (constructed: that machine was in Default mode).  Serialised, both
    probes pass; in parallel (the old rule) the second is refused as "busy" by the tool's own load."""
    from pytest_containercheck.engine import scheduling

    host = json.loads((Path(__file__).parent / "data" / "ml" / "host_facts_h200.json").read_text())["facts"]
    host["gpu_modes"] = {"0": {"compute_mode": "Exclusive_Process" if exclusive else "Default", "mig_mode": "N/A"}}
    why = scheduling.exclusive_gpus(host)
    assert bool(why) is exclusive and (not why or why.startswith("GPU 0 is Exclusive_Process"))
    gate = Gate(tmp_path, "a")
    plan = [planned("ctx_a", 10, dir=str(tmp_path), **gate.params),
            planned("ctx_b", 5, dir=str(tmp_path), after=str(gate.ready))]
    options = CheckOptions(probe_dirs=(probes, _exclusive_probes(tmp_path)), probe_timeout=60, probe_jobs=2,
                           serial_gpu_probes=why)
    image = ImageSession(engine.target, LaunchOptions(run_id="t"), options, plan)
    try:
        image.ensure_started()
        image.start_workers()
        results = image.scheduler.results
        gate.wait_running()
        if exclusive:
            eventually(_waiting_for_the_cuda_turn, what="ctx_b waits for ctx_a's turn")
            assert plan[1].key not in results and engine.started[0].ran('"ctx_b"') == 0
        else:
            eventually(lambda: plan[1].key in results, what="ctx_b ran beside ctx_a")
        gate.open()
        eventually(lambda: {p.key for p in plan} <= results.keys(), what="both ran")
        a, b = (results[p.key] for p in plan)
    finally:
        gate.open()
        image.stop()
    assert a.ok, a.summary()
    if exclusive:
        assert b.ok and b.facts == {"held": True}, b.summary()
    else:
        assert not b.ok and "busy or unavailable" in (b.error or ""), b.summary()
