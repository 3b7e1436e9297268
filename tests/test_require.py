"""``--require ROW`` (``pytest_containercheck/require.py``): a required row that skipped, or that never
ran at all, fails the run; ``tests/test_plugin.py::test_required_rows`` has the skipped case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_containercheck import require
from pytest_containercheck.engine.expectations import Expectation
from pytest_containercheck.engine.matrix import Cell, Column, Matrix

SYSTEM = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_system.py")


def test_parse_splits_commas_and_repeats() -> None:
    assert require.parse(["a,b", "c  d", ""]) == ("a", "b", "c", "d")


def test_fill_missing_fails_each_required_row_absent_from_a_column() -> None:
    m = Matrix()
    for col in ("docker://a:1", "docker://b:1"):
        m.add_column(Column(col, "h"))
    m.put(Cell("system.python", "docker://a:1", "h", "pass", "ok"))
    both = Expectation(required={"system.python": ["--require"], "torch.cuda": ["--require"]})
    only_a = Expectation(required={"render.egl": ["image label"]})
    assert require.fill_missing(m, {"docker://a:1": both, "docker://b:1": both}) is True
    missing = sorted((c.row, c.column) for c in m.cells.values() if c.status == "fail")
    assert missing == [("system.python", "docker://b:1"), ("torch.cuda", "docker://a:1"), ("torch.cuda", "docker://b:1")]
    assert all(c.detail.startswith("required row did not run") and c.detail.endswith("required by --require")
               for c in m.cells.values() if c.status == "fail")
    assert require.fill_missing(m, {"docker://a:1": both, "docker://b:1": both}) is False  # a cell on each column now
    # Per image: a row one image's label requires is missing on that image only.
    assert require.fill_missing(m, {"docker://a:1": only_a}) is True
    assert m.get("render.egl", ("docker://a:1", "h")) is not None and m.get("render.egl", ("docker://b:1", "h")) is None


def test_a_required_row_that_never_ran_fails_the_run(pytester: pytest.Pytester) -> None:
    """Every test that ran passed; a required row that was deselected and one no check fills fail the run."""
    pytester.makepyfile(test_mine="""
        import pytest

        def test_not_selected(container):
            pass
    """)
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "test_mine.py", "-k",
                                "system.python", "--require", "system.os,not_selected", "--matrix-json", "m.json")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1 and "failed" not in outcomes and "errors" not in outcomes, outcomes
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cells = {c["row"]: c for c in json.loads((pytester.path / "m.json").read_text())["cells"]}
    for row in ("system.os", "not_selected"):
        assert cells[row]["status"] == "fail" and cells[row]["detail"].startswith("required row did not run")
    assert cells["system.python"]["status"] == "pass"
