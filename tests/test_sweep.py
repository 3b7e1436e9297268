"""The hostile-user sweep, as a table: one case per bad input or fault (issue 14).

Every case runs pytest (or ``containercheck``) the way a user would, in a fresh directory,
and asserts the same four things: the exit code; one line that says what went wrong (a
usage error is exactly one ``ERROR:`` line naming the fix, never a traceback); no container
of the run left (by the run's owner label); and no process of the run left (every process
the run started carries a marker in its environment, and none may outlive it).

Add a row here when you add an option: its bad values get the same treatment.  Waits are
for events (a file a check writes, the process's exit), never for a length of time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import ONLY_SYSTEM, RUN_LIMIT, owned_by

Check = Callable[[Path, str], None]
"""Extra assertions on a finished case: its directory and its output (stdout + stderr)."""


@dataclasses.dataclass
class Case:
    """One hostile use: what is run, what it must end with."""

    id: str
    args: list[str]
    rc: int
    line: str
    """A substring of exactly one output line (for exit 4: the one ``ERROR:`` line)."""
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    """Files written into the run's directory first (``name: text``; ``fifo:`` makes a FIFO)."""
    cli: bool = False
    """Run ``containercheck`` instead of pytest."""
    docker: bool = False
    interrupt: signal.Signals | None = None
    """Sent once the file ``started`` appears in the run's directory (a check writes it); the
    file ``signalled`` is written right after."""
    check: Check | None = None


def _usage(id: str, args: list[str], line: str, files: dict[str, str] | None = None, *,
           docker: bool = False) -> Case:
    return Case(id, args, int(pytest.ExitCode.USAGE_ERROR), line, files or {}, docker=docker)


def _cli(id: str, args: list[str], line: str, files: dict[str, str] | None = None) -> Case:
    """A usage error of ``containercheck``: exit 4, as pytest's (docs/reference/exit-codes.md)."""
    return Case(id, args, int(pytest.ExitCode.USAGE_ERROR), line, files or {}, cli=True)


MATRIX_OK = json.dumps({"schema": "containercheck-matrix", "version": 1, "cells": []})


def _matrix_file(**fields: Any) -> str:
    return json.dumps({"schema": "containercheck-matrix", "version": 1, **fields})


CELL = {"row": "r", "column": "c", "host": "h", "status": "pass"}

# -- item 1: an interrupted check is not a pass ----------------------------------------------------

INTERRUPTED_CHECKS = """
import os, pathlib

def test_first(container):
    container.note("done")

def test_slow(container):
    pathlib.Path("started").write_text("")
    container.python("import time; time.sleep(3600)")
"""


def _interrupted(path: Path, out: str) -> None:
    data = json.loads((path / "m.json").read_text())
    assert data["complete"] is False
    status = {c["row"]: c["status"] for c in data["cells"]}
    assert status == {"first": "pass", "slow": "interrupted"}, status
    slow = next(c for c in data["cells"] if c["row"] == "slow")
    assert slow["detail"].startswith("not run to the end: the run was interrupted")
    # pytest's count and the matrix's agree: one pass each (the interrupted check is not one)
    assert data["summary"]["pass"] == 1 and data["summary"]["interrupted"] == 1
    assert "1 passed" in out and "2 passed" not in out


# -- item 2: nothing is started once teardown has begun ----------------------------------------------

PLANNED_PROBES = {
    "probes/cc_fast.py": "def run(params, ctx):\n    return {'ok': True}\n",
    # Still running when the run ends: its container is removed under it, and that must
    # not make the plugin start a new one.
    "probes/cc_slow.py": "def run(params, ctx):\n    import time\n    time.sleep(3600)\n",
    "test_planned.py": """
import pathlib, pytest

# cc_slow is planned (declared) but never read: a probe thread still runs it at teardown.
@pytest.mark.containercheck_probe("cc_slow", weight=9)
@pytest.mark.containercheck_probe("cc_fast")
def test_fast(container):
    container.facts("cc_fast")
    pathlib.Path("started").write_text("")

@pytest.mark.containercheck_probe("cc_deselected", weight=9)
def test_deselected(container):
    container.facts("cc_deselected")
""",
    # The same, but the check then waits in the image until the run is interrupted.
    "test_planned_hold.py": """
import pathlib, pytest

@pytest.mark.containercheck_probe("cc_slow", weight=9)
@pytest.mark.containercheck_probe("cc_fast")
def test_fast_then_hold(container):
    container.facts("cc_fast")
    pathlib.Path("started").write_text("")
    container.python("import time; time.sleep(3600)")
""",
    "probes/cc_deselected.py": "def run(params, ctx):\n    import time\n    time.sleep(3600)\n",
    # Before pytest exits, wait for the probe threads to finish: a restart they would make
    # after teardown then happens for certain (and is seen), instead of racing the exit.
    "conftest.py": """
import threading, pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    for t in threading.enumerate():
        if t.name.startswith("containercheck-probe"):
            t.join(timeout=300)
""",
}

# A signal while the run cleans up (a second Ctrl-C, the SIGTERM after it): held off until
# every container is removed, instead of cutting a `docker rm` short with a traceback.
SIGNAL_IN_CLEANUP = {
    "test_one.py": "def test_one(container):\n    container.note('ran')\n",
    "conftest.py": """
import pathlib, threading

def pytest_sessionfinish(session):
    pathlib.Path("started").write_text("")
    tick = threading.Event()
    for _ in range(6000):  # until the test has sent its signal
        if pathlib.Path("signalled").exists():
            return
        tick.wait(0.05)
""",
}

# -- item 4: a report that cannot be written at the end ---------------------------------------------

SABOTAGE = {"test_sabotage.py": """
import os

def test_sabotage(container):
    os.mkdir("m.json")  # the path was fine at start; now the JSON cannot be written
    container.note("sabotaged")
"""}


def _others_written(path: Path, out: str) -> None:
    assert (path / "m.md").is_file(), "the Markdown report was lost with the JSON"
    assert "containercheck matrix" in out and "sabotage" in out, "the terminal matrix was lost"


def _not_overwritten(path: Path, out: str) -> None:
    assert (path / "m.json").read_text() == "keep me"


# -- item 6: the runtime's own error line ------------------------------------------------------------


def _runtime_line(path: Path, out: str) -> None:
    cells = json.loads((path / "m.json").read_text())["cells"]
    assert cells and all(c["status"] == "error" for c in cells)
    detail = cells[0]["detail"]
    assert detail == 'docker could not start the image: invalid argument "abc" for "-m, --memory" flag: ' \
                     "invalid size: 'abc'", detail
    assert "--runtime-arg" in cells[0]["fix"]


# -- item 12: strict JSON ------------------------------------------------------------------------------

NAN = {
    "probes/cc_nan.py": "def run(params, ctx):\n    return {'nan': float('nan'), 'inf': float('-inf'), 'x': 1.5}\n",
    "test_nan.py": """
def test_nan(container):
    facts = container.facts("cc_nan")
    container.evidence("measured", facts)
    container.note("measured")
""",
}


def _strict_json(path: Path, out: str) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: bare {constant}")

    data = json.loads((path / "m.json").read_text(), parse_constant=refuse)
    measured = data["cells"][0]["evidence"]["measured"]
    assert measured == {"nan": None, "inf": None, "x": 1.5}


CONFTEST_FIXTURE = "import pytest\n\n@pytest.fixture\ndef container():\n    return 'mine'\n"
SUB_FIXTURE = "import pytest\n\n@pytest.fixture(name='container')\ndef mine():\n    return 'mine'\n"

CASES: list[Case] = [
    # item 1
    Case("sigint-mid-check", ["--image", "{base}", "test_slow.py", "--no-builtin-checks", "--matrix-json", "m.json"],
         int(pytest.ExitCode.INTERRUPTED), "(INCOMPLETE: the run was interrupted)",
         {"test_slow.py": INTERRUPTED_CHECKS}, docker=True, interrupt=signal.SIGINT, check=_interrupted),
    Case("sigterm-mid-check", ["--image", "{base}", "test_slow.py", "--no-builtin-checks", "--matrix-json", "m.json"],
         int(pytest.ExitCode.INTERRUPTED), "(INCOMPLETE: the run was interrupted)",
         {"test_slow.py": INTERRUPTED_CHECKS}, docker=True, interrupt=signal.SIGTERM, check=_interrupted),
    # item 2
    Case("planned-probe-running-at-teardown-under-k",
         ["--image", "{base}", "test_planned.py", "--no-builtin-checks", "--probe-dir", "probes",
          "--probe-jobs", "2", "-k", "fast", "--matrix-json", "m.json"],
         int(pytest.ExitCode.OK), "1 passed", PLANNED_PROBES, docker=True),
    Case("interrupt-while-a-planned-probe-runs",
         ["--image", "{base}", "test_planned_hold.py", "--no-builtin-checks", "--probe-dir", "probes",
          "--probe-jobs", "2", "--matrix-json", "m.json"],
         int(pytest.ExitCode.INTERRUPTED), "(INCOMPLETE: the run was interrupted)", PLANNED_PROBES, docker=True,
         interrupt=signal.SIGINT),
    Case("signal-during-cleanup",
         ["--image", "{base}", "test_one.py", "--no-builtin-checks", "--matrix-json", "m.json"],
         int(pytest.ExitCode.OK), "1 passed", SIGNAL_IN_CLEANUP, docker=True, interrupt=signal.SIGINT),
    # item 3
    _usage("fifo-as-image", ["--image", "pipe"], "--image 'pipe' is a named pipe (FIFO), not an image file",
           {"pipe": "fifo:"}),
    _usage("fifo-named-sif", ["--image", "pipe.sif"], "--image 'pipe.sif' is a named pipe (FIFO)",
           {"pipe.sif": "fifo:"}),
    _usage("fifo-with-apptainer-prefix", ["--image", "apptainer://pipe"],
           "'pipe' is a named pipe (FIFO), not a .sif file", {"pipe": "fifo:"}),
    _usage("device-as-sif", ["--image", "apptainer:///dev/zero"], "'/dev/zero' is a character device"),
    # item 4
    _usage("matrix-json-is-a-directory", ["--image", "host", "--matrix-json", "out"],
           "--matrix-json out: is a directory; give the path of a file to write", {"out/keep": ""}),
    _usage("matrix-json-under-a-file", ["--image", "host", "--matrix-json", "afile/m.json"],
           "afile is a file, not a directory", {"afile": ""}),
    _usage("matrix-json-is-a-fifo", ["--image", "host", "--matrix-json", "pipe"],
           "--matrix-json pipe: is a named pipe (FIFO)", {"pipe": "fifo:"}),
    _usage("md-same-as-json", ["--image", "host", "--matrix-json", "m.json", "--matrix-md", "./m.json"],
           "--matrix-md ./m.json: --matrix-json writes the same file"),
    _usage("html-same-as-json", ["--image", "host", "--matrix-json", "m.json", "--matrix-html", "m.json"],
           "--matrix-html m.json: --matrix-json writes the same file"),
    _usage("junitxml-same-as-json", ["--image", "host", "--matrix-json", "m.json", "--junitxml", "m.json"],
           "--junitxml m.json: --matrix-json writes the same file"),
    Case("report-unwritable-at-the-end",
         ["--image", "host", "test_sabotage.py", "--no-builtin-checks", "--matrix-json", "m.json",
          "--matrix-md", "m.md"], int(pytest.ExitCode.TESTS_FAILED),
         "ERROR: --matrix-json m.json: could not write it (Is a directory); written: --matrix-md m.md",
         SABOTAGE, check=_others_written),
    Case("collect-only-keeps-the-matrix", ["--image", "host", "--collect-only", "--matrix-json", "m.json"],
         int(pytest.ExitCode.OK), "--collect-only: no matrix file written", {"m.json": "keep me"},
         check=_not_overwritten),
    # item 5: every numeric option, on the command line and in the ini file
    *[_usage(f"probe-timeout-{v}", ["--image", "host", f"--probe-timeout={v}"],
             f"--probe-timeout {v!r}: give a number of seconds > 0 and at most 86400")
      for v in ("nan", "inf", "-inf", "1e400", "0", "-1", "1e9", "abc", "")],
    *[_usage(f"probe-jobs-{v[:8]}", ["--image", "host", f"--probe-jobs={v}"],
             f"--probe-jobs {v!r}: give a whole number from 1 to 256")
      for v in ("0", "-1", "1.5", "nan", "inf", "²", "9" * 5000, "257")],
    *[_usage(f"gpus-{v}", ["--image", "host", f"--gpus={v}"], f"--gpus {v!r}: use 'all', 'none'")
      for v in ("²", "nan", "-1", "device=")],
    _usage("ini-probe-timeout-nan", ["--image", "host"], "--probe-timeout 'nan'",
           {"pytest.ini": "[pytest]\ncontainercheck_probe_timeout = nan\n"}),
    _usage("ini-probe-jobs-inf", ["--image", "host"], "--probe-jobs 'inf'",
           {"pytest.ini": "[pytest]\ncontainercheck_probe_jobs = inf\n"}),
    # item 6
    *[_usage(f"runtime-arg-{arg.lstrip('-').split('=')[0]}", ["--image", "{base}", f"--runtime-arg={arg}"],
             f"--runtime-arg={arg}: {why}", docker=True)
      for arg, why in (("--name=mine", "the plugin names each container itself"),
                       ("--entrypoint=bash", "the plugin replaces the entrypoint"),
                       ("-d", "the plugin runs its container detached itself"),
                       ("-dit", "the plugin runs its container detached itself"),
                       ("--detach=false", "the plugin runs its container detached itself"),
                       ("--rm=false", "the plugin removes its containers itself"),
                       ("--network=host", "use --network MODE"),
                       ("--label=org.containercheck.run=x", "the org.containercheck.* labels are the plugin's own"),
                       ("-lorg.containercheck.owner=x", "the org.containercheck.* labels are the plugin's own"))],
    Case("runtime-arg-docker-rejects", ["--image", "{base}", *ONLY_SYSTEM, "--runtime-arg=--memory=abc",
                                        "--matrix-json", "m.json"],
         int(pytest.ExitCode.TESTS_FAILED), 'did not start: docker could not start the image: invalid argument "abc"',
         docker=True, check=_runtime_line),
    # item 7
    _usage("probe-dir-shadows-builtin", ["--image", "host", "--probe-dir", "probes"],
           "--probe-dir probes: system.py has the name of a built-in probe",
           {"probes/system.py": "def run(params, ctx):\n    return {}\n"}),
    _usage("two-probe-dirs-one-name", ["--image", "host", "--probe-dir", "a", "--probe-dir", "b"],
           "--probe-dir b: probe 'mine' is also in --probe-dir a",
           {"a/mine.py": "def run(params, ctx):\n    return {}\n",
            "b/mine.py": "def run(params, ctx):\n    return {}\n"}),
    _usage("probe-dir-is-a-file", ["--image", "host", "--probe-dir", "afile"], "--probe-dir afile: not a directory",
           {"afile": ""}),
    _usage("conftest-fixture-named-container", ["--image", "host"],
           "conftest.py defines a fixture named 'container', which hides pytest-containercheck's own",
           {"conftest.py": CONFTEST_FIXTURE}),
    _usage("nested-conftest-fixture-named-container", ["--image", "host", "sub"],
           "sub/conftest.py defines a fixture named 'container'",
           {"sub/conftest.py": SUB_FIXTURE, "sub/test_mine.py": "def test_mine(container):\n    pass\n"}),
    # item 8
    _cli("merge-top-level-list", ["merge", "a.json"], "a.json: not a containercheck matrix file", {"a.json": "[]"}),
    _cli("merge-null", ["merge", "a.json"], "a.json: not a containercheck matrix file", {"a.json": "null"}),
    _cli("merge-cells-not-a-list", ["merge", "a.json"], "a.json: 'cells' is a dict, expected a list",
         {"a.json": _matrix_file(cells={})}),
    _cli("merge-cell-not-an-object", ["merge", "a.json"], "a.json: cells[0] is a int, expected an object",
         {"a.json": _matrix_file(cells=[1])}),
    _cli("merge-unknown-status", ["merge", "a.json"], "a.json: cells[0] has status 'great'",
         {"a.json": _matrix_file(cells=[{**CELL, "status": "great"}])}),
    _cli("merge-cell-without-row", ["merge", "a.json"], "a.json: cells[0] has no 'row'",
         {"a.json": _matrix_file(cells=[{"column": "c", "host": "h", "status": "pass"}])}),
    _cli("merge-older-schema-version", ["merge", "a.json", "b.json"],
         "b.json: matrix schema version 0, but this containercheck reads version 1 only",
         {"a.json": MATRIX_OK, "b.json": json.dumps({"schema": "containercheck-matrix", "version": 0})}),
    _cli("merge-newer-schema-version", ["merge", "a.json"], "a.json: matrix schema version 2 is newer",
         {"a.json": json.dumps({"schema": "containercheck-matrix", "version": 2})}),
    _cli("merge-directory-input", ["merge", "d"], "d: is a directory; give a matrix JSON file", {"d/x": ""}),
    _cli("merge-fifo-input", ["merge", "pipe"], "pipe: a named pipe (FIFO), not a matrix JSON file",
         {"pipe": "fifo:"}),
    _cli("merge-json-into-a-directory", ["merge", "a.json", "--json", "d"],
         "--json d: is a directory; give the path of a file to write, e.g. d/matrix.json",
         {"a.json": MATRIX_OK, "d/x": ""}),
    _cli("merge-json-onto-an-input", ["merge", "a.json", "--json", "a.json"],
         "--json a.json: the same file as input a.json", {"a.json": MATRIX_OK}),
    _cli("show-fifo", ["show", "pipe"], "pipe: a named pipe (FIFO), not a matrix JSON file", {"pipe": "fifo:"}),
    _cli("show-not-json", ["show", "a.json"], "a.json: Expecting property name", {"a.json": "{nope"}),
    # item 9
    _usage("update-baselines-into-a-file", ["--image", "host", "--update-baselines", "all", "--baseline-dir", "afile"],
           "--baseline-dir afile: is a file, not a directory", {"afile": ""}),
    # item 11
    _usage("host-python-not-python", ["--image", "host", "--host-python", "/bin/false"],
           "--host-python '/bin/false' is not a working Python interpreter"),
    _usage("host-uri-missing", ["--image", "host:///missing/python"],
           "--image host:///missing/python: '/missing/python' is not an executable file on this host"),
    _usage("runtime-host-with-docker-ref", ["--image", "containercheck-test/base", "--runtime", "host"],
           "drop --runtime host"),
    # item 12
    Case("nan-fact-is-strict-json", ["--image", "host", "test_nan.py", "--no-builtin-checks", "--probe-dir", "probes",
                                     "--matrix-json", "m.json"], int(pytest.ExitCode.OK), "matrix JSON: m.json", NAN,
         check=_strict_json),
    # issue 22: the expectations file, and a wrong row name
    _usage("expectations-missing-file", ["--image", "host", "--expectations", "nope.toml"], "nope.toml: no such file"),
    _usage("expectations-directory", ["--image", "host", "--expectations", "d"], "d: is a directory", {"d/x": ""}),
    _usage("expectations-not-toml", ["--image", "host", "--expectations", "e.toml"], "e.toml: not valid TOML",
           {"e.toml": "[[image]\n"}),
    _usage("expectations-unknown-key", ["--image", "host", "--expectations", "e.toml"],
           "e.toml [[image]] #1: unknown key 'requires': did you mean require?",
           {"e.toml": "[[image]]\nmatch = '*'\nrequires = ['system.os']\n"}),
    _usage("require-unknown-row", ["--image", "host", "--require", "torch.cdua"],
           "--require: no such row 'torch.cdua'; did you mean torch.cuda?"),
    _cli("diff-unknown-option", ["diff", "a.json", "b.json", "--nope"], "unrecognized arguments: --nope"),
    # issue 32: an empty path (an unset variable), an archive named for what it is
    *[_usage(f"empty-{flag.lstrip('-')}", ["--image", "host", flag, ""],
             f'{flag} "": an empty path (an unset variable?); give a path, or leave {flag} out')
      for flag in ("--matrix-json", "--matrix-md", "--matrix-html", "--junitxml", "--artifacts-dir",
                   "--baseline-dir", "--probe-dir", "--expectations")],
    *[_cli(f"cli-empty-{flag.lstrip('-')}", ["show", "a.json", flag, ""], f'{flag} "": an empty path',
           {"a.json": MATRIX_OK}) for flag in ("--md", "--html")],
    _cli("cli-empty-expectations", ["gate", "a.json", "--expectations", ""], '--expectations "": an empty path',
         {"a.json": MATRIX_OK}),
    _usage("empty-tar", ["--image", "img.tar"], "'img.tar' is not a readable tar archive (empty file)",
           {"img.tar": ""}),
    _usage("empty-tar-with-apptainer", ["--image", "img.tar", "--runtime", "apptainer"],
           "'img.tar' is not a readable tar archive (empty file)", {"img.tar": ""}),
    _usage("empty-file", ["--image", "./image"], "is empty (0 bytes): neither a SIF image nor an image archive",
           {"image": ""}),
]


def _setup(path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if text == "fifo:":
            os.mkfifo(target)
        else:
            target.write_text(text)


def _marked_processes(mark: str) -> list[str]:
    """Processes whose environment carries *mark*: everything a run started inherits it."""
    needle = f"CC_SWEEP_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                        argv = cmd.read().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry}: {argv}")
        except OSError:
            continue
    return found


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    """Until *path* exists (a check wrote it), or the run ended without it."""
    ready, deadline = threading.Event(), time.monotonic() + RUN_LIMIT
    while not ready.wait(0.05):
        if path.exists():
            return
        if proc.poll() is not None:
            out = proc.communicate(timeout=120)[0]
            raise AssertionError(f"the run ended before {path.name} appeared: {out[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {RUN_LIMIT:.0f} s")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.docker] if c.docker else [])
                                  for c in CASES])
def test_sweep(case: Case, pytester: pytest.Pytester, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue("base_image") if case.docker else "containercheck-test/base"
    path = pytester.path
    _setup(path, case.files)
    mark = secrets.token_hex(8)
    env = {**os.environ, "CC_SWEEP_MARK": mark}
    args = [a.replace("{base}", base) for a in case.args]
    if case.cli:
        argv = [sys.executable, "-m", "pytest_containercheck.cli", *args]
    else:
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", *args]
    proc = subprocess.Popen(argv, cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if case.interrupt is not None:
            _wait_for(path / "started", proc)
            proc.send_signal(case.interrupt)
            (path / "signalled").write_text("")
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=120)
    assert proc.returncode == case.rc, out[-3000:]
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if case.line in ln]
    assert len(lines) == 1, (case.line, out[-3000:])
    if case.rc == pytest.ExitCode.USAGE_ERROR and not case.cli:  # containercheck's: the same code, its own prefix
        errors = [ln for ln in out.splitlines() if ln.startswith("ERROR:")]
        assert errors == lines, out[-3000:]
    if case.cli:
        assert [ln for ln in out.splitlines() if ln.strip()] == lines, out[-3000:]
        assert lines[0].startswith("containercheck: error: "), lines
    if case.check is not None:
        case.check(path, out)
    assert _marked_processes(mark) == [], "a process of the run outlived it"
    if case.docker:
        assert owned_by(proc.pid) == [], "a container of the run outlived it"


@pytest.fixture
def host_python2(image_factory: Callable[[str], str], tmp_path: Path) -> str:
    """A real CPython 2.7.18 runnable on this host: copied out of the ``python2`` test image
    (Debian bullseye's python2.7-minimal: the interpreter and its standard library)."""
    image = image_factory("python2")
    cid = subprocess.run(["docker", "create", image, "true"], capture_output=True, text=True,
                         check=True, timeout=300).stdout.strip()
    try:
        (tmp_path / "py2" / "bin").mkdir(parents=True)
        (tmp_path / "py2" / "lib").mkdir()
        for src, dest in (("/usr/bin/python2.7", "py2/bin/"), ("/usr/lib/python2.7", "py2/lib/")):
            subprocess.run(["docker", "cp", f"{cid}:{src}", str(tmp_path / dest)], capture_output=True, check=True,
                           timeout=300)
    finally:
        subprocess.run(["docker", "rm", cid], capture_output=True, check=False, timeout=300)
    return str(tmp_path / "py2" / "bin" / "python2.7")


@pytest.mark.docker
def test_sweep_host_python_2_7(host_python2: str, pytester: pytest.Pytester) -> None:
    """``--host-python`` naming a Python 2.7: one usage error about the host's interpreter."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--image", "host", "--host-python", host_python2)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
    assert errors == [f"ERROR: --host-python {host_python2!r} is Python 2.7.18; probes need 3.7+, give a newer "
                      "interpreter"], result.stderr.str()
    assert "--container-python" not in result.stderr.str() + result.stdout.str()


def test_every_numeric_option_is_in_the_sweep() -> None:
    """A new numeric option must get rows above: its parser is listed here."""
    from pytest_containercheck import options

    numeric = {o.flag for o in options.OPTIONS
               if getattr(o.kwargs.get("type"), "__name__", "") in ("_positive_float", "_positive_int", "_gpus")}
    swept = {c.args[2].split("=")[0] for c in CASES if len(c.args) > 2 and c.rc == 4}
    swept &= numeric
    assert numeric == swept == {"--probe-timeout", "--probe-jobs", "--gpus"}
