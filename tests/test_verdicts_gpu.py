"""GPU paths that no test host here can reach, on constructed facts (issue 12).

The system GPU rows' verdicts (``verdicts_gpu``), the host's GPU detection (``hostinfo``:
nvidia-smi's CSV and banner, R470's missing ``compute_cap``, Slurm jobs without a GPU,
AMD/ROCm hosts), Docker's GPU-start refusals (``runtimes.oci.gpu_refusal``) and the GPU
gate (``Container.gpu_expected``).  Every message and code is quoted from its source; see
``tests/data/ml/README.md`` ("Constructed GPU facts") for which facts are constructed and from what.
"""

from __future__ import annotations

import json
import runpy
import stat
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.container import Container
from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine import verdicts_gpu as gpu
from pytest_containercheck.engine.matrix import new_cell
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.runtimes.oci import gpu_refusal

ROOT = Path(__file__).resolve().parent.parent

#: nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,uuid --format=csv,noheader
#: on one H100 (the format nvidia-smi documents: one CSV line per GPU, no header).
H100_CSV = "NVIDIA H100 80GB HBM3, 570.133.20, 81559 MiB, 9.0, GPU-5c3e9a0b-1d2e-4f60-8a7b-0c1d2e3f4a5b\n"
#: The banner of plain nvidia-smi (its first table rows).
BANNER = ("+-----------------------------------------------------------------------------------------+\n"
          "| NVIDIA-SMI 570.133.20             Driver Version: 570.133.20     CUDA Version: 12.8     |\n")
#: nvidia-smi's answer to a field it does not know (R470 and compute_cap), on stdout, exit 2.
INVALID_COMPUTE_CAP = 'Field "compute_cap" is not a valid field to query.\n'

GPU_HOST: dict[str, Any] = {"has_gpu": True, "gpu_vendor": "nvidia", "gpu_summary": "1 NVIDIA GPU(s)"}
AMD_HOST: dict[str, Any] = {"has_gpu": True, "gpu_vendor": "amd",
                            "gpu_summary": "an AMD GPU (ROCm: /dev/kfd, /sys/class/kfd)"}


def fake_nvidia_smi(tmp_path: Path, *, r470: bool = False, no_devices: bool = False) -> str:
    """An executable nvidia-smi answering like the real one (constructed from the texts above)."""
    csv_full = H100_CSV
    csv_470 = "NVIDIA A100-SXM4-40GB, 470.256.02, 40536 MiB, GPU-0\n"
    script = tmp_path / "nvidia-smi"
    lines = ["#!/bin/sh", 'case "$1" in', "  --query-gpu=*)"]
    if no_devices:
        lines += ["    echo 'No devices were found'; exit 6 ;;"]
    elif r470:
        lines += ['    case "$1" in *compute_cap*) printf \'%s\' \'' + INVALID_COMPUTE_CAP + "'; exit 2 ;; esac",
                  f"    printf '%s' '{csv_470}'; exit 0 ;;"]
    else:
        lines += [f"    printf '%s' '{csv_full}'; exit 0 ;;"]
    lines += ["esac", f"printf '%s' '{BANNER}'"]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# -- hostinfo: nvidia-smi parsers, R470, Slurm, AMD ----------------------------------------------


def test_nvidia_smi_csv_and_banner_parsers() -> None:
    gpus = hostinfo.parse_nvidia_smi_csv(H100_CSV)
    assert gpus == [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "570.133.20", "memory_total": "81559 MiB",
                     "compute_cap": "9.0", "uuid": "GPU-5c3e9a0b-1d2e-4f60-8a7b-0c1d2e3f4a5b"}]
    assert hostinfo.parse_cuda_version(BANNER) == "12.8"
    assert hostinfo.parse_cuda_version("NVIDIA-SMI has failed because it couldn't communicate") is None


def test_query_nvidia_smi_lists_the_gpu(tmp_path: Path) -> None:
    out = hostinfo.query_nvidia_smi(fake_nvidia_smi(tmp_path))
    assert out["gpus"][0]["compute_cap"] == "9.0" and out["cuda_version"] == "12.8" and out["error"] is None


def test_r470_nvidia_smi_is_asked_again_without_compute_cap(tmp_path: Path) -> None:
    out = hostinfo.query_nvidia_smi(fake_nvidia_smi(tmp_path, r470=True))
    assert out["error"] is None, out
    assert out["gpus"] == [{"name": "NVIDIA A100-SXM4-40GB", "driver_version": "470.256.02",
                            "memory_total": "40536 MiB", "uuid": "GPU-0"}]
    assert "compute_cap" not in out["fields"]


def test_r470_in_the_system_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = fake_nvidia_smi(tmp_path, r470=True)
    monkeypatch.setenv("PATH", f"{Path(smi).parent}:/usr/bin:/bin")
    probe = runpy.run_path(str(ROOT / "probes" / "system.py"))
    facts = probe["_nvidia_smi"]()
    assert facts["returncode"] == 0 and facts["gpus"][0]["name"] == "NVIDIA A100-SXM4-40GB", facts
    v = gpu.nvidia_smi({"nvidia_smi": facts}, GPU_HOST)
    assert v.status == "pass" and "sm ?" in v.detail


def test_a_host_with_a_gpu_is_a_gpu_host(tmp_path: Path) -> None:
    smi = fake_nvidia_smi(tmp_path)
    host = hostinfo.judge_gpu_host(smi=smi, smi_result=hostinfo.query_nvidia_smi(smi), devices=["/dev/nvidia0"],
                                   proc_version="NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.133.20")
    assert (host["has_gpu"], host["gpu_vendor"], host["gpu_summary"]) == (True, "nvidia", "1 NVIDIA GPU(s)")
    assert (host["driver_version"], host["cuda_version"]) == ("570.133.20", "12.8")


def test_device_nodes_without_nvidia_smi_still_make_a_gpu_host() -> None:
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=["/dev/nvidia0"], proc_version="")
    assert host["has_gpu"] is True


def test_broken_nvidia_smi_with_device_nodes_is_a_gpu_host_that_fails() -> None:
    result = {"gpus": [], "error": "Failed to initialize NVML: Driver/library version mismatch", "no_devices": False}
    host = hostinfo.judge_gpu_host(smi="/usr/bin/nvidia-smi", smi_result=result, devices=["/dev/nvidia0"],
                                   proc_version="")
    assert host["has_gpu"] is True


def test_slurm_job_without_a_gpu_on_a_gpu_node_has_none(tmp_path: Path) -> None:
    smi = fake_nvidia_smi(tmp_path, no_devices=True)
    host = hostinfo.judge_gpu_host(smi=smi, smi_result=hostinfo.query_nvidia_smi(smi),
                                   devices=["/dev/nvidia0", "/dev/nvidia1"], proc_version="NVRM version: ...")
    assert host["has_gpu"] is False
    assert host["gpu_summary"].startswith("host has no NVIDIA GPU for this job: nvidia-smi says "
                                          "'No devices were found' although /dev/nvidia0, /dev/nvidia1 exist")


def test_no_gpu_at_all_keeps_the_documented_reason() -> None:
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=[], proc_version="")
    assert host["gpu_summary"] == ("host has no NVIDIA GPU (no nvidia-smi on PATH, no /dev/nvidia*, "
                                   "no /proc/driver/nvidia)")


def test_kfd_and_rocm_smi_alone_are_not_an_amd_gpu_host(tmp_path: Path) -> None:
    """/dev/kfd, /sys/class/kfd and rocm-smi without a GPU node or a render node: no GPU for ROCm
    (a whole AMD GPU host is in tests/test_gpu_runtimes.py)."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kfd").touch()
    (tmp_path / "sys" / "class" / "kfd").mkdir(parents=True)
    found = hostinfo.amd_evidence(root=str(tmp_path),
                                  which=lambda name: "/opt/rocm/bin/rocm-smi" if name == "rocm-smi" else None)
    assert found == ["/dev/kfd", "/sys/class/kfd", "rocm-smi (/opt/rocm/bin/rocm-smi)"]
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=[], proc_version="", amd=found)
    assert (host["has_gpu"], host["gpu_vendor"]) == (False, None)
    assert host["gpu_summary"].startswith("host has no GPU for ROCm: /dev/kfd, /sys/class/kfd")


def test_this_machine_is_judged_by_the_same_rules() -> None:
    # Runs unchanged on a GPU runner: whatever this host is, the summary agrees with has_gpu.
    facts = hostinfo.nvidia_facts()
    assert facts["has_gpu"] == (facts["gpu_vendor"] is not None)
    assert facts["gpu_summary"].startswith("host has no") != facts["has_gpu"]


# -- the system GPU rows -------------------------------------------------------------------------


def test_gpu_devices_missing_nodes_is_the_hosts() -> None:
    v = gpu.gpu_devices({"devices": {"nvidia": ["/dev/nvidiactl"], "dri": [], "kfd": False}}, GPU_HOST)
    assert (v.status, v.fault) == ("fail", "host") and "no /dev/nvidiaN inside the image" in v.detail
    ok = gpu.gpu_devices({"devices": {"nvidia": ["/dev/nvidia0", "/dev/nvidiactl"]}}, GPU_HOST)
    assert ok.status == "pass" and ok.detail == "/dev/nvidia0, /dev/nvidiactl"


def test_gpu_devices_on_amd_wants_kfd() -> None:
    assert gpu.gpu_devices({"devices": {"nvidia": [], "kfd": True, "dri": ["/dev/dri/renderD128"]}},
                           AMD_HOST).status == "pass"
    v = gpu.gpu_devices({"devices": {"nvidia": [], "kfd": False}}, AMD_HOST)
    assert (v.status, v.fault) == ("fail", "host") and "--device /dev/kfd" in (v.fix or "")
    assert gpu.nvidia_smi({}, AMD_HOST).status == "skip" and gpu.libcuda({}, AMD_HOST).status == "skip"


def test_nvidia_smi_row_failures() -> None:
    v = gpu.nvidia_smi({"nvidia_smi": {"found": False}}, GPU_HOST)
    assert (v.status, v.fault) == ("fail", "host") and v.detail == "nvidia-smi is not on PATH inside the image"
    v = gpu.nvidia_smi({"nvidia_smi": {"found": True, "returncode": 9, "gpus": [],
                                       "stderr": "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                 "NVIDIA driver."}}, GPU_HOST)
    assert (v.status, v.fault) == ("fail", "host") and "couldn't communicate" in v.detail
    v = gpu.nvidia_smi({"nvidia_smi": {"found": True, "returncode": 6, "gpus": [], "no_devices": True}}, GPU_HOST)
    assert v.status == "fail" and "No devices were found" in v.detail
    ok = gpu.nvidia_smi({"nvidia_smi": {"found": True, "returncode": 0,
                                        "gpus": hostinfo.parse_nvidia_smi_csv(H100_CSV)}}, GPU_HOST)
    assert ok.status == "pass" and ok.detail == "NVIDIA H100 80GB HBM3 (driver 570.133.20, sm 9.0)"


@pytest.mark.parametrize(("rc", "name", "fault"), [
    (100, "CUDA_ERROR_NO_DEVICE", "host"),
    (999, "CUDA_ERROR_UNKNOWN", "host"),
    (803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "pair"),
    (804, "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", "pair"),
    (34, "CUDA_ERROR_STUB_LIBRARY", "image"),
])
def test_cuinit_errors_are_judged_by_their_code(rc: int, name: str, fault: str) -> None:
    facts = {"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.570.133.20", "cuInit": rc},
             "devices": {"nvidia": ["/dev/nvidia0", "/dev/nvidiactl"]}}
    v = gpu.libcuda(facts, GPU_HOST)
    assert (v.status, v.fault) == ("fail", fault) and name in v.detail
    if rc == 100:
        assert "CUDA_VISIBLE_DEVICES" in (v.fix or "") and "remove libcuda" not in (v.fix or "")
    if rc == 999:
        assert v.detail.endswith("/dev/nvidia-uvm is missing inside") and "nvidia-uvm" in (v.fix or "")


@pytest.mark.parametrize("rc", [999, 3])
def test_a_libcuda_from_a_stubs_directory_is_the_stub_whatever_cuinit_says(rc: int) -> None:
    """The toolkit's stub (``.../lib64/stubs/libcuda.so``) answers 34 since CUDA 11.1; older stubs answer
    other codes (999, or one not in the table): the path decides, and the fix names the stubs directory."""
    facts = {"libcuda": {"loaded": True, "path": "/usr/local/cuda/lib64/stubs/libcuda.so.1", "cuInit": rc},
             "devices": {"nvidia": ["/dev/nvidia0", "/dev/nvidia-uvm"]}}
    v = gpu.libcuda(facts, GPU_HOST)
    assert (v.status, v.fault) == ("fail", "image")
    assert f"cuInit failed with {rc} (CUDA_ERROR_STUB_LIBRARY, /usr/local/cuda/lib64/stubs/libcuda.so.1)" in v.detail
    assert "stubs" in (v.fix or "")


def test_libcuda_not_loading_and_passing() -> None:
    v = gpu.libcuda({"libcuda": {"loaded": False, "error": "libcuda.so.1: cannot open shared object file"}}, GPU_HOST)
    assert (v.status, v.fault) == ("fail", "host")
    ok = gpu.libcuda({"libcuda": {"loaded": True, "cuInit": 0, "path": "/usr/lib/libcuda.so.1",
                                  "driver_cuda_version": "12.8", "device_count": 1}}, GPU_HOST)
    assert ok.status == "pass" and ok.detail.startswith("CUDA driver API 12.8")


def _h200_system_facts() -> dict[str, Any]:
    """The ``system`` probe's facts on the lent H200 (``tests/data/gpu/h200-system.json``)."""
    facts: dict[str, Any] = json.loads((ROOT / "tests" / "data" / "gpu" / "h200-system.json").read_text())["facts"]
    return facts


def _with_env(**env: str | None) -> dict[str, Any]:
    facts = _h200_system_facts()
    facts["env"] = {k: v for k, v in {**facts["env"], **env}.items() if v is not None}
    return facts


def test_nvidia_env_passes_on_the_h200() -> None:
    v = gpu.nvidia_env(_h200_system_facts(), "oci")
    assert v.status == "pass"
    assert v.detail == ("NVIDIA_VISIBLE_DEVICES=0, NVIDIA_DRIVER_CAPABILITIES=compute,graphics,utility, "
                        "CUDA_VISIBLE_DEVICES=None")
    assert gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES="all"), "oci").status == "pass"
    assert gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES=None), "oci").status == "pass"  # the toolkit's default


@pytest.mark.parametrize("visible", ["void", "none", ""])
def test_nvidia_env_fails_when_the_image_hides_every_gpu(visible: str) -> None:
    facts = _with_env(NVIDIA_VISIBLE_DEVICES=visible)
    facts["devices"]["nvidia"] = ["/dev/nvidiactl"]  # hidden: no /dev/nvidiaN came in
    v = gpu.nvidia_env(facts, "oci")
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail == f"NVIDIA_VISIBLE_DEVICES={visible!r} in the image hides every GPU"
    assert "NVIDIA_VISIBLE_DEVICES" in (v.fix or "")


@pytest.mark.parametrize(("caps", "missing"), [("utility", "compute"), ("video,display", "compute, utility")])
def test_nvidia_env_fails_when_the_image_drops_a_compute_capability(caps: str, missing: str) -> None:
    """The capabilities are the image's own (no launch of ours sets them, issue 29): its fault, with the ENV."""
    v = gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES=caps), "oci")
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith(f"NVIDIA_DRIVER_CAPABILITIES={caps} (the image's own environment) lacks {missing}: ")
    assert v.fix == gpu.CAPABILITIES_FIX
    # The same value set by --container-env emulates a deployment: the deployment's, not the image's.
    emulated = gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES=caps), "oci",
                              emulated=["NVIDIA_DRIVER_CAPABILITIES"])
    assert (emulated.status, emulated.fault) == ("fail", "host")
    assert "--container-env, emulating the deployment's environment" in emulated.detail


def test_nvidia_env_notes_a_missing_graphics_capability_for_render_egl() -> None:
    """compute,utility (the CUDA base images' own, and the toolkit's default when unset) is right for a
    compute image: the row passes and says EGL gets no NVIDIA driver; render.egl judges that."""
    for caps in ("compute,utility", None):
        v = gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES=caps), "oci")
        assert v.status == "pass" and "no 'graphics'" in v.detail and "render.egl" in v.detail
    # A legacy CUDA image (CUDA_VERSION, no NVIDIA_REQUIRE_CUDA) with none set gets every capability.
    legacy = gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES=None, NVIDIA_REQUIRE_CUDA=None,
                                      CUDA_VERSION="10.0.130"), "oci")
    assert legacy.status == "pass" and "graphics" not in legacy.detail
    # Under CDI (Podman) the spec mounts the graphics libraries whatever the variable says.
    assert "no 'graphics'" not in gpu.nvidia_env(_with_env(NVIDIA_DRIVER_CAPABILITIES="compute,utility"), "oci",
                                                 cdi=True).detail


def test_nvidia_env_is_not_read_by_apptainer() -> None:
    """Apptainer does not read the image's NVIDIA_* variables: even ``void`` passes, with a note saying so."""
    v = gpu.nvidia_env(_with_env(NVIDIA_VISIBLE_DEVICES="void", NVIDIA_DRIVER_CAPABILITIES="utility"), "sif", "nv")
    assert v.status == "pass"
    assert v.detail.startswith("apptainer --nv: the image's NVIDIA_DRIVER_CAPABILITIES=utility and "
                               "NVIDIA_VISIBLE_DEVICES=void are not read")


# -- Docker's GPU refusals ------------------------------------------------------------------------

#: What docker prints when libnvidia-container refuses an image whose NVIDIA_REQUIRE_CUDA the
#: driver does not meet (the hook's stderr, as quoted in public reports; see the data README).
REQUIREMENT_STDERR = (
    "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI "
    "runtime create failed: runc create failed: unable to start container process: error during container init: "
    "error running hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\n"
    "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5, please update your driver to a "
    "newer version, or use an earlier cuda container: unknown.\n")
#: The no-toolkit refusal, seen for real on the development VM.
NO_TOOLKIT_STDERR = ('docker: Error response from daemon: could not select device driver "" with capabilities: '
                     "[[gpu]].\n")


def test_cuda_requirement_refusal_is_a_pair_fault() -> None:
    out = gpu_refusal(REQUIREMENT_STDERR, "docker")
    assert out["fault"] == "pair"
    assert out["error"].startswith("nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5")
    assert "requires cuda>=12.5" in out["fix"] and "NVIDIA_DISABLE_REQUIRE=1" in out["fix"]
    assert "Container Toolkit" not in out["fix"]


def test_no_toolkit_refusal_is_the_hosts() -> None:
    out = gpu_refusal(NO_TOOLKIT_STDERR, "docker")
    assert out["fault"] == "host" and "nvidia-ctk runtime configure" in out["fix"]
    assert out["error"].startswith('Error response from daemon: could not select device driver ""')


# -- the GPU gate ------------------------------------------------------------------------------------


class _Session:
    def __init__(self, gpu_facts: dict[str, Any]) -> None:
        self.facts = {"gpu": gpu_facts}


class _Image:
    def __init__(self, gpu_facts: dict[str, Any]) -> None:
        self.session = _Session(gpu_facts)

    def ensure_started(self) -> _Session:
        return self.session


def _gate(host: dict[str, Any], gpu_facts: dict[str, Any], **options: Any) -> tuple[str, dict[str, Any]]:
    cell = new_cell("torch.cuda", "docker://img")
    c = Container(_Image(gpu_facts), host, CheckOptions(**options), cell)  # type: ignore[arg-type]
    try:
        c.gpu_expected()
    except pytest.fail.Exception:
        return "fail", cell
    except pytest.skip.Exception:
        return "skip", cell
    return "pass", cell


def test_gate_fails_when_the_host_gpu_is_not_in_the_image() -> None:
    refused = {"attached": False, **gpu_refusal(NO_TOOLKIT_STDERR, "docker")}
    outcome, cell = _gate(GPU_HOST, refused)
    assert outcome == "fail" and cell["fault"] == "host"
    assert cell["detail"].startswith("host has 1 NVIDIA GPU(s), but the image was started without GPU access")
    assert "nvidia-ctk" in cell["fix"]


def test_gate_passes_with_a_gpu_attached_and_skips_or_fails_without_one() -> None:
    assert _gate(GPU_HOST, {"attached": True})[0] == "pass"
    no_gpu = {"has_gpu": False, "gpu_summary": "host has no NVIDIA GPU (no nvidia-smi on PATH)"}
    assert _gate(no_gpu, {"attached": True})[0] == "skip"
    outcome, cell = _gate(no_gpu, {"attached": True}, require_gpu=True)
    assert outcome == "fail" and cell["fault"] == "host" and cell["detail"].startswith("--require-gpu: host has no")


def test_gate_blames_the_pair_for_an_unmet_cuda_requirement() -> None:
    # The image's CUDA is newer than the driver: neither the image alone nor the host alone.
    refused = {"attached": False, **gpu_refusal(REQUIREMENT_STDERR, "docker")}
    outcome, cell = _gate(GPU_HOST, refused)
    assert outcome == "fail" and cell["fault"] == "pair"
    assert "NVIDIA_DISABLE_REQUIRE=1" in cell["fix"]
