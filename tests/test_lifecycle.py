"""Session lifecycle (engine/lifecycle.py) against the fake runtime of tests/fakes.py: starts,
restarts, OOM kills, a daemon that goes away, close and stop.  Probes really run (on this host);
only the container's fate is scripted.  The same paths against Docker: tests/test_faults.py."""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, Gate, eventually, finished, probe_dir

from pytest_containercheck.engine.lifecycle import CLOSED, MAX_RESTARTS, ImageSession
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.runtimes.base import LaunchOptions, RuntimeFault, run_bounded

from helpers import WAIT_LIMIT

MakeImage = Callable[..., ImageSession]


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine() as e:
        yield e


@pytest.fixture
def make(engine: FakeEngine, tmp_path: Path) -> Iterator[MakeImage]:
    """``make(**checks)``: an image of *engine*, with the test probes; stopped afterwards."""
    made: list[ImageSession] = []
    probes = probe_dir(tmp_path / "probes")

    def make(**checks: Any) -> ImageSession:
        options = CheckOptions(**{"probe_dirs": (probes,), "probe_jobs": 1, "probe_timeout": 60, **checks})
        made.append(ImageSession(engine.target, LaunchOptions(run_id="t"), options))
        return made[-1]

    yield make
    for s in engine.started:
        if s.hold_removal is not None:
            s.hold_removal.set()
    for image in made:
        image.stop()


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def capture(fn: Callable[[], object]) -> object:
    """What *fn* returned, or the exception it raised."""
    try:
        return fn()
    except Exception as exc:
        return exc


# -- the container stops: replaced, and what ran in it says so -----------------------------------


def test_a_container_that_stopped_between_probes_is_replaced_and_the_probe_runs_in_the_new_one(
        engine: FakeEngine, make: MakeImage) -> None:
    image = make()
    first = image.probe("echo", {"tag": "one"})
    assert first.ok and first.facts["container"] == engine.started[0].name
    engine.started[0].stop_from_outside("it exited with status 137")
    second = image.probe("echo", {"tag": "two"})
    assert second.ok, second.summary()
    assert len(engine.started) == 2 and second.facts["container"] == engine.started[1].name
    assert engine.started[0].ran('"two"') == 1  # tried in the stopped one first: it failed to start
    assert second.restarted == "it exited with status 137" and image.restarts == ["it exited with status 137"]
    assert engine.started[0].removed  # the stopped one is removed (frees its name)
    assert engine.started[1].facts["python"] == engine.started[0].facts["python"]  # no second search


def test_a_container_that_stopped_while_the_probe_ran_fails_that_probe_and_the_next_gets_a_new_one(
        engine: FakeEngine, make: MakeImage, tmp_path: Path) -> None:
    image = make()
    gate = Gate(tmp_path, "g")

    def kill() -> None:
        gate.wait_running()
        engine.started[0].stop_from_outside("it exited with status 137")
        gate.open()  # a probe run again (wrongly) would now finish

    killer = in_thread(kill)
    result = image.probe("gate", gate.params)
    finished(killer)
    assert (result.status, result.started, result.returncode) == ("crashed", True, -9), result.summary()
    assert result.error == "the container stopped while the probe ran: it exited with status 137"
    assert result.summary().endswith(": the container stopped while the probe ran: it exited with status 137")
    after = image.probe("echo", {"tag": "after"})
    assert after.ok and after.facts["container"] == engine.started[1].name
    assert after.restarted == "it exited with status 137"


def test_an_oom_kill_in_a_running_container_names_the_memory_option_and_restarts_nothing(
        engine: FakeEngine, make: MakeImage, tmp_path: Path) -> None:
    image = make()
    gate = Gate(tmp_path, "g")

    def oom() -> None:
        gate.wait_running()
        engine.started[0].oom_kill()
        gate.open()

    killer = in_thread(oom)
    result = image.probe("gate", gate.params)
    finished(killer)
    assert (result.status, result.returncode) == ("crashed", -9)
    assert result.error == ("the OOM killer ended a process in it (memory limit 64 MiB); "
                            "give it more with --runtime-arg=--memory=SIZE")
    assert "--runtime-arg=--memory=SIZE" in result.summary()
    after = image.probe("echo", {"tag": "after"})
    assert after.ok and after.facts["container"] == engine.started[0].name and not after.restarted
    assert (engine.start_attempts, image.restarts) == (1, [])


def test_a_daemon_that_went_away_is_not_restarted_and_later_probes_say_so_with_the_fix(
        engine: FakeEngine, make: MakeImage, tmp_path: Path) -> None:
    image = make()
    gate = Gate(tmp_path, "g")
    reason = "the fake daemon stopped answering (connection refused)"

    def down() -> None:
        gate.wait_running()
        engine.go_down(reason)
        gate.open()

    killer = in_thread(down)
    result = image.probe("gate", gate.params)
    finished(killer)
    assert result.status == "crashed" and result.error == reason
    with pytest.raises(RuntimeFault) as later:
        image.probe("echo", {"tag": "later"})
    assert str(later.value) == f"{reason} during the run"
    assert later.value.fix is not None and later.value.fix.startswith("start the daemon again and rerun")
    assert engine.start_attempts == 1  # no start was tried: it could not help


def test_a_container_that_keeps_stopping_is_started_at_most_max_restarts_times_more(
        engine: FakeEngine, make: MakeImage) -> None:
    image = make()
    for i in range(MAX_RESTARTS + 1):
        assert image.probe("echo", {"tag": f"p{i}"}).ok
        engine.started[-1].stop_from_outside(f"stop {i}")
    last = image.probe("echo", {"tag": "last"})
    gave_up = f"the container stopped {MAX_RESTARTS + 1} times (last: stop {MAX_RESTARTS}); not starting it again"
    assert last.status == "no-result" and last.error == (
        f"the container had stopped before the probe ran: stop {MAX_RESTARTS}; {gave_up}")
    assert len(engine.started) == MAX_RESTARTS + 1 == engine.start_attempts
    with pytest.raises(RuntimeFault, match=re.escape(gave_up)):
        image.probe("echo", {"tag": "after"})


# -- starting once ------------------------------------------------------------------------------


def test_a_failed_start_is_raised_again_identically_to_every_later_caller(
        engine: FakeEngine, make: MakeImage) -> None:
    fault = engine.fail_next_start(RuntimeFault("pull access denied for fake-image", fix="docker login",
                                                evidence="denied: requested access", fault="image"))
    image = make()
    seen: list[object] = []
    threads = [in_thread(lambda: seen.append(capture(image.ensure_started))) for _ in range(4)]
    for t in threads:
        finished(t)
    seen.append(capture(image.ensure_python))
    seen.append(capture(lambda: image.probe("echo", {"tag": "x"})))
    assert len(seen) == 6 and all(s is fault for s in seen), seen
    assert engine.start_attempts == 1 and engine.started == []


# -- the end: close and stop ----------------------------------------------------------------------


def test_a_closed_image_starts_nothing(engine: FakeEngine, make: MakeImage) -> None:
    image = make()
    image.close()
    with pytest.raises(RuntimeFault, match=re.escape(CLOSED)):
        image.ensure_started()
    assert engine.start_attempts == 0


def test_close_during_a_start_removes_what_started(engine: FakeEngine, make: MakeImage) -> None:
    engine.hold_starts.clear()
    image = make()
    outcome: list[object] = []
    starter = in_thread(lambda: outcome.append(capture(image.ensure_started)))
    eventually(engine.start_began.is_set, what="the start began")
    image.close()
    engine.hold_starts.set()
    finished(starter)
    assert isinstance(outcome[0], RuntimeFault) and str(outcome[0]) == CLOSED
    assert len(engine.started) == 1 and engine.started[0].removed and image.session is None
    with pytest.raises(RuntimeFault, match=re.escape(CLOSED)):
        image.ensure_started()
    assert engine.start_attempts == 1


def test_stop_during_a_start_returns_once_what_started_is_removed(engine: FakeEngine, make: MakeImage) -> None:
    engine.hold_starts.clear()
    image = make()
    starter = in_thread(lambda: capture(image.ensure_started))
    eventually(engine.start_began.is_set, what="the start began")
    removed_when_stop_returned: list[bool] = []

    def stop() -> None:
        image.stop()
        removed_when_stop_returned.append(bool(engine.started) and engine.started[0].removed)

    stopper = in_thread(stop)
    eventually(lambda: image.closed, what="stop() closed the image")
    stopper.join(timeout=0.3)  # a stop() that does not wait for the start returns meanwhile
    engine.hold_starts.set()
    finished(stopper)
    finished(starter)
    assert removed_when_stop_returned == [True]
    assert isinstance(image.start_error, RuntimeFault) and str(image.start_error) == CLOSED


def test_stop_from_two_threads_returns_in_both_only_once_the_container_is_gone(
        engine: FakeEngine, make: MakeImage) -> None:
    image = make()
    image.ensure_started()
    container = engine.started[0]
    container.hold_removal = threading.Event()
    gone: list[bool] = []

    def stop() -> None:
        image.stop()
        gone.append(container.removed)

    first = in_thread(stop)
    assert container.removal_began.wait(WAIT_LIMIT), "the removal did not begin"
    second = in_thread(stop)
    second.join(timeout=0.3)  # a second stop() that does not wait returns meanwhile
    container.hold_removal.set()
    finished(first)
    finished(second)
    assert gone == [True, True] and container.stop_calls == 1


@pytest.mark.parametrize("end", ["close", "stop"])
def test_nothing_is_restarted_once_the_run_ends(engine: FakeEngine, make: MakeImage, tmp_path: Path,
                                                end: str) -> None:
    """The run ends while a probe runs (close: teardown begins; stop: the container is removed);
    the container stops under it: the probe says so, and no new container is started."""
    image = make()
    gate = Gate(tmp_path, "g")

    def finish() -> None:
        gate.wait_running()
        if end == "close":
            image.close()
            engine.started[0].stop_from_outside("it exited with status 137")
        else:
            image.stop()
        gate.open()

    ender = in_thread(finish)
    result = image.probe("gate", gate.params)
    finished(ender)
    assert result.status == "crashed" and (result.error or "").startswith("the container stopped while the probe ran")
    with pytest.raises(RuntimeFault, match=re.escape(CLOSED)):
        image.ensure_started()
    assert engine.start_attempts == 1


# -- interrupts -----------------------------------------------------------------------------------


def _live_with(marker: str) -> list[int]:
    """Pids of processes (not zombies) whose command line holds *marker*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes() and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def test_ctrl_c_during_a_runtime_command_kills_it_and_its_children() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("a signal interrupts only the main thread")
    marker = f"containercheck-test-ctrl-c-{secrets.token_hex(6)}"
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]])\n"
            "time.sleep(600)\n")

    def interrupt() -> None:  # Ctrl-C, once the command and its child run
        eventually(lambda: len(_live_with(marker)) == 2, what="the command and its child run")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        presser = in_thread(interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_bounded([sys.executable, "-c", code, marker], timeout=120)
        finished(presser)
        eventually(lambda: _live_with(marker) == [], what="the command and its child are gone")
    finally:
        signal.signal(signal.SIGINT, previous)
        for pid in _live_with(marker):
            os.kill(pid, signal.SIGKILL)
