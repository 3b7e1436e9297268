"""The system rows' verdicts (``engine/verdicts_system.py``) on the ``system`` probe's facts.

Passes are judged on the facts recorded on the lent H200 (``tests/data/gpu/h200-system.json``,
Ubuntu 24.04, glibc 2.39); each failure branch on those facts with one fact changed to what
``probes/system.py`` reports there:

* musl (Alpine): ``os.confstr("CS_GNU_LIBC_VERSION")`` raises ``ValueError`` (musl does not define
  the name) and ``platform.libc_ver()`` finds no glibc in the interpreter: ``{"name": None,
  "version": None}``;
* an old glibc: ``os.confstr`` answers ``"glibc 2.12"`` (CentOS 6).

The ``tls`` verdict has its own module of tests, ``tests/test_tls_row.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import verdicts_system as system

ROOT = Path(__file__).resolve().parent.parent


def _h200(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((ROOT / "tests" / "data" / "gpu" / "h200-system.json").read_text())["facts"]
    facts.update(changes)
    return facts


def test_os_passes_on_a_recorded_glibc_system() -> None:
    v = system.os_and_glibc(_h200())
    assert v.status == "pass" and v.detail == "Ubuntu 24.04.3 LTS, glibc 2.39, x86_64"


@pytest.mark.parametrize("libc", [{"name": None, "version": None}, {"name": "libc", "version": "1.2.5"}])
def test_os_fails_on_musl(libc: dict[str, Any]) -> None:
    """What the probe finds on Alpine, and a libc that names a version but is not glibc (``platform.libc_ver``
    answers ``("libc", version)`` for an interpreter linked to a ``libc.so.N``)."""
    alpine = {"NAME": "Alpine Linux", "ID": "alpine", "PRETTY_NAME": "Alpine Linux v3.20"}
    v = system.os_and_glibc(_h200(glibc=libc, os_release=alpine))
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("Alpine Linux v3.20: not a glibc system (")
    assert v.fix == "use a glibc-based base image (Debian, Ubuntu, RHEL), not Alpine/musl"


def test_os_fails_without_a_libc_version_or_os_release() -> None:
    v = system.os_and_glibc(_h200(glibc={"name": "glibc", "version": None}, os_release={}))
    assert v.status == "fail" and v.detail.startswith("unknown OS (no /etc/os-release): not a glibc system")


@pytest.mark.parametrize(("version", "status"), [("2.12", "fail"), ("2.16", "fail"), ("2.17", "pass"),
                                                 ("2.28", "pass")])
def test_os_fails_on_a_glibc_older_than_manylinux2014(version: str, status: str) -> None:
    v = system.os_and_glibc(_h200(glibc={"name": "glibc", "version": version}))
    assert v.status == status
    if status == "fail":
        assert v.fault == "image"
        assert v.detail == f"glibc {version} is older than 2.17; manylinux2014 wheels will not load"
        assert v.fix == "rebuild on a newer base image"


def test_writable_cache_passes_on_the_recorded_facts() -> None:
    v = system.writable_cache(_h200())
    assert v.status == "pass" and v.detail == "cache /root/.cache, home /root, tmp /tmp writable"


def test_writable_cache_names_each_directory_that_is_not_writable() -> None:
    facts = _h200()
    facts["writable"]["home"] = {"path": "/home/app", "writable": False, "error": "PermissionError: [Errno 13]"}
    facts["writable"]["cache"] = {"path": "/home/app/.cache", "writable": False, "error": "OSError: [Errno 30]"}
    v = system.writable_cache(facts)
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail == ("not writable: cache (/home/app/.cache: OSError: [Errno 30]), "
                        "home (/home/app: PermissionError: [Errno 13])")
    assert "XDG_CACHE_HOME" in (v.fix or "")
