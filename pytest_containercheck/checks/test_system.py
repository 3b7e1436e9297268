"""Built-in rows about the image itself: Python, OS, GPU visibility, writable caches."""

from __future__ import annotations

import pytest

from pytest_containercheck import Container
from pytest_containercheck.engine.verdicts import gpu as verdicts_gpu
from pytest_containercheck.engine.verdicts import system as verdicts_system

# Every row here reads the one "system" probe: it starts with the image's other probes.
# These rows come first in the matrix: the image itself, then rendering, then ML.
pytestmark = [pytest.mark.containercheck_probe("system", weight=0.1), pytest.mark.containercheck_order(10)]


@pytest.mark.containercheck_row("system.python")
def test_python(container: Container) -> None:
    """An interpreter runs in the image (python3, then python, or --container-python), Python 3.7 or newer."""
    facts = container.facts("system")
    py = facts["python"]
    container.note(f"{py['implementation']} {py['version']} ({py['executable']})")


@pytest.mark.containercheck_row("system.os")
def test_os_and_glibc(container: Container) -> None:
    """The OS release, glibc 2.17 or newer (manylinux wheels need it; musl cannot load them) and the architecture."""
    container.apply(verdicts_system.os_and_glibc(container.facts("system")))


@pytest.mark.containercheck_row("system.gpu_devices")
def test_gpu_devices(container: Container) -> None:
    """The host's GPU device nodes (/dev/nvidiaN, /dev/kfd and /dev/dri) are visible inside the image."""
    container.gpu_expected()
    container.apply(verdicts_gpu.gpu_devices(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.nvidia_smi")
def test_nvidia_smi(container: Container) -> None:
    """nvidia-smi inside the image lists the host's GPUs."""
    container.gpu_expected()
    container.apply(verdicts_gpu.nvidia_smi(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.libcuda")
def test_libcuda(container: Container) -> None:
    """libcuda.so.1 loads inside the image (the driver's, not a CUDA toolkit stub) and cuInit succeeds."""
    container.gpu_expected()
    container.apply(verdicts_gpu.libcuda(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.nvidia_env")
def test_nvidia_environment(container: Container) -> None:
    """The variables the NVIDIA runtime hooks read must not hide GPUs or drop capabilities."""
    container.gpu_expected()
    gpu = container.session_facts.get("gpu") or {}
    container.apply(verdicts_gpu.nvidia_env(container.facts("system"), container.target.family, gpu.get("requested"),
                                            cdi=bool(gpu.get("cdi")), host=container.host, gpu=gpu,
                                            emulated=container.session_facts.get("container_env_names") or ()))


@pytest.mark.containercheck_row("system.writable_cache")
def test_writable_home_and_cache(container: Container) -> None:
    """HOME, ~/.cache and TMPDIR are writable (read-only images on clusters break model caches)."""
    container.apply(verdicts_system.writable_cache(container.facts("system")))
