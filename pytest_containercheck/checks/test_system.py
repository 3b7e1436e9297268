"""Built-in rows about the image itself: Python, OS, GPU visibility, writable caches."""

from __future__ import annotations

import pytest

from pytest_containercheck import Container
from pytest_containercheck.engine import verdicts_gpu

# Every row here reads the one "system" probe: it starts with the image's other probes.
# These rows come first in the matrix: the image itself, then rendering, then ML.
pytestmark = [pytest.mark.containercheck_probe("system", weight=0.1), pytest.mark.containercheck_order(10)]

#: Oldest glibc that PyPI's manylinux2014 wheels (torch, vtk, xgboost) load on.
MIN_GLIBC = (2, 17)


@pytest.mark.containercheck_row("system.python")
def test_python(container: Container) -> None:
    facts = container.facts("system")
    py = facts["python"]
    container.note(f"{py['implementation']} {py['version']} ({py['executable']})")


@pytest.mark.containercheck_row("system.os")
def test_os_and_glibc(container: Container) -> None:
    facts = container.facts("system")
    release = facts["os_release"].get("PRETTY_NAME") or "unknown OS (no /etc/os-release)"
    glibc = facts["glibc"]
    container.note(f"{release}, {glibc.get('name') or 'libc'} {glibc.get('version') or '?'}, {facts['machine']}")
    if glibc.get("name") != "glibc" or not glibc.get("version"):
        container.fail(f"{release}: not a glibc system ({glibc}); manylinux wheels (torch, vtk) will not load",
                       fix="use a glibc-based base image (Debian, Ubuntu, RHEL), not Alpine/musl", fault="image")
    version = tuple(int(p) for p in glibc["version"].split(".")[:2])
    if version < MIN_GLIBC:
        container.fail(f"glibc {glibc['version']} is older than 2.17; manylinux2014 wheels will not load",
                       fix="rebuild on a newer base image", fault="image")


@pytest.mark.containercheck_row("system.gpu_devices")
def test_gpu_devices(container: Container) -> None:
    container.gpu_expected()
    container.apply(verdicts_gpu.gpu_devices(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.nvidia_smi")
def test_nvidia_smi(container: Container) -> None:
    container.gpu_expected()
    container.apply(verdicts_gpu.nvidia_smi(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.libcuda")
def test_libcuda(container: Container) -> None:
    container.gpu_expected()
    container.apply(verdicts_gpu.libcuda(container.facts("system"), container.host))


@pytest.mark.containercheck_row("system.nvidia_env")
def test_nvidia_environment(container: Container) -> None:
    """The variables the NVIDIA runtime hooks read must not hide GPUs or drop capabilities."""
    container.gpu_expected()
    env = container.facts("system")["env"]
    if container.target.family == "sif":
        # Apptainer's --nv binds the driver whatever the image's NVIDIA_* variables say, and
        # --nvccli reads them from apptainer's own environment, not the image's
        # (apptainer internal/pkg/runtime/launch/launcher_linux.go setNvCCLIConfig).
        requested = (container.session_facts.get("gpu") or {}).get("requested")
        container.note(f"apptainer --{requested}: the image's NVIDIA_DRIVER_CAPABILITIES="
                       f"{env.get('NVIDIA_DRIVER_CAPABILITIES')} and NVIDIA_VISIBLE_DEVICES="
                       f"{env.get('NVIDIA_VISIBLE_DEVICES')} are not read; CUDA_VISIBLE_DEVICES="
                       f"{env.get('CUDA_VISIBLE_DEVICES')}")
        return
    visible = env.get("NVIDIA_VISIBLE_DEVICES")
    if visible in ("void", "none", ""):
        container.fail(f"NVIDIA_VISIBLE_DEVICES={visible!r} in the image hides every GPU", fault="image",
                       fix="unset NVIDIA_VISIBLE_DEVICES in the image (ENV) or set it to 'all'")
    caps = env.get("NVIDIA_DRIVER_CAPABILITIES")
    if caps is not None and "all" not in caps.split(","):
        missing = [c for c in ("compute", "utility", "graphics") if c not in caps.split(",")]
        if missing:
            container.fail(f"NVIDIA_DRIVER_CAPABILITIES={caps!r} lacks {', '.join(missing)}: without 'graphics' "
                           "EGL silently renders on the CPU, without 'compute' CUDA does not load",
                           fault="host",
                           fix="set NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or all)")
    container.note(f"NVIDIA_VISIBLE_DEVICES={visible}, NVIDIA_DRIVER_CAPABILITIES={caps}, "
                   f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}")


@pytest.mark.containercheck_row("system.writable_cache")
def test_writable_home_and_cache(container: Container) -> None:
    writable = container.facts("system")["writable"]
    bad = [f"{k} ({v['path']}: {v.get('error')})" for k, v in writable.items() if not v["writable"]]
    if bad:
        container.fail("not writable: " + ", ".join(bad), fault="image",
                       fix="point HOME/XDG_CACHE_HOME/HF_HOME/TORCH_HOME at a writable directory "
                           "(e.g. --container-env XDG_CACHE_HOME=/tmp/cache; Apptainer: --writable-tmpfs "
                           "or bind a scratch directory)")
    container.note(", ".join(f"{k} {v['path']}" for k, v in writable.items()) + " writable")
