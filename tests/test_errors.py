"""One error type: every exception the package defines is a :class:`~pytest_containercheck.engine.errors.Problem`,
carrying its message, fix, fault and evidence, and a problem met during a test becomes the cell's error in one
place (:meth:`~pytest_containercheck.container.Container.problem`)."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from pytest_containercheck.engine.errors import Problem, UsageProblem

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_containercheck"


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in the package whose bases name an exception or error."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = [ast.unparse(b) for b in node.bases]
                if any(n.endswith(("Exception", "Error", "Problem", "Fault")) for n in names):
                    found.append((module.removesuffix(".__init__"), node.name))
    return found


def test_every_exception_of_the_package_is_a_problem() -> None:
    classes = _exception_classes()
    assert {"UsageProblem", "RuntimeFault", "ProbeError", "ArchiveError"} <= {c for _, c in classes}
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Problem), f"{module}.{name} is not a Problem"


def test_a_problem_carries_message_fix_fault_and_evidence() -> None:
    from pytest_containercheck.engine.probing import ProbeError
    from pytest_containercheck.engine.runtimes import RuntimeFault

    for cls in (Problem, UsageProblem, RuntimeFault, ProbeError):
        p = cls("no Python in the image", fix="install python3", evidence="exit 127", fault="image")
        assert (str(p), p.fix, p.evidence, p.fault) == ("no Python in the image", "install python3", "exit 127",
                                                        "image")
    assert (UsageProblem("bad").fix, UsageProblem("bad").fault, UsageProblem("bad").evidence) == (None, None, "")


def test_a_problem_during_a_test_is_the_cells_error_with_its_fix_and_fault(pytester: pytest.Pytester) -> None:
    """Through the one conversion: the fixture's image fails to start (a RuntimeFault from the runtime)."""
    pytester.makepyfile(test_mine="""
        from pytest_containercheck.engine.runtimes import RuntimeFault

        def test_mine(container):
            container.problem(RuntimeFault("the daemon went away", fix="start dockerd", evidence="EOF", fault="host"))
    """)
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", "test_mine.py", "--matrix-json", "m.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the daemon went away*", "*Fix: start dockerd*", "*EOF*"])
    cell = json.loads((pytester.path / "m.json").read_text())["cells"][0]
    assert (cell["status"], cell["fix"], cell["fault"]) == ("error", "start dockerd", "host")
