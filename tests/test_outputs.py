"""engine/outputs.py: the checks before a run and the one writer of every file a run writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_containercheck.engine import outputs
from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.outputs import Output, check_directory, check_outputs, file_kind, write_file


@pytest.fixture
def umask() -> Iterator[None]:
    """The loosest umask: whatever is written is as open as the code asks for."""
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_kind_names_every_kind(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    kinds = {p: file_kind(os.stat(p).st_mode) for p in (str(tmp_path), str(tmp_path / "pipe"), "/dev/null")}
    assert list(kinds.values()) == ["a directory", "a named pipe (FIFO)", "a character device"]
    (tmp_path / "f").write_text("")
    assert file_kind(os.stat(tmp_path / "f").st_mode) == "a file"
    assert outputs.special_kind(str(tmp_path / "f")) is None
    assert outputs.special_kind("/dev/null") == "a character device"


def test_write_file_modes_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    (tmp_path / "mine").mkdir(mode=0o777)
    write_file(tmp_path / "mine" / "a" / "b" / "f.json", "{}")
    assert (tmp_path / "mine/a/b/f.json").read_text() == "{}"
    assert (_mode(tmp_path / "mine/a"), _mode(tmp_path / "mine/a/b"), _mode(tmp_path / "mine/a/b/f.json")) == (
        0o755, 0o755, 0o644)
    assert _mode(tmp_path / "mine") == 0o777, "a directory that was there is left as it is"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.json"
    target.write_text("old, whole")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_file(target, "new" * 1000)
    assert target.read_text() == "old, whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_symlinked_output_keeps_its_link(tmp_path: Path) -> None:
    (tmp_path / "real.md").write_text("old")
    (tmp_path / "link.md").symlink_to(tmp_path / "real.md")
    write_file(tmp_path / "link.md", "new")
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "real.md").read_text() == "new"


def test_write_outputs_says_exactly_what_was_and_was_not_written(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "h").mkdir()
    done = outputs.write_outputs([(Output("--json", str(tmp_path / "j")), "{}"),
                                  (Output("--md", str(tmp_path / "m.md")), "# m"),
                                  (Output("--html", str(tmp_path / "h")), "<p>")])
    assert [o.flag for o in done.written] == ["--md"]
    written = f"written: --md {tmp_path}/m.md"
    assert done.problems() == [f"--json {tmp_path}/j: could not write it (Is a directory); {written}",
                               f"--html {tmp_path}/h: could not write it (Is a directory); {written}"]
    none = outputs.write_outputs([(Output("--json", str(tmp_path / "j")), "{}"),
                                  (Output("--html", str(tmp_path / "h")), "<p>")])
    assert none.problems()[0].endswith("; no other output was written")


@pytest.mark.parametrize(("setup", "outs", "message"), [
    ({"d/x": ""}, [Output("--matrix-json", "d", ".json")],
     "--matrix-json d: is a directory; give the path of a file to write, e.g. d/matrix.json"),
    ({"pipe": "fifo"}, [Output("--md", "pipe")], "--md pipe: is a named pipe (FIFO); give the path of a file to write"),
    ({"afile": ""}, [Output("--md", "afile/m.md")], "afile is a file, not a directory; give another path"),
    ({}, [Output("--matrix-json", "m.json"), Output("--matrix-md", "./m.json")],
     "--matrix-md ./m.json: --matrix-json writes the same file; give each report its own path"),
    ({"in.json": "{}"}, [Output("--json", "in.json")], "--json in.json: the same file as input in.json"),
])
def test_check_outputs_refuses_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: dict[str, str],
                                           outs: list[Output], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in setup.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp_path / name) if text == "fifo" else (tmp_path / name).write_text(text)
    with pytest.raises(UsageProblem) as info:
        check_outputs(outs, inputs=["in.json"])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_check_outputs_gives_the_real_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_outputs([Output("--matrix-json", "new/m.json")]) == {"--matrix-json": str(tmp_path / "new/m.json")}


def test_check_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageProblem, match=r"--baseline-dir .*: is a file, not a directory; give a directory"):
        check_directory("--baseline-dir", str(tmp_path / "f"), create=True)
    check_directory("--baseline-dir", str(tmp_path / "new"), create=True)  # can be created
    check_directory("--baseline-dir", str(tmp_path / "f" / "below"), create=False)  # read only if there
