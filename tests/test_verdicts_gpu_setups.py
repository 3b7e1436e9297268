"""GPU setups the verdicts must read right (issue 24): each rule on facts taken from upstream text
or from a recording, with the source in tests/data/ml/README.md or tests/data/render/README.md.

No GPU runs here.  The GPU-side facts are recorded CPU facts (or the H200's) with what a GPU host
changes edited in, and every message is the library's own text, quoted from its source; the
transformers and VTK version cases are real probe runs (transformers against a stand-in torch
that only claims an old version, see tests/data/record_versions.py).
"""

from __future__ import annotations

import copy
import json
import re
import runpy
import stat
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine import verdicts_gpu as gpu
from pytest_containercheck.engine import verdicts_ml as ml
from pytest_containercheck.engine.runtimes.base import ExecResult
from pytest_containercheck.engine.verdicts_render import (
    egl_device_opened,
    egl_device_used,
    egl_software_cause,
    pyvista_vtk_mismatch,
    render_verdict,
)

ROOT = Path(__file__).resolve().parent.parent
ML = ROOT / "tests" / "data" / "ml"
RENDER = ROOT / "tests" / "data" / "render"

#: c10/cuda/CUDAFunctions.cpp (device_count_impl, default case) as c10::cuda::device_count() warns
#: it, with cudaGetErrorString(cudaErrorSystemNotReady); the text of public reports from HGX nodes.
TORCH_802 = ("CUDA initialization: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions "
             "before calling NumCudaDevices() that might have already set an error? Error 802: system not yet "
             "initialized (Triggered internally at /pytorch/c10/cuda/CUDAFunctions.cpp:119.)")
#: The same for cudaErrorCompatNotSupportedOnDevice (804).
TORCH_804 = ("CUDA initialization: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions "
             "before calling NumCudaDevices() that might have already set an error? Error 804: forward "
             "compatibility was attempted on non supported HW (Triggered internally at "
             "/pytorch/c10/cuda/CUDAFunctions.cpp:119.)")
#: cudaGetErrorString(cudaErrorDevicesUnavailable) as torch raises it when a context is refused.
BUSY = "RuntimeError: CUDA error: CUDA-capable device(s) is/are busy or unavailable"
#: torch's out-of-memory text (c10/cuda/CUDACachingAllocator.cpp), as PyTorch's docs quote it.
OOM_SELF = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.15 GiB. GPU 0 has a total capacity "
            "of 39.56 GiB of which 6.80 GiB is free. Including non-PyTorch memory, this process has 36.61 GiB "
            "memory in use. Of the allocated memory 31.66 GiB is allocated by PyTorch, and 4.11 GiB is reserved "
            "by PyTorch but unallocated.")
OOM_OTHERS = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity "
              "of 79.11 GiB of which 13.56 MiB is free. Process 1234 has 78.90 GiB memory in use. Including "
              "non-PyTorch memory, this process has 210.00 MiB memory in use.")
#: xgboost 1.x, src/gbm/gbtree.cc: CHECK_GE(common::AllVisibleGPUs(), 1) << "No visible GPU is found for XGBoost."
XGB1_NO_GPU = ("XGBoostError: [10:01:02] ../src/gbm/gbtree.cc:554: Check failed: common::AllVisibleGPUs() >= 1 "
               "(0 vs. 1) : No visible GPU is found for XGBoost.")


def load(directory: Path, case: str) -> dict[str, Any]:
    doc = json.loads((directory / f"{case}.json").read_text(encoding="utf-8"))
    return dict(doc["facts"])


def gpu_host(cuda: str = "12.8", driver: str = "570.133.20", **more: Any) -> dict[str, Any]:
    """hostinfo.gather() on a host with one H100 (nvidia-smi fields)."""
    return {"has_gpu": True, "gpu_vendor": "nvidia", "gpu_summary": "1 NVIDIA GPU(s)", "cuda_version": cuda,
            "driver_version": driver, "gpus": [{"name": "NVIDIA H100 80GB HBM3", "driver_version": driver}], **more}


def torch_without_cuda(version: str, cuda_build: str, warning: str) -> dict[str, Any]:
    """The recorded torch facts as a CUDA build reports them when CUDA does not initialise (warning)."""
    facts = copy.deepcopy(load(ML, "torch_full_cpu_build"))
    facts.update(version=version, cuda_build=cuda_build, warnings=[{"category": "UserWarning", "message": warning}])
    facts["cuda"] = {"compiled": True, "is_available": False, "device_count": 0, "arch_list": [], "devices": []}
    return facts


def torch_on_gpu(error: str | None = None) -> dict[str, Any]:
    """The recorded facts as torch 2.13.0+cu128 on one H100 reports them; *error* fails its cuda:0 run."""
    facts = copy.deepcopy(load(ML, "torch_full_cpu_build"))
    facts.update(version="2.13.0+cu128", cuda_build="12.8")
    facts["cuda"] = {"compiled": True, "is_available": True, "device_count": 1,
                     "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
                     "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": [9, 0]}]}
    facts["selection"] = {"api": "torch.accelerator.current_accelerator(check_available=True)", "selected": "cuda:0"}
    run = copy.deepcopy(facts["ops"]["cpu"])
    run.update(device="cuda:0", result_device="cuda:0", conv_result_device="cuda:0")
    if error:
        run = {"device": "cuda:0", "ok": False, "error": error}
    facts["ops"]["cuda:0"] = run
    return facts


def cuda_indexes(text: str) -> list[str]:
    return re.findall(r"download\.pytorch\.org/whl/(cu\d+)", text)


# -- 3. CUDA 802: the Fabric Manager ---------------------------------------------------------------


def test_cuinit_802_is_the_fabric_manager_on_the_host() -> None:
    """cuda.h: CUDA_ERROR_SYSTEM_NOT_READY = 802, "verify ... all required driver daemons are actively running"."""
    v = gpu.libcuda({"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 802}},
                    gpu_host())
    assert (v.status, v.fault) == ("fail", "host")
    assert "cuInit failed with 802 (CUDA_ERROR_SYSTEM_NOT_READY" in v.detail and "Fabric Manager" in v.detail
    assert v.fix is not None and "nvidia-fabricmanager" in v.fix and "CUDA_VISIBLE_DEVICES" not in v.fix


def test_torch_802_names_the_fabric_manager() -> None:
    v = ml.torch_cuda(torch_without_cuda("2.13.0+cu128", "12.8", TORCH_802), gpu_host())
    assert (v.status, v.fault) == ("fail", "host"), v
    assert "Fabric Manager" in v.detail and "Error 802: system not yet initialized" in v.detail
    assert v.fix is not None and "nvidia-fabricmanager" in v.fix and "--gpus all" not in v.fix


def test_802_without_nvswitch_is_not_the_fabric_manager() -> None:
    """Issue 29: 802 occurs on hosts without NVSwitch too (wilicc/gpu-burn#133), where the Fabric Manager
    has nothing to manage and does not start (NVIDIA/gpu-operator#610).  The recorded H200 machine has no
    /dev/nvidia-nvswitch* (a single GPU in a VM; its hostinfo has no NVSwitch: constructed as the empty
    list hostinfo now records); the old rule told it to start the Fabric Manager."""
    host = {**json.loads((ML / "host_facts_h200.json").read_text())["facts"], "nvswitch": []}
    v = gpu.libcuda({"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 802}},
                    host)
    assert (v.status, v.fault) == ("fail", "host")
    assert "this host has no NVSwitch (no /dev/nvidia-nvswitch*), so it is not the Fabric Manager" in v.detail
    assert v.fix is not None and "do not install the Fabric Manager" in v.fix and "systemctl" not in v.fix
    t = ml.torch_cuda(torch_without_cuda("2.13.0+cu128", "12.8", TORCH_802), host)
    assert t.fix is not None and "do not install the Fabric Manager" in t.fix, t
    # With NVSwitch device nodes it is the Fabric Manager, and the cell says which nodes.
    hgx = gpu.libcuda({"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 802}},
                      {**host, "nvswitch": ["/dev/nvidia-nvswitch0", "/dev/nvidia-nvswitch1"]})
    assert "nvidia-fabricmanager" in (hgx.fix or "") and "/dev/nvidia-nvswitch0" in hgx.detail
    assert hostinfo.nvswitch_devices(root="/nonexistent") == []


def test_transformers_802_names_the_fabric_manager() -> None:
    facts = copy.deepcopy(load(ML, "transformers_full_tiny"))
    facts.update(torch_version="2.13.0+cu128", torch_cuda_build="12.8", selected_device="cpu",
                 warnings=[{"category": "UserWarning", "message": TORCH_802}])
    v = ml.transformers_cuda(facts, gpu_host())
    assert (v.status, v.fault) == ("fail", "host") and "nvidia-fabricmanager" in (v.fix or ""), v


def test_xgboost_802_is_read_from_cuinit() -> None:
    """xgboost swallows the error (src/common/cuda_rt_utils.cc, AllVisibleGPUs: catch, "return 0") and says
    "No visible GPU"; the probe asks cuInit itself, and its code names the cause."""
    facts = load(ML, "xgboost_host_cuda_wheel")  # recorded: the CUDA wheel with no usable GPU
    facts["libcuda"] = {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 802}
    v = ml.xgboost_cuda(facts, gpu_host(cuda="12.9"))
    assert (v.status, v.fault) == ("fail", "host"), v
    assert "cuInit returned 802 (CUDA_ERROR_SYSTEM_NOT_READY)" in v.detail and "No visible GPU" in v.detail
    assert v.fix is not None and "nvidia-fabricmanager" in v.fix


def test_xgboost_probe_records_cuinit_when_it_trained_on_the_cpu() -> None:
    """The real probe here (no GPU, no driver): the CUDA run fell back, so libcuda was asked (and is absent)."""
    from pytest_containercheck.engine.dev import try_probe

    pytest.importorskip("xgboost")
    res = try_probe("xgboost_train", quiet=True)
    assert res.status == "ok", res.error
    assert res.facts["libcuda"]["loaded"] is False and "libcuda.so.1" in res.facts["libcuda"]["error"]
    assert res.facts["image_env"] == {} and res.facts["conda"] is False


# -- 6. "driver too old": only published PyTorch indexes, minor-version compatibility ------------------


@pytest.mark.parametrize(("version", "build", "driver_cuda", "driver", "want", "release"), [
    # a CUDA 13.0 build on an R535 driver (CUDA 12.2): any 12.x build runs there; 2.13 has cu126
    ("2.13.0+cu130", "13.0", "12.2", "535.104.05", "cu126", "2.13.0"),
    # on R470 (CUDA 11.4) no 2.13 build runs; 2.7 is the newest release with a CUDA 11 build (cu118)
    ("2.13.0+cu130", "13.0", "11.4", "470.256.02", "cu118", "2.7"),
    # torch 2.8 (cu126, cu128, cu129) on R470: the same
    ("2.8.0+cu128", "12.8", "11.4", "470.256.02", "cu118", "2.7"),
])
def test_driver_too_old_names_only_published_variants(version: str, build: str, driver_cuda: str, driver: str,
                                                      want: str, release: str) -> None:
    v = ml.torch_cuda(torch_without_cuda(version, build, "CUDA initialization: The NVIDIA driver on your system is "
                                         "too old (found version 12020)."), gpu_host(driver_cuda, driver))
    assert (v.status, v.fault) == ("fail", "pair"), v
    named = cuda_indexes(v.fix or "")
    assert named == [want], v.fix
    major, minor = (int(p) for p in release.split(".")[:2])
    rel = (major, minor)
    assert want[2:] in {c.replace(".", "") for c in ml.TORCH_CUDA_VARIANTS[rel]}  # published (RELEASE.md)
    assert f"torch=={release}" in (v.fix or "") and f"cu{driver_cuda.replace('.', '')}" not in (v.fix or "")


def test_every_named_variant_is_in_the_release_matrix() -> None:
    """torch_cuda_index never names an index the Release Compatibility Matrix does not list."""
    for release in ml.TORCH_CUDA_VARIANTS:
        for driver in [(11, 0), (11, 4), (12, 0), (12, 2), (12, 8), (13, 0), (13, 2)]:
            pick = ml.torch_cuda_index(f"{release[0]}.{release[1]}.0+cu999", driver)
            if pick is None:
                continue
            pinned = re.search(r"torch==(\d+)\.(\d+)", pick)
            assert pinned is not None, pick
            listed = ml.TORCH_CUDA_VARIANTS[(int(pinned.group(1)), int(pinned.group(2)))]
            (index,) = cuda_indexes(pick)
            assert index[2:] in {v.replace(".", "") for v in listed}, (release, driver, pick)
            assert int(index[2:4]) <= driver[0], (release, driver, pick)  # same major or older


def test_cpu_only_torch_fix_lists_the_release_variants(no_gpu_host: dict[str, Any]) -> None:
    facts = load(ML, "torch_full_cpu_build")  # recorded: torch 2.13.0+cpu
    v = ml.torch_cuda_build(facts, "--require-gpu was given", no_gpu_host)
    assert v is not None and v.fault == "image"
    assert cuda_indexes(v.fix or "") == ["cu126"] and "cu126, cu130, cu132" in (v.fix or ""), v.detail
    on_gpu = ml.torch_cuda_build(facts, "the host has 1 NVIDIA GPU(s)", gpu_host(cuda="13.0", driver="580.65.06"))
    assert on_gpu is not None
    assert cuda_indexes(on_gpu.fix or "") == ["cu132"], on_gpu.fix


@pytest.fixture
def no_gpu_host() -> dict[str, Any]:
    return dict(json.loads((ML / "host_facts.json").read_text(encoding="utf-8"))["facts"])


# -- 8. CPU-only xgboost: the GPU-intent rule, as for torch ------------------------------------------------


def test_cpu_only_xgboost_skips_on_a_cpu_host_as_torch_does(no_gpu_host: dict[str, Any]) -> None:
    xgb = load(ML, "xgboost_cpu_wheel")  # recorded: the xgboost-cpu wheel, USE_CUDA False
    torch = load(ML, "torch_full_cpu_build")  # recorded: torch 2.13.0+cpu
    for image_env in ({}, {"CUDA_VERSION": "12.8.1"}):
        intent = ml.gpu_intent(row="xgboost.cuda", host=no_gpu_host, require_gpu=False, required_rows=[],
                               image_env=image_env)
        x, t = ml.xgboost_cuda_build(xgb, intent, no_gpu_host), ml.torch_cuda_build(torch, intent, no_gpu_host)
        assert x is not None and t is not None and x.status == t.status, (x, t)
        if intent is None:
            assert x.status == "skip" and x.detail.startswith(no_gpu_host["gpu_summary"])
            assert "note: xgboost 3.2.0 (xgboost-cpu) is built without CUDA" in x.detail
        else:  # an NVIDIA CUDA base image declares the image is meant for GPUs
            assert (x.status, x.fault) == ("fail", "image") and "CUDA_VERSION=12.8.1" in x.detail
    required = ml.xgboost_cuda_build(xgb, "--require-gpu was given", no_gpu_host)
    assert required is not None and (required.status, required.fault) == ("fail", "image")
    assert "pip uninstall -y xgboost-cpu" in (required.fix or "")


def test_conda_and_rpm_builds_without_cuda_get_their_own_fix() -> None:
    """xgboost doc/install.rst: "GPU variant: conda install -c conda-forge py-xgboost=*=cuda*"."""
    facts = load(ML, "xgboost_cpu_wheel")
    facts.update(distributions=[{"name": "xgboost", "version": "3.2.0"}], conda=True,
                 module_path="/opt/conda/lib/python3.12/site-packages/xgboost/__init__.py")
    v = ml.xgboost_cuda_build(facts, "the host has 1 NVIDIA GPU(s)")
    assert v is not None and "py-xgboost=*=cuda*" in (v.fix or "") and "CONDA_OVERRIDE_CUDA" in (v.fix or "")
    facts.update(conda=False, module_path="/usr/lib64/python3.12/site-packages/xgboost/__init__.py")
    rpm = ml.xgboost_cuda_build(facts, "the host has 1 NVIDIA GPU(s)")
    assert rpm is not None and "distribution package" in (rpm.fix or "") and "RPM" in (rpm.fix or "")


def test_xgboost_1x_no_visible_gpu_check_is_the_hosts() -> None:
    facts = copy.deepcopy(load(ML, "xgboost_host_cuda_wheel"))
    facts["version"] = "1.7.6"
    facts["train"]["cuda"] = {"requested": "cuda", "ok": False, "error": XGB1_NO_GPU, "warnings": [], "log": ""}
    v = ml.xgboost_cuda(facts, gpu_host(cuda="12.9"))
    assert (v.status, v.fault) == ("fail", "host") and "No visible GPU is found for XGBoost." in v.detail, v
    facts["libcuda"] = {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 100}
    hidden = ml.xgboost_cuda(facts, gpu_host(cuda="12.9"))
    assert "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)" in hidden.detail
    assert "CUDA_VISIBLE_DEVICES" in (hidden.fix or "")


# -- 9. exclusive-process GPUs ----------------------------------------------------------------------


EXCLUSIVE = {"0": {"compute_mode": "Exclusive_Process", "mig_mode": "Disabled"}}


def test_busy_gpu_reads_the_compute_mode() -> None:
    """driver_types.h, cudaErrorDevicesUnavailable: "Devices are often busy/unavailable due to use of
    cudaComputeModeProhibited, cudaComputeModeExclusiveProcess"."""
    v = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host(gpu_modes=EXCLUSIVE))
    assert (v.status, v.fault) == ("fail", "host"), v
    assert "busy or unavailable" in v.detail
    # This run's CUDA probes run one at a time on such a GPU (scheduling.exclusive_gpus): the holder is another
    # process; nvidia-smi could not list them here (gpu_processes absent).
    assert v.fix is not None and "GPU 0 is in Exclusive_Process compute mode" in v.fix
    assert "ran one at a time" in v.fix and "--probe-jobs" not in v.fix
    unknown = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host())
    assert unknown.fault == "host" and "Default compute mode" in (unknown.fix or "")
    prohibited = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host(gpu_modes={"0": {"compute_mode": "Prohibited"}}))
    assert "nvidia-smi -c DEFAULT" in (prohibited.fix or "") and "--probe-jobs" not in (prohibited.fix or "")


#: nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader (constructed in
#: that query's format; a process name may hold commas).
APPS = ("GPU-8f05ccfd-4c44-c258-0df0-4b8089176541, 4242, /opt/conda/bin/python3 train.py, lr=0.1, 80123 MiB\n"
        "GPU-8f05ccfd-4c44-c258-0df0-4b8089176541, 77, [Not Found], 512 MiB\n")


def test_a_remaining_busy_is_judged_with_the_mode_and_the_processes_nvidia_smi_lists() -> None:
    """Issue 29, item 3: this run's CUDA probes run one at a time on an exclusive GPU, so a "busy" that
    remains is another process's: named when nvidia-smi lists it, said to be invisible when it lists none."""
    apps = hostinfo.parse_compute_apps(APPS)
    assert apps[0] == {"gpu_uuid": "GPU-8f05ccfd-4c44-c258-0df0-4b8089176541", "pid": "4242",
                       "process_name": "/opt/conda/bin/python3 train.py, lr=0.1", "used_memory": "80123 MiB"}
    held = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host(gpu_modes=EXCLUSIVE, gpu_processes=apps))
    assert held.fault == "host" and "pid 4242 /opt/conda/bin/python3 train.py, lr=0.1 (80123 MiB)" in (held.fix or "")
    assert "it is not theirs" in (held.fix or "")
    hidden = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host(gpu_modes=EXCLUSIVE, gpu_processes=[]))
    assert "lists no process holding it" in (hidden.fix or "") and "another container or PID namespace" in (
        hidden.fix or "")
    default = ml.torch_cuda(torch_on_gpu(BUSY), gpu_host(gpu_modes={"0": {"compute_mode": "Default"}},
                                                         gpu_processes=apps))
    assert "Default compute mode, so 'busy' is not the mode" in (default.fix or "")


def test_processes_are_read_again_when_a_busy_is_judged() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], timeout: float) -> ExecResult:
        calls.append(argv)
        return ExecResult(argv, 0, APPS.encode(), b"", 0.01)

    host = {"nvidia_smi": "/usr/bin/nvidia-smi", "gpu_processes": []}
    assert hostinfo.with_gpu_processes(host, {"cuda": {"ok": True}}, run) is host and calls == []
    fresh = hostinfo.with_gpu_processes(host, {"error": BUSY}, run)
    assert [a["pid"] for a in fresh["gpu_processes"]] == ["4242", "77"]
    assert calls[0][1].startswith("--query-compute-apps=gpu_uuid,pid,process_name,used_memory")


def fake_smi(tmp_path: Path, modes: str) -> str:
    """An nvidia-smi answering the GPU query (one H100) and the modes query with *modes*."""
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\n"
                      'case "$1" in\n'
                      f"  --query-gpu=index,compute_mode*) printf '%s' '{modes}'; exit 0 ;;\n"
                      "  --query-gpu=*) echo 'NVIDIA H100 80GB HBM3, 570.133.20, 81559 MiB, 9.0, GPU-0'; exit 0 ;;\n"
                      "esac\n"
                      "echo '| NVIDIA-SMI 570.133.20   Driver Version: 570.133.20   CUDA Version: 12.8 |'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_host_facts_carry_compute_and_mig_modes(tmp_path: Path) -> None:
    smi = fake_smi(tmp_path, "0, Exclusive_Process, Disabled\n")
    host = hostinfo.judge_gpu_host(smi=smi, smi_result=hostinfo.query_nvidia_smi(smi), devices=["/dev/nvidia0"],
                                   proc_version="")
    assert host["gpu_modes"] == EXCLUSIVE
    assert hostinfo.parse_gpu_modes("0, Default, [N/A]\n1, Prohibited, Enabled\n") == {
        "0": {"compute_mode": "Default", "mig_mode": "[N/A]"},
        "1": {"compute_mode": "Prohibited", "mig_mode": "Enabled"}}


# -- 10. VTK before 9.4 ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["egl", "osmesa"])
def test_vtk_931_wheel_says_what_it_is_and_the_way_out(backend: str) -> None:
    """Recorded: PyPI's vtk 9.3.1 wheel here, with Mesa's EGL and OSMesa installed, made an X window and aborted."""
    facts = load(RENDER, f"vtk931-{backend}")
    assert facts["vtk_dist"] == {"vtk": "9.3.1"} and facts["render_exit"] == "killed by signal 6 (SIGABRT)"
    v = render_verdict(facts, backend, runtime="host")
    assert (v.status, v.fault) == ("fail", "image"), v
    assert "VTK 9.3.1 (PyPI's vtk wheel, built for X11 only: it has neither EGL nor OSMesa)" in v.detail
    assert "arrived in VTK 9.4" in v.detail and "vtkXOpenGLRenderWindow" in v.detail
    assert v.fix is not None and "pip install 'vtk>=9.4'" in v.fix and "apt-get" not in v.fix
    if backend == "osmesa":
        assert "--extra-index-url https://wheels.vtk.org vtk-osmesa==9.3.1" in v.fix
    else:
        assert "vtk-osmesa" not in v.fix


def test_render_probe_names_the_vtk_distribution() -> None:
    probe = runpy.run_path(str(ROOT / "probes" / "render.py"))
    from importlib import metadata

    pytest.importorskip("vtk")
    assert probe["_render_vtk_dist"]() == {"vtk": metadata.version("vtk")}


# -- 11. Apptainer before 1.4 does not bind 10_nvidia.json ----------------------------------------


def apptainer_without_vendor_file() -> dict[str, Any]:
    """Recorded on the H200: no EGL vendor loaded and VTK fell back to OSMesa; edited to what Apptainer
    1.3's --nv gives: libEGL_nvidia.so.0 bound into /.singularity.d/libs, no vendor file, no variable."""
    facts = copy.deepcopy(load(RENDER, "h200-egl-vendor-missing-egl"))
    facts["egl_vendor_files"] = {"search": "default", "files": [], "hidden_default_files": []}
    facts["apptainer_libs"] = ["libEGL_nvidia.so.0", "libGLX_nvidia.so.0", "libcuda.so.1"]
    facts["libraries"]["libEGL_nvidia.so.0"] = {"loaded": True, "path": "/.singularity.d/libs/libEGL_nvidia.so.0"}
    return facts


def test_apptainer_before_1_4_fallback_fix_is_the_vendor_file_not_mesa() -> None:
    facts = apptainer_without_vendor_file()
    assert facts["window_class"] == "vtkOSOpenGLRenderWindow"  # the recorded fallback
    v = render_verdict(facts, "egl", host_has_gpu=True, runtime="apptainer", runtime_version="1.3.6")
    assert (v.status, v.fault) == ("fail", "host"), v
    assert "Apptainer 1.3.6 --nv bound the driver's libEGL_nvidia.so.0 but not its glvnd vendor file" in v.detail
    assert v.fix is not None and "upgrade Apptainer to 1.4" in v.fix
    assert "--runtime-arg=--bind=/usr/share/glvnd/egl_vendor.d/10_nvidia.json" in v.fix
    assert "libegl-mesa0" not in v.fix and "apt-get" not in v.fix
    newer = render_verdict(facts, "egl", host_has_gpu=True, runtime="apptainer", runtime_version="1.4.5")
    assert ("Apptainer 1.4.5 --nv binds /usr/share/glvnd/egl_vendor.d/10_nvidia.json when the host has it"
            in newer.detail)
    assert "libegl-mesa0" not in (newer.fix or "")


# -- 12. transformers refusing an old torch --------------------------------------------------------


def test_transformers_5x_refuses_old_torch_when_a_model_is_built() -> None:
    """Recorded: transformers 5.24.0 with a torch claiming 2.4.1 imports, then raises per model."""
    facts = load(ML, "transformers_tf5_torch241_standin")
    assert facts["installed"] is True and facts["dist_versions"]["torch"] == "2.4.1"
    assert "requires PyTorch >= 2.6" in facts["models"]["encoder"]["error"]
    v = ml.transformers_cpu(facts)
    assert (v.status, v.fault) == ("fail", "image"), v
    assert "transformers 5.24.0 needs torch >= 2.6, the image has torch 2.4.1" in v.detail
    assert v.fix is not None and v.fix.startswith("upgrade torch to >= 2.6")
    cuda = copy.deepcopy(facts)  # the same on a GPU host, with a CUDA build of that torch
    cuda.update(torch_cuda_build="12.4", selected_device="cuda:0")
    g = ml.transformers_cuda(cuda, gpu_host())
    assert g.fault == "image" and "needs torch >= 2.6, the image has torch 2.4.1" in g.detail, g


def test_transformers_4x_wording_takes_the_floor_from_its_log() -> None:
    """Recorded: transformers 4.57.6 with a torch claiming 2.0.1: "requires the PyTorch library but it was not
    found", the floor only in its log line "Disabling PyTorch because PyTorch >= 2.1 is required"."""
    facts = load(ML, "transformers_tf4_torch201_standin")
    assert "requires the PyTorch library but it was not found" in facts["models"]["encoder"]["error"]
    v = ml.transformers_cpu(facts)
    assert (v.status, v.fault) == ("fail", "image"), v
    assert "transformers 4.57.6 needs torch >= 2.1, the image has torch 2.0.1" in v.detail
    no_log = copy.deepcopy(facts)
    no_log["import_log"] = []
    said = ml.transformers_cpu(no_log)
    assert "does not use the image's torch 2.0.1" in said.detail and said.fault == "image"


# -- 13. the smaller ones ------------------------------------------------------------------------


def test_804_from_the_toolkits_compat_hook_is_fixed_on_the_host() -> None:
    """nvidia-container-toolkit >= 1.18 adds the image's /usr/local/cuda/compat to the loader path; then no
    LD_LIBRARY_PATH names it, and removing it from LD_LIBRARY_PATH is no fix."""
    facts: dict[str, Any] = {
        "libcuda": {"loaded": True, "path": "/usr/local/cuda-13.0/compat/libcuda.so.1", "cuInit": 804},
        "env": {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64"}}
    v = gpu.libcuda(facts, gpu_host())
    assert (v.status, v.fault) == ("fail", "pair")
    assert "was put on the loader path without LD_LIBRARY_PATH" in v.detail
    assert v.fix is not None and "disable-cuda-compat-lib-hook" in v.fix
    assert "--disable-hook enable-cuda-compat" in v.fix
    facts["env"]["LD_LIBRARY_PATH"] = "/usr/local/cuda-13.0/compat:/usr/local/nvidia/lib64"
    own = gpu.libcuda(facts, gpu_host())
    assert "LD_LIBRARY_PATH" in (own.fix or "") and "disable-cuda-compat-lib-hook" not in (own.fix or "")
    assert ml.classify_cuda_message(TORCH_804) == ("pair", gpu.CUINIT_ERRORS[804][2])


def test_999_with_nvidia_uvm_present_is_not_blamed_on_nvidia_uvm() -> None:
    facts = {"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 999},
             "devices": {"nvidia": ["/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"]}}
    v = gpu.libcuda(facts, gpu_host())
    assert v.fault == "host" and "although /dev/nvidia-uvm is present inside" in v.detail
    assert v.fix is not None and "modprobe nvidia-uvm" not in v.fix and "dmesg" in v.fix


def test_no_device_on_a_mig_host_asks_for_a_mig_device() -> None:
    facts = {"libcuda": {"loaded": True, "path": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "cuInit": 100}}
    v = gpu.libcuda(facts, gpu_host(gpu_modes={"0": {"compute_mode": "Default", "mig_mode": "Enabled"}}))
    assert v.fault == "host" and "in MIG mode" in v.detail and "MIG-<uuid>" in (v.fix or "")
    plain = gpu.libcuda(facts, gpu_host())
    assert "MIG" not in plain.detail and "CUDA_VISIBLE_DEVICES" in (plain.fix or "")


def test_open_kernel_module_version_line_is_parsed() -> None:
    """Recorded on the H200 (host_facts_h200.json, proc_driver): the open kernel module's line."""
    line = json.loads((ML / "host_facts_h200.json").read_text())["facts"]["proc_driver"]
    assert "Open Kernel Module" in line
    host = hostinfo.judge_gpu_host(smi=None, smi_result=None, devices=["/dev/nvidia0"], proc_version=line)
    assert host["driver_version"] == "580.159.04"


def test_wsl2_dxg_is_the_gpu_device() -> None:
    """nvidia-container-toolkit pkg/nvcdi/device-wsl.go: dxgDeviceNode = "/dev/dxg" (no /dev/nvidia* in WSL2)."""
    v = gpu.gpu_devices({"devices": {"nvidia": [], "dri": [], "kfd": False, "dxg": True}}, gpu_host())
    assert v.status == "pass" and "/dev/dxg" in v.detail
    assert gpu.gpu_devices({"devices": {"nvidia": [], "dxg": False}}, gpu_host()).status == "fail"


@pytest.mark.parametrize(("text", "fault"), [(OOM_SELF, "pair"), (OOM_OTHERS, "host")])
def test_out_of_memory_says_who_holds_the_memory(text: str, fault: str) -> None:
    v = ml.torch_cuda(torch_on_gpu(text), gpu_host())
    assert (v.status, v.fault) == ("fail", fault), v
    if fault == "pair":
        assert "does not fit this GPU" in v.detail and "more memory" in (v.fix or "")
    else:
        assert "other processes hold" in v.detail and "nvidia-smi" in (v.fix or "")


def test_headless_driver_without_egl_names_the_package() -> None:
    facts = copy.deepcopy(load(RENDER, "full-egl"))
    facts["dev_nvidia"] = ["/dev/nvidia0", "/dev/nvidiactl"]
    facts["env"]["NVIDIA_DRIVER_CAPABILITIES"] = "all"
    _reason, fix, fault = egl_software_cause(facts, "docker")
    assert fault == "host" and "libnvidia-gl-<driver branch>" in fix


def test_combined_pyvista_specifiers_are_read_and_given_back_as_one_requirement() -> None:
    facts = {"vtk_version": "9.4.0", "pyvista_import_error": "ImportError: cannot import name 'Foo'",
             "pyvista_dist": {"version": "0.49.1", "requires_vtk": ["vtk!=9.4.0,!=9.4.1,<9.8.0,>=9.3.1"]}}
    found = pyvista_vtk_mismatch(facts)
    assert found is not None and "pip install 'vtk!=9.4.0,!=9.4.1,<9.8.0,>=9.3.1'" in found[1]
    facts["vtk_version"] = "9.5.2"
    assert pyvista_vtk_mismatch(facts) is None


def _multi_gpu_egl(*, cuda: list[int | None], default_fails: bool = False) -> dict[str, Any]:
    """The H200's recorded EGL render (tests/data/render/h200-egl.json: one NVIDIA device with
    EGL_NV_device_cuda, rendered on "NVIDIA H200/PCIe/SSE2") with the enumeration of a node that has
    one NVIDIA device per entry of *cuda* plus Mesa's software device, as in a Slurm job given one GPU
    (CUDA_VISIBLE_DEVICES=1). Each entry is what EGL_CUDA_DEVICE_NV answered (None: the query failed).
    Edited, not observed: the recorded run had one GPU."""
    facts = copy.deepcopy(load(RENDER, "h200-egl"))
    nvidia = facts["egl_devices"]["devices"][0]
    devices = []
    for i, ordinal in enumerate(cuda):
        dev = dict(nvidia, index=i)
        if ordinal is None:
            dev["cuda_device_error"] = "eglQueryDeviceAttribEXT(EGL_CUDA_DEVICE_NV) failed (EGL error 0x3000)"
        else:
            dev["cuda_device"] = ordinal
        if i == 0 and default_fails:
            del dev["version"], dev["vendor"]
            dev["init_error"] = "eglInitialize failed (EGL error 0x3001)"
        devices.append(dev)
    devices.append({"index": len(cuda), "vendor": "Mesa Project", "version": "1.5",
                    "extensions": ["EGL_MESA_device_software", "EGL_EXT_device_drm_render_node"]})
    facts["egl_devices"] = {"device_count": len(devices), "devices": devices}
    facts["egl_device_count"] = len(devices)
    facts["env"].update(CUDA_VISIBLE_DEVICES="1", SLURM_JOB_GPUS="1")
    return facts


def test_egl_on_a_gpu_the_job_was_not_given_fails_under_require_gpu() -> None:
    """Item 13, "EGL device 0 whatever the job's GPU": VTK opens EGL device 0 (vtkEGLRenderWindow.cxx,
    SetDeviceAsDisplay(-1)) whatever CUDA uses; EGL_NV_device_cuda tells which EGL device is CUDA
    device 0 (sources: tests/data/render/README.md, "Issue 24: the job's EGL device")."""
    facts = _multi_gpu_egl(cuda=[None, 0])
    v = render_verdict(facts, "egl", require_gpu=True, host_has_gpu=True)
    assert (v.status, v.fault) == ("fail", "pair"), v
    assert "EGL device 0" in v.detail and "CUDA_VISIBLE_DEVICES=1" in v.detail and "is EGL device 1" in v.detail
    assert "VTK_DEFAULT_EGL_DEVICE_INDEX=1" in (v.fix or "") and "ConstrainDevices=yes" in (v.fix or "")
    # Nothing demands the GPU: the row passes and says so, with the same way out.
    soft = render_verdict(facts, "egl", host_has_gpu=True)
    assert soft.status == "pass" and "not on this job's GPU" in soft.detail
    assert "VTK_DEFAULT_EGL_DEVICE_INDEX=1" in (soft.fix or "")


def test_egl_on_the_jobs_gpu_passes() -> None:
    # The job set the index to its GPU's EGL device: VTK reads it in the window's constructor.
    facts = _multi_gpu_egl(cuda=[None, 0])
    facts["env"]["VTK_DEFAULT_EGL_DEVICE_INDEX"] = "1"
    v = render_verdict(facts, "egl", require_gpu=True, host_has_gpu=True)
    assert v.status == "pass" and "not on this job's GPU" not in v.detail, v
    assert egl_device_used(facts).endswith("(VTK_DEFAULT_EGL_DEVICE_INDEX=1), CUDA device 0")
    # ConstrainDevices: the job cannot open GPU 0, so EGL device 0 does not initialise and VTK
    # "Trying other devices..." keeps device 1, the job's.
    constrained = _multi_gpu_egl(cuda=[None, 0], default_fails=True)
    assert render_verdict(constrained, "egl", require_gpu=True, host_has_gpu=True).status == "pass"
    assert egl_device_used(constrained).endswith("which did not initialise, so EGL device 1, CUDA device 0")
    # A driver that answers for every GPU (or a node where CUDA sees them all): nothing to say.
    every = _multi_gpu_egl(cuda=[1, 0])
    v = render_verdict(every, "egl", require_gpu=True, host_has_gpu=True)
    assert v.status == "pass" and "not on this job's GPU" not in v.detail
    # No device answered 0 (CUDA itself failed in this process): no claim either.
    assert render_verdict(_multi_gpu_egl(cuda=[None, None]), "egl", require_gpu=True,
                          host_has_gpu=True).status == "pass"


def test_egl_device_index_variables_are_read_as_vtk_reads_them() -> None:
    """vtkEGLRenderWindow.cxx: atoi() of each variable, kept only when >= 0; VTK_EGL_DEVICE_INDEX
    sets DeviceIndex (the window then opens exactly that device)."""
    facts = _multi_gpu_egl(cuda=[None, 0])
    for value, opened in (("1", 1), (" 1x", 1), ("abc", 0), ("-1", 0)):
        facts["env"]["VTK_DEFAULT_EGL_DEVICE_INDEX"] = value
        assert egl_device_opened(facts) == opened, value
    facts["egl_device_index"] = 0  # VTK_EGL_DEVICE_INDEX=0: no fallback even if device 0 failed
    assert egl_device_opened(facts) == 0
    assert egl_device_opened(load(RENDER, "host-osmesa")) is None


def test_software_fallback_fix_names_the_jobs_nvidia_device() -> None:
    # Edited: the NVIDIA vendor loads but VTK rendered with Mesa; of two NVIDIA devices the job's
    # (CUDA device 0) is the second.
    facts = _multi_gpu_egl(cuda=[None, 0])
    facts["egl_vendor_files"] = {"search": "default", "files": [
        {"path": "/usr/share/glvnd/egl_vendor.d/10_nvidia.json", "library_path": "libEGL_nvidia.so.0",
         "loaded": True}]}
    facts["gl_renderer"] = "llvmpipe (LLVM 15.0.6, 256 bits)"
    _reason, fix, _fault = egl_software_cause(facts, "docker")
    assert "VTK_EGL_DEVICE_INDEX=1" in fix
