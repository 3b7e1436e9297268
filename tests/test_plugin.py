"""The plugin as users run it (pytester), on the embedded default: --image host."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helpers import NO_GPU_HOST, ONLY_SYSTEM, SYSTEM, signal_when_ready

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")





def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _cells(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["row"], c["column"]): c for c in data["cells"]}


@NO_GPU_HOST
def test_host_run_prints_matrix_and_writes_json(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--matrix-json", "out/m.json", *ONLY_SYSTEM)
    result.assert_outcomes(passed=3, skipped=4)
    result.stdout.fnmatch_lines([
        "*containercheck matrix*",
        "check*host",
        "system.python*PASS *",  # inline, or a numbered note when this Python's path is long (a deep checkout)
        "system.gpu_devices*skip [[]*[]]",
        "system.nvidia_smi*skip [[]*[]]",
        "[[]*[]] host has no NVIDIA GPU*",
        "3 pass, 4 skip",
        "matrix JSON: out/m.json",
    ])
    # The reason four rows share is one note, whatever its number.
    out = result.stdout.str()
    notes = {m.group(1) for m in re.finditer(r"^system\.(?:gpu_devices|nvidia_smi|libcuda|nvidia_env) +skip \[(\d+)\]$",
                                             out, re.M)}
    assert len(notes) == 1 and re.search(rf"^\[{notes.pop()}\] host has no NVIDIA GPU", out, re.M), out
    data = _json(pytester.path / "out/m.json")
    assert (data["schema"], data["version"], data["complete"]) == ("containercheck-matrix", 1, True)
    assert data["summary"] == {"pass": 3, "fail": 0, "error": 0, "skip": 4}
    host = data["columns"][0]["host"]
    assert data["hosts"][host]["has_gpu"] is False
    cells = _cells(data)
    # This machine's own OS (Debian 12 or 13 in CI): read the way the system probe reads it.
    pretty = dict(line.rstrip("\n").split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                  if "=" in line).get("PRETTY_NAME", "").strip('"')
    assert cells[("system.os", "host")]["detail"].startswith(pretty or "unknown OS")
    assert cells[("system.python", "host")]["detail"].startswith("CPython 3.")
    assert cells[("system.python", "host")]["probes"]["system"]["status"] == "ok"


@NO_GPU_HOST
def test_require_gpu_turns_gpu_skips_into_host_failures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--require-gpu", "--matrix-json", "m.json", *ONLY_SYSTEM)
    result.assert_outcomes(passed=3, failed=4)
    cells = _cells(_json(pytester.path / "m.json"))
    gpu = cells[("system.gpu_devices", "host")]
    assert gpu["status"] == "fail" and gpu["fault"] == "host"
    assert gpu["detail"].startswith("--require-gpu: host has no NVIDIA GPU")
    assert "--gres=gpu" in gpu["fix"]


@NO_GPU_HOST
def test_user_tests_join_the_matrix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=textwrap.dedent("""
        import pytest

        @pytest.mark.containercheck_row("mine.echo")
        def test_echo(container):
            res = container.run(["python3", "-c", "print('hello from inside')"])
            assert res.ok and res.stdout.strip() == "hello from inside"
            container.note("echo works")

        def test_python_and_probe(container):
            assert container.python("print(6 * 7)").stdout.strip() == "42"
            facts = container.probe("system").facts
            assert facts["python"]["version_info"][0] == 3

        def test_fails_with_fix(container):
            container.fail("not good", fix="do better", fault="image")
    """))
    result = pytester.runpytest("--image", "host", "test_mine.py", "--matrix-json", "m.json", *ONLY_SYSTEM)
    result.assert_outcomes(passed=5, failed=1, skipped=4)
    result.stdout.fnmatch_lines(["mine.echo*PASS echo works", "python_and_probe*PASS",
                                 "FAIL  fails_with_fix on host: [image fault] not good", "      fix: do better"])
    cells = _cells(_json(pytester.path / "m.json"))
    assert {"mine.echo", "python_and_probe", "fails_with_fix", "system.python"} <= {r for r, _ in cells}


def test_container_run_refuses_shell_strings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_shell="""
        import pytest
        def test_it(container):
            with pytest.raises(TypeError, match="argv list"):
                container.run("echo hi; rm -rf /")
    """)
    pytester.runpytest("--image", "host", "test_shell.py", "--no-builtin-checks").assert_outcomes(passed=1)


def test_without_image_builtin_checks_are_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_it(container):\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no --image given (e.g. pytest --image host)*"])


@NO_GPU_HOST
def test_images_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ncontainercheck_images = host\ncontainercheck_probe_timeout = 120\n"
                     "containercheck_no_builtin_checks = true\n")
    pytester.runpytest("-c", "tox.ini", SYSTEM).assert_outcomes(passed=3, skipped=4)


def test_default_run_collects_the_builtin_suite_from_anywhere(pytester: pytest.Pytester) -> None:
    # A stray test file in the current directory is not collected by a bare --image run.
    pytester.makepyfile(test_stray="def test_stray():\n    raise SystemExit('must not run')\n")
    result = pytester.runpytest("--image", "host", "--matrix-json", "m.json")
    rows = {c["row"] for c in _json(pytester.path / "m.json")["cells"]}
    assert {"system.python", "system.os", "system.gpu_devices"} <= rows
    assert "stray" not in result.stdout.str()


@NO_GPU_HOST
def test_required_rows(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--require", "system.libcuda,torch.cpu", "--matrix-json", "m.json",
                                *ONLY_SYSTEM)
    assert result.ret == 1
    cells = _cells(_json(pytester.path / "m.json"))
    assert cells[("system.libcuda", "host")]["status"] == "fail"
    assert cells[("torch.cpu", "host")]["detail"].startswith("required row did not run")  # not collected
    result.stdout.fnmatch_lines(["*required row 'system.libcuda' was skipped*"])


def test_user_probe_dir_and_timeout_is_an_error_cell(pytester: pytest.Pytester) -> None:
    probes = pytester.mkdir("myprobes")
    (probes / "hang.py").write_text("def run(params, ctx):\n    import time\n    time.sleep(600)\n")
    (probes / "answer.py").write_text("def run(params, ctx):\n    return {'answer': params['q'] * 2}\n")
    pytester.makepyfile(test_p="""
        def test_answer(container):
            assert container.facts("answer", q=21) == {"answer": 42}

        def test_hang(container):
            container.facts("hang")
    """)
    result = pytester.runpytest("--image", "host", "test_p.py", "--no-builtin-checks", "--probe-dir", "myprobes",
                                "--probe-timeout", "2", "--matrix-json", "m.json")
    result.assert_outcomes(passed=1, failed=1)
    cell = _cells(_json(pytester.path / "m.json"))[("hang", "host")]
    assert cell["status"] == "error"
    assert "probe hang timed out after" in cell["detail"]


@pytest.mark.parametrize(("args", "message"), [
    (["--image", "docker://Bad Name"], "not a valid image reference"),
    (["--image", "img;rm -rf /"], "not a valid image reference"),
    (["--image", "ftp://x"], "unknown prefix 'ftp://'"),
    (["--image", "x", "--runtime", "nope"], "--runtime 'nope': choose one of auto, docker"),
    (["--image", "missing.sif"], "no such file 'missing.sif'"),
    (["--image", "host", "--probe-timeout", "-1"], "--probe-timeout '-1': give a number of seconds > 0"),
    (["--image", "host", "--gpus", "lots"], "--gpus 'lots': use 'all', 'none'"),
    (["--image", "host", "--host-python", "/nonexistent/python"], "not an executable file"),
    (["--image", "host", "--container-env", "CC_SURELY_UNSET_VAR"], "not set on the host; give NAME=VALUE"),
    (["--image", "apptainer://"], "missing .sif path"),
])
def test_bad_input_is_a_one_line_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert message in err
    assert "Traceback" not in err + result.stdout.str()
    assert [ln for ln in err.splitlines() if ln.startswith("ERROR:")], err


def test_directory_as_image(pytester: pytest.Pytester) -> None:
    pytester.mkdir("somedir")
    result = pytester.runpytest_subprocess("--image", "somedir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is a directory" in result.stderr.str()


def test_same_matrix_with_and_without_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_extra="""
        import pytest
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(container, n):
            container.note(f"n={n}")
    """)
    args = ["--image", "host", "--image", f"host://{__import__('sys').executable}", "test_extra.py", *ONLY_SYSTEM]
    r0 = pytester.runpytest_subprocess(*args, "-p", "no:benchmark", "--matrix-json", "n0.json")
    r2 = pytester.runpytest_subprocess(*args, "-p", "no:benchmark", "-n", "2", "--matrix-json", "n2.json")
    assert r0.ret == r2.ret == 0, r2.stdout.str()[-3000:]

    def key(path: str) -> list[tuple[str, str, str, str]]:
        return sorted((c["row"], c["column"], c["status"], c["detail"]) for c in _json(pytester.path / path)["cells"])

    assert key("n0.json") == key("n2.json")
    assert len(key("n0.json")) == 2 * (7 + 3)


#: Two probes that shake hands through files: each says it started, waits for the other's
#: start, says it saw it, and waits for the other to have seen it too.  Run together, both
#: complete the handshake at once (WAIT is never reached); run one after the other, neither
#: can, whatever the machine's load: the first gives up after WAIT, before the second starts.
HANDSHAKE = """\
def run(params, ctx):
    import os, time
    d, me, other = DIR, ME, OTHER

    def wait_for(name):
        deadline = time.time() + WAIT
        while not os.path.exists(os.path.join(d, name)):
            if time.time() > deadline:
                return False
            time.sleep(0.01)
        return True

    open(os.path.join(d, me + ".started"), "w").close()
    if not wait_for(other + ".started"):
        return {"overlap": False}
    open(os.path.join(d, me + ".saw"), "w").close()
    return {"overlap": wait_for(other + ".saw")}
"""


@pytest.mark.parametrize(("jobs", "overlap", "wait"), [("2", True, 300), ("1", False, 1)])
def test_declared_probes_run_together(pytester: pytest.Pytester, jobs: str, overlap: bool, wait: int) -> None:
    probes = pytester.mkdir("p")
    hands = pytester.mkdir("hands")
    for me, other in (("a", "b"), ("b", "a")):
        (probes / f"nap_{me}.py").write_text(
            HANDSHAKE.replace("DIR", repr(str(hands))).replace("ME", repr(me)).replace("OTHER", repr(other))
            .replace("WAIT", str(wait)))
    pytester.makepyfile(test_naps="""
        import json, pytest

        @pytest.mark.containercheck_probe("nap_a")
        def test_a(container):
            container.note(json.dumps(container.facts("nap_a")))

        @pytest.mark.containercheck_probe("nap_b", weight=5)
        def test_b(container):
            container.note(json.dumps(container.facts("nap_b")))
    """)
    result = pytester.runpytest("--image", "host", "test_naps.py", "--no-builtin-checks", "--probe-dir", "p",
                                "--probe-jobs", jobs, "--matrix-json", "m.json")
    result.assert_outcomes(passed=2)
    cells = _cells(_json(pytester.path / "m.json"))
    assert [json.loads(cells[(r, "host")]["detail"])["overlap"] for r in ("a", "b")] == [overlap, overlap]


def test_unknown_planned_probe_is_an_error_cell_not_a_hang(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.containercheck_probe("no_such_probe")
        def test_bad(container):
            container.facts("no_such_probe")

        @pytest.mark.containercheck_probe("system")
        def test_ok(container):
            assert container.facts("system")["python"]
    """)
    result = pytester.runpytest("--image", "host", "test_bad.py", "--no-builtin-checks", "--probe-jobs", "2",
                                "--matrix-json", "m.json")
    result.assert_outcomes(passed=1, failed=1)
    cell = _cells(_json(pytester.path / "m.json"))[("bad", "host")]
    assert cell["status"] == "error" and cell["detail"].startswith("unknown probe 'no_such_probe'")


def test_each_image_runs_in_one_xdist_worker(pytester: pytest.Pytester) -> None:
    # Under -n 2 every check of one image must run in the same worker, so the image is
    # started once; the worker's pid goes into each cell.
    pytester.makepyfile(test_pid="""
        import os, pytest

        @pytest.mark.parametrize("n", range(6))
        def test_where(container, n):
            container.note(str(os.getpid()))
    """)

    result = pytester.runpytest_subprocess("--image", "host", "--image", f"host://{sys.executable}", "test_pid.py",
                                           "--no-builtin-checks", "-n", "2", "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-2000:]
    pids: dict[str, set[str]] = {}
    for cell in _json(pytester.path / "m.json")["cells"]:
        pids.setdefault(cell["column"], set()).add(cell["detail"])
    assert len(pids) == 2 and all(len(p) == 1 for p in pids.values()), pids


#: A run's own clean-up that lasts until the test has sent its signal (then a little longer, so an
#: unheld signal would land in it): ``started`` when it begins, ``cleaned up`` when it ends.
SLOW_CLEANUP = """
import pathlib, threading

def pytest_sessionfinish(session):
    pathlib.Path("started").write_text("")
    tick = threading.Event()
    for _ in range(2000):
        if pathlib.Path("signalled").exists():
            break
        tick.wait(0.05)
    tick.wait(0.5)
    pathlib.Path("cleaned up").write_text("")
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_clean_up_is_held_off(pytester: pytest.Pytester, sig: str) -> None:
    """A SIGTERM (Slurm's time limit, a CI cancel) or a second Ctrl-C while the run cleans up waits until
    the clean-up is done: the run ends as it would have, without a traceback."""
    pytester.makeconftest(SLOW_CLEANUP)
    pytester.makepyfile(test_one="def test_one(container):\n    container.note('ran')\n")
    code, out, _ = signal_when_ready(pytester.path, ["-p", "no:cacheprovider", "--image", "host", "--no-builtin-checks",
                                                   "test_one.py"], "started", sig, "the clean-up")
    assert code == 0, out[-3000:]
    assert (pytester.path / "cleaned up").exists(), out[-3000:]
    assert "1 passed" in out and "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
