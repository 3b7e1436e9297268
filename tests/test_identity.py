"""What a run says about itself: ``containercheck --version``, the version in pytest's header, and
the version, start time (UTC) and host in every report; and the package's own papers (licence,
changelog, what it installs)."""

from __future__ import annotations

import datetime
import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck import __version__
from pytest_containercheck.cli import main as cli_main
from pytest_containercheck.engine.matrix import Matrix
from pytest_containercheck.engine.report import render_html, render_markdown
from pytest_containercheck.engine.report.markdown import provenance

from helpers import ONLY_SYSTEM

ROOT = Path(__file__).resolve().parent.parent


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def test_containercheck_version() -> None:
    res = subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"containercheck {__version__}\n", "")


def test_version_needs_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"containercheck {__version__}\n"


def test_header_and_every_report_carry_version_start_and_host(pytester: pytest.Pytester) -> None:
    before = _utc_now()
    result = pytester.runpytest("--image", "host", "--matrix-json", "m.json", "--matrix-md", "m.md",
                                "--matrix-html", "m.html", *ONLY_SYSTEM)
    after = _utc_now()
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"containercheck: {__version__}, 1 image(s)", "  host"])
    data: dict[str, Any] = json.loads((pytester.path / "m.json").read_text())
    meta = data["meta"]
    assert meta["version"] == __version__
    assert meta["host"] == next(iter(data["hosts"])) and len(data["hosts"]) == 1
    started = datetime.datetime.fromisoformat(meta["started"])
    assert started.utcoffset() == datetime.timedelta(0)
    assert before <= started <= after
    line = f"containercheck {__version__}, started {meta['started']}, on {meta['host']}"
    assert line in (pytester.path / "m.md").read_text()
    assert html.escape(line) in (pytester.path / "m.html").read_text()

    # A merge says which containercheck merged, and what each run said of itself.
    assert cli_main(["merge", "m.json", "m.json", "--json", "merged.json", "--md", "merged.md"]) in (0, 1)
    merged = json.loads((pytester.path / "merged.json").read_text())["meta"]
    assert merged["version"] == __version__
    assert [r["started"] for r in merged["runs"]] == [meta["started"]] * 2
    text = (pytester.path / "merged.md").read_text()
    assert f"merged by containercheck {__version__} from 2 run(s)" in text
    assert f"run 2: {line}" in text


def test_no_header_line_when_no_image_is_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_it():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == 0
    assert "containercheck:" not in result.stdout.str()


def test_provenance_from_a_file_is_text() -> None:
    assert provenance({}) == []
    assert provenance({"version": "0.1.0"}) == ["containercheck 0.1.0"]
    matrix = Matrix()
    matrix.meta = {"merged_from": ["a.json"], "version": "0.1.0",
                   "runs": [{"version": "<b>9</b>", "started": "x|y", "host": "[h](javascript:1)"}, "not a dict"]}
    assert provenance(matrix.meta) == ["merged by containercheck 0.1.0 from 1 run(s)",
                                       "run 1: containercheck <b>9</b>, started x|y, on [h](javascript:1)"]
    md = render_markdown(matrix)
    assert "containercheck &lt;b&gt;9&lt;/b&gt;, started x\\|y, on \\[h\\](javascript:1)" in md
    assert "<b>" not in render_html(matrix)


def test_package_papers() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    # The README's "-n 2" works after the README's install.
    assert any(d.startswith("pytest-xdist") for d in project["dependencies"])
    assert project["readme"] == {"file": "README.md", "content-type": "text/markdown"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"\n## {__version__} " in changelog
