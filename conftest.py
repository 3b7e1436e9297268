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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent


def load_tool(name: str) -> ModuleType:
    """tests/images/<name>.py as a module: the test images' recipes (build), Apptainer (apptainer),
    Slurm (slurm) provisioning.  Loaded once per process; they import each other by name."""
    module_name = f"containercheck_test_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(ROOT / "tests" / "images") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests" / "images"))
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tests" / "images" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_build() -> ModuleType:
    """tests/images/build.py as a module (the test-image recipes)."""
    return load_tool("build")


def cut_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """*dst*: the first *fraction* of *src*, as a transfer that stopped part-way leaves it."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(int(src.stat().st_size * fraction)))
    return dst


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


# -- Apptainer -------------------------------------------------------------------------------


def apptainer_problem() -> str | None:
    """Why Apptainer cannot be used here, or None when ``apptainer version`` answers."""
    try:
        res = subprocess.run(["apptainer", "version"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "apptainer is not installed (run: python3 tests/images/provision.py)"
    if res.returncode != 0:
        return f"'apptainer version' failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


@pytest.fixture(scope="session")
def apptainer() -> ModuleType:
    """The provisioning module, once apptainer works; fails under CI=true (skips elsewhere) when missing."""
    problem = apptainer_problem()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Apptainer is required under CI=true: {problem}", pytrace=False)
        pytest.skip(problem)
    return load_tool("apptainer")


@pytest.fixture(scope="session")
def sif_factory(apptainer: ModuleType, image_factory: Callable[[str], str]) -> Callable[[str], Path]:
    """A SIF of a test image, built the users' way (docker save -> apptainer build docker-archive://)."""

    def get(name: str) -> Path:
        ref = image_factory(name)
        return Path(apptainer.ensure_sif(ref, log=lambda msg: sys.stderr.write(f"[sif] {msg}\n")))

    return get


@pytest.fixture(scope="session")
def base_sif(sif_factory: Callable[[str], Path]) -> Path:
    """The base test image (Debian bookworm + python3) as a SIF."""
    return sif_factory("base")


@pytest.fixture(scope="session")
def full_sif(sif_factory: Callable[[str], Path]) -> Path:
    """The full-stack test image as a SIF."""
    return sif_factory("full")


class NonRootEnv(NamedTuple):
    """What a non-root run needs: the user, its venv, and the world-readable copy of the plugin and probes."""

    user: str
    venv: Path
    src: Path


@pytest.fixture(scope="session")
def nonroot_env(apptainer: ModuleType) -> Iterator[NonRootEnv]:
    """The non-root test user, its own venv (Debian's python3; pytest and the plugin's dependencies,
    cached by requirements) and a world-readable copy of this checkout's plugin and probes (for
    PYTHONPATH; the plugin is loaded with ``-p``, no install step)."""
    import shutil
    import tempfile

    user = apptainer.ensure_test_user(log=lambda msg: sys.stderr.write(f"[user] {msg}\n"))
    venv = _nonroot_venv()
    # Outside pytest's basetemp, which pytest keeps private (0700) to its owner.
    src = Path(tempfile.mkdtemp(prefix="containercheck-nonroot-src-"))
    for part in ("pytest_containercheck", "probes"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [src, *src.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield NonRootEnv(user, venv, src)
    shutil.rmtree(src, ignore_errors=True)


@pytest.fixture(scope="session")
def nonroot(nonroot_env: NonRootEnv) -> Iterator[Callable[..., tuple[subprocess.CompletedProcess[str], Path]]]:
    """Run pytest with the plugin as the non-root test user, the way a cluster user does.

    See ``nonroot_env`` for the user's venv and the copy of the plugin it loads with ``-p``.
    """
    import shutil
    import tempfile

    user, venv, src = nonroot_env
    workdirs: list[Path] = []

    def run(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], Path]:
        """pytest *args* as the test user, in a fresh directory of its own; (result, that directory)."""
        cwd = Path(tempfile.mkdtemp(prefix="containercheck-nonroot-run-"))
        shutil.chown(cwd, user, user)
        workdirs.append(cwd)
        argv = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={src}", f"HOME=/home/{user}", "CI=",
                str(venv / "bin" / "python"), "-m", "pytest", "-p", "pytest_containercheck.plugin",
                "-p", "no:cacheprovider", *args]
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout), cwd

    yield run
    for d in workdirs:
        shutil.rmtree(d, ignore_errors=True)


NONROOT_REQUIREMENTS = ("pytest>=8", "numpy>=1.24", "pillow>=10", "scikit-image>=0.22")


def _nonroot_venv() -> Path:
    import hashlib

    key = hashlib.sha256(" ".join(NONROOT_REQUIREMENTS).encode()).hexdigest()[:12]
    venv = Path(os.environ.get("CONTAINERCHECK_CACHE_DIR", "/var/cache/containercheck")) / f"venv-nonroot-{key}"
    if not (venv / ".complete").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *NONROOT_REQUIREMENTS], check=True, timeout=900)
        (venv / ".complete").write_text("ok\n")
    for path in [venv, *venv.parents]:
        if path == Path(path.anchor):
            break
        path.chmod(path.stat().st_mode | 0o005)
    return venv
