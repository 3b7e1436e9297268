"""JUnit test case names that say what was checked where: ``system.python [docker://img:1.4]``.

pytest's ``--junitxml`` names a test case after its node id (``test_python[docker://img:1.4]``
in class ``test_system``), which is what CI web pages show. The matrix row and the image are
already on each case as ``containercheck.row`` / ``containercheck.image`` properties (added from
the teardown report, so they reach the controller under xdist too). Renaming the case at the
end of the session, from those properties, leaves the node id itself alone, so ``--lf``,
``-k``, the terminal and the cache see the usual ids.

pytest keeps no public hook for a test case's name; ``record_xml_attribute`` does nothing on
xdist workers. So this reads junitxml's own plugin object (``_pytest.junitxml.xml_key``): every
finished case is an ``ElementTree`` element by then (``_NodeReporter.finalize`` caches it), the
same in pytest 8.0 and 9.2. If a pytest changes that, the names stay pytest's and one warning
says so; nothing else is affected.

Everything of JUnit is here: the cell flattened into ``containercheck.*`` properties
(:func:`put_properties`, called by the matrix reporter once the cell is final), and the
``--junit-names`` renaming (:class:`CaseNames`, registered on the controller by :func:`register`;
the option itself is a record in :data:`.options.OPTIONS`, its choices :data:`MODES`).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from .engine.matrix import CELL_KEY, Cell
from .engine.textsafe import capped

MODES = ("row", "pytest")
"""``--junit-names`` choices: ``row`` ('system.python [docker://img:1.4]', the default) or
``pytest`` (the node id's, 'test_python[docker://img:1.4]')."""

VALUE_WIDTH = 300
"""Evidence values longer than this are cut in JUnit properties (the JSON/HTML have them whole)."""
EVIDENCE_LIMIT = 30
"""At most this many ``containercheck.evidence.*`` properties per test case."""


def case_name(row: str, image: str) -> str:
    """A JUnit test case's name under ``--junit-names row``."""
    return f"{row} [{image}]"


def finalizes_case(report: pytest.TestReport) -> bool:
    """Whether junitxml finalizes a test case from *report*: its teardown report, or the failed
    call report when the teardown fails too (so the properties must be flat by then)."""
    return report.when == "teardown" or (report.when == "call" and report.failed)


ROW_PROPERTY = "containercheck.row"
IMAGE_PROPERTY = "containercheck.image"


def cell_properties(cell: Cell) -> list[tuple[str, str]]:
    """A cell as flat string properties for ``--junitxml`` (a dict would be written as its repr)."""
    props = [(ROW_PROPERTY, capped(cell.row)), (IMAGE_PROPERTY, capped(cell.column)),
             ("containercheck.host", capped(cell.host)), ("containercheck.status", cell.status),
             ("containercheck.detail", capped(cell.detail))]
    props += [(f"containercheck.{k}", capped(v)) for k, v in (("fix", cell.fix), ("fault", cell.fault)) if v]
    evidence: list[tuple[str, str]] = []
    for key, value in cell.evidence.items():
        # Scalars, and the scalars one level down: the key facts (renderer, versions, devices).
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in items:
            if v is None or isinstance(v, (dict, list)) or v == "":
                continue
            text = " ".join(capped(str(v), VALUE_WIDTH + 1).split())
            if len(text) > VALUE_WIDTH:
                text = text[: VALUE_WIDTH - 1] + "…"
            evidence.append((f"containercheck.evidence.{key}" + (f".{sub}" if sub else ""), text))
    return props + evidence[:EVIDENCE_LIMIT]


def put_properties(report: pytest.TestReport, cell: Cell) -> None:
    """Replace the cell record among *report*'s user properties with :func:`cell_properties`."""
    props = list(report.user_properties)
    at = next(i for i, (k, _v) in enumerate(props) if k == CELL_KEY)
    report.user_properties = [*props[:at], *cell_properties(cell), *(p for p in props[at + 1:] if p[0] != CELL_KEY)]


class CaseNames:
    """Renames the finished JUnit test cases ``ROW [IMAGE]`` (``--junit-names row``)."""

    # tryfirst: before junitxml's own pytest_sessionfinish writes the file.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        rename_cases(session.config)


def register(config: pytest.Config, mode: str) -> None:
    """On the controller: rename the test cases unless *mode* (``--junit-names``) is ``pytest``."""
    if mode == "row" and getattr(config.option, "xmlpath", None):
        config.pluginmanager.register(CaseNames(), "containercheck-junit-names")


def rename_cases(config: pytest.Config) -> int:
    """Rename every finished JUnit test case that carries a row and an image; how many were."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest without junitxml's stash key
        return 0
    xml: Any = config.stash.get(xml_key, None)
    if xml is None:
        return 0
    reporters = getattr(xml, "node_reporters_ordered", None)
    if not isinstance(reporters, list):
        warnings.warn(pytest.PytestWarning(
            "containercheck: JUnit test cases keep pytest's names (this pytest's junitxml has no "
            "node_reporters_ordered); the row and image are still in their properties"), stacklevel=1)
        return 0
    renamed = 0
    for reporter in reporters:
        try:
            case = reporter.to_xml()
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
        except (AttributeError, TypeError):  # not a case this pytest wrote as we know it: left alone
            continue
        row, image = props.get(ROW_PROPERTY), props.get(IMAGE_PROPERTY)
        if row and image:
            case.set("name", case_name(row, image))
            renamed += 1
    return renamed
