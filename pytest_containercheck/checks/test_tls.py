"""Built-in row ``system.tls``: can HTTPS certificates be verified inside the image?

The ``tls`` probe reads, offline, where the image's Python and its HTTPS clients would find CA
certificates; :func:`pytest_containercheck.engine.verdicts.system.tls` judges the facts.
"""

from __future__ import annotations

import pytest

from pytest_containercheck import Container
from pytest_containercheck.engine.verdicts import system

# The registration: which probe this module's rows read, and where the rows go in the matrix
# (after the system rows at 10, before rendering at 20).
pytestmark = [pytest.mark.containercheck_probe("tls", weight=0.1), pytest.mark.containercheck_order(15)]


@pytest.mark.containercheck_row("system.tls")
def test_tls_trust_store(container: Container) -> None:
    """Python's default SSL context (urllib, torch.hub) has CA certificates; CA variables name real bundles."""
    facts = container.facts("tls")
    container.evidence("tls", facts)  # small: paths, counts, versions (JSON and HTML reports)
    container.apply(system.tls(facts))
