"""The engine's own usage error: bad input a person must fix before anything starts."""

from __future__ import annotations


class UsageProblem(Exception):
    """Input that cannot work (an image path that is not there, a runtime that is missing, a
    flag the plugin owns); ``str()`` is one line naming the fix.

    The pytest plugin turns it into :class:`pytest.UsageError` (exit code 4) in one place
    (``plugin.pytest_configure``); the ``containercheck`` command prints it and exits 4 too.
    """
