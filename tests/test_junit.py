"""JUnit (``pytest_containercheck/junit.py``): the cell's ``containercheck.*`` properties reach every test
case junitxml writes.  The ordinary cases (a pass, a skip, a failed call whose teardown passes) are in
``tests/test_reports.py``; here the case junitxml finalizes from the failed call report itself."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_containercheck import junit
from pytest_containercheck.engine.matrix import Cell

DOUBLE_FAILURE = """
import pytest

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("the teardown broke too")

@pytest.mark.containercheck_row("user.double")
def test_double(container, broken_teardown):
    container.fail("the check failed", fix="do this", fault="image")
"""


def test_properties_of_a_failed_call_are_written(pytester: pytest.Pytester) -> None:
    """A call that fails and a teardown that fails too: junitxml writes the failure as its own test
    case, finalized from the call report (the teardown's error is a second case), so the call report's
    properties must already be flat, not the cell dict."""
    pytester.makepyfile(test_double=DOUBLE_FAILURE)
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", "test_double.py", "--junitxml", "j.xml")
    result.assert_outcomes(failed=1, errors=1)
    cases = list(ET.parse(pytester.path / "j.xml").getroot().iter("testcase"))
    assert len(cases) == 2
    failure = next(c for c in cases if c.find("failure") is not None)
    props = {p.get("name"): p.get("value") for p in failure.iter("property")}
    assert failure.get("name") == "user.double [host]"
    assert (props.get("containercheck.row"), props.get("containercheck.status"), props.get("containercheck.fix"),
            props.get("containercheck.fault")) == ("user.double", "fail", "do this", "image")
    for case in cases:
        assert "containercheck" not in {p.get("name") for p in case.iter("property")}, \
            "the cell dict must not be written as its repr"


def test_cell_properties_are_flat_strings() -> None:
    cell = Cell("render.egl", "docker://img:1", "h", "fail", "EGL rendered with llvmpipe", fix="ship 10_nvidia.json",
                fault="image", evidence={"render": {"gl_renderer": "llvmpipe (LLVM 15.0.6)", "frames": [1, 2]},
                                         "long": "x" * 400})
    props = dict(junit.cell_properties(cell))
    assert props["containercheck.fix"] == "ship 10_nvidia.json" and props["containercheck.fault"] == "image"
    assert props["containercheck.evidence.render.gl_renderer"] == "llvmpipe (LLVM 15.0.6)"
    assert "containercheck.evidence.render.frames" not in props  # lists stay in the JSON/HTML
    assert len(props["containercheck.evidence.long"]) == junit.VALUE_WIDTH
