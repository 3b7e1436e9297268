"""The ``containercheck`` command: it starts from the engine alone, and writes its files the way
the plugin writes its reports (engine/outputs.py: 0644 files, 0755 directories, atomically)."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.report import render_json


def _matrix_file(path: Path, column: str = "docker://img:1", status: str = "pass") -> Path:
    m = Matrix()
    m.add_column(Column(column, "node1", spec=column.removeprefix("docker://"), runtime="docker"))
    m.put(Cell("system.python", column, "node1", status, detail="CPython 3.11"))
    path.write_text(render_json(m))
    return path


def _cli(*args: str, cwd: Path, umask: int | None = None, max_file_bytes: int | None = None,
         ) -> subprocess.CompletedProcess[str]:
    """``python -m pytest_containercheck.cli ARGS`` in *cwd*, under *umask*, and with files
    limited to *max_file_bytes* (a write past it fails with EFBIG, as on a full disk)."""

    def limits() -> None:
        if umask is not None:
            os.umask(umask)
        if max_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, preexec_fn=limits)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("command", ["merge", "show"])
def test_files_are_0644_and_directories_0755_under_umask_000(tmp_path: Path, command: str) -> None:
    _matrix_file(tmp_path / "a.json")
    outputs = ["--md", "out/new/m.md", "--html", "out/new/m.html"]
    if command == "merge":
        outputs += ["--json", "out/new/m.json"]
    res = _cli(command, "a.json", *outputs, cwd=tmp_path, umask=0o000)
    assert res.returncode == 0, res.stderr
    written = sorted((tmp_path / "out" / "new").iterdir())
    assert [p.name for p in written] == sorted(p.rpartition("/")[2] for p in outputs[1::2])  # no temporary left
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: "0o644" for p in written}
    assert oct(_mode(tmp_path / "out")) == oct(_mode(tmp_path / "out" / "new")) == "0o755"
    if command == "merge":
        assert json.loads((tmp_path / "out/new/m.json").read_text())["cells"][0]["row"] == "system.python"


def test_diff_markdown_is_0644_under_umask_000(tmp_path: Path) -> None:
    _matrix_file(tmp_path / "old.json", "docker://img:1")
    _matrix_file(tmp_path / "new.json", "docker://img:2", "fail")
    res = _cli("diff", "old.json", "new.json", "--md", "d/diff.md", cwd=tmp_path, umask=0o000)
    assert res.returncode == 1, res.stdout + res.stderr  # a regression
    assert (oct(_mode(tmp_path / "d")), oct(_mode(tmp_path / "d/diff.md"))) == ("0o755", "0o644")


def test_a_failed_write_keeps_the_old_file_and_names_what_was_written(tmp_path: Path) -> None:
    """The HTML does not fit (the disk is 'full' past 2000 bytes): its old file stays whole, the
    JSON and Markdown are written, and the one error line says exactly that."""
    _matrix_file(tmp_path / "a.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/m.html").write_text("the previous report")
    res = _cli("merge", "a.json", "--json", "out/m.json", "--md", "out/m.md", "--html", "out/m.html",
               cwd=tmp_path, max_file_bytes=2000)
    assert res.returncode == 1, res.stdout + res.stderr  # written at the end, not a usage error: as pytest's
    assert res.stderr.splitlines() == [
        "containercheck: error: --html out/m.html: could not write it (File too large); the old file is kept; "
        "written: --json out/m.json, --md out/m.md"]
    assert (tmp_path / "out/m.html").read_text() == "the previous report"
    assert json.loads((tmp_path / "out/m.json").read_text())["cells"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.html", "m.json", "m.md"]


def test_an_output_replaced_by_a_directory_mid_run_is_one_line(tmp_path: Path) -> None:
    """Checked at start; still refused cleanly when it changes before the write (here: checked
    with the path free, then a directory there -- the same code path as the plugin's reports)."""
    from pytest_containercheck.engine.outputs import Output, write_outputs

    (tmp_path / "m.json").mkdir()
    done = write_outputs([(Output("--json", str(tmp_path / "m.json")), "{}"),
                          (Output("--md", str(tmp_path / "m.md")), "# m\n")])
    assert done.problems() == [f"--json {tmp_path}/m.json: could not write it (Is a directory); "
                               f"written: --md {tmp_path}/m.md"]


# -- the command uses the engine alone ------------------------------------------------------------

DUMP_MODULES = """
import atexit, json, runpy, sys
dump, sys.argv = sys.argv[1], ["containercheck", *sys.argv[2:]]
atexit.register(lambda: open(dump, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("pytest_containercheck.cli", run_name="__main__", alter_sys=True)
"""

#: What merge/show/diff never need: pytest, the plugin layer, and the engine's running parts.
NOT_FOR_FILES = ("pytest", "_pytest", "pluggy", "xdist")
ENGINE_RUNNING = ("runtimes", "sessions", "lifecycle", "scheduling", "probing", "hostinfo", "targets", "archives")


def _modules_loaded(tmp_path: Path, *args: str) -> list[str]:
    dump = tmp_path / "modules.json"
    res = subprocess.run([sys.executable, "-c", DUMP_MODULES, str(dump), *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    loaded: list[str] = json.loads(dump.read_text())
    return loaded


def _plugin_layer(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "pytest_containercheck" and len(parts) > 1 and parts[1] not in ("engine", "cli")


@pytest.mark.parametrize("command", [["merge", "a.json", "b.json", "--json", "m.json", "--md", "m.md", "--html",
                                      "m.html"],
                                     ["show", "a.json", "--md", "s.md"],
                                     ["diff", "a.json", "b.json", "--md", "d.md"]], ids=lambda c: c[0])
def test_merge_show_diff_import_no_pytest_no_plugin_no_runtime(tmp_path: Path, command: list[str]) -> None:
    _matrix_file(tmp_path / "a.json", "docker://img:1")
    _matrix_file(tmp_path / "b.json", "docker://img:2")
    loaded = _modules_loaded(tmp_path, *command)
    assert "pytest_containercheck.engine.matrix" in loaded  # it did run
    assert [m for m in loaded if m.split(".")[0] in NOT_FOR_FILES] == []
    assert [m for m in loaded if _plugin_layer(m)] == []
    running = [m for m in loaded if m.startswith("pytest_containercheck.engine.")
               and m.split(".")[2] in ENGINE_RUNNING]
    assert running == []


def test_probes_imports_probing_but_no_pytest(tmp_path: Path) -> None:
    loaded = _modules_loaded(tmp_path, "probes")
    assert "pytest_containercheck.engine.probing" in loaded
    assert [m for m in loaded if m.split(".")[0] in NOT_FOR_FILES or _plugin_layer(m)] == []
