"""GPUs through the container runtimes' own machinery (issue 24, items 1, 2, 4, 5, 7), on texts and
facts quoted from upstream or seen for real here (``tests/data/gpu-runtimes/README.md`` says which):

* CDI's ``NVIDIA_VISIBLE_DEVICES=void`` (``system.nvidia_env``);
* libnvidia-container's and CDI's refusals (``runtimes.nvidia_errors``), as Docker's hook, Podman
  and Apptainer's ``--nvccli`` print them;
* Apptainer's ``--nvccli`` INFO lines and ``NVIDIA_DRIVER_CAPABILITIES=all``;
* a setuid Apptainer where user namespaces are off;
* AMD/ROCm hosts: detection, launch flags, vendor mismatches.

The same paths under real Podman and real Apptainer are in ``tests/test_podman.py`` and
``tests/test_apptainer.py`` (``*_cdi_*``, ``*_nvccli_*``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.container import Container
from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine import verdicts_gpu as gpu
from pytest_containercheck.engine import verdicts_ml as ml
from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.matrix import CellRecord, new_cell
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.runtimes import LaunchOptions, Target
from pytest_containercheck.engine.runtimes import apptainer as app
from pytest_containercheck.engine.runtimes.nvidia_errors import classify
from pytest_containercheck.engine.runtimes.oci import OCIRuntime, gpu_refusal
from pytest_containercheck.options import gpus_for_host

from helpers import docker_save_tar

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

GPU_HOST: dict[str, Any] = {"has_gpu": True, "gpu_vendor": "nvidia", "gpu_summary": "1 NVIDIA GPU(s)"}
AMD_HOST: dict[str, Any] = {"has_gpu": True, "gpu_vendor": "amd",
                            "gpu_summary": "an AMD GPU (ROCm: /dev/kfd, KFD GPU node 1 (gfx90a), /dev/dri/renderD128)"}


def _system_facts(**env: str | None) -> dict[str, Any]:
    """The ``system`` probe's facts on the lent H200 (recorded), with *env* edited in."""
    facts: dict[str, Any] = json.loads((DATA / "gpu" / "h200-system.json").read_text())["facts"]
    facts["env"] = {k: v for k, v in {**facts["env"], **env}.items() if v is not None}
    return facts


# -- 1. CDI sets NVIDIA_VISIBLE_DEVICES=void ---------------------------------------------------------

#: The common env edits of a spec made by 'nvidia-ctk cdi generate' (nvidia-container-toolkit
#: cmd/nvidia-ctk/cdi/generate/generate_test.go, expectedSpec; pkg/nvcdi/wrapper.go GetCommonEdits).
CDI_ENV = {"NVIDIA_CTK_LIBCUDA_DIR": "/lib/x86_64-linux-gnu", "NVIDIA_VISIBLE_DEVICES": "void"}


def test_cdi_void_is_the_specs_own_not_an_image_fault() -> None:
    facts = _system_facts(**CDI_ENV)
    v = gpu.nvidia_env(facts, "oci", "all", cdi=True, host=GPU_HOST)
    assert v.status == "pass", v
    assert v.detail.startswith("NVIDIA_VISIBLE_DEVICES=void is the CDI spec's own")
    assert "GPU nodes from the spec: /dev/nvidia0" in v.detail


def test_cdi_void_seen_only_by_the_containers_first_process() -> None:
    """Real Podman 4.3: the spec's env edits reach the container's first process, not 'podman exec'
    ones (the probe's); the probe reads /proc/1/environ too (``init_env``)."""
    facts = _system_facts(NVIDIA_VISIBLE_DEVICES=None)
    facts["init_env"] = dict(CDI_ENV)
    v = gpu.nvidia_env(facts, "oci", "all", cdi=True, host=GPU_HOST)
    assert v.status == "pass" and v.detail.startswith("NVIDIA_VISIBLE_DEVICES=void is the CDI spec's own")
    # Not for the host: its PID 1 is the machine's init, not a container's.
    assert gpu.nvidia_env(facts, "host", None, host=GPU_HOST).detail.startswith("NVIDIA_VISIBLE_DEVICES=None")


def test_void_with_the_gpus_inside_hides_nothing() -> None:
    # Docker routing --gpus through CDI (nvidia-cdi-hook): the plugin asked with --gpus, not CDI names.
    v = gpu.nvidia_env(_system_facts(**CDI_ENV), "oci", "all", host=GPU_HOST)
    assert v.status == "pass" and "/dev/nvidia0 are inside: the runtime injected the GPUs" in v.detail


def test_void_without_gpus_inside_and_without_cdi_is_still_the_images() -> None:
    facts = _system_facts(NVIDIA_VISIBLE_DEVICES="void")
    facts["devices"]["nvidia"] = []
    v = gpu.nvidia_env(facts, "oci", "all", host=GPU_HOST)
    assert (v.status, v.fault) == ("fail", "image")


def test_nvidia_env_skips_on_an_amd_host() -> None:
    assert gpu.nvidia_env(_system_facts(), "oci", "all", host=AMD_HOST).status == "skip"


# -- 2. libnvidia-container's and CDI's refusals -----------------------------------------------------

_HOOK = ("docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI "
         "runtime create failed: runc create failed: unable to start container process: error during container "
         "init: error running hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected mode as "
         "'legacy'\n")

#: (name, stderr as the runtime printed it, cause, fault, words of the fix).  Sources: tests/data/gpu-runtimes.
REFUSALS: list[tuple[str, str, str, str | None, str]] = [
    ("version mismatch (NVIDIA/nvidia-container-toolkit#394)",
     _HOOK + "nvidia-container-cli: initialization error: nvml error: driver/library version mismatch: unknown.\n",
     "driver_library_mismatch", "host", "reboot the host, or reload the modules"),
    ("driver not loaded (NVIDIA/nvidia-container-toolkit#260)",
     _HOOK + "nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown.\n",
     "driver_not_loaded", "host", "modprobe nvidia"),
    ("no NVML on the host (docker/for-win#13835)",
     _HOOK + "nvidia-container-cli: initialization error: load library failed: libnvidia-ml.so.1: cannot open "
     "shared object file: no such file or directory: unknown.\n", "no_nvml", "host", "install the NVIDIA driver"),
    ("unknown device (NVIDIA/nvidia-docker#1283)",
     _HOOK + "nvidia-container-cli: device error: 1: unknown device: unknown.\n", "unknown_device", None,
     "nvidia-smi -L"),
    ("the image ships driver libraries (NVIDIA/nvidia-container-toolkit#289)",
     _HOOK + "nvidia-container-cli: mount error: file creation failed: /var/lib/docker/overlay2/706b1d1b6de681b6d"
     "af1cab979336a9d465d9b333962cc17db663f2e334d5776/merged/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1: file "
     "exists: unknown.\n", "image_ships_driver", "image", "remove them from the image"),
    ("stale CDI spec, runc (real Podman 4.3 here)",
     'Error: runc: runc create failed: unable to start container process: error during container init: error '
     'mounting "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05" to rootfs at "/usr/lib/x86_64-linux-gnu/libcuda.so'
     '.535.104.05": stat /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05: no such file or directory: OCI runtime '
     "attempted to invoke a command that was not found\n", "stale_cdi_spec", "host", "nvidia-ctk cdi generate"),
    ("stale CDI spec, crun (NVIDIA/nvidia-container-toolkit#692)",
     "Error: crun: cannot stat `/usr/lib/libnvidia-egl-wayland.so.1.1.13`: No such file or directory: OCI runtime "
     "attempted to invoke a command that was not found\n", "stale_cdi_spec", "host", "nvidia-ctk cdi generate"),
    ("stale CDI spec, crun (Igalia/webkit-container-sdk#23)",
     'Error: unable to start container "ecdb2132becb": crun: error stat\'ing file /lib/x86_64-linux-gnu/libEGL_'
     "nvidia.so.535.161.07: No such file or directory: OCI runtime attempted to invoke a command that was not "
     "found\n", "stale_cdi_spec", "host", "nvidia-ctk cdi generate"),
    ("stale CDI device node (real Podman 4.3 here; NVIDIA/nvidia-container-toolkit#885)",
     'Error: setting up CDI devices: failed to inject devices: failed to stat CDI host device "/dev/dri/renderD129": '
     "no such file or directory\n", "stale_cdi_spec", "host", "nvidia-ctk cdi generate"),
    ("a CDI device no spec names (real Podman 4.3 here)",
     "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=3\n", "unknown_cdi_device", None,
     "nvidia-ctk cdi list"),
    ("apptainer --nvccli (real Apptainer 1.4.5 here, stand-in nvidia-container-cli)",
     "FATAL:   container creation failed: nvidia-container-cli failed with exit status 1: nvidia-container-cli: "
     "initialization error: nvml error: driver not loaded\n\n", "driver_not_loaded", "host", "modprobe nvidia"),
]


@pytest.mark.parametrize(("stderr", "cause", "fault", "fix"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_are_judged_by_their_own_text(stderr: str, cause: str, fault: str | None, fix: str) -> None:
    out = gpu_refusal(stderr, "docker")
    assert (out.get("cause"), out["fault"]) == (cause, fault)
    assert fix in str(out["fix"]) and "install the NVIDIA Container Toolkit" not in str(out["fix"])
    assert out["error"] and out["error"] in stderr.replace("docker: ", "") and "\n" not in str(out["error"])


def test_no_toolkit_still_gets_the_toolkit_fix() -> None:
    # Seen for real here: Docker without the toolkit, Podman without a CDI spec.
    assert classify('docker: Error response from daemon: could not select device driver "" with capabilities: '
                    "[[gpu]].\n") is None
    out = gpu_refusal("Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all\n", "podman")
    assert out["fault"] == "host" and "nvidia-ctk cdi generate" in str(out["fix"]) and "cause" not in out


def _gate(gpu_facts: dict[str, Any]) -> CellRecord:
    class _Session:
        def __init__(self) -> None:
            self.facts = {"gpu": gpu_facts}

    class _Image:
        def ensure_started(self) -> _Session:
            return _Session()

    cell = new_cell("system.gpu_devices", "docker://img")
    with pytest.raises(pytest.fail.Exception):
        Container(_Image(), GPU_HOST, CheckOptions(), cell).gpu_expected()  # type: ignore[arg-type]
    return cell


def test_the_gate_keeps_the_refusals_fault() -> None:
    unknown = {"attached": False, **gpu_refusal(REFUSALS[3][1], "docker")}
    assert _gate(unknown)["fault"] is None  # --gpus named a GPU the host lacks: nobody's fault but the launch's
    assert _gate({"attached": False, **gpu_refusal(REFUSALS[4][1], "docker")})["fault"] == "image"
    assert _gate({"attached": False, "error": "x"})["fault"] == "host"  # nothing known: the host's, as before


# -- 4. apptainer --nvccli ---------------------------------------------------------------------------

#: What real Apptainer 1.4.5 printed here with a stand-in nvidia-container-cli that succeeded.
NVCCLI_OK = ("INFO:    Setting 'NVIDIA_VISIBLE_DEVICES=all' to emulate legacy GPU binding.\n"
             "INFO:    Setting --writable-tmpfs (required by nvidia-container-cli)\n"
             "INFO:    gocryptfs not found, will not be able to use gocryptfs\n")


def test_nvccli_info_lines_are_no_gpu_warning() -> None:
    assert app.gpu_warnings(NVCCLI_OK) == []
    # The legacy --nv warning (launcher_linux.go addGPUBinds), and --nvccli's --contain warning.
    assert app.gpu_warnings("WARNING: Could not find any nv files on this host!\n") == [
        "Could not find any nv files on this host!"]
    assert app.gpu_warnings("\x1b[33mWARNING:\x1b[0m When using nvidia-container-cli with --contain "
                            "NVIDIA_VISIBLE_DEVICES must be set or no GPUs will be available in container.\n")
    # The image's own output naming nvidia-container-cli is not apptainer's, nor is a path (seen for real:
    # the test's own working directory was .../test_nvccli_success_is_no_gpu_failure0).
    assert app.gpu_warnings("nvidia-container-cli is not installed in this image\n") == []
    assert app.gpu_warnings("WARNING: Error changing the container working directory. Using '/root' instead: chdir "
                            "/tmp/pytest-of-root/pytest-161/test_nvccli_success_is_no_gpu_failure0: no such file "
                            "or directory\n") == []


@pytest.mark.parametrize("host", [None, "", "all", "compute,utility", "compute,utility,graphics"])
def test_nvccli_gets_apptainers_environment_as_the_users_launch_gives_it(host: str | None) -> None:
    """Issue 29: no capability of ours.  nvidia-container-cli reads NVIDIA_DRIVER_CAPABILITIES from apptainer's own
    environment (apptainer launcher_linux.go setNvCCLIConfig; gpu/nvidia.go NVCLIEnvToFlags, default compute,utility
    when unset; "all" refused: "unknown NVIDIA_DRIVER_CAPABILITIES value: all"), so it is passed as it is."""
    env = app.ApptainerRuntime("apptainer").launch_env(
        LaunchOptions(run_id="r", apptainer_gpu="nvccli"),
        host_env={} if host is None else {"NVIDIA_DRIVER_CAPABILITIES": host})
    assert env.get("NVIDIA_DRIVER_CAPABILITIES") == host
    assert "APPTAINERENV_NVIDIA_DRIVER_CAPABILITIES" not in env


@pytest.mark.parametrize(("fatal", "fix"), [
    ("container creation failed: unknown NVIDIA_DRIVER_CAPABILITIES value: all", "set it to a list"),
    ("nvidia-container-cli not allowed in setuid mode", "--apptainer-gpu nv"),
    ('container creation failed: exec: "nvidia-container-cli": executable file not found in $PATH',
     "install nvidia-container-cli"),
    # Constructed from apptainer gpu/nvidia.go NVCLIConfigure ("nvidia-container-cli failed with %v: %s") around
    # libnvidia-container's own requirement text (src/cli/configure.c "requirement error: %s"; the condition text
    # as NVIDIA/nvidia-docker users quote it): the requirement is apptainer's environment's NVIDIA_REQUIRE_*
    # (NVCLIEnvToFlags: "One --require flag for each NVIDIA_REQUIRE_* environment"), never the image's.  The old
    # rule answered "install nvidia-container-cli", which is installed: it ran and said why.
    ("container creation failed: while running nvidia-container-cli: nvidia-container-cli failed with exit status 1: "
     "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.8, please update your driver to a "
     "newer version, or use an earlier cuda container", "NVIDIA_REQUIRE_* in the environment apptainer runs in"),
    ("container creation failed: while running nvidia-container-cli: nvidia-container-cli failed with exit status 1: "
     "nvidia-container-cli: initialization error: nvml error: driver not loaded", "nvidia-container-cli -k -d"),
])
def test_apptainers_own_nvccli_failures(fatal: str, fix: str) -> None:
    reason, got = app.classify_failure(f"INFO:    Setting --writable-tmpfs (required by nvidia-container-cli)\n"
                                       f"FATAL:   {fatal}\n")
    assert reason == f"apptainer: {fatal}" and fix in got


# -- 5. setuid apptainer ---------------------------------------------------------------------------


def _install(tmp_path: Path, *, suid: bool = True, mode: int = 0o4755, allow: str | None = "yes") -> str:
    """A setuid-shaped installation: LIBEXECDIR/apptainer/bin/starter-suid and an apptainer.conf,
    and the ``apptainer buildcfg`` lines naming them (the real ones list LIBEXECDIR,
    APPTAINER_CONF_FILE and APPTAINER_SUID_INSTALL, among others)."""
    bindir = tmp_path / "libexec" / "apptainer" / "bin"
    bindir.mkdir(parents=True)
    starter = bindir / "starter-suid"
    starter.write_bytes(b"\x7fELF")
    os.chown(starter, 0, 0)
    starter.chmod(mode)
    conf = tmp_path / "apptainer.conf"
    conf.write_text("# ALLOW SETUID: [BOOL]\n" + (f"allow setuid = {allow}\n" if allow else ""))
    return (f"PACKAGE_NAME=apptainer\nLIBEXECDIR={tmp_path / 'libexec'}\nAPPTAINER_CONF_FILE={conf}\n"
            f"APPTAINER_SUID_INSTALL={1 if suid else 0}\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="a setuid-root starter can only be made as root")
def test_setuid_installation_is_read_from_buildcfg_and_the_conf(tmp_path: Path) -> None:
    ok, why = app.setuid_installation(_install(tmp_path / "a"))
    assert ok and why.startswith("setuid installation: ") and "'allow setuid = yes'" in why
    assert app.setuid_installation(_install(tmp_path / "b", allow=None))[0]  # apptainer's default is yes
    assert app.setuid_installation(_install(tmp_path / "c", allow="no")) == (
        False, f"{tmp_path / 'c' / 'apptainer.conf'} says 'allow setuid = no', so apptainer will not use "
               f"{tmp_path / 'c' / 'libexec' / 'apptainer' / 'bin' / 'starter-suid'}")
    assert not app.setuid_installation(_install(tmp_path / "d", suid=False))[0]
    assert "is not setuid root" in app.setuid_installation(_install(tmp_path / "e", mode=0o755))[1]
    # This machine's real Debian package: no starter-suid.
    assert app.setuid_installation("APPTAINER_SUID_INSTALL=0\n")[0] is False


def test_userns_problem_reads_the_sysctl(tmp_path: Path) -> None:
    off, on = tmp_path / "off", tmp_path / "on"
    off.write_text("0\n")
    on.write_text("15000\n")
    assert "user namespaces are disabled" in (app.userns_problem(euid=1000, max_user_namespaces=str(off)) or "")
    assert app.userns_problem(euid=1000, max_user_namespaces=str(on)) is None
    assert app.userns_problem(euid=0, max_user_namespaces=str(off)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="a setuid-root starter can only be made as root")
@pytest.mark.parametrize("setuid", [True, False])
def test_preflight_lets_a_setuid_apptainer_run_without_user_namespaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setuid: bool) -> None:
    """A non-root user where user.max_user_namespaces = 0 (the sysctl is the one thing simulated:
    changing it would stop every other apptainer run here): with a setuid installation the
    preflight lets the run go on, without one it stops it naming why."""
    buildcfg = _install(tmp_path, allow="yes" if setuid else "no")
    fake = tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1" = buildcfg ]; then cat "$(dirname "$0")/buildcfg"; exit 0; fi\n'
                    'echo "apptainer version 1.4.5"\n')
    (tmp_path / "bin" / "buildcfg").write_text(buildcfg)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    disabled = tmp_path / "max_user_namespaces"
    disabled.write_text("0\n")
    real = app.userns_problem
    monkeypatch.setattr(app, "userns_problem", lambda: real(euid=1000, max_user_namespaces=str(disabled)))
    docker_save_tar(tmp_path / "x.tar")  # hashed by preflight once apptainer is known to run it
    target = Target(runtime="apptainer", ref=str(tmp_path / "x.tar"), spec="x.tar", archive="docker-archive")
    runtime = app.ApptainerRuntime("apptainer", executable=str(fake))
    if setuid:
        facts = runtime.preflight(target)
        assert facts["setuid"].startswith("setuid installation: ") and facts["runtime_version"] == "1.4.5"
    else:
        with pytest.raises(UsageProblem, match=r"user namespaces are disabled on this host .*'allow setuid = no'"):
            runtime.preflight(target)


# -- 7. AMD / ROCm ---------------------------------------------------------------------------------


def _amd_tree(root: Path, *, gpu_node: bool = True, render: bool = True) -> Path:
    """A file system with amdgpu's KFD: /dev/kfd, the KFD topology (node 0 a CPU, node 1 a GPU
    with SIMDs, as the amdgpu driver lists them) and a DRI render node."""
    (root / "dev" / "dri").mkdir(parents=True)
    (root / "dev" / "kfd").touch()
    (root / "dev" / "dri" / "card0").touch()
    if render:
        (root / "dev" / "dri" / "renderD128").touch()
    nodes = root / "sys" / "class" / "kfd" / "kfd" / "topology" / "nodes"
    for n, (name, simds) in enumerate([("", 0), ("gfx90a", 440)] if gpu_node else [("", 0)]):
        (nodes / str(n)).mkdir(parents=True)
        (nodes / str(n) / "name").write_text(name + "\n")
        (nodes / str(n) / "properties").write_text(f"cpu_cores_count {0 if simds else 64}\nsimd_count {simds}\n")
    return root


def test_a_whole_amd_gpu_is_a_gpu_host(tmp_path: Path) -> None:
    found = hostinfo.amd_evidence(root=str(_amd_tree(tmp_path)), which=lambda name: None)
    assert found == ["/dev/kfd", "/sys/class/kfd", "KFD GPU node 1 (gfx90a)", "/dev/dri/renderD128"]
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=[], proc_version="", amd=found)
    assert (host["has_gpu"], host["gpu_vendor"]) == (True, "amd")


@pytest.mark.parametrize(("gpu_node", "render", "lacks"), [
    (False, True, "without a GPU node in the KFD topology"),
    (True, False, "without a /dev/dri/renderD* node"),
    (False, False, "without a GPU node in the KFD topology and a /dev/dri/renderD* node"),
])
def test_dev_kfd_alone_is_not_a_gpu_host(tmp_path: Path, gpu_node: bool, render: bool, lacks: str) -> None:
    found = hostinfo.amd_evidence(root=str(_amd_tree(tmp_path, gpu_node=gpu_node, render=render)),
                                  which=lambda name: "/opt/rocm/bin/rocm-smi" if name == "rocm-smi" else None)
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=[], proc_version="", amd=found)
    assert (host["has_gpu"], host["gpu_vendor"]) == (False, None)
    assert host["gpu_summary"].startswith("host has no GPU for ROCm: /dev/kfd") and lacks in host["gpu_summary"]


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_oci_runtimes_pass_amds_devices_on_an_amd_host(runtime: str) -> None:
    rt = OCIRuntime(runtime)
    options = LaunchOptions(run_id="r", gpu_vendor="amd")
    argv = rt.run_command(Target(runtime, "img:1", "img:1"), options, "c1", "all")
    i = argv.index("--device")
    assert argv[i:i + 4] == ["--device", "/dev/kfd", "--device", "/dev/dri"]
    assert "--gpus" not in argv and not any("nvidia.com/gpu" in a for a in argv)
    assert rt.container_env(options, "all") == {}  # no NVIDIA_DRIVER_CAPABILITIES
    assert rt.container_env(options, "device=1,3") == {"ROCR_VISIBLE_DEVICES": "1,3"}
    assert rt.container_env(options, "2") == {"ROCR_VISIBLE_DEVICES": "0,1"}
    assert rt.run_command(Target(runtime, "img:1", "img:1"), options, "c1", "none").count("--device") == 0


def test_apptainer_uses_rocm_on_an_amd_host_unless_told_otherwise() -> None:
    auto = LaunchOptions(run_id="r", apptainer_gpu_auto=True)
    gpus_for_host(auto, AMD_HOST)
    assert (auto.apptainer_gpu, auto.gpu_vendor) == ("rocm", "amd")
    assert app.ApptainerRuntime("apptainer").gpu_flags_for(auto) == ["--rocm"]
    given = LaunchOptions(run_id="r", apptainer_gpu="nv")  # --apptainer-gpu nv on the command line
    gpus_for_host(given, AMD_HOST)
    assert given.apptainer_gpu == "nv"
    nvidia = LaunchOptions(run_id="r", apptainer_gpu_auto=True)
    gpus_for_host(nvidia, GPU_HOST)
    assert (nvidia.apptainer_gpu, nvidia.gpu_vendor) == ("nv", "nvidia")


def _torch(**edit: Any) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads((DATA / "ml" / "torch_h200_cu130.json").read_text())["facts"]
    return {**facts, **edit}


def test_a_cuda_torch_on_an_amd_host_is_a_mismatch() -> None:
    v = ml.torch_cuda(_torch(), AMD_HOST)
    assert (v.status, v.fault) == ("fail", "pair")
    assert v.detail.startswith("torch 2.11.0+cu130 is a CUDA build (CUDA 13.0) and this host's GPU is AMD")
    assert "download.pytorch.org/whl/rocm" in (v.fix or "") and "rocm-smi" in (v.fix or "")
    # A ROCm build there passes this step (the GPU gate and the run judge it next).
    assert ml.torch_cuda_build(_torch(cuda_build=None, hip_build="6.4.43482"), "a GPU is attached", AMD_HOST) is None


def test_a_rocm_torch_on_an_nvidia_host_is_a_mismatch() -> None:
    v = ml.torch_cuda(_torch(cuda_build=None, hip_build="6.4.43482", version="2.9.1+rocm6.4"), GPU_HOST)
    assert (v.status, v.fault) == ("fail", "pair") and "is a ROCm build (HIP 6.4.43482)" in v.detail


def test_transformers_on_a_cuda_torch_on_an_amd_host_is_a_mismatch() -> None:
    facts: dict[str, Any] = json.loads((DATA / "ml" / "transformers_h200_tiny.json").read_text())["facts"]
    v = ml.transformers_cuda_build(facts, "a GPU is attached", AMD_HOST)
    assert v is not None and (v.status, v.fault) == ("fail", "pair")


def test_amd_gpu_devices_need_kfd_and_a_render_node() -> None:
    ok = gpu.gpu_devices({"devices": {"nvidia": [], "kfd": True, "dri": ["/dev/dri/card0", "/dev/dri/renderD128"]}},
                         AMD_HOST)
    assert ok.status == "pass"
    v = gpu.gpu_devices({"devices": {"nvidia": [], "kfd": True, "dri": ["/dev/dri/card0"]}}, AMD_HOST)
    assert (v.status, v.fault) == ("fail", "host")
    assert v.detail.endswith("but the image has no DRI render node (/dev/dri/renderD*)")
    assert "--device /dev/kfd --device /dev/dri" in (v.fix or "") and "rocm-smi" in (v.fix or "")


# -- the Slurm job's GPUs ------------------------------------------------------------------------------
# Slurm's srun(1)/sbatch(1), OUTPUT ENVIRONMENT VARIABLES (Debian's slurm-client 22.05):
# "SLURM_JOB_GPUS  The global GPU IDs of the GPUs allocated to this job. The GPU IDs are not
# relative to any device cgroup, even if devices are constrained with task/cgroup."
# nvidia-container-toolkit #211: inside a Slurm job, "docker run --gpus all ... nvidia-smi shows
# all gpus available on that machine" (the daemon is outside the job's cgroup).


#: A node whose minor numbers and NVML indexes agree (the common case): constructed in the shape of
#: hostinfo.job_gpu_facts (see tests/test_gpumap.py for nodes where they differ).
IN_ORDER = {"gpus": [{"index": i, "minor": i, "uuid": f"GPU-{i}{i}{i}{i}0000-aaaa-bbbb-cccc-dddddddddddd",
                      "bus": f"00000000:{0x18 + i:02x}:00.0", "mig": []} for i in range(8)]}


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_docker_and_podman_get_the_slurm_jobs_gpus_by_uuid_not_all(runtime: str) -> None:
    host = {**GPU_HOST, "slurm": {"SLURM_JOB_ID": "77", "SLURM_JOB_GPUS": "3,5", "CUDA_VISIBLE_DEVICES": "0,1"},
            "job_gpus": IN_ORDER}
    auto = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(auto, host)
    rt = OCIRuntime(runtime)
    three, five = IN_ORDER["gpus"][3]["uuid"], IN_ORDER["gpus"][5]["uuid"]
    assert rt.requested_gpus(auto) == f"device={three},{five}"
    want = ["--gpus", f'"device={three},{five}"'] if runtime == "docker" else [
        "--device", f"nvidia.com/gpu={three}", "--device", f"nvidia.com/gpu={five}"]
    assert rt.gpu_flags_for(auto) == want
    # The step's own GPUs win over the job's; --gpus given wins over both.
    step = {**GPU_HOST, "slurm": {"SLURM_JOB_GPUS": "3,5", "SLURM_STEP_GPUS": "5"}, "job_gpus": IN_ORDER}
    stepped = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(stepped, step)
    assert rt.requested_gpus(stepped) == f"device={five}"
    given = LaunchOptions(run_id="r", gpus="all", gpus_auto=False)
    gpus_for_host(given, host)
    assert rt.requested_gpus(given) == "all"
    # Node facts that cannot be read: no GPU rather than a guess (the old rule passed device=3,5 as indexes).
    blind = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(blind, {**host, "job_gpus": {}})
    assert rt.requested_gpus(blind) == "none" and "could not be read" in blind.job_gpus_problem


def test_apptainer_inside_the_job_keeps_its_cgroup_relative_selection() -> None:
    # Apptainer runs in the job's cgroup: the job's CUDA_VISIBLE_DEVICES (relative to it) is
    # what counts there; the global ids must not be turned into a device selection.
    host = {**GPU_HOST, "slurm": {"SLURM_JOB_GPUS": "3,5"}}
    auto = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(auto, host)
    env = app.ApptainerRuntime("apptainer").launch_env(auto, host_env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "0,1"


def test_no_slurm_gpus_means_all() -> None:
    auto = LaunchOptions(run_id="r", gpus_auto=True)
    gpus_for_host(auto, {**GPU_HOST, "slurm": {"SLURM_JOB_ID": "77"}})
    assert OCIRuntime("docker").requested_gpus(auto) == "all"
