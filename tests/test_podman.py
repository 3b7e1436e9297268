"""Podman, for real: the same OCI runtime class as Docker with another executable.

Under CI=true a Podman that cannot run containers fails these tests (as a missing Docker
does); elsewhere they skip with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.archives import inspect_archive

from helpers import ONLY_SYSTEM, load_build, missing, podman_containers, standin_nvidia_smi

#: Podman 4.3 reads every CDI spec in these directories (the CDI library's defaults); it has no
#: option for another one.  A test that writes a spec holds this lock, and so does every test that
#: needs there to be none (tests run in parallel: -n 2, and other checkouts on this machine).
CDI_DIR = Path("/etc/cdi")
CDI_LOCK = Path("/run/lock/containercheck-cdi.lock")


@contextlib.contextmanager
def cdi_spec(text: str | None = None) -> Iterator[Path]:
    """Hold the CDI lock; with *text*, as ``/etc/cdi/containercheck-test.yaml`` (removed after, and
    ``/etc/cdi`` too when this made it)."""
    CDI_LOCK.parent.mkdir(parents=True, exist_ok=True)
    path = CDI_DIR / "containercheck-test.yaml"
    with open(CDI_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = not CDI_DIR.exists()
        try:
            if text is not None:
                CDI_DIR.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            yield path
        finally:
            path.unlink(missing_ok=True)
            if made and CDI_DIR.exists() and not any(CDI_DIR.iterdir()):
                CDI_DIR.rmdir()


@pytest.fixture(scope="session")
def podman_base(docker: str) -> str:
    """The base test image, copied from Docker into Podman (docker save | podman load)."""
    try:
        probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                               capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        missing("Podman", "podman is not installed (python3 tests/images/provision.py installs it)")
    if probe.returncode != 0:
        missing("Podman", f"podman does not work here: {probe.stderr.strip()[-300:]}")
    return str(load_build().ensure_podman_image("base", log=lambda msg: None))


def test_podman_runs_the_system_checks(pytester: pytest.Pytester, podman_base: str) -> None:
    with cdi_spec():  # no spec of another test's in /etc/cdi meanwhile
        result = pytester.runpytest_subprocess("--image", f"podman://{podman_base}", "--matrix-json", "m.json",
                                               "--gpus", "all", *ONLY_SYSTEM, timeout=600)
    data = json.loads((pytester.path / "m.json").read_text())
    cells = {c["row"]: c for c in data["cells"]}
    assert cells["system.python"]["status"] == "pass", result.stdout.str()[-3000:]
    assert cells["system.os"]["detail"].startswith("Debian GNU/Linux 12")
    launch = data["columns"][0]["facts"]["launch"]
    # --gpus all, given, and no CDI spec on this host: podman refuses the GPU device, the run
    # goes on without it.
    assert launch["gpu"]["error"] == "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all"
    assert "nvidia-ctk cdi generate" in launch["gpu"]["fix"]
    assert podman_containers(data["meta"]["run_id"]) == []


def test_a_variable_the_podman_client_reads_arrives_through_a_memfd(pytester: pytest.Pytester,
                                                                      podman_base: str) -> None:
    """A variable the client reads itself (a proxy) travels in the private env-file, which is an
    anonymous memory file podman opens as /dev/fd/N (podman pkg/env ParseFile): it arrives whole."""
    proxy = "http://u:pw_Q9z7@proxy.invalid:3128"
    pytester.makepyfile(test_env=f"""
        def test_env(container):
            assert container.run(["sh", "-c", "echo $HTTPS_PROXY"]).stdout.strip() == {proxy!r}
            container.note("arrived")
    """)
    result = pytester.runpytest_subprocess("--image", f"podman://{podman_base}", "--no-builtin-checks", "test_env.py",
                                           "--container-env", f"HTTPS_PROXY={proxy}", "--matrix-json", "m.json",
                                           timeout=600)
    assert result.ret == 0, result.stdout.str()[-3000:]
    launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
    argv = launch["run_command"]
    assert argv[argv.index("--env-file") + 1].startswith("/dev/fd/")


def _podman_id(ref: str) -> str | None:
    res = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True,
                         timeout=60)
    return res.stdout.strip() if res.returncode == 0 else None


def test_oci_archive_of_an_image_podman_has(pytester: pytest.Pytester, podman_base: str,
                                           image_factory: Callable[[str], str], tmp_path: Path) -> None:
    """Podman rewrites the config when it saves an OCI archive, so the archive's config digest is
    never Podman's id for the image it came from.  (1) The user's tag names the build the archive
    holds: the image is recognised by its layers and run configuration and nothing is loaded or
    removed.  (2) The tag names another build: the archive is loaded without its name, the tag
    still names the user's build, and only the nameless image the run loaded is removed."""
    tag = f"localhost/containercheck-test/usertag:{os.getpid()}"
    subprocess.run(["podman", "tag", podman_base, tag], check=True, capture_output=True, timeout=60)
    archive = tmp_path / "app.tar"
    subprocess.run(["podman", "save", "--format", "oci-archive", "-o", str(archive), tag], check=True,
                   capture_output=True, timeout=600)
    config_digest = inspect_archive(str(archive), "app.tar").config_digest
    base_id = _podman_id(podman_base)
    assert base_id and f"sha256:{base_id}" != config_digest  # the premise: not like with like
    args = ("--runtime", "podman", "--image", str(archive), "--matrix-json", "m.json", *ONLY_SYSTEM)
    try:
        result = pytester.runpytest_subprocess(*args, timeout=600)
        assert result.ret == 0, result.stdout.str()[-3000:]
        launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
        assert launch["archive"]["loaded"] is False, launch["archive"]
        assert launch["archive"]["prepared"] == f"podman already had it as {tag} (same layers and configuration)"
        assert _podman_id(tag) == base_id and _podman_id(podman_base) == base_id

        # The user rebuilds: the tag now names another build (here: the nopython image).
        other = image_factory("nopython")
        subprocess.run(["bash", "-c", f"docker save {other} | podman load"], check=True, capture_output=True,
                       timeout=600)
        subprocess.run(["podman", "tag", f"localhost/{other}" if "/" in other else other, tag], check=True,
                       capture_output=True, timeout=60)
        other_id = _podman_id(tag)
        assert other_id and other_id != base_id
        result = pytester.runpytest_subprocess(*args, timeout=600)
        assert result.ret == 0, result.stdout.str()[-3000:]
        launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
        assert launch["archive"]["loaded"] is True
        assert _podman_id(tag) == other_id, "the user's tag must still name their own build"
        assert _podman_id(podman_base) == base_id, "the image the archive came from keeps its name"
        assert _podman_id(launch["archive"]["image_id"]) is None, "the image this run loaded must be removed"
    finally:
        subprocess.run(["podman", "rmi", tag], capture_output=True, timeout=120)


# -- CDI, for real: a spec shaped like the NVIDIA toolkit's, with harmless device nodes ----------------


def _device_nodes(where: Path) -> Path:
    """Character devices with /dev/null's numbers (1, 3) under the NVIDIA names: what a CDI spec
    maps into the container is real, reading or writing them does nothing."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        os.mknod(where / name, 0o666 | 0o020000, os.makedev(1, 3))
    return where


def toolkit_shaped_spec(nodes: Path, *, mounts: str = "") -> str:
    """A CDI spec in the shape 'nvidia-ctk cdi generate' writes (nvidia-container-toolkit
    cmd/nvidia-ctk/cdi/generate/generate_test.go, expectedSpec): devices "0" and "all" with the GPU
    node, common edits with NVIDIA_CTK_LIBCUDA_DIR and NVIDIA_VISIBLE_DEVICES=void
    (pkg/nvcdi/wrapper.go) and the control nodes; no hooks (nvidia-cdi-hook is not here)."""
    return f"""---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
    - name: "0"
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia0
              hostPath: {nodes}/nvidia0
    - name: all
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia0
              hostPath: {nodes}/nvidia0
containerEdits:
    env:
        - NVIDIA_CTK_LIBCUDA_DIR=/lib/x86_64-linux-gnu
        - NVIDIA_VISIBLE_DEVICES=void
    deviceNodes:
        - path: /dev/nvidiactl
          hostPath: {nodes}/nvidiactl
        - path: /dev/nvidia-uvm
          hostPath: {nodes}/nvidia-uvm
        - path: /dev/nvidia-uvm-tools
          hostPath: {nodes}/nvidia-uvm-tools
{mounts}"""


def _run_gpu_rows(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, podman_base: str,
                  spec: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The system rows under real Podman on this GPU-less host made to look like a GPU host (a
    stand-in nvidia-smi), with *spec* in /etc/cdi: (cells by row, the launch facts)."""
    monkeypatch.setenv("PATH", f"{standin_nvidia_smi(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    with cdi_spec(spec):
        pytester.runpytest_subprocess("--image", f"podman://{podman_base}", "--matrix-json", "m.json", *args,
                                      *ONLY_SYSTEM, timeout=600)
    data = json.loads((pytester.path / "m.json").read_text())
    assert podman_containers(data["meta"]["run_id"]) == []
    return {c["row"]: c for c in data["cells"]}, data["columns"][0]["facts"]["launch"]


def test_podman_cdi_spec_like_the_toolkits_is_judged_right(pytester: pytest.Pytester, podman_base: str,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--gpus all becomes --device nvidia.com/gpu=all; Podman applies the spec: the device nodes and
    NVIDIA_VISIBLE_DEVICES=void arrive.  void is the spec's own, not the image hiding its GPUs; the
    nodes are there; only the GPU (its driver: nvidia-smi, libcuda) is not."""
    cells, launch = _run_gpu_rows(pytester, monkeypatch, tmp_path, podman_base,
                                  toolkit_shaped_spec(_device_nodes(tmp_path / "nodes")))
    assert launch["gpu"]["attached"] is True and launch["gpu"]["cdi"] is True and launch["gpu"]["error"] is None
    assert "nvidia.com/gpu=all" in launch["run_command"]
    assert cells["system.python"]["status"] == "pass"
    env = cells["system.nvidia_env"]
    assert env["status"] == "pass", env
    assert env["detail"].startswith("NVIDIA_VISIBLE_DEVICES=void is the CDI spec's own")
    assert "GPU nodes from the spec: /dev/nvidia0" in env["detail"]
    devices = cells["system.gpu_devices"]
    assert devices["status"] == "pass" and devices["detail"] == (
        "/dev/nvidia-uvm, /dev/nvidia-uvm-tools, /dev/nvidia0, /dev/nvidiactl")
    # The driver is what is missing, and it is the host's to provide.
    assert (cells["system.nvidia_smi"]["status"], cells["system.nvidia_smi"]["fault"]) == ("fail", "host")
    assert (cells["system.libcuda"]["status"], cells["system.libcuda"]["fault"]) == ("fail", "host")


def test_podman_stale_cdi_spec_says_regenerate_it(pytester: pytest.Pytester, podman_base: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec naming a driver library of an older driver (what a driver upgrade leaves behind): runc
    refuses the container; the image runs without GPUs and the GPU rows say to regenerate the spec."""
    stale = ("    mounts:\n"
             "        - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n"
             "          containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05\n"
             "          options: [ro, nosuid, nodev, bind]\n")
    cells, launch = _run_gpu_rows(pytester, monkeypatch, tmp_path, podman_base,
                                  toolkit_shaped_spec(_device_nodes(tmp_path / "nodes"), mounts=stale))
    gpu = launch["gpu"]
    assert gpu["attached"] is False and gpu["cause"] == "stale_cdi_spec" and gpu["fault"] == "host"
    assert 'error mounting "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05"' in gpu["error"]
    assert "nvidia-ctk cdi generate" in gpu["fix"]
    assert cells["system.python"]["status"] == "pass"
    row = cells["system.gpu_devices"]
    assert (row["status"], row["fault"]) == ("fail", "host") and "nvidia-ctk cdi generate" in row["fix"]


def test_podman_cdi_device_no_spec_names_is_the_launchs(pytester: pytest.Pytester, podman_base: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--gpus device=3 where the spec names only 0 and all: nobody's fault but the launch's."""
    cells, launch = _run_gpu_rows(pytester, monkeypatch, tmp_path, podman_base,
                                  toolkit_shaped_spec(_device_nodes(tmp_path / "nodes")), "--gpus", "device=3")
    gpu = launch["gpu"]
    assert gpu["error"] == "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=3"
    assert (gpu["cause"], gpu["fault"]) == ("unknown_cdi_device", None)
    row = cells["system.gpu_devices"]
    assert (row["status"], row["fault"]) == ("fail", None) and "nvidia-ctk cdi list" in row["fix"]
