"""Fixtures for the project's own tests: Docker availability and locally built test images.

Test images come from recipes in tests/images/build.py (debootstrap + PyPI wheels, cached by
recipe hash).  Under CI=true a missing Docker engine fails the tests that need it; it never
skips them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))  # the tests' helpers module, in any import mode

from helpers import (
    ROOT,
    NonRootEnv,
    apptainer_problem,
    docker_problem,
    load_build,
    load_tool,
    missing,
    tree_pythonpath,
)
from slurm_recipe import load_slurm, slurm_problem


@pytest.fixture(autouse=True)
def _subprocesses_test_the_tree(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every Python a test starts (pytester's ``runpytest_subprocess``, ``python -m pytest`` or
    ``python -m pytest_containercheck.cli`` through ``subprocess``) loads the plugin from this
    tree, never from an installed copy.

    pytester puts only its own directory on the child's ``PYTHONPATH``; site-packages comes next,
    so a non-editable install (the README's) would be what those runs test.  ``PYTHONPATH``
    entries precede site-packages.  Tests of an installed copy (tests/test_install.py) remove it.
    ``tests/test_layout.py`` fails when this is not so.
    """
    if not request.node.path.is_relative_to(ROOT / "tests"):
        return  # the built-in checks, run with this checkout as their rootdir: not our tests
    monkeypatch.setenv("PYTHONPATH", tree_pythonpath(os.environ.get("PYTHONPATH")))
    # A terminal's width (COLUMNS from the shell that started pytest) would wrap the plugin's
    # lines in the runs the tests start; tests of the width set it themselves.
    monkeypatch.delenv("COLUMNS", raising=False)
    # GNU readline, once imported (pdb, a library), sets COLUMNS in the C environment, behind
    # os.environ: a subprocess started without env= would still get it.
    os.unsetenv("COLUMNS")


SUBPROCESS_RUN_LIMIT = 1800.0
"""The bound on a pytester subprocess run that names none: far above the slowest (a full image's
suite under load), so it only ends a run that hangs, failing its test instead of the suite."""


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytest's own, with every ``runpytest_subprocess`` bounded (:data:`SUBPROCESS_RUN_LIMIT`, or
    the test's own ``timeout=``): a hung run fails its test (``Pytester.TimeoutExpired``)."""
    unbounded = pytester.runpytest_subprocess

    def bounded(*args: str | os.PathLike[str], timeout: float | None = None) -> pytest.RunResult:
        return unbounded(*args, timeout=SUBPROCESS_RUN_LIMIT if timeout is None else timeout)

    pytester.runpytest_subprocess = bounded  # type: ignore[method-assign]
    return pytester


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker executable; fails under CI=true (skips elsewhere) when Docker is missing."""
    problem = docker_problem()
    if problem:
        missing("Docker", problem)
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
def gate_images(base_image: str) -> dict[str, str]:
    """The CI gate's labelled test images (``helpers.GATE_IMAGES``), by name."""
    from helpers import GATE_IMAGES, build_labelled

    return {name: build_labelled(base_image, name, lines) for name, lines in GATE_IMAGES.items()}


@pytest.fixture(scope="session")
def nopython_image(image_factory: Callable[[str], str]) -> str:
    """Debian bookworm without any Python."""
    return image_factory("nopython")


@pytest.fixture(scope="session")
def owncheck_image(image_factory: Callable[[str], str]) -> str:
    """The own-check how-to's image: base + numpy, /opt/app, an ENV line (tests/test_owncheck.py)."""
    return image_factory("owncheck")


@pytest.fixture(scope="session")
def full_image(image_factory: Callable[[str], str]) -> str:
    """The one shared full-stack image: Mesa + vtk + pyvista + torch (CPU) + xgboost + transformers."""
    return image_factory("full")










# -- Apptainer -------------------------------------------------------------------------------




@pytest.fixture(scope="session")
def apptainer() -> ModuleType:
    """The provisioning module, once apptainer works; fails under CI=true (skips elsewhere) when missing."""
    problem = apptainer_problem()
    if problem:
        missing("Apptainer", problem)
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
def owncheck_sif(sif_factory: Callable[[str], Path]) -> Path:
    """The own-check how-to's image as a SIF."""
    return sif_factory("owncheck")


@pytest.fixture(scope="session")
def full_sif(sif_factory: Callable[[str], Path]) -> Path:
    """The full-stack test image as a SIF."""
    return sif_factory("full")




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


# -- GPU stand-ins (issue 24): a GPU host's answers where only the GPU itself is missing ------------------


# -- Slurm -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm_node() -> str:
    """The test cluster's node name; fails under CI=true (skips elsewhere) when the cluster is not there."""
    slurm = load_slurm()
    problem = slurm_problem(slurm)
    if problem:
        missing("Slurm", problem)
    return str(slurm.node_name(slurm.node_line()))
