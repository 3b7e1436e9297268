"""One guarded reader for every file a user names (``engine/userfiles.py``, issue 30 item 4): the
expectations file and matrix files are read only when they are regular files of a bounded size
and (for text) UTF-8; anything else is one line, exit 4, without waiting on a FIFO or reading a
device to its (absent) end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.userfiles import read_user_file, read_user_text

WHAT = "the TOML file of the images' expectations"


def test_each_kind_of_wrong_file_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    cases = {str(tmp_path / "fifo"): "a named pipe (FIFO), not a matrix file",
             "/dev/zero": "a character device, not a matrix file",
             str(tmp_path): "is a directory; give a matrix file",
             str(tmp_path / "big"): "101 bytes, more than a matrix file can be (100 bytes)",
             str(tmp_path / "nope"): "no such file; give a matrix file"}
    for path, message in cases.items():
        with pytest.raises(UsageProblem) as info:
            read_user_file(path, "a matrix file", limit=100)
        assert str(info.value) == f"{path}: {message}"
    with pytest.raises(UsageProblem, match=r"latin1: not UTF-8 text \(byte 3\), not a matrix file"):
        read_user_text(str(tmp_path / "latin1"), "a matrix file", limit=100)
    (tmp_path / "ok").write_text("fine\n")
    assert read_user_text(str(tmp_path / "ok"), "a matrix file", limit=100, shown="ok") == "fine\n"


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "latin1"])
def test_expectations_on_a_fifo_or_a_device_is_exit_4_at_once(pytester: pytest.Pytester, target: str) -> None:
    """The FIFO has no writer: a reader that opened it would wait for ever (the run's timeout ends
    the test then); /dev/zero would be read until memory ran out."""
    os.mkfifo(pytester.path / "fifo")
    (pytester.path / "latin1").write_bytes(b"[[image]]\nmatch = 'caf\xe9'\n")
    result = pytester.runpytest_subprocess("--image", "host", "--expectations", target, timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [ln for ln in result.stderr.lines if ln.strip()]
    expected = {"fifo": "ERROR: fifo: a named pipe (FIFO), not " + WHAT,
                "/dev/zero": "ERROR: /dev/zero: a character device, not " + WHAT,
                "latin1": "ERROR: latin1: not UTF-8 text (byte 22), not " + WHAT}
    assert line == expected[target]


def test_the_cli_reads_through_the_same_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.json")
    for command in (["show", "m.json"], ["gate", "m.json"], ["diff", "m.json", "m.json"]):
        res = subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *command], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert (res.returncode, res.stderr) == (4, "containercheck: error: m.json: a named pipe (FIFO), not a matrix "
                                                   "JSON file\n"), command
