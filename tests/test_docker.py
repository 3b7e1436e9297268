"""Integration tests against a real Docker engine and locally built images.

Under CI=true these fail (never skip) when Docker is missing: see the ``docker`` fixture.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import ONLY_SYSTEM, RUN_LIMIT, containers_with_label, leftovers, owned_by

pytestmark = [pytest.mark.docker]

HANG_PROBE = """\
def run(params, ctx):
    import subprocess, time
    # a child too: the whole process group must die inside the container
    subprocess.Popen(["sleep", "4321"])
    time.sleep(600)
"""

CHECK_NO_SLEEPER = """
def test_hang(container):
    container.facts("hang")

def test_nothing_left_inside(container):
    code = ("import os\\n"
            "cmds = []\\n"
            "for p in os.listdir('/proc'):\\n"
            "    if p.isdigit():\\n"
            "        try: cmds.append(open('/proc/%s/cmdline' % p).read().replace('\\\\0', ' '))\\n"
            "        except OSError: pass\\n"
            "print('\\\\n'.join(cmds))\\n")
    out = container.python(code).stdout
    assert "sleep 4321" not in out, out
    assert "time.sleep(600)" not in out
    container.note("no probe process left")
"""


def _run(pytester: pytest.Pytester, *args: str, timeout: float = 600) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:benchmark", *args, timeout=timeout)


def _cells(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["row"], c["column"]): c for c in json.loads(path.read_text())["cells"]}


def test_base_and_nopython_images(pytester: pytest.Pytester, base_image: str, nopython_image: str) -> None:
    result = _run(pytester, "--image", base_image, "--image", nopython_image, "--matrix-json", "m.json", *ONLY_SYSTEM,
                  "--gpus", "all")
    assert result.ret == 1  # the no-Python image errors
    cells = _cells(pytester.path / "m.json")
    base, nopy = f"docker://{base_image}", f"docker://{nopython_image}"
    assert cells[("system.python", base)]["status"] == "pass"
    assert "/usr/bin/python3" in cells[("system.python", base)]["detail"]
    assert cells[("system.os", base)]["detail"].startswith("Debian GNU/Linux 12 (bookworm), glibc 2.36")
    for row in ("system.python", "system.os", "system.writable_cache"):
        assert cells[(row, nopy)]["status"] == "error"
        assert cells[(row, nopy)]["detail"] == "no Python interpreter found in image; tried python3, python"
    for row in ("system.gpu_devices", "system.nvidia_smi", "system.libcuda"):
        assert cells[(row, base)]["status"] == "skip"
        assert cells[(row, base)]["detail"].startswith("host has no NVIDIA GPU")
    data = json.loads((pytester.path / "m.json").read_text())
    launch = next(c for c in data["columns"] if c["id"] == base)["facts"]["launch"]
    # --gpus all, given: this host has no NVIDIA Container Toolkit, so Docker refuses it and we
    # start without.
    assert launch["gpu"]["attached"] is False
    assert 'could not select device driver "" with capabilities: [[gpu]]' in launch["gpu"]["error"]
    assert "--gpus" in launch["gpu"]["tried"] and "--gpus" not in launch["run_command"]
    assert "--privileged" not in launch["run_command"]
    assert launch["run_command"][launch["run_command"].index("--network") + 1] == "none"
    assert leftovers(pytester.path / "m.json") == []


def test_no_gpu_is_requested_on_a_host_without_one(pytester: pytest.Pytester, base_image: str) -> None:
    """Without --gpus, a host with no GPU evidence starts the image without GPU flags (every GPU
    row skips there whatever the image got); the launch facts and the HTML report say why."""
    result = _run(pytester, "--image", base_image, "--matrix-json", "m.json", "--matrix-html", "m.html",
                  *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-3000:]
    data = json.loads((pytester.path / "m.json").read_text())
    launch = data["columns"][0]["facts"]["launch"]
    if data["hosts"][data["columns"][0]["host"]]["has_gpu"]:  # a GPU runner: it is asked for
        assert launch["gpu"]["requested"] == "all" and "why" not in launch["gpu"]
        return
    assert launch["gpu"]["requested"] == "none" and launch["gpu"]["attached"] is False
    assert launch["gpu"]["why"].startswith("not requested: host has no NVIDIA GPU (")
    assert "tried" not in launch["gpu"] and "--gpus" not in launch["run_command"]
    cells = _cells(pytester.path / "m.json")
    for row in ("system.gpu_devices", "system.nvidia_smi", "system.libcuda"):
        assert cells[(row, f"docker://{base_image}")]["status"] == "skip"
    assert "not requested: host has no NVIDIA GPU" in (pytester.path / "m.html").read_text()


def test_probe_timeout_is_killed_inside_the_container(pytester: pytest.Pytester, base_image: str) -> None:
    pytester.mkdir("probes")
    (pytester.path / "probes" / "hang.py").write_text(HANG_PROBE)
    pytester.makepyfile(test_hang=CHECK_NO_SLEEPER)
    # The probe sleeps 600 s and the run is given 300: that it ends at all proves the kill.
    result = _run(pytester, "--image", base_image, "test_hang.py", "--probe-dir", "probes", *ONLY_SYSTEM,
                  "--probe-timeout", "3", "--matrix-json", "m.json", timeout=300)
    cells = _cells(pytester.path / "m.json")
    col = f"docker://{base_image}"
    assert cells[("hang", col)]["status"] == "error"
    assert "probe hang timed out after" in cells[("hang", col)]["detail"]
    # the same container is still usable, and nothing of the probe survived in it
    assert cells[("nothing_left_inside", col)]["status"] == "pass", result.stdout.str()[-3000:]
    assert leftovers(pytester.path / "m.json") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_container_and_writes_partial_matrix(
        pytester: pytest.Pytester, base_image: str, sig: signal.Signals) -> None:
    """The signal comes while ``test_slow`` runs (it says so with a file, then waits in the image):
    the finished check is a pass, the one that was running is ``interrupted``, never a pass."""
    pytester.makepyfile(test_slow="""
        import pathlib

        def test_first(container):
            container.note("done")

        def test_slow(container):
            pathlib.Path("started").write_text("")
            container.python("import time; time.sleep(3600)")
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:benchmark", "--image", base_image, "test_slow.py",
         "--no-builtin-checks", "--matrix-json", "m.json"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_file(pytester.path / "started", proc)
        assert owned_by(proc.pid), "test_slow runs, but no container of the run is there"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-2000:]
    assert owned_by(proc.pid) == []
    data = json.loads((pytester.path / "m.json").read_text())
    assert data["complete"] is False
    status = {c["row"]: c["status"] for c in data["cells"]}
    assert status == {"first": "pass", "slow": "interrupted"}, status
    assert data["summary"] == {"pass": 1, "fail": 0, "error": 0, "skip": 0, "interrupted": 1}
    assert "1 passed" in out  # pytest's count agrees with the matrix: the interrupted check is no pass
    assert "INCOMPLETE" in out
    assert "INTR  slow on" in out


def wait_for_file(path: Path, proc: subprocess.Popen[str]) -> None:
    """Until *path* exists (a check wrote it); fails if the run ends first."""
    tick, deadline = threading.Event(), time.monotonic() + RUN_LIMIT
    while not path.exists():
        if proc.poll() is not None:
            out = proc.communicate(timeout=120)[0]
            raise AssertionError(f"the run ended before {path.name} appeared: {out[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {RUN_LIMIT:.0f} s")
        tick.wait(0.05)


def test_unknown_image_is_a_usage_error(pytester: pytest.Pytester, docker: str) -> None:
    result = _run(pytester, "--image", "containercheck-test/no-such-image:0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "image 'containercheck-test/no-such-image:0' not found by docker" in err
    assert "docker pull" in err and "Traceback" not in err


def test_daemon_down_is_a_usage_error(pytester: pytest.Pytester, docker: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-daemon.sock")
    result = _run(pytester, "--image", "debian:bookworm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "the Docker daemon is not answering" in err and "start it" in err
    assert "Traceback" not in err


def test_stale_container_from_a_killed_run_is_reaped(pytester: pytest.Pytester, base_image: str) -> None:
    # A container whose owner pid is gone, as left by a SIGKILLed pytest.
    dead_pid = 2**22 + 7  # above the default pid_max: never a live process
    subprocess.run(["docker", "run", "--detach", "--rm", "--name", f"containercheck-stale-{os.getpid()}",
                    "--label", "org.containercheck.run=stale", "--label",
                    f"org.containercheck.owner={os.uname().nodename}/{dead_pid}",
                    "--network", "none", "--entrypoint", "sleep", base_image, "600"], check=True, capture_output=True,
                   timeout=300)
    _run(pytester, "--image", base_image, "--no-builtin-checks")
    assert not [n for n in containers_with_label() if n.startswith("containercheck-stale-")]



# For a plugin module loaded with -p (the built-in checks lie outside the test directory, so a
# conftest.py there would not load): the images of this run's containers, as Docker lists them.
OURS = """
import os, subprocess, time

def ours():
    res = subprocess.run(["docker", "ps", "--all", "--filter",
                          "label=org.containercheck.owner=%s/%d" % (os.uname().nodename, os.getpid()),
                          "--format", "{{.Image}}"], capture_output=True, text=True, check=True)
    return res.stdout.split()

def wait_for(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()
"""


def test_images_start_while_their_checks_are_collected(pytester: pytest.Pytester, base_image: str) -> None:
    """The image starts as collection begins, not at its first test: at the end of collection
    its container is there (without the early start it would not be, until the first test)."""
    pytester.makepyfile(watch=OURS + """
def pytest_collection_finish(session):
    wait_for(ours)
    with open("seen", "w") as f:
        f.write(" ".join(ours()))
""")
    result = _run(pytester, "-p", "watch", "--image", base_image, "--matrix-json", "m.json", *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert (pytester.path / "seen").read_text() == base_image
    assert leftovers(pytester.path / "m.json") == []


# For a plugin module loaded with -p: the pid of the pytest process, which the owner label of
# every container it starts names (runtimes/oci.py LABEL_OWNER).
PID = """
import os

def pytest_configure(config):
    with open("pid", "w") as f:
        f.write(str(os.getpid()))
"""


def _created(pytester: pytest.Pytester, *args: str) -> list[str]:
    """Run pytest with *args*; the image of each container Docker created for that run, from Docker's
    own events for the run's owner label (asked once the run is over: nothing is waited for)."""
    pytester.makepyfile(pid=PID)
    since = time.time() - 1
    result = _run(pytester, "-p", "pid", *args)
    assert result.ret == 0, result.stdout.str()[-3000:]
    owner = f"org.containercheck.owner={os.uname().nodename}/{(pytester.path / 'pid').read_text()}"
    events = subprocess.run(["docker", "events", "--since", f"{since:.6f}", "--until", f"{time.time():.6f}",
                             "--filter", "type=container", "--filter", "event=create", "--filter", f"label={owner}",
                             "--format", "{{.Actor.Attributes.image}}"],
                            capture_output=True, text=True, check=True, timeout=60)
    return events.stdout.split()


def test_collect_only_starts_no_image(pytester: pytest.Pytester, base_image: str) -> None:
    """Docker creates no container for a --collect-only run, although images start as collection begins
    in a run that goes on to its tests (the same query sees that container: the query is not blind)."""
    assert _created(pytester, "--image", base_image, "-k", "system.python", *ONLY_SYSTEM) == [base_image]
    assert _created(pytester, "--image", base_image, "--collect-only", *ONLY_SYSTEM) == []


def test_an_image_whose_checks_are_all_deselected_is_removed_as_collection_ends(
        pytester: pytest.Pytester, base_image: str, nopython_image: str) -> None:
    """Both images start while their checks are collected; -k deselects every check of one of
    them, and its container goes at the end of collection, while the other image's run goes on."""
    pytester.makepyfile(watch=OURS + """
def pytest_collection_modifyitems(config, items):
    wait_for(lambda: len(ours()) == 2)
    with open("seen", "w") as f:
        f.write(" ".join(sorted(ours())))
""")
    pytester.makepyfile(test_gone=OURS + f"""
def test_other_image_is_gone(container):
    assert wait_for(lambda: {nopython_image!r} not in ours()), ours()
    assert ours() == [{base_image!r}]
    container.note("only " + container.id + " is running")
""")
    result = _run(pytester, "-p", "watch", "--image", base_image, "--image", nopython_image, "test_gone.py",
                  "--no-builtin-checks", "-k", "not nopython", "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert (pytester.path / "seen").read_text() == " ".join(sorted([base_image, nopython_image]))
    data = json.loads((pytester.path / "m.json").read_text())
    assert [(c["row"], c["column"], c["status"]) for c in data["cells"]] == [
        ("other_image_is_gone", f"docker://{base_image}", "pass")]
    assert leftovers(pytester.path / "m.json") == []


def test_interrupt_during_collection_leaves_no_container(pytester: pytest.Pytester, base_image: str) -> None:
    """Ctrl-C while the checks are collected, with the image already started for them."""
    pytester.makepyfile(watch=OURS + """
def pytest_collection_modifyitems(config, items):
    with open("pid", "w") as f:
        f.write(str(os.getpid()))
    assert wait_for(ours)
    raise KeyboardInterrupt
""")
    result = _run(pytester, "-p", "watch", "--image", base_image, *ONLY_SYSTEM)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()[-3000:]
    assert owned_by(int((pytester.path / "pid").read_text())) == []


def test_under_xdist_each_image_starts_once(pytester: pytest.Pytester, base_image: str,
                                            nopython_image: str) -> None:
    """With -n 2 the images start on the workers that run their checks, not also early on the
    controller: Docker saw one container created per image for the run."""
    since = f"{time.time():.3f}"
    pytester.makepyfile(test_one="def test_one(container):\n    container.note(container.id)\n")
    result = _run(pytester, "-n", "2", "--image", base_image, "--image", nopython_image, "test_one.py",
                  "--no-builtin-checks", "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    run_id = json.loads((pytester.path / "m.json").read_text())["meta"]["run_id"]
    until = f"{time.time():.3f}"
    events = subprocess.run(["docker", "events", "--since", since, "--until", until, "--filter", "event=create",
                             "--filter", f"label=org.containercheck.run={run_id}", "--format", "{{.From}}"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert sorted(events) == sorted([base_image, nopython_image])
    assert leftovers(pytester.path / "m.json") == []
