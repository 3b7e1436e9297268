"""The probe protocol: reading results, and running real probes on the host runtime."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import probing
from pytest_containercheck.engine.probing import (
    PID_MARKER,
    RESULT_MARKER,
    ProbeResult,
    describe_exit,
    find_python,
    parse_result,
    run_probe,
)
from pytest_containercheck.engine.runtimes import LaunchOptions, Session, get_runtime
from pytest_containercheck.engine.runtimes.base import HEAD_LIMIT, TAIL_LIMIT, ExecResult, run_bounded
from pytest_containercheck.engine.targets import parse_target

NONCE = "0123456789abcdef"


def result_line(nonce: str = NONCE, **envelope: Any) -> str:
    """What _envelope.main prints last."""
    body = {"v": 1, "status": "ok", "facts": {}, "error": None, "timings": {}, "warnings": [], "artifacts": {}}
    body.update(envelope)
    return f"{RESULT_MARKER} {nonce} {json.dumps(body, sort_keys=True)}"


def exec_result(
    stdout: bytes | str = b"", stderr: bytes | str = b"", returncode: int | None = 0, timed_out: bool = False
) -> ExecResult:
    out = stdout.encode() if isinstance(stdout, str) else stdout
    err = stderr.encode() if isinstance(stderr, str) else stderr
    return ExecResult(["python3", "-"], returncode, out, err, duration=1.5, timed_out=timed_out)


# -- parse_result ---------------------------------------------------------------------------


def test_result_line_with_the_right_nonce() -> None:
    line = result_line(facts={"answer": 42}, timings={"total": 0.5}, artifacts={"png": "aGk="})
    res = parse_result("p", exec_result("\n" + line + "\n", f"{PID_MARKER} {NONCE} 123\nwarning: x\n"), NONCE)
    assert res.ok and res.status == "ok"
    assert res.facts == {"answer": 42}
    assert res.timings == {"total": 0.5}
    assert res.artifact("png") == b"hi"
    assert res.stdout == ""
    assert res.stderr == "warning: x"  # the pid line is protocol, not evidence
    assert (res.returncode, res.duration, res.summary()) == (0, 1.5, "")


def test_forged_marker_with_wrong_nonce_is_ignored() -> None:
    forged = result_line(nonce="f" * 16, facts={"forged": True})
    real = result_line(facts={"real": True})
    res = parse_result("p", exec_result(f"{forged}\n{real}\n"), NONCE)
    assert res.facts == {"real": True}
    assert res.stdout == forged  # kept as evidence, never parsed


def test_forged_marker_alone_gives_no_result() -> None:
    res = parse_result("p", exec_result(result_line(nonce="f" * 16, facts={"forged": True}), returncode=0), NONCE)
    assert res.status == "no-result" and res.facts == {}


def test_banner_on_stdout_is_evidence() -> None:
    banner = "==========\n== CUDA ==\n==========\nCUDA Version 12.4"
    res = parse_result("p", exec_result(f"{banner}\n{result_line(facts={'a': 1})}\n"), NONCE)
    assert res.ok and res.facts == {"a": 1}
    assert res.stdout == banner


def test_invalid_utf8_does_not_break_parsing() -> None:
    out = b"\xff\xfe garbage \xc3\x28\n" + result_line(facts={"a": 1}).encode() + b"\n"
    res = parse_result("p", exec_result(out, b"\x80\x81 stderr"), NONCE)
    assert res.ok and res.facts == {"a": 1}
    assert "\ufffd" in res.stdout and "garbage" in res.stdout
    assert res.stderr.endswith(" stderr")


def test_probe_error_envelope() -> None:
    line = result_line(status="error", error="ImportError: No module named 'torch'", traceback="Traceback ...")
    res = parse_result("torch_device", exec_result(line), NONCE)
    assert res.status == "error" and not res.ok
    assert res.error == "ImportError: No module named 'torch'"
    assert res.traceback == "Traceback ..."
    assert res.summary() == "probe torch_device raised ImportError: No module named 'torch'"


@pytest.mark.parametrize("returncode", [-11, 139])
def test_segfault_without_result_is_a_crash(returncode: int) -> None:
    res = parse_result("p", exec_result("partial output", "Segmentation fault", returncode), NONCE)
    assert res.status == "crashed"
    assert describe_exit(returncode) == "killed by signal 11 (SIGSEGV)"
    assert res.summary() == "probe p crashed (killed by signal 11 (SIGSEGV))"
    assert res.stdout == "partial output"


def test_describe_exit() -> None:
    assert describe_exit(137) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-6) == "killed by signal 6 (SIGABRT)"
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(None) == "no exit status"


@pytest.mark.parametrize("returncode", [142, -14])
def test_sigalrm_watchdog_is_a_timeout(returncode: int) -> None:
    res = parse_result("p", exec_result("", "", returncode), NONCE)
    assert res.status == "timeout"
    assert res.summary() == "probe p timed out after 2 s (killed)"


def test_host_side_timeout() -> None:
    # Even a complete result line does not count once the host killed the process.
    res = parse_result("p", exec_result(result_line(), returncode=None, timed_out=True), NONCE)
    assert res.status == "timeout" and res.facts == {}


def test_plain_exit_without_result() -> None:
    res = parse_result("p", exec_result("", "Traceback...\nSyntaxError: invalid syntax\n", 1), NONCE)
    assert res.status == "no-result"
    assert res.summary() == "probe p exited 1 without a result: SyntaxError: invalid syntax"


# -- real probes on the host runtime ----------------------------------------------------------


@pytest.fixture
def host_session() -> Iterator[Session]:
    session = get_runtime("host").start(parse_target("host"), LaunchOptions(run_id="t"))
    yield session
    session.stop()


@pytest.fixture
def python(host_session: Session) -> probing.PythonInfo:
    return find_python(host_session, host_session.python_candidates(["python3", "python"]))


def add_probe(monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """Make *name* a probe for this test only (probe_source is lru_cached: wrap, don't clear)."""
    real = probing.probe_source

    def probe_source(probe: str, *args: Any, **kwargs: Any) -> str:
        return source if probe == name else real(probe, *args, **kwargs)

    monkeypatch.setattr(probing, "probe_source", probe_source)


def processes_with(marker: str) -> list[str]:
    """Pids of live processes whose command line contains *marker* (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(entry.name)
    return found


def test_find_python_on_host(python: probing.PythonInfo) -> None:
    assert python.command == sys.executable
    assert python.version == tuple(sys.version_info[:3])


def test_system_probe_on_host(host_session: Session, python: probing.PythonInfo) -> None:
    res = run_probe(host_session, python, "system", {}, timeout=120)
    assert res.ok, res.summary()
    assert res.facts["python"]["version_info"] == list(sys.version_info[:3])
    assert res.facts["python"]["executable"] == sys.executable
    assert res.facts["user"]["uid"] == os.getuid()
    assert "total" in res.timings
    assert res.returncode == 0


HANG = """
def run(params, ctx):
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", params["marker"]])
    time.sleep(600)
"""

DEAF = """
def run(params, ctx):
    import signal, subprocess, sys, time
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # disable the in-image watchdog
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", params["marker"]])
    time.sleep(600)
"""


@pytest.mark.parametrize("source", [HANG, DEAF], ids=["watchdog", "host-timeout"])
def test_hanging_probe_is_killed_with_its_children(
    host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    add_probe(monkeypatch, "hang", source)
    marker = f"containercheck-test-hang-{secrets.token_hex(6)}"
    timeout = 2.0
    res = run_probe(host_session, python, "hang", {"marker": marker}, timeout=timeout)
    try:
        assert res.status == "timeout", (res.status, res.returncode, res.stderr)
        assert res.duration < timeout + 10
        deadline = time.monotonic() + 5
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with(marker) == []
    finally:
        for pid in processes_with(marker):  # never leave our own sleeper behind
            os.kill(int(pid), 9)


def test_probe_result_survives_huge_output(
    host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_probe(monkeypatch, "noisy", (
        "def run(params, ctx):\n"
        "    import sys\n"
        "    sys.stdout.write('x' * (20 * 1024 * 1024))\n"
        "    return {'done': True}\n"
    ))  # fmt: skip
    res: ProbeResult = run_probe(host_session, python, "noisy", {}, timeout=120)
    assert res.ok and res.facts == {"done": True}
    assert "bytes dropped by containercheck" in res.stdout


def test_unknown_probe_is_a_probe_error(host_session: Session, python: probing.PythonInfo) -> None:
    with pytest.raises(probing.ProbeError, match=r"unknown probe 'no_such_probe'; available: .*system"):
        run_probe(host_session, python, "no_such_probe", {}, timeout=10)


# -- bundles: probes sharing their heavy imports (probes/_envelope.py, bundle) ------------------


SHARER = """
SHARED_IMPORTS = ("{mod}",)

def run(params, ctx):
    import os, sys
    print("stdout of " + params["tag"])
    sys.stderr.write("stderr of " + params["tag"] + "\\n")
    with ctx.capture_warnings():
        import {mod}
    return {{"imported_in": {mod}.PID, "me": os.getpid(), "tag": params["tag"],
             "warnings": [w["message"] for w in ctx.warnings]}}
"""

MODULES = {
    "clean": "import os\nPID = os.getpid()\n",
    "warns": "import os, warnings\nwarnings.warn('noisy import', DeprecationWarning)\nPID = os.getpid()\n",
    "prints": "import os, sys\nsys.stderr.write('banner at import\\n')\nPID = os.getpid()\n",
    "raises": "raise ImportError('this module is broken')\n",
    "hangs": "import os, time\ntime.sleep(600)\nPID = os.getpid()\n",
}


@pytest.fixture
def shared_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A module on the host Python's path that records which process imported it."""
    kind = request.param
    name = f"ccshared_{kind}_{secrets.token_hex(3)}"
    (tmp_path / f"{name}.py").write_text(MODULES[kind])
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return name


def _sharers(monkeypatch: pytest.MonkeyPatch, mod: str, names: tuple[str, ...] = ("share_a", "share_b")) -> None:
    real = probing.probe_source
    source = SHARER.format(mod=mod)

    def probe_source(probe: str, *args: Any, **kwargs: Any) -> str:
        return source if probe in names else real(probe, *args, **kwargs)

    monkeypatch.setattr(probing, "probe_source", probe_source)


@pytest.mark.parametrize("shared_module", ["clean"], indirect=True)
def test_bundle_imports_once_and_keeps_each_probes_output_apart(
        host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch, shared_module: str) -> None:
    _sharers(monkeypatch, shared_module)
    assert probing.shared_imports("share_a") == (shared_module,)
    a, b = probing.run_bundle(host_session, python, [("share_a", {"tag": "A"}), ("share_b", {"tag": "B"})],
                              probing.shared_imports("share_a"), timeout=60)
    assert a.ok and b.ok, (a.summary(), a.stderr, b.summary(), b.stderr)
    # Imported once, in the zygote: neither probe's own process, the same for both.
    assert a.facts["imported_in"] == b.facts["imported_in"]
    assert a.facts["imported_in"] not in (a.facts["me"], b.facts["me"]) and a.facts["me"] != b.facts["me"]
    assert a.bundle == b.bundle == {"with": ["share_a", "share_b"], "shared_imports": [shared_module], "shared": True}
    # Each probe's evidence is its own; no protocol line is left in it.
    assert (a.stdout, b.stdout) == ("stdout of A", "stdout of B")
    assert (a.stderr, b.stderr) == ("stderr of A", "stderr of B")
    assert a.started and b.started and a.returncode == b.returncode == 0 and 0 < a.duration < 60


@pytest.mark.parametrize("shared_module", ["warns", "prints", "raises"], indirect=True)
def test_bundle_with_a_noisy_import_lets_each_probe_import_for_itself(
        host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch, shared_module: str) -> None:
    """An import that warns, prints or fails is not shared: each probe must see that itself."""
    _sharers(monkeypatch, shared_module)
    a, b = probing.run_bundle(host_session, python, [("share_a", {"tag": "A"}), ("share_b", {"tag": "B"})],
                              (shared_module,), timeout=60)
    assert a.bundle["shared"] is False and b.bundle["shared"] is False
    if "raises" in shared_module:
        for r in (a, b):
            assert r.status == "error" and "this module is broken" in (r.error or ""), r.summary()
        return
    assert a.ok and b.ok, (a.summary(), b.summary())
    for r in (a, b):
        assert r.facts["imported_in"] == r.facts["me"]  # its own import
    if "warns" in shared_module:
        assert a.facts["warnings"] == b.facts["warnings"] == ["noisy import"]
    else:
        assert "banner at import" in a.stderr and "banner at import" in b.stderr


@pytest.mark.parametrize("shared_module", ["hangs"], indirect=True)
def test_bundle_with_a_hanging_import_times_each_probe_out_once(
        host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch, shared_module: str) -> None:
    """The zygote's import hangs: its own watchdog ends it after the probe timeout, and each probe
    then imports for itself and times out under its own watchdog, not under the bundle's outer
    limit (two probes x (timeout + 5) s)."""
    _sharers(monkeypatch, shared_module)
    t0 = time.monotonic()
    a, b = probing.run_bundle(host_session, python, [("share_a", {"tag": "A"}), ("share_b", {"tag": "B"})],
                              (shared_module,), timeout=2)
    assert (a.status, b.status) == ("timeout", "timeout"), (a.summary(), b.summary())
    assert a.started and b.started and a.bundle["shared"] is False
    assert time.monotonic() - t0 < 3 * 3 + 5  # zygote ~3 s, then ~3 s per probe


CRASH = """
SHARED_IMPORTS = ("json",)

def run(params, ctx):
    import os, signal
    os.kill(os.getpid(), signal.SIGSEGV)
"""

HANG_SHARED = """
SHARED_IMPORTS = ("json",)

def run(params, ctx):
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", params["marker"]])
    time.sleep(600)
"""

FINE = """
SHARED_IMPORTS = ("json",)

def run(params, ctx):
    import os
    alive = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if params["marker"].encode() in f.read():
                    alive.append(pid)
        except (OSError, ValueError):
            pass
    return {"fine": True, "left_by_hang": alive}
"""


def test_bundle_survives_a_crash_and_a_timeout_and_kills_what_the_timed_out_probe_left(
        host_session: Session, python: probing.PythonInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = {"crash": CRASH, "hang": HANG_SHARED, "fine": FINE}
    real = probing.probe_source
    monkeypatch.setattr(probing, "probe_source",
                        lambda probe, *a, **k: sources[probe] if probe in sources else real(probe, *a, **k))
    marker = f"containercheck-test-bundle-hang-{secrets.token_hex(6)}"
    try:
        crash, hang, fine = probing.run_bundle(
            host_session, python, [("crash", {}), ("hang", {"marker": marker}), ("fine", {"marker": marker})],
            ("json",), timeout=2)
        assert crash.status == "crashed" and crash.returncode == -11, crash.summary()
        assert hang.status == "timeout", (hang.status, hang.returncode, hang.stderr)
        # The hung probe's child was killed before the next probe began.
        assert fine.ok and fine.facts == {"fine": True, "left_by_hang": []}, fine.facts
        assert processes_with(marker) == []
    finally:
        for pid in processes_with(marker):
            os.kill(int(pid), 9)


# -- run_bounded ------------------------------------------------------------------------------


def test_run_bounded_keeps_memory_bounded() -> None:
    code = "import sys; w = sys.stdout.buffer.write; w(b'HEAD-OK' + b'x' * 50_000_000); w(b'\\nTAIL-OK\\n')"
    res = run_bounded([sys.executable, "-c", code], timeout=120)
    assert res.returncode == 0 and not res.timed_out
    assert res.dropped > 0
    assert res.dropped == 50_000_000 + len(b"HEAD-OK\nTAIL-OK\n") - HEAD_LIMIT - TAIL_LIMIT
    assert res.stdout.startswith(b"HEAD-OK")
    assert res.stdout.endswith(b"x\nTAIL-OK\n")
    assert len(res.stdout) < HEAD_LIMIT + TAIL_LIMIT + 100


def test_run_bounded_missing_program() -> None:
    res = run_bounded(["/nonexistent/containercheck-program"])
    assert res.returncode == 127
    assert res.stderr == b"/nonexistent/containercheck-program: not found\n"


def test_run_bounded_passes_stdin_and_env() -> None:
    code = "import os, sys; sys.stdout.write(sys.stdin.read().upper() + os.environ['CC_TEST'])"
    res = run_bounded([sys.executable, "-c", code], stdin=b"abc", env={**os.environ, "CC_TEST": "!"}, timeout=60)
    assert (res.returncode, res.stdout, res.dropped) == (0, b"ABC!", 0)


def test_run_bounded_timeout_kills_the_process_group() -> None:
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n")
    res = run_bounded([sys.executable, "-c", code], timeout=2)
    assert res.timed_out and res.returncode is None
    child = int(res.stdout.split()[0])
    for _ in range(100):  # SIGKILLed with its group; gone once reaped (it was re-parented)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the timed-out command's child {child} still runs")


def test_run_bounded_is_woken_by_the_exit_not_by_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a pidfd, waiting with a timeout never sleeps in a poll loop (Popen.wait(timeout)
    sleeps up to 50 ms between checks: an exit noticed that late delays every docker call)."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open on this Python")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"polled: time.sleep({seconds})")

    monkeypatch.setattr(time, "sleep", no_sleep)
    res = run_bounded([sys.executable, "-c", "import time; time.perf_counter(); print('done')"], timeout=60)
    assert (res.returncode, res.stdout, res.timed_out) == (0, b"done\n", False)
