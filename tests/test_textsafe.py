"""Control characters from images, archives and merged files never reach a terminal or a report
raw (issue 25, item 6)."""

from __future__ import annotations

import json
import subprocess

import pytest

from pytest_containercheck.engine.diff import diff_columns
from pytest_containercheck.engine.diff import render_markdown as render_diff
from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.report import render_html, render_markdown, render_terminal
from pytest_containercheck.engine.textsafe import visible, visible_all

from helpers import ONLY_SYSTEM

HOSTILE = "Debian\x1b]0;pwned\x07\x1b[2J\r\x00\x9b31m\u202egnp.exe"


def test_visible_escapes_every_control_character() -> None:
    assert visible(HOSTILE) == "Debian\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x00\\x9b31m\\u202egnp.exe"
    assert visible("a\tb\nc") == "a\tb\nc" and visible("a\tb\nc", lines=False) == "a\\x09b\\x0ac"
    assert visible_all({"k\x1b": [HOSTILE, 1, None]}) == {"k\\x1b": [visible(HOSTILE), 1, None]}


def _matrix() -> Matrix:
    m = Matrix()
    col = Column(id="docker://img\x1b[2J", host="h\x07", spec="img", runtime="docker", ref="img")
    m.add_column(col)
    m.put(Cell(row="system.os", column=col.id, host=col.host, status="fail", detail=HOSTILE, fix=HOSTILE,
               fault="image", evidence={"os": HOSTILE}))
    return m


@pytest.mark.parametrize("render", [lambda m: "\n".join(render_terminal(m)), render_markdown, render_html])
def test_no_renderer_writes_a_control_character(render: object) -> None:
    out = render(_matrix())  # type: ignore[operator]
    assert not any((ord(ch) < 32 and ch not in "\n\t") or 0x7f <= ord(ch) <= 0x9f or ch == "\u202e" for ch in out)
    assert "\\x1b" in out and "pwned" in out


def test_diff_markdown_has_no_control_character() -> None:
    old, new = _matrix(), _matrix()
    new.cells[next(iter(new.cells))].status = "pass"
    o, n = _columns(old, new)
    out = render_diff(diff_columns(old, o, new, n), o, n)
    assert "\x1b" not in out and "\\x1b" in out


def _columns(old: Matrix, new: Matrix) -> tuple[Column, Column]:
    return next(iter(old.columns.values())), next(iter(new.columns.values()))


@pytest.mark.docker
def test_an_image_with_escape_sequences_in_its_files(pytester: pytest.Pytester, base_image: str) -> None:
    """/etc/os-release with an OSC title, a screen clear, a carriage return and a bidi override:
    the terminal and every report show escapes, never the characters."""
    tag = "containercheck-test/escapes:1"
    dockerfile = (f"FROM {base_image}\nRUN printf 'PRETTY_NAME=\"Debian\\033]0;pwned\\007\\033[2J\\r"
                  "\\342\\200\\256gnp.exe\"\\nID=debian\\nVERSION_ID=12\\n' > /etc/os-release\n")
    built = subprocess.run(["docker", "build", "--quiet", "--tag", tag, "-"], input=dockerfile, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    try:
        result = pytester.runpytest_subprocess("--image", tag, *ONLY_SYSTEM, "-k", "system.os", "-rA",
                                               "--matrix-json", "m.json", "--matrix-md", "m.md", "--matrix-html",
                                               "m.html", "--junitxml", "j.xml")
        out = result.stdout.str() + result.stderr.str()
        assert "\\x1b]0;pwned" in out, out[-3000:]
        for text in (out, *((pytester.path / n).read_text() for n in ("m.md", "m.html"))):
            assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
        cell = json.loads((pytester.path / "m.json").read_text())["cells"][0]
        assert "\\x1b]0;pwned" in cell["detail"]
    finally:
        subprocess.run(["docker", "rmi", "--force", tag], capture_output=True, timeout=120)
