"""What the plugin says to someone finding their way: usage errors that fit the terminal, and the
hint when a run was given no ``--image``.

* :func:`usage_error` -- every usage error of the plugin: one line in a pipe or a CI log (tools
  grep whole lines), wrapped to the terminal's width on a terminal (pytest prints it after
  ``ERROR: ``, which the first line leaves room for).
* :class:`NoImageHint` -- registered on the controller when no ``--image`` was given: a run that
  collected nothing, or collected checks that take ``container`` (they skip), ends with the three
  example commands instead of pytest's bare "no tests ran".
"""

from __future__ import annotations

from typing import Any

import pytest

from .engine.report import fit, line_width
from .engine.textsafe import visible

_ERROR = "ERROR: "

NO_IMAGE = [
    "containercheck: no --image given, so no image was checked. For example:",
    "  pytest --image mytorchvista.sif      # a SIF with Apptainer, on a cluster",
    "  pytest --image team/img:1.4          # a Docker image, as a CI gate",
    "  pytest --image host                  # this machine's Python, no container",
    "pytest --help lists every option (its containercheck group); so does the",
    "docs' page \"Options and ini keys\".",
]
"""The hint, each line at most 80 characters wide."""

NO_IMAGE_SKIP = "no --image given (e.g. pytest --image host)"
"""Why a test that takes ``container`` skips in a run without ``--image``."""


def usage_error(message: str) -> pytest.UsageError:
    """:class:`pytest.UsageError` for *message* (control characters shown as escapes): one line,
    or wrapped to the terminal when there is one (:func:`~.engine.report.line_width`)."""
    text = visible(message, lines=False)
    width = line_width()
    if width is None:
        return pytest.UsageError(text)
    lines = fit(_ERROR + text, max(width, 40), indent=" " * len(_ERROR))
    return pytest.UsageError("\n".join([lines[0][len(_ERROR):], *lines[1:]]))


class NoImageHint:
    """The example commands, at the end of a run given no ``--image`` that collected nothing or
    checks that need an image; quiet for a project's ordinary tests."""

    def __init__(self) -> None:
        self.wants_image = False

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.wants_image = any("container" in getattr(item, "fixturenames", ()) for item in session.items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Under xdist the controller collects nothing: the checks' skips say they wanted an image.
        if report.skipped and NO_IMAGE_SKIP in str(report.longrepr):
            self.wants_image = True

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        if not (self.wants_image or exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED):
            return
        terminalreporter.write_sep("=", "containercheck")
        for line in NO_IMAGE:
            terminalreporter.write_line(line)
