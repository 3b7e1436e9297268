"""Fault injection against a real Docker engine: the plugin keeps working under stress.

Each test injects one kind of fault (a crashing probe, a container killed from outside, a
Docker daemon that dies, hostile output, hostile images, hostile input, concurrency) into a
real run (``pytester`` subprocess, real containers) and checks that every fault becomes a
cell with a clear reason, that the rest of the matrix still runs, and that nothing is left
behind.  The README table "Faults and what the plugin does" points here.

Hung probes, SIGINT/SIGTERM, stale containers, a daemon that is down from the start and
unknown images are covered in tests/test_docker.py; the SIF header in tests/test_sif.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ONLY_SYSTEM, leftovers, write_sif

pytestmark = [pytest.mark.docker]

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_containercheck"


# -- helpers ------------------------------------------------------------------------------------


def _run(pytester: pytest.Pytester, *args: str, timeout: float = 300) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:benchmark", "-p", "no:cacheprovider", *args, timeout=timeout)


def _matrix(pytester: pytest.Pytester, name: str = "m.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / name).read_text())
    return data


def _cells(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["row"], c["column"]): c for c in data["cells"]}


def _launch(data: dict[str, Any], column: str) -> dict[str, Any]:
    facts: dict[str, Any] = next(c for c in data["columns"] if c["id"] == column)["facts"]["launch"]
    return facts


def _probes(pytester: pytest.Pytester, **sources: str) -> str:
    """Write probes NAME.py into ./probes and return the --probe-dir argument."""
    d = pytester.path / "probes"
    d.mkdir(exist_ok=True)
    for name, src in sources.items():
        (d / f"{name}.py").write_text(src)
    return str(d)


@pytest.fixture
def tag_base(base_image: str) -> Iterator[Callable[[str], str]]:
    """``tag(ref)``: tag the base image as *ref* for one test; every tag is removed afterwards."""
    made: list[str] = []

    def tag(ref: str) -> str:
        subprocess.run(["docker", "tag", base_image, ref], check=True, capture_output=True, timeout=300)
        made.append(ref)
        return ref

    yield tag
    for ref in made:
        subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False, timeout=300)


# -- a probe that crashes the interpreter ---------------------------------------------------------

SEGV = "def run(params, ctx):\n    import ctypes\n    ctypes.string_at(0)\n"
EXIT3 = "def run(params, ctx):\n    import os\n    os._exit(3)\n"
OOM = """\
def run(params, ctx):
    hog = []
    while True:  # bytearray zero-fills: every page is touched, so the cgroup limit bites
        hog.append(bytearray(16 * 1024 * 1024))
"""
OK = "def run(params, ctx):\n    import os\n    return {'answer': 42, 'pid': os.getpid(), 'params': params}\n"

CRASH_CHECKS = """
def test_segv(container):
    container.facts("segv")

def test_exit3(container):
    container.facts("exit3")

def test_oom(container):
    container.facts("oom")

def test_after(container):
    assert container.facts("ok")["answer"] == 42
    container.note(container.session_facts["container"])
"""


def test_crashing_probes_are_cells_and_the_image_recovers(pytester: pytest.Pytester, base_image: str) -> None:
    """Segfault, os._exit(3) and an OOM kill under --memory=64m: three error cells, then work goes on.

    Under ``docker exec`` an OOM kill is exit 137 (SIGKILL) of the probe alone: the kernel
    kills the biggest process in the cgroup, the container's ``sleep`` survives, and Docker
    reports an ``oom`` event, which names the cause.
    """
    probe_dir = _probes(pytester, segv=SEGV, exit3=EXIT3, oom=OOM, ok=OK)
    pytester.makepyfile(test_crash=CRASH_CHECKS)
    result = _run(pytester, "--image", base_image, "test_crash.py", "--no-builtin-checks", "--probe-dir", probe_dir,
                  "--runtime-arg=--memory=64m", "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = _matrix(pytester)
    col = f"docker://{base_image}"
    cells = _cells(data)
    assert cells[("segv", col)]["status"] == "error"
    assert cells[("segv", col)]["detail"] == "probe segv crashed (killed by signal 11 (SIGSEGV))"
    assert cells[("exit3", col)]["status"] == "error"
    assert cells[("exit3", col)]["detail"] == "probe exit3 exited 3 without a result (nothing on stderr)"
    assert cells[("oom", col)]["status"] == "error"
    assert cells[("oom", col)]["detail"] == (
        "probe oom crashed (killed by signal 9 (SIGKILL)): the kernel's OOM killer ended a process: the "
        "container reached its memory limit (64 MiB); give it more with --runtime-arg=--memory=SIZE")
    # The same container goes on: nothing was restarted.
    after = cells[("after", col)]
    assert after["status"] == "pass", result.stdout.str()[-3000:]
    assert after["detail"] == _launch(data, col)["container"]
    assert "container_restarted" not in after["evidence"]
    assert "--memory=64m" in _launch(data, col)["run_command"]
    assert leftovers(pytester.path / "m.json") == []


# -- the container dies mid-run ------------------------------------------------------------------

#: Says it has started (a file in the image), then sleeps longer than the run is given.
SLOW = ("def run(params, ctx):\n    import time\n    open('/tmp/cc-slow-started', 'w').close()\n"
        "    time.sleep(3600)\n")

KILL_CHECKS = """
import os, subprocess, threading

KILLED = os.environ["CC_KILL_COLUMN"]

def _kill(container):
    subprocess.run(["docker", "kill", container.session_facts["container"]], capture_output=True, check=True,
                   timeout=120)

def _kill_once_started(container):
    # An event, not a delay: the probe's own file in the image says it is running (60 s at most).
    name = container.session_facts["container"]
    tick = threading.Event()
    for _ in range(1200):
        if subprocess.run(["docker", "exec", name, "test", "-e", "/tmp/cc-slow-started"],
                          capture_output=True, timeout=120).returncode == 0:
            break
        tick.wait(0.05)
    else:
        raise AssertionError("the slow probe did not start within 60 s")
    _kill(container)

def test_a_killed_mid_probe(container):
    if container.id != KILLED:
        container.note("not killed")
        return
    threading.Thread(target=_kill_once_started, args=[container], daemon=True).start()
    container.facts("slow")

def test_b_after(container):
    container.facts("ok", n=1)
    container.note(container.session_facts["container"])

def test_c_killed_between_checks(container):
    if container.id == KILLED:
        _kill(container)
    container.note("killed" if container.id == KILLED else "not killed")

def test_d_after(container):
    container.facts("ok", n=2)
    container.note(container.session_facts["container"])
"""


def test_container_killed_from_outside(pytester: pytest.Pytester, base_image: str,
                                       tag_base: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker kill`` during a probe, then between two checks; another image is unaffected.

    The probe that was running errors with the reason; the next probes run in a new
    container, and their cells say so (evidence ``container_restarted``).
    """
    other = tag_base(f"containercheck-test/faults-other:{os.getpid()}")
    killed_col, other_col = f"docker://{base_image}", f"docker://{other}"
    monkeypatch.setenv("CC_KILL_COLUMN", killed_col)
    probe_dir = _probes(pytester, slow=SLOW, ok=OK)
    pytester.makepyfile(test_kill=KILL_CHECKS)
    # The killed probe sleeps 3600 s and the run is given 300: that it ends at all proves it was not waited for.
    result = _run(pytester, "--image", base_image, "--image", other, "test_kill.py", "--no-builtin-checks",
                  "--probe-dir", probe_dir, "--matrix-json", "m.json", timeout=300)
    cells = _cells(_matrix(pytester))
    reason = ("the container was killed from outside (signal 9: 'docker kill', 'docker rm --force', or the host)")
    a = cells[("a_killed_mid_probe", killed_col)]
    assert a["status"] == "error", result.stdout.str()[-3000:]
    assert a["detail"] == f"probe slow crashed (killed by signal 9 (SIGKILL)): the container stopped while the " \
                          f"probe ran: {reason}"
    b, c, d = (cells[(row, killed_col)] for row in ("b_after", "c_killed_between_checks", "d_after"))
    assert b["status"] == c["status"] == d["status"] == "pass", result.stdout.str()[-3000:]
    # b ran in the container started after the first kill, d in the one after the second.
    assert b["evidence"]["container_restarted"] == f"probe ok ran in a new container: the previous one stopped " \
                                                   f"({reason})"
    assert d["evidence"]["container_restarted"].startswith("probe ok ran in a new container")
    assert len({b["detail"], d["detail"]}) == 2
    for row in ("a_killed_mid_probe", "b_after", "c_killed_between_checks", "d_after"):
        cell = cells[(row, other_col)]
        assert cell["status"] == "pass" and "container_restarted" not in cell["evidence"]
    assert cells[("b_after", other_col)]["detail"] == cells[("d_after", other_col)]["detail"]
    assert leftovers(pytester.path / "m.json") == []


# -- the Docker daemon stops mid-run ----------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, bytes]]:
    table: dict[int, tuple[int, bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                table[int(entry)] = (ppid, fh.read())
        except (OSError, ValueError, IndexError):
            continue
    return table


def _state(pid: int) -> str:
    """A process's state letter (``Z``: a zombie, already dead), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def _kill_daemon_tree(root: Path) -> tuple[list[str], list[int]]:
    """SIGKILL what the private daemon started (named by *root* in its command line) and below.

    dockerd, its containerd, the containerd shims (re-parented to init when dockerd dies)
    and the containers' processes under them.  Returns the container ids seen on the shims
    and the pids killed.
    """
    table = _process_table()
    me, ancestors = os.getpid(), set()
    pid = me
    while pid in table and pid not in ancestors:
        ancestors.add(pid)
        pid = table[pid][0]
    tops = [p for p, (_, cmd) in table.items() if str(root).encode() in cmd and p not in ancestors]
    ids = [m.decode() for p in tops for m in re.findall(rb"-id\0([0-9a-f]{64})", table[p][1])]

    def below(p: int) -> list[int]:
        kids = [c for c, (pp, _) in table.items() if pp == p]
        return [d for k in kids for d in below(k)] + kids

    victims = [d for p in tops for d in below(p)] + tops
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return ids, victims


def _stop_private_daemon(root: Path, proc: subprocess.Popen[bytes]) -> None:
    """Leave nothing of the private daemon: processes, mounts, cgroups, files."""
    proc.kill()
    proc.wait(timeout=30)
    ids, victims = _kill_daemon_tree(root)
    # Until they are gone (their mounts go with them), not for some fraction of a second.
    deadline, tick = time.monotonic() + 60, threading.Event()
    while any(os.path.exists(f"/proc/{v}") and _state(v) != "Z" for v in victims) and time.monotonic() < deadline:
        tick.wait(0.05)
    with open("/proc/mounts") as fh:
        mounts = [ln.split()[1] for ln in fh if ln.split()[1].startswith(str(root))]
    for mnt in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False, timeout=300)
    for cid in ids:
        for cg in [*Path("/sys/fs/cgroup").glob(f"*/docker/{cid}"), Path("/sys/fs/cgroup/docker") / cid]:
            try:
                cg.rmdir()
            except OSError:
                pass
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, check=False, timeout=300)


@pytest.fixture
def private_dockerd(base_image: str) -> Iterator[tuple[str, int]]:
    """A second, throw-away dockerd with the base image: ``(DOCKER_HOST, pid)``.

    The shared daemon is never touched (the private one runs in its own network
    namespace, so not even the host's docker0 bridge is).  Whatever the test does, the finalizer kills the
    daemon, its containerd, shims and containers (by pid), unmounts and removes its dirs.
    """
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (docker.io provides it)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="cc-dockerd-", dir="/tmp"))  # short: unix socket paths <= 107 bytes
    host = f"unix://{root}/docker.sock"
    env = {**os.environ, "DOCKER_HOST": host}
    with open(root / "dockerd.log", "wb") as log:
        # Its own network namespace: a dockerd started with "--bridge none" deletes the host's
        # docker0 bridge, which would break the shared daemon's default network.
        proc = subprocess.Popen(
            ["unshare", "--net", "--", "dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "--host", host, "--bridge", "none",
             "--iptables=false", "--ip6tables=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True, timeout=300).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the private dockerd did not start:\n{tail}", pytrace=False)
            time.sleep(0.2)
        save = subprocess.Popen(["docker", "save", base_image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        subprocess.run(["docker", "load", "--quiet"], stdin=save.stdout, env=env, check=True, capture_output=True,
                       timeout=300)
        save.stdout.close()
        assert save.wait(timeout=300) == 0
        yield host, proc.pid
    finally:
        _stop_private_daemon(root, proc)


DAEMON_CHECKS = """
import os, signal, subprocess, time

def test_a_before(container):
    container.note("answer %s" % container.facts("ok", n=1)["answer"])

def test_b_daemon_dies(container):
    os.kill(int(os.environ["CC_DOCKERD_PID"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while subprocess.run(["docker", "version"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not die"
        time.sleep(0.1)
    container.note("dockerd killed")

def test_c_probe(container):
    container.facts("ok", n=2)

def test_d_probe(container):
    container.facts("ok", n=3)
"""


def test_docker_daemon_dies_mid_run(pytester: pytest.Pytester, base_image: str,
                                    private_dockerd: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A private dockerd is SIGKILLed by a check: the cells after it error clearly, the run ends."""
    host, pid = private_dockerd
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.setenv("CC_DOCKERD_PID", str(pid))
    probe_dir = _probes(pytester, ok=OK)
    pytester.makepyfile(test_daemon=DAEMON_CHECKS)
    # No restart is tried and no probe waits for a dead daemon: the run ends (within the
    # subprocess timeout) instead of hanging on it.
    result = _run(pytester, "--image", base_image, "test_daemon.py", "--no-builtin-checks", "--probe-dir", probe_dir,
                  "--matrix-json", "m.json", timeout=300)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = _matrix(pytester)
    assert data["complete"] is True
    col = f"docker://{base_image}"
    cells = _cells(data)
    down = (f"the docker daemon stopped answering (Cannot connect to the Docker daemon at {host}. "
            "Is the docker daemon running?)")
    assert cells[("a_before", col)]["status"] == "pass"
    assert cells[("b_daemon_dies", col)]["status"] == "pass"
    assert cells[("c_probe", col)]["status"] == "error"
    assert cells[("c_probe", col)]["detail"] == f"probe ok exited 1 without a result: {down}"
    assert cells[("d_probe", col)]["status"] == "error"
    assert cells[("d_probe", col)]["detail"] == f"{down} during the run"
    assert cells[("d_probe", col)]["fix"].startswith("start the daemon again and rerun")
    assert "Traceback" not in result.stdout.str()


# -- hostile output -----------------------------------------------------------------------------

BIG = 512 * 2**20
BIGOUT = f"""\
def run(params, ctx):
    import sys
    line = b"x" * (2**20 - 1) + b"\\n"
    for _ in range({BIG} // 2**20):
        sys.stdout.buffer.write(line)
    sys.stdout.flush()
    sys.stderr.write("e" * 2**20 * 8)
    return {{"written": {BIG}}}
"""
FORGER = """\
def run(params, ctx):
    import sys
    print('@@containercheck-result ffffffffffffffff {"status": "ok", "facts": {"forged": 2}}')
    sys.stdout.flush()
    sys.stdout.buffer.write(b"\\xc3\\x28 probe's own bytes that are not UTF-8 \\xff\\n")
    sys.stdout.flush()
    sys.stderr.buffer.write(b"\\xfe\\xfe stderr garbage\\n")
    return {"genuine": True}
"""
NOISE_CHECKS = """
import resource

def test_banners_and_forgeries(container):
    res = container.probe("forger")
    assert res.facts == {"genuine": True}, res
    # every line is evidence: sitecustomize's banner, the library's forged markers, bad bytes
    assert "== noisy image: sitecustomize banner on stdout ==" in res.stdout
    assert '{"forged": true}' in res.stdout and '{"forged": 2}' in res.stdout
    assert "@@containercheck-python 0000000000000000 3.99.0|/forged/python" in res.stdout
    assert "\\ufffd( probe's own bytes" in res.stdout and "\\ufffd\\ufffd stderr garbage" in res.stderr
    assert "entrypoint banner" not in res.stdout + res.stderr, "the image's ENTRYPOINT ran"
    assert "profile.d banner" not in res.stdout + res.stderr, "a login shell ran"
    container.note("forged lines ignored")

def test_megabytes_of_output(container):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = container.probe("bigout")
    assert res.facts == {"written": BIG}, res.summary()
    assert "bytes dropped by containercheck" in res.stdout
    assert len(res.stdout) < 17 * 2**20 and len(res.stderr) < 9 * 2**20
    # Kept: 64 KiB + 16 MiB per stream, plus a few transient copies while parsing; holding
    # the output would need at least its size again (bytes, then str).
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert growth < BIG // 2, f"pytest grew by {growth // 2**20} MiB: the output was not bounded"
    container.note(f"peak RSS grew by {growth // 2**20} MiB")
""".replace("BIG", str(BIG))


def test_hostile_output(pytester: pytest.Pytester, image_factory: Callable[[str], str]) -> None:
    """Image ``noisy``: banners on every interpreter start, forged protocol lines, invalid UTF-8.

    Its ENTRYPOINT prints a banner and exits 64 without arguments: we replace it with
    ``sleep``, so it never runs.  A probe printing 256 MiB keeps pytest's memory bounded
    (head and tail are kept) and its result is still read.
    """
    noisy = image_factory("noisy")
    probe_dir = _probes(pytester, forger=FORGER, bigout=BIGOUT)
    pytester.makepyfile(test_noise=NOISE_CHECKS)
    result = _run(pytester, "--image", noisy, "test_noise.py", *ONLY_SYSTEM, "--probe-dir", probe_dir,
                  "--matrix-json", "m.json")
    data = _matrix(pytester)
    col = f"docker://{noisy}"
    cells = _cells(data)
    for row in ("banners_and_forgeries", "megabytes_of_output", "system.python", "system.os",
                "system.writable_cache"):
        assert cells[(row, col)]["status"] == "pass", (row, cells[(row, col)], result.stdout.str()[-3000:])
    print(cells[("megabytes_of_output", col)]["detail"])
    # the interpreter was found despite the banners and a forged interpreter line
    assert cells[("system.python", col)]["detail"] == "CPython 3.11.2 (/usr/bin/python3)"
    launch = _launch(data, col)
    assert launch["run_command"][launch["run_command"].index("--entrypoint") + 1] == "sleep"
    assert leftovers(pytester.path / "m.json") == []


# -- hostile images -------------------------------------------------------------------------------


def test_hostile_images(pytester: pytest.Pytester, image_factory: Callable[[str], str]) -> None:
    """Only Python 2.7, a non-root default user, no ``sleep``: each gets clear cells.

    ``python2`` is Debian bullseye's real CPython 2.7.18 (python2.7-minimal, unpacked into
    the no-Python image; no fake).  ``nonroot`` runs as uid 1000 with HOME=/root, which it
    cannot write.  ``nosleep`` (distroless-style) is kept running by its own python3.
    """
    py2, nonroot, nosleep = (image_factory(n) for n in ("python2", "nonroot", "nosleep"))
    result = _run(pytester, "--image", py2, "--image", nonroot, "--image", nosleep, *ONLY_SYSTEM,
                  "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    data = _matrix(pytester)
    cells = _cells(data)
    py2_col, nonroot_col, nosleep_col = (f"docker://{i}" for i in (py2, nonroot, nosleep))
    for row in ("system.python", "system.os", "system.writable_cache"):
        cell = cells[(row, py2_col)]
        assert cell["status"] == "error"
        assert cell["detail"] == "unsupported Python 2.7.18 at /usr/bin/python (probes need 3.7+)"
        assert cell["fix"] == "install python3 (3.7 or newer) in the image, or name it with --container-python"
    # non-root: Python and OS are fine, the caches are not writable, and the message says how to fix it
    assert cells[("system.python", nonroot_col)]["status"] == "pass"
    assert cells[("system.os", nonroot_col)]["status"] == "pass"
    cache = cells[("system.writable_cache", nonroot_col)]
    assert cache["status"] == "fail" and cache["fault"] == "image"
    assert cache["detail"].startswith("not writable: ")
    assert "home (/root: PermissionError: [Errno 13] Permission denied: '/root/.containercheck-" in cache["detail"]
    assert "cache (/root/.cache: PermissionError: [Errno 13] Permission denied: '/root/.cache')" in cache["detail"]
    assert "tmp (/tmp" not in cache["detail"]
    assert "--container-env XDG_CACHE_HOME=/tmp/cache" in cache["fix"]
    assert _launch(data, nonroot_col)["run_command"].count("--user") == 0  # the image's own user
    # no sleep: started with the image's python3 as the keep-alive, and everything runs
    for row in ("system.python", "system.os", "system.writable_cache"):
        assert cells[(row, nosleep_col)]["status"] == "pass"
    launch = _launch(data, nosleep_col)
    assert launch["keepalive"] == "python3"
    assert launch["run_command"][launch["run_command"].index("--entrypoint") + 1] == "python3"
    assert leftovers(pytester.path / "m.json") == []


def test_python_named_only_python_runs_every_probe_with_it(pytester: pytest.Pytester,
                                                           image_factory: Callable[[str], str]) -> None:
    """Probes start with ``python3`` while the image's interpreter is still looked for; in an
    image whose Python 3 is only ``python`` those runs are dropped and the probes run again
    with ``python``: every cell is that interpreter's, none says "python3 not found"."""
    image = image_factory("python-named")
    result = _run(pytester, "--image", image, *ONLY_SYSTEM, "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    cells = _cells(_matrix(pytester))
    col = f"docker://{image}"
    assert cells[("system.python", col)]["detail"] == "CPython 3.11.2 (/usr/bin/python)"
    for row in ("system.python", "system.os", "system.writable_cache"):
        assert cells[(row, col)]["status"] == "pass"
        assert cells[(row, col)]["probes"]["system"]["guess_dropped"] == "python3"
    assert leftovers(pytester.path / "m.json") == []


def test_no_sleep_and_no_python_names_the_fix(pytester: pytest.Pytester, image_factory: Callable[[str], str]) -> None:
    """Neither ``sleep`` nor Python on the image's PATH: one clear error per cell, no leftover.

    ``nosleep`` with ``PATH=/nowhere`` (a ``--runtime-arg``) stands for an image that has
    neither: Docker resolves the entrypoint on the container's PATH.
    """
    nosleep = image_factory("nosleep")
    result = _run(pytester, "--image", nosleep, *ONLY_SYSTEM, "--runtime-arg=--env=PATH=/nowhere",
                  "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cells = _cells(_matrix(pytester))
    col = f"docker://{nosleep}"
    cell = cells[("system.python", col)]
    assert cell["status"] == "error"
    assert cell["detail"] == (
        "docker could not start the image: the image has neither 'sleep' nor Python (python3, python) on its "
        'PATH to keep the container running (exec: "python": executable file not found)')
    assert cell["fix"] == "add 'sleep' (coreutils or busybox) or python3 to the image; probes need python3 in any case"
    assert "Traceback" not in result.stdout.str()
    assert leftovers(pytester.path / "m.json") == []


def test_read_only_root_filesystem(pytester: pytest.Pytester, base_image: str) -> None:
    """``--runtime-arg=--read-only``: probes still run (stdin), only the writable check fails."""
    result = _run(pytester, "--image", base_image, *ONLY_SYSTEM, "--runtime-arg=--read-only", "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cells = _cells(_matrix(pytester))
    col = f"docker://{base_image}"
    assert cells[("system.python", col)]["status"] == "pass"
    assert cells[("system.os", col)]["status"] == "pass"
    cache = cells[("system.writable_cache", col)]
    assert cache["status"] == "fail" and cache["fault"] == "image"
    for what, path in (("home", "/root"), ("cache", "/root/.cache"), ("tmp", "/tmp")):
        assert f"{what} ({path}: OSError: [Errno 30] Read-only file system: " in cache["detail"], cache["detail"]
    assert "--container-env XDG_CACHE_HOME=/tmp/cache" in cache["fix"]
    assert leftovers(pytester.path / "m.json") == []


# -- hostile input and safe defaults ----------------------------------------------------------------


def test_no_shell_in_the_plugin() -> None:
    """Every command is an argv list: no shell=True, os.system or os.popen anywhere in the package."""
    offenders = [f"{p.relative_to(PACKAGE)}: {pattern}" for p in PACKAGE.rglob("*.py")
                 for pattern in ("shell=True", "os.system(", "os.popen(") if pattern in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("make", ["sif", "directory"])
def test_paths_with_shell_metacharacters(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                         make: str) -> None:
    """A .sif named ``a b;touch PWNED.sif`` and a directory ``$(touch PWNED)``: usage errors, no PWNED."""
    if make == "sif":
        name = "a b;touch PWNED.sif"
        write_sif(pytester.path / name)
        # Only the interpreter on PATH, through a directory of its own: no apptainer, whatever the
        # host has (Debian's /usr/bin holds both python3 and apptainer).
        bindir = pytester.path / "only-python"
        bindir.mkdir()
        (bindir / "python3").symlink_to(os.path.realpath(shutil.which("python3") or sys.executable))
        monkeypatch.setenv("PATH", str(bindir))
        expected = f"--image {name}: neither 'apptainer' nor 'singularity' is on PATH"
    else:
        name = "$(touch PWNED) `touch PWNED`"
        (pytester.path / name).mkdir()
        expected = f"--image {name!r} is a directory; give a .sif file, an image reference or 'host'"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--image", name)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()
    assert not list(pytester.path.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


SAFE_CHECKS = """
import json, os, subprocess

def _inspect(container, fmt):
    return subprocess.run(["docker", "inspect", "--format", fmt, container.session_facts["container"]],
                          capture_output=True, text=True, check=True).stdout.strip()

def test_env_is_not_inherited(container):
    env = container.run(["env"]).stdout
    assert "CC_SECRET_TOKEN" not in env and "hunter2" not in env, env
    assert "CC_NAMED=named-value" in env  # passed because --container-env named it
    container.note("secret not passed")

def test_values_arrive_verbatim(container):
    res = container.run(["printenv", "CC_X"])
    assert res.stdout == os.environ["CC_X_EXPECTED"] + "\\n", res
    assert container.run(["test", "-e", os.environ["CC_PWNED"]]).returncode == 1
    label = _inspect(container, '{{index .Config.Labels "org.example.note"}}')
    assert label == os.environ["CC_LABEL_EXPECTED"], label
    container.note("verbatim")

def test_launch_is_confined(container):
    assert json.loads(_inspect(container, "{{json .HostConfig.Privileged}}")) is False
    assert _inspect(container, "{{.HostConfig.NetworkMode}}") == "none"
    assert json.loads(_inspect(container, "{{json .Mounts}}")) == []
    assert _inspect(container, "{{.Config.User}}") == ""  # the image's own user (root for base)
    assert json.loads(_inspect(container, "{{json .HostConfig.CapAdd}}")) is None
    container.note("confined")

def test_artifact(container):
    container.artifact("blob", b"data", suffix=".bin")
    container.note("written")
"""


def test_safe_defaults_and_verbatim_input(pytester: pytest.Pytester, base_image: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets stay on the host, values with shell syntax arrive verbatim, files are not world-writable.

    Run under umask 000 (as some CI runners do): the matrix JSON and artifacts are still 0644.
    """
    pwned = f"/tmp/cc-pwned-{os.getpid()}"
    value = f"$(touch {pwned}); `touch {pwned}` | rm -rf ~ && echo '\"'"
    label = f"x=$(touch {pwned}) ; echo > {pwned}"
    monkeypatch.setenv("CC_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("CC_NAMED", "named-value")
    monkeypatch.setenv("CC_X_EXPECTED", value)
    monkeypatch.setenv("CC_LABEL_EXPECTED", label)
    monkeypatch.setenv("CC_PWNED", pwned)
    pytester.makepyfile(test_safe=SAFE_CHECKS)
    old = os.umask(0)
    try:
        result = _run(pytester, "--image", base_image, "test_safe.py", "--no-builtin-checks",
                      "--container-env", f"CC_X={value}", "--container-env", "CC_NAMED",
                      f"--runtime-arg=--label=org.example.note={label}",
                      "--artifacts-dir", "out/artifacts", "--matrix-json", "out/m.json")
    finally:
        os.umask(old)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert not os.path.exists(pwned)
    matrix = pytester.path / "out" / "m.json"
    assert matrix.stat().st_mode & 0o777 == 0o644
    cells = _cells(json.loads(matrix.read_text()))
    artifact = Path(cells[("artifact", f"docker://{base_image}")]["artifacts"]["blob"])
    artifact = artifact if artifact.is_absolute() else pytester.path / artifact
    assert artifact.stat().st_mode & 0o777 == 0o644
    for d in (artifact.parent, artifact.parent.parent, pytester.path / "out" / "artifacts"):
        assert d.stat().st_mode & 0o777 == 0o755, d
    assert leftovers(matrix) == []


SECRET_CHECKS = """
import os

def test_values_arrive(container):
    env = dict(ln.split("=", 1) for ln in container.run(["env"]).stdout.splitlines() if "=" in ln)
    assert env.get("CC_TOKEN") == os.environ["CC_EXPECT_1"] and env.get("HF_TOKEN") == os.environ["CC_EXPECT_2"]
    container.evidence("env", {k: env[k] for k in ("CC_TOKEN", "HF_TOKEN")})
    container.note("token " + env["CC_TOKEN"] + " seen")

def test_fails_naming_the_token(container):
    token = container.run(["printenv", "HF_TOKEN"]).stdout.strip()
    container.fail("the hub refused " + token, fix="rotate " + token)
"""


def test_container_env_values_reach_no_report(pytester: pytest.Pytester, base_image: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A value passed with --container-env (given on the command line, or named and taken from
    the host) arrives in the image, and is in no file the run writes, not in its terminal
    output, and not on the docker command lines it records: only the names are."""
    first, second = f"cc1-{os.getpid()}-SeCrEt-value", f"hf_{os.getpid()}SeCrEtHostToken"
    monkeypatch.setenv("HF_TOKEN", second)
    monkeypatch.setenv("CC_EXPECT_1", first)
    monkeypatch.setenv("CC_EXPECT_2", second)
    pytester.makepyfile(test_secret=SECRET_CHECKS)
    result = _run(pytester, "--image", base_image, "test_secret.py", "--no-builtin-checks", "-rA",
                  "--container-env", f"CC_TOKEN={first}", "--container-env", "HF_TOKEN",
                  "--matrix-json", "m.json", "--matrix-md", "m.md", "--matrix-html", "m.html",
                  "--junitxml", "j.xml")
    result.assert_outcomes(passed=1, failed=1)
    assert "the hub refused $HF_TOKEN" in result.stdout.str()
    for secret in (first, second):
        assert secret not in result.stdout.str() + result.stderr.str()
        for name in ("m.json", "m.md", "m.html", "j.xml"):
            assert secret not in (pytester.path / name).read_text(), name
    data = _matrix(pytester)
    assert "CC_TOKEN=<redacted>" in data["meta"]["pytest_args"]
    run_command = _launch(data, f"docker://{base_image}")["run_command"]
    assert run_command[run_command.index("CC_TOKEN") - 1] == "--env"
    assert run_command[run_command.index("HF_TOKEN") - 1] == "--env"
    cells = _cells(data)
    assert cells[("values_arrive", f"docker://{base_image}")]["evidence"]["env"] == {
        "CC_TOKEN": "$CC_TOKEN", "HF_TOKEN": "$HF_TOKEN"}
    assert cells[("values_arrive", f"docker://{base_image}")]["detail"] == "token $CC_TOKEN seen"
    assert leftovers(pytester.path / "m.json") == []


# -- concurrency ----------------------------------------------------------------------------------


def test_many_images_under_xdist(pytester: pytest.Pytester, base_image: str,
                                 tag_base: Callable[[str], str]) -> None:
    """Four tags of base (one with an unusual but valid name), one given twice, under ``-n 2``.

    The duplicate collapses to one column; every cell is there; every container had its own
    name; none is left.
    """
    pid = os.getpid()
    tags = [tag_base(f"containercheck-test/faults-{i}:{pid}") for i in "abc"]
    tags.append(tag_base(f"localhost:5000/containercheck-test/odd__name.x--y:Weird_Tag.-{pid}"))
    result = _run(pytester, "-n", "2", *[a for t in tags for a in ("--image", t)], "--image", f"docker://{tags[0]}",
                  *ONLY_SYSTEM, "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    data = _matrix(pytester)
    columns = [c["id"] for c in data["columns"]]
    assert columns == [f"docker://{t}" for t in tags]
    cells = _cells(data)
    rows = {r for r, _ in cells}
    assert {"system.python", "system.os", "system.writable_cache"} <= rows
    assert set(cells) == {(r, c) for r in rows for c in columns}
    assert {c["status"] for c in cells.values()} == {"pass", "skip"}
    names = {_launch(data, c)["container"] for c in columns}
    assert len(names) == len(columns)
    assert leftovers(pytester.path / "m.json") == []
