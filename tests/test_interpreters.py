"""Which Python runs in the image, and what the rows say when it is not the one with the
libraries (issue 25, items 9 and 11): an environment off PATH (a venv or conda env that an
entrypoint or a login shell activates), a python3 that is not a working Python, and the user's
own ``--container-env PATH=`` / ``PYTHONHOME=`` are named as such, never blamed on the image."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.docker]

SYSTEM = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_system.py")
ML = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_ml.py")


@pytest.fixture(scope="module")
def derived(base_image: str) -> Iterator[Callable[[str, str], str]]:
    """``build(name, RUN-lines)``: an image FROM base, built once per module, removed afterwards."""
    made: list[str] = []

    def build(name: str, run: str) -> str:
        tag = f"containercheck-test/interp-{name}:1"
        res = subprocess.run(["docker", "build", "--quiet", "--tag", tag, "-"], input=f"FROM {base_image}\n{run}\n",
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        made.append(tag)
        return tag

    yield build
    subprocess.run(["docker", "rmi", "--force", *made], capture_output=True, timeout=120)


def _cells(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    return {c["row"]: c for c in json.loads((pytester.path / "m.json").read_text())["cells"]}


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--no-builtin-checks", "--matrix-json", "m.json",
                                         *args, timeout=600)


def test_a_library_in_a_venv_off_path_fails_naming_the_interpreter(pytester: pytest.Pytester,
                                                                   derived: Callable[[str, str], str]) -> None:
    # xgboost lives in /opt/venv (as an entrypoint's "source /opt/venv/bin/activate" would use
    # it); python3 on PATH has none: the row does not skip silently, it names the interpreter.
    image = derived("venv", "RUN python3 -m venv --without-pip /opt/venv && "
                    "d=$(/opt/venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])') && "
                    "mkdir -p $d/xgboost && touch $d/xgboost/__init__.py")
    result = _run(pytester, "--image", image, ML, "-k", "xgboost.cpu")
    cell = _cells(pytester)["xgboost.cpu"]
    assert cell["status"] == "fail", (cell, result.stdout.str()[-2000:])
    assert cell["detail"].startswith("xgboost is not installed for /usr/bin/python3")
    assert "but /opt/venv/bin/python3 (Python 3." in cell["detail"]
    assert cell["fix"].startswith("--container-python /opt/venv/bin/python3")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_library_nowhere_still_skips(pytester: pytest.Pytester, base_image: str) -> None:
    result = _run(pytester, "--image", base_image, ML, "-k", "xgboost.cpu")
    cell = _cells(pytester)["xgboost.cpu"]
    assert cell["status"] == "skip" and result.ret == 0, cell
    assert cell["evidence"]["other_interpreters"] == []


def test_python_only_off_path_is_named_with_the_fix(pytester: pytest.Pytester,
                                                    derived: Callable[[str, str], str]) -> None:
    image = derived("offpath", "RUN mkdir -p /opt/py/bin && cp /usr/bin/python3.11 /opt/py/bin/python3 && "
                    "rm /usr/bin/python3 /usr/bin/python3.11")
    _run(pytester, "--image", image, SYSTEM, "-k", "system.python")
    cell = _cells(pytester)["system.python"]
    assert cell["status"] == "error", cell
    assert cell["detail"] == "no python3 or python on the image's PATH, but it holds /opt/py/bin/python3"
    assert cell["fix"].startswith("--container-python /opt/py/bin/python3")
    again = _run(pytester, "--image", image, SYSTEM, "-k", "system.python", "--container-python", "/opt/py/bin/python3")
    assert _cells(pytester)["system.python"]["status"] == "pass", again.stdout.str()[-2000:]


def test_a_python3_that_is_not_python(pytester: pytest.Pytester, derived: Callable[[str, str], str]) -> None:
    image = derived("fakepy", "RUN rm /usr/bin/python3 && printf '#!/bin/sh\\necho not python >&2\\nexit 3\\n' "
                    "> /usr/bin/python3 && chmod +x /usr/bin/python3")
    _run(pytester, "--image", image, SYSTEM, "-k", "system.python")
    cell = _cells(pytester)["system.python"]
    assert cell["detail"] == "python3 is in the image but is not a working Python (exit 3: not python)", cell
    assert cell["fix"] == "name a working interpreter with --container-python PATH"


def test_the_users_own_pythonhome_is_named_not_the_image(pytester: pytest.Pytester, base_image: str) -> None:
    _run(pytester, "--image", base_image, SYSTEM, "-k", "system.python", "--container-env", "PYTHONHOME=/nowhere")
    cell = _cells(pytester)["system.python"]
    assert cell["detail"].startswith("python3 is in the image but is not a working Python (exit 1: "), cell
    assert cell["detail"].endswith("; your --container-env sets PYTHONHOME=/nowhere, which decides which Python "
                                   "runs and whether it can start")
    assert cell["fix"].startswith("drop or fix --container-env PYTHONHOME; ")


def test_the_users_own_path_is_named_not_the_image(pytester: pytest.Pytester, base_image: str) -> None:
    _run(pytester, "--image", base_image, SYSTEM, "-k", "system.python", "--container-env", "PATH=/nowhere")
    cell = _cells(pytester)["system.python"]
    assert cell["status"] == "error"
    assert "your --container-env PATH=/nowhere replaces the image's PATH" in cell["detail"], cell
    assert cell["fix"].startswith("drop or fix --container-env PATH")
