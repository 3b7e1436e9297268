"""Nothing left behind after SIGKILL (issue 30, item 6): the private env-file holding a proxy's
password is no file at all (a memfd), or lives where the next run reaps it; half-built SIFs and
decompressed archives are removed by the next run once their pytest is gone; an output path that is
a symbolic link is written only into a directory that exists, never creating the link's target."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.outputs import Output, check_directory, check_outputs, write_file
from pytest_containercheck.engine.runtimes import apptainer as apptainer_rt
from pytest_containercheck.engine.runtimes import oci

from helpers import ONLY_SYSTEM, ROOT, RUN_LIMIT, owned_by

DEAD_PID = 2**22 + 7
"""Above the default pid_max: never a live process (as tests/test_docker.py's stale container)."""


# -- outputs through symbolic links -------------------------------------------------------------------


def test_an_output_link_into_a_missing_directory_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    link = tmp_path / "m.json"
    link.symlink_to(tmp_path / "nowhere" / "deep" / "m.json")
    with pytest.raises(UsageProblem, match=r"m.json: is a symbolic link to .*/nowhere/deep/m.json, whose "
                                           r"directory does not exist; create it, or give another path"):
        check_outputs([Output("--matrix-json", str(link))])
    with pytest.raises(FileNotFoundError, match="whose directory does not exist"):
        write_file(link, "{}")
    assert not (tmp_path / "nowhere").exists() and link.is_symlink()
    # A directory on the way that is a link pointing nowhere: refused, and its target never made.
    reports = tmp_path / "reports"
    reports.symlink_to(tmp_path / "gone")
    with pytest.raises(UsageProblem, match=r"reports is a symbolic link to .*/gone, which does not exist"):
        check_outputs([Output("--matrix-md", str(reports / "sub" / "m.md"))])
    with pytest.raises(UsageProblem, match=r"is a symbolic link to .*/gone, which does not exist"):
        check_directory("--artifacts-dir", str(reports), create=True)
    with pytest.raises(OSError):
        write_file(reports / "sub" / "m.md", "x")
    assert not (tmp_path / "gone").exists()


def test_an_output_link_into_an_existing_directory_is_written_there(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    link = tmp_path / "m.json"
    link.symlink_to(tmp_path / "there" / "m.json")
    check_outputs([Output("--matrix-json", str(link))])
    write_file(link, "{}")
    assert link.is_symlink() and (tmp_path / "there" / "m.json").read_text() == "{}"


def test_the_plugin_refuses_a_dangling_output_link_before_anything_starts(pytester: pytest.Pytester) -> None:
    (pytester.path / "m.json").symlink_to(pytester.path / "nowhere" / "m.json")
    result = pytester.runpytest("--image", "host", *ONLY_SYSTEM, "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any("is a symbolic link to" in line and "whose directory does not exist" in line
               for line in result.stderr.lines), result.stderr.str()
    assert not (pytester.path / "nowhere").exists()


# -- the private env-file ---------------------------------------------------------------------------


def test_the_env_file_is_no_file_on_disk(tmp_path: Path) -> None:
    values = {"HTTPS_PROXY": "http://u:pw_Q9z@proxy:3128", "PATH": "/opt/x:/usr/bin"}
    with oci.private_env_file(values) as (path, fds):
        assert path == f"/dev/fd/{fds[0]}" and os.readlink(path).startswith("/memfd:containercheck-env")
        for _ in range(2):  # each `docker run` of a start opens it again, from its beginning
            assert Path(path).read_text() == "HTTPS_PROXY=http://u:pw_Q9z@proxy:3128\nPATH=/opt/x:/usr/bin\n"
        # What a runtime client does with it: read it through the descriptor it inherits.
        seen = subprocess.run(["cat", path], capture_output=True, text=True, pass_fds=fds, timeout=60)
        assert seen.stdout.startswith("HTTPS_PROXY=")
        assert not [e for e in os.listdir(tempfile.gettempdir()) if e.startswith(oci.ENV_DIR_PREFIX)]
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed once the container runs


def test_without_memfd_the_env_file_is_reaped_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with oci.private_env_file({"HTTPS_PROXY": "http://u:pw@p"}) as (path, fds):
        assert fds == () and Path(path).read_text() == "HTTPS_PROXY=http://u:pw@p\n"
        assert Path(path).parent.name.startswith(f"{oci.ENV_DIR_PREFIX}{os.getpid()}-")
        assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
    assert not Path(path).parent.exists()
    killed = tmp_path / f"{oci.ENV_DIR_PREFIX}{DEAD_PID}-abc123"  # what a SIGKILLed pytest leaves
    killed.mkdir()
    (killed / "env").write_text("HTTPS_PROXY=http://u:pw@p\n")
    mine = tmp_path / f"{oci.ENV_DIR_PREFIX}{os.getpid()}-def456"  # a live run's: kept
    mine.mkdir()
    assert oci.reap_env_dirs() == [str(killed)]
    assert not killed.exists() and mine.exists()


WRAPPER = """#!/bin/sh
# The real docker, after noting what --env-file names while this client runs; with CC_HOLD set, a
# 'docker run' first waits (600 s at most) until the test says go.
prev=
for a in "$@"; do
  if [ "$prev" = "--env-file" ]; then
    case "$a" in
      /dev/fd/*) echo "fd $(readlink "/proc/$$/fd/${a#/dev/fd/}")" >> "$CC_ENVFILE_LOG" ;;
      *) echo "file $a $(cat "$a" | wc -c)" >> "$CC_ENVFILE_LOG" ;;
    esac
    if [ -n "$CC_HOLD" ]; then
      echo $$ > "$CC_HOLD.started"
      n=0
      while [ ! -e "$CC_HOLD.go" ] && [ $n -lt 12000 ]; do sleep 0.05; n=$((n+1)); done
    fi
  fi
  prev=$a
done
exec "$CC_REAL_DOCKER" "$@"
"""

PROXY = "http://u:pw_Q9z7@proxy.invalid:3128"
ENV_CHECK = f"""
def test_env(container):
    seen = container.run(["sh", "-c", "echo $HTTPS_PROXY"]).stdout.strip()
    assert seen == {PROXY!r}, "the variable did not arrive"
    container.note("arrived")
"""


@pytest.fixture
def docker_wrapper(docker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docker`` first on PATH: the real one, noting what ``--env-file`` names (the log it returns)."""
    real = shutil.which("docker")
    assert real is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(WRAPPER)
    (bindir / "docker").chmod(0o755)
    log = tmp_path / "envfile.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CC_REAL_DOCKER", real)
    monkeypatch.setenv("CC_ENVFILE_LOG", str(log))
    return log


@pytest.mark.docker
def test_a_variable_the_client_reads_arrives_through_a_memfd(pytester: pytest.Pytester, base_image: str,
                                                             docker_wrapper: Path) -> None:
    pytester.makepyfile(test_env=ENV_CHECK)
    result = pytester.runpytest_subprocess("--image", base_image, "--no-builtin-checks", "test_env.py",
                                           "--container-env", f"HTTPS_PROXY={PROXY}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    logged = docker_wrapper.read_text().splitlines()
    assert logged and all(line.startswith("fd /memfd:containercheck-env") for line in logged), logged


@pytest.mark.docker
def test_a_sigkill_during_the_start_leaves_no_env_file(pytester: pytest.Pytester, base_image: str,
                                                       docker_wrapper: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL while ``docker run`` reads the env-file: before, its directory (0700, the file 0600, a proxy
    password in it) stayed in the temporary directory for good."""
    hold = tmp_path / "hold"
    monkeypatch.setenv("CC_HOLD", str(hold))
    pytester.makepyfile(test_env=ENV_CHECK)
    before = {e for e in os.listdir(tempfile.gettempdir()) if e.startswith(oci.ENV_DIR_PREFIX)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", base_image,
                             "--no-builtin-checks", "test_env.py", "--container-env", f"HTTPS_PROXY={PROXY}"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client: int | None = None
    try:
        tick, deadline = threading.Event(), time.monotonic() + RUN_LIMIT
        while not (started := Path(f"{hold}.started")).exists() or not started.read_text().strip():
            assert proc.poll() is None, proc.communicate(timeout=120)[0][-3000:]
            assert time.monotonic() < deadline, f"docker run did not begin within {RUN_LIMIT:.0f} s"
            tick.wait(0.05)
        client = int(started.read_text())
        proc.kill()
        proc.communicate(timeout=120)
        after = {e for e in os.listdir(tempfile.gettempdir()) if e.startswith(oci.ENV_DIR_PREFIX)}
        assert after - before == set(), "an env-file directory outlived the SIGKILLed run"
        assert docker_wrapper.read_text().startswith("fd /memfd:containercheck-env")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=120)
        if client is not None:
            os.kill(client, signal.SIGKILL)  # the held client: it never ran the container
    assert owned_by(proc.pid) == []


# -- half-built SIFs and decompressed archives ------------------------------------------------------


def test_partial_files_of_a_dead_run_on_this_host_are_reaped(tmp_path: Path) -> None:
    here = socket.gethostname()
    sif = "sha256-0123abcd.sif"
    dead = [f"{sif}.{here}.{DEAD_PID}.partial", f"{sif}.{here}.{DEAD_PID}.partial.tar"]
    kept = [f"{sif}.{here}.{os.getpid()}.partial.tar",  # a live run's (this one)
            f"{sif}.other-node.example.org.{DEAD_PID}.partial",  # another node's, in a shared home
            sif, "notes.partial"]
    for name in dead + kept:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(apptainer_rt.reap_partials(str(tmp_path))) == sorted(str(tmp_path / n) for n in dead)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert Path(apptainer_rt.partial_path(str(tmp_path / sif))).name == f"{sif}.{here}.{os.getpid()}.partial"


@pytest.mark.apptainer
def test_a_sigkill_during_a_conversion_leaves_nothing_the_next_run_keeps(
        pytester: pytest.Pytester, apptainer: Any, base_image: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL while a ``docker save | gzip`` archive is decompressed for ``apptainer build``: the
    next run on this host removes the partial files (gigabytes for real images), and converts anew."""
    saved = tmp_path / "base.tar"
    subprocess.run(["docker", "save", "-o", str(saved), base_image], check=True, timeout=300)
    packed = pytester.path / "base.tar.gz"
    with open(saved, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    sifs = cache / "containercheck" / "sif"
    args = ["--runtime", "apptainer", "--image", str(packed), "--runtime-arg=--userns", *ONLY_SYSTEM]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=pytester.path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        tick, deadline = threading.Event(), time.monotonic() + RUN_LIMIT
        while not (sifs.is_dir() and any(".partial" in e for e in os.listdir(sifs))):
            assert proc.poll() is None, proc.communicate(timeout=120)[0][-3000:]
            assert time.monotonic() < deadline, f"the conversion did not begin within {RUN_LIMIT:.0f} s"
            tick.wait(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=120)
        _kill_processes_naming(str(sifs))  # an 'apptainer build' it started has its own session: orphaned now
    left = [e for e in os.listdir(sifs) if ".partial" in e]
    assert left and all(f".{proc.pid}.partial" in e for e in left), left
    again = pytester.runpytest_subprocess(*args, "--matrix-json", "m.json", timeout=RUN_LIMIT)
    assert again.ret == 0, again.stdout.str()[-3000:]
    assert [e for e in os.listdir(sifs) if ".partial" in e] == []
    launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
    assert launch["archive"]["converted"] is True


def _kill_processes_naming(text: str) -> None:
    """SIGKILL every process whose command line holds *text*, and wait (60 s at most) until each is gone."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                pids.append(entry)
        except OSError:
            continue
    def running(proc: Path) -> bool:
        try:
            return (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
        except OSError:
            return False

    tick, deadline = threading.Event(), time.monotonic() + 60
    while any(running(p) for p in pids):
        assert time.monotonic() < deadline, "a killed process did not end within 60 s"
        tick.wait(0.05)
