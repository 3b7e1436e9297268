"""The terminal matrix fits the terminal (issue 23): real runs at 80 columns, the full image and
three images, and ``-q`` lists only the problems."""

from __future__ import annotations

import re

import pytest

from helpers import ONLY_SYSTEM

pytestmark = [pytest.mark.docker]

# A progress line of pytest's: a test file's path, then its results (a row name like
# "system.python" never has a blank right after ".py").
_PROGRESS = re.compile(r"^\S+\.py(\s|$)")


def _ours(out: str) -> list[str]:
    """What a run printed, less pytest's own header (``rootdir: /tmp/pytest-of-root/...`` is as
    long as the test's directory) and the test ids pytest prints under ``-rA``/failures."""
    lines = out.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.startswith(("collected ", "containercheck:"))), 0)
    # pytest's own lines naming a test ("FAILED path::test[id]", "____ test[id] ____") are as
    # long as the test's name; ours never name a node id. Its progress lines start with the
    # check module's path relative to where pytest runs ("../../../work/main/pytest_containercheck/
    # checks/test_system.py . [ 4%]"), as long as the clone's directory is deep: CI's clone under
    # /check/work/main made one 83 columns wide.
    return [ln for ln in lines[first:] if "::" not in ln and not _PROGRESS.match(ln)
            and not ln.startswith(("_", "rootdir: ", "plugins: "))]


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    monkeypatch.setenv("COLUMNS", "80")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=900)


@pytest.mark.slow
def test_full_image_fits_80_columns(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                   full_image: str) -> None:
    result = _run(pytester, monkeypatch, "--image", full_image)
    ours = _ours(result.stdout.str())
    assert len(ours) > 15 and max(map(len, ours)) <= 80, max(ours, key=len)


def test_three_images_fit_80_columns_and_quiet_lists_only_problems(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, base_image: str, nopython_image: str,
        image_factory: object) -> None:
    images = [base_image, nopython_image, "host"]
    args = [a for i in images for a in ("--image", i)]
    result = _run(pytester, monkeypatch, *args, *ONLY_SYSTEM)
    ours = _ours(result.stdout.str())
    assert max(map(len, ours)) <= 80, max(ours, key=len)
    assert any(ln.startswith("check ") and "[3]" in ln for ln in ours)  # the grid
    quiet = _run(pytester, monkeypatch, *args, *ONLY_SYSTEM, "-q")
    section = _ours(quiet.stdout.str())
    assert not any(ln.startswith("check ") for ln in section), section  # no grid under -q
    start = next(i for i, ln in enumerate(section) if ln.startswith("=") and "containercheck matrix" in ln) + 1
    end = next((i for i in range(start, len(section)) if section[i].startswith("=")), len(section))
    matrix = section[start:end]  # pytest prints its own sections (FAILURES under xdist) around ours
    # What the gate asked of each image (here: nothing) is said at every verbosity, and is no verdict.
    verdicts = {ln.split()[0] for ln in matrix if ln and not ln.startswith((" ", "=", "no expectations for"))
                and not ln[0].isdigit()}
    assert verdicts <= {"ERROR", "FAIL", "INTR", "CONFLICT"} and "ERROR" in verdicts, matrix
