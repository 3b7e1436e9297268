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
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

MODES = ("row", "pytest")


def case_name(row: str, image: str) -> str:
    return f"{row} [{image}]"


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
        row, image = props.get("containercheck.row"), props.get("containercheck.image")
        if row and image:
            case.set("name", case_name(row, image))
            renamed += 1
    return renamed
