"""Podman, for real: the same OCI runtime class as Docker with another executable.

Podman is optional on a CI machine (Docker is the required engine); these tests skip with
the reason when Podman cannot run containers here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_containercheck.engine.archives import inspect_archive

from conftest import load_build, podman_containers
from test_plugin import ONLY_SYSTEM


@pytest.fixture(scope="session")
def podman_base(docker: str) -> str:
    """The base test image, copied from Docker into Podman (docker save | podman load)."""
    try:
        probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                               capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("podman is not installed (python3 tests/images/provision.py installs it)")
    if probe.returncode != 0:
        pytest.skip(f"podman does not work here: {probe.stderr.strip()[-300:]}")
    return str(load_build().ensure_podman_image("base", log=lambda msg: None))


def test_podman_runs_the_system_checks(pytester: pytest.Pytester, podman_base: str) -> None:
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
