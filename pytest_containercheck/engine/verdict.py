"""The one verdict type: what the facts of a probe say about one matrix row.

Verdict functions (``verdicts.ml``, ``verdicts.render``, ``imagecompare``) are pure: facts in,
:class:`Verdict` out, unit-tested on recorded facts.  A check hands the verdict to
``container.apply(verdict)``, which turns it into the cell and the test outcome.
"""

from __future__ import annotations

import dataclasses
from typing import Final

STATUSES: Final = ("pass", "fail", "skip")
FAULTS: Final = ("image", "host", "pair")
"""Whose fault a failure is: the image's, the host's, or the pair's (a mismatch of the two)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``status`` is ``pass``, ``fail`` or ``skip``; ``detail`` the one line for the cell."""

    status: str
    detail: str
    fix: str | None = None
    """What to do about a failure."""
    fault: str | None = None
    """One of :data:`FAULTS`, or None when it cannot be told."""
    note: str = ""
    """For a pass: the cell's note when it should differ from *detail* (timings, renderer)."""
    missing: str = ""
    """For a skip because a Python module is absent (``torch``): that module.  ``container.apply``
    then looks for other interpreters in the image that have it (an environment its entrypoint
    activates), and fails the row naming the ``--container-python`` to use."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status must be one of {STATUSES}, not {self.status!r}")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {self.fault!r}")

    @property
    def passed(self) -> bool:
        """True for a pass."""
        return self.status == "pass"


NOT_INSTALLED = "not installed in the image"
"""How a skip for an absent Python module says so (:attr:`Verdict.missing` set)."""
NOT_INSTALLED_HOST = "not installed in this Python"
"""The same said of ``--image host``, where there is no image (see :func:`for_host`)."""


def for_host(verdict: Verdict) -> Verdict:
    """*verdict* as said of ``--image host``: a module absent from this Python, not from an image."""
    if not verdict.missing:
        return verdict
    return dataclasses.replace(verdict, detail=verdict.detail.replace(NOT_INSTALLED, NOT_INSTALLED_HOST))


def passed(detail: str, note: str = "") -> Verdict:
    """A pass with *detail* (and the cell *note*, when different)."""
    return Verdict("pass", detail, note=note)


def skipped(detail: str, missing: str = "") -> Verdict:
    """A skip: the row does not apply (library not installed, no GPU on the host); *missing*:
    the Python module whose absence it is (see :attr:`Verdict.missing`)."""
    return Verdict("skip", detail, missing=missing)


def failed(detail: str, fix: str | None, fault: str | None) -> Verdict:
    """A failure, with what to do about it and whose fault it is."""
    return Verdict("fail", detail, fix=fix, fault=fault)
