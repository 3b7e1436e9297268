"""Fixtures for the project's own tests: Docker availability and locally built test images.

Test images come from recipes in tests/images/build.py (debootstrap + PyPI wheels, cached by
recipe hash).  Under CI=true a missing Docker engine fails the tests that need it; it never
skips them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent


def load_build() -> ModuleType:
    """tests/images/build.py as a module (the test-image recipes)."""
    spec = importlib.util.spec_from_file_location("containercheck_test_images", ROOT / "tests/images/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def docker_problem() -> str | None:
    """Why Docker cannot be used here, or None when it works."""
    try:
        res = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                             capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "the docker command is not installed (run: python3 tests/images/provision.py)"
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer in 60 s"
    if res.returncode != 0:
        return f"the Docker daemon is not usable: {res.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker executable; fails under CI=true (skips elsewhere) when Docker is missing."""
    problem = docker_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Docker is required under CI=true: {problem}", pytrace=False)
        pytest.skip(problem)
    return "docker"


@pytest.fixture(scope="session")
def image_factory(docker: str) -> Callable[[str], str]:
    """Build (once, cached by recipe hash) and return a test image reference by recipe name."""
    build = load_build()

    def get(name: str) -> str:
        return str(build.ensure_image(name, log=lambda msg: sys.stderr.write(f"[images] {msg}\n")))

    return get


@pytest.fixture(scope="session")
def base_image(image_factory: Callable[[str], str]) -> str:
    """Debian bookworm + python3."""
    return image_factory("base")


@pytest.fixture(scope="session")
def nopython_image(image_factory: Callable[[str], str]) -> str:
    """Debian bookworm without any Python."""
    return image_factory("nopython")


@pytest.fixture(scope="session")
def full_image(image_factory: Callable[[str], str]) -> str:
    """The one shared full-stack image: Mesa + vtk + pyvista + torch (CPU) + xgboost + transformers."""
    return image_factory("full")


def containers_with_label(label: str = "org.containercheck.run") -> list[str]:
    """Names of every container (running or not) carrying *label* (``key`` or ``key=value``)."""
    res = subprocess.run(["docker", "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=60, check=True)
    return [n for n in res.stdout.split() if n]


def leftovers(matrix_json: Path) -> list[str]:
    """Containers still present from the run that wrote *matrix_json* (by its run id)."""
    import json

    run_id = json.loads(matrix_json.read_text())["meta"]["run_id"]
    return containers_with_label(f"org.containercheck.run={run_id}")


def owned_by(pid: int) -> list[str]:
    """Containers started by the pytest process *pid* on this host."""
    return containers_with_label(f"org.containercheck.owner={os.uname().nodename}/{pid}")


def podman_containers(run_id: str) -> list[str]:
    """Podman containers still present from run *run_id*."""
    res = subprocess.run(["podman", "ps", "--all", "--filter", f"label=org.containercheck.run={run_id}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60, check=True)
    return [n for n in res.stdout.split() if n]
