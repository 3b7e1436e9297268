"""A newcomer's next hour (issue 32): every command's output fits an 80-column terminal, the help
is written for users, and the messages that misled a little say what is so.

Each message test asserts the words a user reads, and would fail with the words it replaced
(named in its docstring)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.expectations import Expectation, describe
from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.report import render_json
from pytest_containercheck.engine.targets import parse_target

from helpers import NO_GPU_HOST, SYSTEM

LONG = ("the image's libEGL_nvidia.so.0 is missing from /usr/lib/x86_64-linux-gnu although "
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json names it, so EGL falls back to Mesa's llvmpipe on the CPU")


def _cli(*args: str, cwd: Path, columns: int | None = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def _pytest(*args: str, cwd: Path, columns: int | None = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


#: pytest's own header lines, whose paths (rootdir, configfile) grow with where the test runs (a CI
#: clone's depth, xdist's popen-gwN): not the plugin's output.
_PYTEST_HEADER = ("rootdir:", "configfile:", "platform ", "plugins:", "cachedir:")


def _wide(text: str, width: int = 80) -> list[str]:
    """The lines of the plugin's (or containercheck's) output longer than *width*."""
    return [ln for ln in text.splitlines() if len(ln) > width and not ln.startswith(_PYTEST_HEADER)]


def _one_column(path: Path, column: str, statuses: dict[str, str], *, host: str = "node1",
                expectations: Expectation | None = None) -> Path:
    m = Matrix()
    m.add_column(Column(column, host, spec=column.removeprefix("docker://"), runtime="docker",
                        expectations=expectations.to_dict() if expectations is not None else None))
    for row, status in statuses.items():
        m.put(Cell(row, column, host, status, detail=f"{status}: {LONG}", fix="install the vendor library"))
    path.write_text(render_json(m))
    return path


# -- item 2: every command's output fits 80 columns ---------------------------------------------------------------


ROWS = {"render.egl_vendor_library_of_the_nvidia_driver": "pass", "system.python": "pass", "torch.cuda": "skip"}


def test_diff_show_merge_and_gate_fit_80_columns(tmp_path: Path) -> None:
    """Before: ``diff`` printed each row's detail on one line of 200 characters; ``merge`` its
    DUPLICATE and SAME IMAGE lines whole."""
    old = _one_column(tmp_path / "old.json", "docker://registry.example.com/team/render:1.3", ROWS)
    new = _one_column(tmp_path / "new.json", "docker://registry.example.com/team/render:1.4",
                      {**ROWS, "render.egl_vendor_library_of_the_nvidia_driver": "fail"})
    runs = {
        "diff": _cli("diff", old.name, new.name, cwd=tmp_path),
        "show": _cli("show", new.name, "-v", cwd=tmp_path),
        "merge": _cli("merge", old.name, new.name, old.name, cwd=tmp_path),
        "gate": _cli("gate", old.name, new.name, "--require", "torch.cuda", cwd=tmp_path),
    }
    assert runs["diff"].returncode == 1 and "REGRESSION" in runs["diff"].stdout, runs["diff"].stdout
    assert "DUPLICATE" in runs["merge"].stdout, runs["merge"].stdout
    assert "the gate fails" in runs["gate"].stdout, runs["gate"].stdout
    for name, res in runs.items():
        assert res.stdout.strip() and not res.stderr, (name, res.stderr)
        assert _wide(res.stdout) == [], (name, res.stdout)
    # The detail is wrapped, not cut: every word of it is there.
    assert "Mesa's llvmpipe on the CPU" in " ".join(runs["diff"].stdout.split())


def test_in_a_pipe_diff_lines_stay_whole_for_grep(tmp_path: Path) -> None:
    old = _one_column(tmp_path / "old.json", "docker://team/render:1.3", ROWS)
    new = _one_column(tmp_path / "new.json", "docker://team/render:1.4", {**ROWS, "system.python": "fail"})
    res = _cli("diff", old.name, new.name, cwd=tmp_path, columns=None)
    assert re.search(r"^  REGRESSION +system\.python: pass -> fail  fail: .*on the CPU$", res.stdout, re.M), res.stdout


def test_usage_errors_fit_80_columns(tmp_path: Path) -> None:
    """Before: a long usage error was one line of 130 characters on an 80-column terminal."""
    long_name = "a-directory-that-is-not-there-at-all/" + "x" * 40 + ".sif"
    res = _pytest("--image", long_name, cwd=tmp_path)
    assert res.returncode == 4 and "no such file" in res.stderr and res.stderr.count("\n") > 1, res.stderr
    assert _wide(res.stderr) == [], res.stderr
    res = _pytest("--probe-timeout", "soon", "--image", "host", cwd=tmp_path)
    assert res.returncode == 4 and _wide(res.stderr) == [], res.stderr
    res = _cli("show", long_name, cwd=tmp_path)
    assert res.returncode == 4 and _wide(res.stderr) == [] and res.stderr.startswith("containercheck: error:")
    # In a pipe (no terminal width): one line, as before.
    res = _pytest("--image", long_name, cwd=tmp_path, columns=None)
    assert res.returncode == 4 and res.stderr.strip().count("\n") == 0, res.stderr


def test_the_rows_listing_fits_80_columns(tmp_path: Path) -> None:
    """Before: ``pytest --containercheck-rows`` printed lines of up to 160 characters."""
    (tmp_path / "test_mine.py").write_text(
        "def test_vendor_file(container):\n"
        f'    """{LONG}."""\n')
    res = _pytest("--containercheck-rows", "test_mine.py", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    listing = res.stdout[res.stdout.index("containercheck rows:"):]
    assert _wide(listing) == [], listing
    assert "vendor_file" in listing and "on the CPU. (test_mine.py)" in " ".join(listing.split())


@pytest.mark.parametrize("command", ["", "merge", "show", "diff", "gate", "probes"])
def test_help_is_for_users_with_an_example(tmp_path: Path, command: str) -> None:
    """Before: ``containercheck --help`` printed the module's docstring ("It uses the engine alone:
    no pytest, no plugin module ... tests/test_cli.py keeps it so") and no example."""
    from pytest_containercheck.cli import COMMANDS

    assert sorted(COMMANDS) == ["diff", "gate", "merge", "probes", "show"]
    res = _cli(*([command] if command else []), "--help", cwd=tmp_path)
    assert res.returncode == 0 and _wide(res.stdout) == [], res.stdout
    assert not re.search(r"``|engine|plugin module|tests/|docs/", res.stdout), res.stdout
    example = COMMANDS[command].example if command else "containercheck diff old.json new.json"
    assert f"\n  {example}\n" in res.stdout


# -- item 3: the messages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "runtime"), [
    ("empty.tar", b"", None), ("empty.tar", b"", "apptainer"), ("empty.tar", b"", "docker"),
    ("img.tar.gz", b"", None), ("cut.tar", b"\0" * 100, None)])
def test_an_archive_is_named_an_archive(tmp_path: Path, name: str, content: bytes, runtime: str | None) -> None:
    """Before: an empty ``.tar`` said "copy the .sif again"; with --runtime docker "is a SIF file"."""
    (tmp_path / name).write_bytes(content)
    res = _pytest("--image", name, *(["--runtime", runtime] if runtime else []), cwd=tmp_path, columns=None)
    assert res.returncode == 4 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"'{name}' is not a readable tar archive" in res.stderr and "copy it again" in res.stderr, res.stderr
    assert ".sif" not in res.stderr and "SIF" not in res.stderr


def test_an_empty_file_is_named_for_what_it_is_not(tmp_path: Path) -> None:
    (tmp_path / "image").write_bytes(b"")
    with pytest.raises(UsageProblem, match=r"is empty \(0 bytes\): neither a SIF image nor an image archive") as exc:
        parse_target(str(tmp_path / "image"))
    assert ".sif again" not in str(exc.value)
    with pytest.raises(UsageProblem, match=r"is empty \(0 bytes\), which docker cannot run"):
        parse_target(str(tmp_path / "image"), runtime="docker")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UsageProblem, match=r"neither a SIF image nor an image archive \(no tar header\)") as exc:
        parse_target(str(tmp_path / "notes.txt"), runtime="docker")
    assert "is a SIF file" not in str(exc.value)


def test_a_sif_renamed_tar_is_still_run_as_a_sif(tmp_path: Path) -> None:
    from helpers import write_sif

    sif = write_sif(tmp_path / "app.tar")
    assert parse_target(str(sif)).runtime == "apptainer"


def test_repeated_images_are_said_once() -> None:
    from pytest_containercheck.engine.targets import read_targets

    given = read_targets(["host", "host", "host://"])
    assert [t.id for t in given.targets] == ["host"]
    assert given.repeated == ["--image host and --image host:// name the same image (host): checked once"]
    assert read_targets(["host", "host"]).repeated == ["--image host is given 2 times: checked once"]
    assert read_targets(["host"]).repeated == []


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]])
def test_a_repeated_image_is_warned_once_in_a_run(tmp_path: Path, xdist: list[str]) -> None:
    """Before: ``--image host --image host`` silently became one column."""
    res = _pytest("--image", "host", "--image", "host", "-q", *xdist, "--no-builtin-checks", SYSTEM,
                  "-k", "python", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("--image host is given 2 times: checked once") == 1, res.stdout


def test_no_image_gives_the_three_example_commands(tmp_path: Path) -> None:
    """Before: a bare ``pytest`` said only "no tests ran"."""
    from pytest_containercheck.hints import NO_IMAGE

    res = _pytest(cwd=tmp_path)
    assert res.returncode == 5
    assert "\n".join(NO_IMAGE) in res.stdout, res.stdout
    for example in ("pytest --image mytorchvista.sif", "pytest --image team/img:1.4", "pytest --image host"):
        assert example in res.stdout
    assert _wide(res.stdout) == []
    # Own checks collected without an image skip: the hint says how to give one.
    (tmp_path / "test_mine.py").write_text("def test_mine(container):\n    pass\n")
    res = _pytest("test_mine.py", cwd=tmp_path)
    assert res.returncode == 0 and "1 skipped" in res.stdout and NO_IMAGE[0] in res.stdout, res.stdout


def test_no_hint_for_a_projects_ordinary_tests(tmp_path: Path) -> None:
    from pytest_containercheck.hints import NO_IMAGE

    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    res = _pytest("test_plain.py", cwd=tmp_path)
    assert res.returncode == 0 and NO_IMAGE[0] not in res.stdout and "= containercheck =" not in res.stdout


def _nothing_expected(statuses: dict[str, str]) -> str:
    m = Matrix()
    m.add_column(Column("docker://team/img:1.4", "h", expectations=Expectation().to_dict()))
    for row, status in statuses.items():
        m.put(Cell(row, "docker://team/img:1.4", "h", status, "x"))
    said = describe(m, ("docker://team/img:1.4", "h"), "team/img:1.4")
    assert said is not None
    return said


def test_the_summary_counts_errors_as_errors() -> None:
    """Before: a run where every row errored ended "0 of 3 rows skipped; see --require"."""
    said = _nothing_expected({"system.python": "error", "system.os": "error", "system.tls": "error"})
    assert said.startswith("no expectations for team/img:1.4: 3 of 3 rows errored;"), said
    assert "skipped" not in said
    said = _nothing_expected({"system.python": "pass", "torch.cpu": "skip", "system.os": "error", "x.y": "fail"})
    assert said.startswith("no expectations for team/img:1.4: 1 of 4 rows skipped, 1 errored, 1 failed;"), said
    said = _nothing_expected({"system.python": "pass"})
    assert said.startswith("no expectations for team/img:1.4: 1 of 1 rows passed;"), said


def test_pointers_a_pip_user_can_follow(tmp_path: Path) -> None:
    """Before: the footer said "see --require and docs/how-to/ci-gate.md", a path a pip user does not have."""
    said = _nothing_expected({"torch.cpu": "skip"})
    assert said.endswith('see --require in pytest --help and the docs\' page "The CI gate"'), said
    res = _pytest("--image", "host", "--no-builtin-checks", SYSTEM, "--help", cwd=tmp_path, columns=200)
    ours = res.stdout[res.stdout.index("container image checks (pytest-containercheck)"):]
    assert "docs/" not in ours and ".md" not in ours.replace("--matrix-md", ""), ours
    res = _pytest("--image", "host", "--no-builtin-checks", SYSTEM, cwd=tmp_path)
    assert "docs/" not in res.stdout and "The CI gate" in res.stdout, res.stdout


OUTPUT_FLAGS = ["--matrix-json", "--matrix-md", "--matrix-html", "--junitxml", "--artifacts-dir", "--baseline-dir",
                "--probe-dir", "--expectations"]


@pytest.mark.parametrize("flag", OUTPUT_FLAGS)
def test_an_empty_path_is_a_usage_error(tmp_path: Path, flag: str) -> None:
    """Before: ``--matrix-md "$UNSET"`` wrote nothing, without a word (``--artifacts-dir ""``
    wrote into the current directory)."""
    res = _pytest("--image", "host", flag, "", cwd=tmp_path, columns=None)
    assert res.returncode == 4, res.stdout + res.stderr
    assert res.stderr.strip() == f'ERROR: {flag} "": an empty path (an unset variable?); give a path, or leave ' \
                                 f"{flag} out"


@pytest.mark.parametrize(("command", "flag"), [("show", "--md"), ("show", "--html"), ("merge", "--json"),
                                               ("gate", "--expectations"), ("diff", "--md")])
def test_an_empty_path_is_a_usage_error_of_the_command(tmp_path: Path, command: str, flag: str) -> None:
    m = _one_column(tmp_path / "a.json", "docker://img:1", {"system.python": "pass"})
    files = [m.name, m.name] if command == "diff" else [m.name]
    res = _cli(command, *files, flag, "", cwd=tmp_path, columns=None)
    assert (res.returncode, res.stderr) == (4, f'containercheck: error: {flag} "": an empty path (an unset '
                                               f"variable?); give a path, or leave {flag} out\n")
    assert not res.stdout


def test_diff_takes_the_image_value_as_well_as_the_column_id(tmp_path: Path) -> None:
    """``--old team/img:1.3`` finds the column ``docker://team/img:1.3`` (the --image value the run had)."""
    m = Matrix()
    for image, status in (("team/img:1.3", "pass"), ("team/img:1.4", "fail")):
        m.add_column(Column(f"docker://{image}", "node1", spec=image, runtime="docker"))
        m.put(Cell("system.python", f"docker://{image}", "node1", status, "x"))
    (tmp_path / "run.json").write_text(render_json(m))
    res = _cli("diff", "run.json", "--old", "team/img:1.3", "--new", "docker://team/img:1.4", cwd=tmp_path,
               columns=None)
    assert res.returncode == 1 and "REGRESSION" in res.stdout, res.stdout + res.stderr
    assert "docker://team/img:1.3 (node1) -> docker://team/img:1.4 (node1)" in res.stdout


@NO_GPU_HOST
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]])
def test_under_q_a_failing_gate_says_its_reason_once(tmp_path: Path, xdist: list[str]) -> None:
    """Before: under ``-q`` the reason was printed three times: pytest's FAILURES section, the
    matrix, and pytest's short summary (in full on CI)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", "host", "-q", *xdist,
                          "--no-builtin-checks", SYSTEM, "--require", "system.gpu_devices", "--junitxml", "j.xml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "CI": "true"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.count("host has no NVIDIA GPU") == 1, res.stdout
    assert "FAIL  system.gpu_devices on host: required row 'system.gpu_devices' was skipped" in res.stdout
    assert "system.gpu_devices on host: the reason and the fix are in the containercheck matrix" in res.stdout
    # Only the terminal is spared the repetition: the JUnit case keeps its reason.
    assert "required row 'system.gpu_devices' was skipped" in (tmp_path / "j.xml").read_text()


@NO_GPU_HOST
def test_without_q_pytests_sections_keep_the_reason(tmp_path: Path) -> None:
    res = _pytest("--image", "host", "--no-builtin-checks", SYSTEM, "--require", "system.gpu_devices", "-k",
                  "gpu_devices", cwd=tmp_path, columns=None)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the reason and the fix are in the containercheck matrix" not in res.stdout
    assert res.stdout.count("required row 'system.gpu_devices' was skipped") >= 2, res.stdout
