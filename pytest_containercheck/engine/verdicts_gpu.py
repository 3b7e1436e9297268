"""Verdicts for the system GPU rows: pure functions of the ``system`` probe's facts.

``system.gpu_devices``, ``system.nvidia_smi`` and ``system.libcuda`` run after the GPU gate
(``container.gpu_expected()``): the host has a GPU and the image was started with GPU
access, so what is missing inside is a real defect.  Unit-tested on constructed facts
(``tests/test_verdicts_gpu.py``; sources in ``tests/data/ml/README.md``).

The ``cuInit`` codes are the driver API's ``CUresult`` values (NVIDIA's ``cuda.h``):
``CUDA_ERROR_STUB_LIBRARY`` 34, ``CUDA_ERROR_NO_DEVICE`` 100, ``CUDA_ERROR_SYSTEM_DRIVER_MISMATCH``
803 ("a mismatch between the versions of the display driver and the CUDA driver"),
``CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE`` 804 ("the system was upgraded to run with
forward compatibility but the visible hardware detected by CUDA does not support this
configuration"), ``CUDA_ERROR_UNKNOWN`` 999.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .verdict import Verdict, failed, passed, skipped

__all__ = ["CUINIT_ERRORS", "gpu_devices", "libcuda", "nvidia_smi"]

_GPU_ACCESS = ("start the image with GPU access (Docker --gpus all with the NVIDIA Container Toolkit, "
               "Apptainer --nv); under Slurm request a GPU (--gres=gpu:1)")

#: cuInit's CUresult -> (name, fault, what it means, fix).
CUINIT_ERRORS: dict[int, tuple[str, str | None, str, str]] = {
    34: ("CUDA_ERROR_STUB_LIBRARY", "image",
         "the image loads the CUDA toolkit's stub libcuda, which only links and never runs",
         "remove the toolkit's stubs directory (.../lib64/stubs) from LD_LIBRARY_PATH and ld.so.conf in the image"),
    100: ("CUDA_ERROR_NO_DEVICE", "host",
          "the driver loads but no CUDA device is visible to this process",
          "check CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES in the image and the launch (--gpus), and under "
          "Slurm that the job has a GPU (--gres=gpu:1): the device cgroup hides unallocated GPUs"),
    999: ("CUDA_ERROR_UNKNOWN", "host",
          "CUDA could not initialise; most often /dev/nvidia-uvm is missing (the nvidia_uvm module is not "
          "loaded on the host, or the node was not passed into the container)",
          "on the host: load nvidia_uvm (modprobe nvidia-uvm, or nvidia-modprobe -u -c=0) and check that "
          "/dev/nvidia-uvm exists inside the container"),
    803: ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "pair",
          "the libcuda the image loads does not match the host's kernel driver",
          "let the runtime inject the host's libcuda: remove libcuda / cuda-compat from the image's library "
          "path; if 'nvidia-smi' fails the same way on the host, its driver was upgraded without a reboot"),
    804: ("CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", "pair",
          "the image's CUDA forward-compatibility libraries (cuda-compat) do not support this GPU",
          "remove cuda-compat from the image's LD_LIBRARY_PATH and use an image whose CUDA the host driver "
          "supports (forward compatibility is for datacenter GPUs only)"),
}


def gpu_devices(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``system.gpu_devices``: the GPU's device nodes exist inside the image."""
    devices = facts.get("devices") or {}
    if host.get("gpu_vendor") == "amd":
        if not devices.get("kfd"):
            return failed(f"the host has {host.get('gpu_summary')} but no /dev/kfd inside the image", fault="host",
                          fix="pass the ROCm devices in: Docker/Podman --device /dev/kfd --device /dev/dri; "
                              "Apptainer --rocm (--apptainer-gpu rocm)")
        return passed(", ".join(["/dev/kfd", *list(devices.get("dri") or [])]))
    nodes = list(devices.get("nvidia") or [])
    if not any(re.fullmatch(r"/dev/nvidia\d+", n) for n in nodes):
        return failed(f"the host has {host.get('gpu_summary')} but no /dev/nvidiaN inside the image "
                      f"(found: {', '.join(nodes) or 'nothing'})", fault="host", fix=_GPU_ACCESS)
    return passed(", ".join(nodes))


def _amd_skip(host: Mapping[str, Any], what: str) -> Verdict | None:
    if host.get("gpu_vendor") == "amd":
        return skipped(f"the host's GPU is AMD ({host.get('gpu_summary')}): no {what} to check "
                       "(torch.cuda checks ROCm builds)")
    return None


def nvidia_smi(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``system.nvidia_smi``: nvidia-smi inside the image lists the GPUs."""
    amd = _amd_skip(host, "NVIDIA driver")
    if amd is not None:
        return amd
    smi = facts.get("nvidia_smi") or {}
    if not smi.get("found"):
        return failed("nvidia-smi is not on PATH inside the image", fault="host",
                      fix="Docker: set NVIDIA_DRIVER_CAPABILITIES to include 'utility'; Apptainer: use --nv")
    if smi.get("no_devices"):
        return failed(f"nvidia-smi inside the image says 'No devices were found' although the host has "
                      f"{host.get('gpu_summary')}", fault="host",
                      fix="the container may use no GPU: check NVIDIA_VISIBLE_DEVICES / --gpus, and under Slurm "
                          "that this job has a GPU (--gres=gpu:1)")
    if smi.get("returncode") != 0 or not smi.get("gpus"):
        said = smi.get("error") or smi.get("stderr") or smi.get("stdout") or f"exit status {smi.get('returncode')}"
        return failed(f"nvidia-smi failed inside the image: {' '.join(str(said).split())[:240]}", fault="host",
                      fix="check that the host driver works ('nvidia-smi' on the host)")
    return passed("; ".join(f"{g.get('name')} (driver {g.get('driver_version')}, sm {g.get('compute_cap', '?')})"
                            for g in smi["gpus"]))


def libcuda(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``system.libcuda``: libcuda.so.1 loads in the image and ``cuInit(0)`` succeeds."""
    amd = _amd_skip(host, "libcuda")
    if amd is not None:
        return amd
    cuda = facts.get("libcuda") or {}
    if not cuda.get("loaded"):
        return failed(f"libcuda.so.1 does not load in the image: {cuda.get('error')}", fault="host",
                      fix="Docker: NVIDIA_DRIVER_CAPABILITIES must include 'compute'; Apptainer: use --nv; "
                          "do not ship a libcuda stub in the image's library path")
    rc = cuda.get("cuInit")
    if rc != 0:
        path = str(cuda.get("path") or "?")
        known = CUINIT_ERRORS.get(rc) if isinstance(rc, int) else None
        if "/stubs/" in path:
            known = CUINIT_ERRORS[34]
        if known is None:
            return failed(f"cuInit failed with CUDA error {rc} ({path})" + (f": {cuda['error']}" if cuda.get("error")
                                                                            else ""),
                          fault=None, fix="look the code up in the CUDA driver API's CUresult list; see the evidence")
        name, fault, meaning, fix = known
        extra = ""
        if rc == 999:
            nodes = list((facts.get("devices") or {}).get("nvidia") or [])
            extra = "; /dev/nvidia-uvm is " + ("present" if "/dev/nvidia-uvm" in nodes else "missing") + " inside"
        return failed(f"cuInit failed with {rc} ({name}, {path}): {meaning}{extra}", fault=fault, fix=fix)
    return passed(f"CUDA driver API {cuda.get('driver_cuda_version')} from {cuda.get('path')}, "
                  f"{cuda.get('device_count')} device(s)")
