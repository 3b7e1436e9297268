"""Run the image as its users run it (issue 29, item 1): no capability of ours in the launch, the
image's own NVIDIA_DRIVER_CAPABILITIES judged, every launch difference listed (none by default).

Sources of the rules (quoted next to the code): moby ``daemon/devices_nvidia_linux.go``
(``--gpus all`` sets ``NVIDIA_VISIBLE_DEVICES`` only), nvidia-container-toolkit
``cmd/nvidia-container-runtime-hook/container_config.go`` ``getDriverCapabilities`` (default
``utility,compute``; every capability for a legacy CUDA image), ``pkg/nvcdi/common-nvml.go`` (a CDI
spec always mounts the graphics libraries), apptainer ``internal/pkg/util/gpu/nvidia.go``
``NVCLIEnvToFlags`` (nvidia-container-cli's capabilities come from apptainer's own environment).

Facts: the render facts of the Docker test here are **real** (the full test image's EGL on Mesa's
llvmpipe, with the image's own ``compute,utility``); the NVIDIA host is the **recorded** H200's
(``tests/data/ml/host_facts_h200.json``); that the GPU was attached is **constructed** (no NVIDIA
Container Toolkit and no GPU here: Docker refuses ``--gpus all``).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import lifecycle, plainlaunch, probing
from pytest_containercheck.engine.runtimes import LaunchOptions, get_runtime
from pytest_containercheck.engine.targets import parse_target
from pytest_containercheck.engine.verdicts_gpu import CAPABILITIES_FIX
from pytest_containercheck.engine.verdicts_render import render_verdict

from helpers import standin_nvidia_smi

DATA = Path(__file__).resolve().parent / "data"
H200_HOST: dict[str, Any] = json.loads((DATA / "ml" / "host_facts_h200.json").read_text())["facts"]
CAPS = "NVIDIA_DRIVER_CAPABILITIES"
RENDER = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_render.py")


# -- the plain launch and the differences ---------------------------------------------------


def test_plain_launches_are_the_documented_ones() -> None:
    assert plainlaunch.plain_launch("docker") == "docker run --gpus all IMAGE"
    assert plainlaunch.plain_launch("podman") == "podman run --device nvidia.com/gpu=all IMAGE"
    assert plainlaunch.plain_launch("apptainer") == "apptainer exec --nv IMAGE"
    assert plainlaunch.plain_launch("singularity", "amd") == "singularity exec --rocm IMAGE"
    assert plainlaunch.plain_launch("docker", "amd") == "docker run --device /dev/kfd --device /dev/dri IMAGE"
    assert plainlaunch.plain_launch("host") == ""


@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer", "singularity", "host"])
def test_a_plain_run_has_no_launch_difference(runtime: str) -> None:
    auto = LaunchOptions(run_id="r", gpus_auto=True, apptainer_gpu_auto=True)
    assert plainlaunch.differences(runtime, auto, {"requested": "all", "attached": True}) == []


def test_every_option_that_changes_the_launch_is_listed() -> None:
    options = LaunchOptions(run_id="r", gpus="device=1", gpus_auto=False, apptainer_gpu="nvccli",
                            apptainer_gpu_auto=False, env={CAPS: "all", "HF_TOKEN": "hf_SeCrEt"},
                            runtime_args=("--shm-size=1g",))
    docker = plainlaunch.differences("docker", options)
    assert docker == ["GPUs: --gpus device=1 (the plain launch gives every GPU)",
                      f"{CAPS}=all set by --container-env (emulating a deployment's environment; the plain launch "
                      f"leaves the image's own {CAPS})",
                      "HF_TOKEN set by --container-env", "--runtime-arg=--shm-size=1g"]
    assert not any("hf_SeCrEt" in d for d in docker)  # values only of the GPU stack's variables
    app = plainlaunch.differences("apptainer", options)
    assert app[0].startswith("--nvccli: nvidia-container-cli sets up the GPU instead")
    # Where apptainer.conf says 'use nvidia-container-cli = yes', --nvccli is what plain --nv does anyway.
    assert not any(d.startswith("--nvccli") for d in plainlaunch.differences(
        "apptainer", options, {"nvccli_configured": "use nvidia-container-cli = yes in /etc/apptainer/apptainer.conf"}))
    slurm = LaunchOptions(run_id="r", gpus_auto=True, job_gpus="0", job_gpus_from="SLURM_JOB_GPUS",
                          job_devices=("GPU-1",), job_gpus_how="SLURM_JOB_GPUS=0: ...")
    assert plainlaunch.differences("docker", slurm)[0].startswith("GPUs: the Slurm job's only")
    assert lifecycle.launch_facts("docker", slurm, None)["container_env_names"] == []


# -- the verdict: an image without 'graphics' on an NVIDIA host --------------------------------


def _facts(name: str, **env: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((DATA / "render" / f"{name}.json").read_text())["facts"]
    facts["env"] = {k: v for k, v in {**facts.get("env", {}), **env}.items() if v is not None}
    return facts


ATTACHED = {"requested": "all", "attached": True, "cdi": False}


def _egl(facts: dict[str, Any], runtime: str = "docker", gpu: dict[str, Any] | None = None, **kw: Any) -> Any:
    return render_verdict(facts, "egl", host_has_gpu=True, runtime=runtime, gpu_vendor="nvidia",
                          gpu=ATTACHED if gpu is None else gpu, **kw)


def test_an_image_without_graphics_fails_render_egl_as_its_own_fault() -> None:
    """The old rule passed this cell (llvmpipe, "host has a GPU" only in a note), because the old launch
    added graphics for the check; the users' plain launch gives the image no EGL driver."""
    v = _egl(_facts("full-egl", **{CAPS: "compute,utility"}))
    assert (v.status, v.fault) == ("fail", "image"), v
    assert v.detail.startswith(f"egl on the host's GPU: {CAPS}=compute,utility (the image's own environment) lacks "
                               "'graphics'") and "rendered with llvmpipe" in v.detail
    assert v.fix == CAPABILITIES_FIX and "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics" in v.fix
    # Unset: the toolkit's default utility,compute, the same verdict; a legacy CUDA image gets every capability.
    assert _egl(_facts("full-egl")).fault == "image"
    assert _egl(_facts("full-egl", CUDA_VERSION="10.1.243")).status == "pass"
    # Emulating a deployment's value: the deployment's (host) fault, and the report lists it.
    emulated = _egl(_facts("full-egl", **{CAPS: "compute,utility"}), emulated=[CAPS])
    assert (emulated.status, emulated.fault) == ("fail", "host")


def test_no_capability_rule_where_capabilities_do_not_gate_egl() -> None:
    no_graphics = _facts("full-egl", **{CAPS: "compute,utility"})
    # CDI (Podman): the spec mounts the graphics libraries whatever the variable says.
    assert _egl(no_graphics, "podman", {**ATTACHED, "cdi": True}).status == "pass"
    # Apptainer's own --nv binding reads no variable.
    assert _egl(no_graphics, "apptainer", {"requested": "nv", "attached": True}).status == "pass"
    # EGL did run on the GPU (the recorded H200 render, capabilities edited): nothing to say.
    assert _egl(_facts("h200-egl", **{CAPS: "compute,utility"})).status == "pass"
    # No GPU attached (the GPU gate says so), an image meant for the CPU, an AMD host: not this rule.
    assert _egl(no_graphics, gpu={"attached": False}).status == "pass"
    assert _egl(no_graphics, intent="cpu").status == "pass"
    assert render_verdict(no_graphics, "egl", host_has_gpu=True, gpu_vendor="amd", gpu=ATTACHED).status == "pass"


def test_nvccli_capabilities_are_apptainers_environments() -> None:
    v = _egl(_facts("full-egl"), "apptainer", {"requested": "nv", "attached": True, "nvccli": True,
                                               "nvccli_capabilities": ""})
    assert (v.status, v.fault) == ("fail", "host")
    assert "apptainer's own environment" in v.detail and "export NVIDIA_DRIVER_CAPABILITIES" in (v.fix or "")
    assert "nvliblist.conf" not in (v.fix or "")
    graphics = {"requested": "nv", "attached": True, "nvccli": True, "nvccli_capabilities": "compute,utility,graphics"}
    assert _egl(_facts("full-egl"), "apptainer", graphics).status == "pass"


# -- for real: Docker launches the image as its users do --------------------------------------------


@pytest.fixture(scope="module")
def no_graphics_image(docker: str, full_image: str) -> Iterator[str]:
    """The full test image with the CUDA base images' own ``ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility``."""
    tag = f"containercheck-test/caps-compute-utility:{uuid.uuid4().hex[:8]}"
    built = subprocess.run([docker, "build", "--quiet", "--tag", tag, "-"],
                           input=f"FROM {full_image}\nENV {CAPS}=compute,utility\n", capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    yield tag
    subprocess.run([docker, "rmi", "--force", tag], capture_output=True, timeout=120)


@pytest.mark.docker
def test_docker_runs_the_image_as_its_users_do(no_graphics_image: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's launch carries no capability, the image keeps its own compute,utility inside, and
    that render judged on an (attached, constructed) GPU of the recorded H200 host fails as the image's."""
    target = parse_target(no_graphics_image)
    options = LaunchOptions(run_id=f"t{uuid.uuid4().hex[:6]}", gpus="all")
    session = get_runtime("docker").start(target, options)
    try:
        tried = session.facts["gpu"].get("tried") or []  # the --gpus all launch Docker refused here (no toolkit)
        for argv in (session.facts["run_command"], tried):
            assert not any(CAPS in a for a in argv), argv
        assert "--gpus" in tried
        py = probing.find_python(session, ["python3"])
        res = probing.run_probe(session, py, "render", {"backend": "egl"}, timeout=300)
    finally:
        session.stop()
    assert res.ok, res.summary()
    assert res.facts["env"][CAPS] == "compute,utility"  # the image's own, untouched
    assert res.facts["rendered"] and "llvmpipe" in str(res.facts["gl_renderer"])
    v = render_verdict(res.facts, "egl", host_has_gpu=bool(H200_HOST["has_gpu"]), runtime="docker",
                       gpu_vendor=H200_HOST["gpu_vendor"], gpu=ATTACHED)
    assert (v.status, v.fault, v.fix) == ("fail", "image", CAPABILITIES_FIX), v


@pytest.mark.docker
def test_the_report_lists_launch_differences_none_by_default(pytester: pytest.Pytester, base_image: str,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standin_nvidia_smi(tmp_path / "bin")  # the host looks like the recorded H200's: Docker is asked for --gpus all
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    pytester.runpytest_subprocess("--image", base_image, "--no-builtin-checks", RENDER, "-k", "osmesa",
                                  "--matrix-json", "plain.json")
    launch = json.loads((pytester.path / "plain.json").read_text())["columns"][0]["facts"]["launch"]
    assert launch["plain_launch"] == "docker run --gpus all IMAGE"
    assert launch["launch_differences"] == []
    assert not any(CAPS in a for a in launch["gpu"].get("tried") or [])
    result = pytester.runpytest_subprocess("--image", base_image, "--no-builtin-checks", RENDER, "-k", "osmesa",
                                           "--container-env", f"{CAPS}=all", "--matrix-json", "emulated.json")
    launch = json.loads((pytester.path / "emulated.json").read_text())["columns"][0]["facts"]["launch"]
    assert launch["launch_differences"] == [f"{CAPS}=all set by --container-env (emulating a deployment's "
                                            f"environment; the plain launch leaves the image's own {CAPS})"]
    result.stdout.fnmatch_lines(["docker://*: launched unlike `docker run*"])
