"""The engine's one error type: a problem a person must act on, with what to do and whose fault it is.

Every error the engine raises for a person is a :class:`Problem` (or a subclass): its one-line
message, the ``fix``, the ``fault`` (``image``, ``host``, ``pair`` or None) and the ``evidence``
(output that shows it).  The plugin turns them into pytest's outcomes in one place each way: a
:class:`UsageProblem` (bad input, before anything starts) in ``plugin.pytest_configure`` (exit 4),
any other during a test in :meth:`pytest_containercheck.container.Container.problem` (the cell's
error, with the fix and the evidence); the ``containercheck`` command prints a usage problem and
exits 4.
"""

from __future__ import annotations


class Problem(Exception):
    """A problem with its message (``str()``, one line), ``fix``, ``fault`` and ``evidence``."""

    def __init__(self, message: str, fix: str | None = None, evidence: str = "", fault: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix
        """What to do about it (None when nothing can be said)."""
        self.evidence = evidence
        """Output that shows the problem (a runtime's or a probe's), kept for the report."""
        self.fault = fault
        """Whose fault it is, when known: ``image``, ``host`` or ``pair``."""


class UsageProblem(Problem):
    """Input that cannot work (an image path that is not there, a runtime that is missing, a
    flag the plugin owns); ``str()`` is one line naming the fix.

    The pytest plugin turns it into :class:`pytest.UsageError` (exit code 4) in one place
    (``plugin.pytest_configure``); the ``containercheck`` command prints it and exits 4 too.
    """
