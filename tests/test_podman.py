"""Podman, for real: the same OCI runtime class as Docker with another executable.

Podman is optional on a CI machine (Docker is the required engine); these tests skip with
the reason when Podman cannot run containers here.
"""

from __future__ import annotations

import json
import subprocess

import pytest

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
