"""Hostile sizes (issue 30, item 3): a 30 MB label, detail or piece of evidence costs the reports
what a short one does; every report but the JSON caps it (docs/reference/reports.md, "Caps"), and
SIGINT or SIGTERM while the reports are written or printed ends the run (exit 2), keeping the
report files already written."""

from __future__ import annotations

import json
import random
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from pytest_containercheck.engine.expectations import Expectation
from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.report import render_html, render_json, render_markdown, render_terminal
from pytest_containercheck.engine.report.terminal import wrap
from pytest_containercheck.engine.textsafe import EVIDENCE_CAP, TEXT_CAP, capped
from pytest_containercheck.junit import cell_properties

from helpers import ONLY_SYSTEM, RUN_LIMIT, owned_by, rewrite_docker_save, signal_when_ready

HUGE = 30_000_000
"""Characters of the hostile text: a 30 MB label, one word (the worst case for line wrapping)."""


def test_wrapping_gives_textwraps_lines() -> None:
    """The terminal's own wrapping is textwrap's (break long words, not at hyphens), line for line,
    on texts made of everything textwrap treats specially: its six whitespace characters, other
    Unicode spaces (part of a word for textwrap), hyphens, words longer than a line."""
    rnd = random.Random(30)
    pieces = ["a", "bc", "-", " ", "  ", "\t", "\n", "\r", "\x0b", "\u00a0", "é", "x" * 30, "y" * 200]
    for _ in range(3000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 40)))
        width = rnd.randint(12, 60)
        first, rest = rnd.choice(["", "  ", "FAIL  ", "[12] "]), rnd.choice(["", "    ", " " * 10])
        expected = textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                                 break_long_words=True, break_on_hyphens=False)
        assert wrap(text, width, first, rest) == expected, (text, width, first, rest)


def test_wrapping_a_30_mb_word_is_linear() -> None:
    """textwrap keeps what is left of a long word as a new string for each line it cuts: quadratic,
    hours for 30 MB.  Ours reads through an offset: one pass."""
    lines = wrap("x" * HUGE, 80, "FAIL  ", "      ")
    assert len(lines) == -(-HUGE // 74)  # 74 characters of the word after each 6-character prefix
    assert lines[0] == "FAIL  " + "x" * 74 and all(len(line) <= 80 for line in lines)
    assert sum(len(line) - 6 for line in lines) == HUGE


def _hostile_matrix() -> tuple[Matrix, str]:
    huge = "w" * HUGE
    matrix = Matrix()
    expected = Expectation(allowed={"system.os": [{"source": "image label", "reason": huge}]})
    matrix.add_column(Column(id="docker://img:1", host="h", facts={"labels": {"org.example.notes": huge}},
                             expectations=expected.to_dict()))
    matrix.put(Cell("system.os", "docker://img:1", "h", "xfail", detail=huge, fix=huge,
                    evidence={"output": huge, "nested": {"k": [huge]}}))
    matrix.put(Cell("system.python", "docker://img:1", "h", "fail", detail=huge, fix=huge, fault="image"))
    return matrix, huge


def test_every_report_but_the_json_caps_hostile_text() -> None:
    matrix, huge = _hostile_matrix()
    more = f"{HUGE - TEXT_CAP} more characters"
    terminal = "\n".join(render_terminal(matrix, width=80, verbosity=1))
    markdown = render_markdown(matrix)
    page = render_html(matrix)
    for name, text in (("terminal", terminal), ("markdown", markdown), ("html", page)):
        assert len(text) < 60_000, (name, len(text))
        assert more in text.replace("\n", "").replace("      ", ""), name
    assert f"…[{HUGE - EVIDENCE_CAP} more characters]" in page  # evidence: a larger cap
    props = dict(cell_properties(matrix.cells[("system.python", "docker://img:1", "h")]))
    assert len(props["containercheck.detail"]) < 2 * TEXT_CAP and props["containercheck.detail"].endswith(more + "]")
    # The JSON keeps every text whole (its escaping is safe whatever the size).
    data = json.loads(render_json(matrix))
    assert data["cells"][0]["detail"] == huge and data["columns"][0]["facts"]["labels"]["org.example.notes"] == huge
    assert data["columns"][0]["expectations"]["allowed"]["system.os"][0]["reason"] == huge


def test_capped_says_how_much_it_left_out() -> None:
    assert capped("short") == "short" and capped("x" * TEXT_CAP) == "x" * TEXT_CAP
    assert capped("x" * (TEXT_CAP + 5)) == "x" * TEXT_CAP + "…[5 more characters]"


# -- the end of a run: a signal while the reports are written or printed ------------------------------

#: A summary that lasts until the test has sent its signal: the matrix files are written by then, and
#: the matrix printed (this hook runs last); ``printing`` says it began, ``not interrupted`` that it ended.
SLOW_SUMMARY = """
import pathlib, threading, pytest

@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    pathlib.Path("printing").write_text("")
    tick = threading.Event()
    for _ in range(1200):  # 60 s at most
        if pathlib.Path("signalled").exists():
            break
        tick.wait(0.05)
    tick.wait(0.5)  # a signal that is held off, or ignored, lands in here
    pathlib.Path("not interrupted").write_text("")
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_reports_are_printed_ends_the_run(pytester: pytest.Pytester, sig: str) -> None:
    """Not held off like the clean-up (tests/test_plugin.py): exit 2 at once, no traceback, and the
    report files written before the signal are kept whole."""
    pytester.makeconftest(SLOW_SUMMARY)
    pytester.makepyfile(test_one="def test_one(container):\n    container.note('ran')\n")
    args = ["-p", "no:cacheprovider", "--image", "host", "--no-builtin-checks", "test_one.py", "--matrix-json",
            "m.json", "--matrix-md", "m.md", "--junitxml", "j.xml"]
    code, out, pid = signal_when_ready(pytester.path, args, "printing", sig, "the summary")
    assert code == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert not (pytester.path / "not interrupted").exists(), out[-3000:]
    assert f"Exit: {sig} while the reports were written" in out and "Traceback" not in out, out[-3000:]
    assert "containercheck matrix" in out  # the matrix was printed before the signal
    data = json.loads((pytester.path / "m.json").read_text())
    assert data["complete"] is True and data["summary"]["pass"] == 1
    assert (pytester.path / "m.md").read_text().startswith("## containercheck matrix")
    assert (pytester.path / "j.xml").read_text().rstrip().endswith("</testsuites>")
    assert owned_by(pid) == []


# -- a real image with a 30 MB label -------------------------------------------------------------------


@pytest.mark.docker
def test_a_30_mb_label_costs_the_run_nothing(pytester: pytest.Pytester, base_image: str, tmp_path: Path) -> None:
    """An image whose allow-fail label carries a 30 MB reason (one word), and another 30 MB label: the run
    ends as it would without them, every report but the JSON showing the reason capped."""
    saved = tmp_path / "base.tar"
    subprocess.run(["docker", "save", "-o", str(saved), base_image], check=True, timeout=300)
    hostile = pytester.path / "hostile.tar"
    labels = {"org.containercheck.allow-fail": "system.tls: " + "r" * HUGE, "org.example.notes": "n" * HUGE}
    digest = rewrite_docker_save(saved, hostile, lambda config: config.setdefault("config", {})
                                 .setdefault("Labels", {}).update(labels))
    try:
        result = pytester.runpytest_subprocess(
            "--image", str(hostile), *ONLY_SYSTEM, "--matrix-json", "m.json", "--matrix-md", "m.md",
            "--matrix-html", "m.html", "--junitxml", "j.xml", timeout=RUN_LIMIT)
        out = result.stdout.str()
        assert result.ret == 0, out[-3000:]
        assert len(out) < 100_000, len(out)
        flat = "".join(out.split())  # the summary wraps the reason's one word over lines
        assert re.search(rf"system\.tls\(byimagelabel:r{{{TEXT_CAP // 2},}}…\[\d+morecharacters\]", flat), out[-3000:]
        for name in ("m.md", "m.html", "j.xml"):
            assert (pytester.path / name).stat().st_size < 1_000_000, name
        data = json.loads((pytester.path / "m.json").read_text())
        column = data["columns"][0]
        assert column["facts"]["labels"]["org.example.notes"] == "n" * HUGE  # whole in the JSON
        reasons = [a["reason"] for part in ("allowed", "ignored")  # ignored: an allowance the repository does not trust
                   for a in (column["expectations"].get(part) or {}).get("system.tls", [])]
        assert reasons == ["r" * HUGE]
    finally:
        subprocess.run(["docker", "rmi", "--force", digest], capture_output=True, timeout=120)
