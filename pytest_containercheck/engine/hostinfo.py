"""Facts about the host a run happens on: GPUs, driver, toolkit, runtimes, Slurm.

Gathered once per run on the controller (and handed to xdist workers), so every GPU
verdict can say whether a missing GPU is the image's fault or the host's.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .runtimes.base import ExecResult, last_line, run_bounded, text

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
               "SLURMD_NODENAME", "SLURM_JOB_PARTITION", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS",
               "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")


#: What ``nvidia-smi --query-gpu`` is asked for.  ``compute_cap`` is newer than the R470
#: drivers: their nvidia-smi answers 'Field "compute_cap" is not a valid field to query.'
#: and exits 2, so the query is retried without the field it names (:func:`query_nvidia_smi`).
SMI_FIELDS = ("name", "driver_version", "memory.total", "compute_cap", "uuid")
_SMI_KEYS = {"memory.total": "memory_total"}
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
#: What nvidia-smi prints when the driver is loaded but this process may use no GPU (a Slurm
#: job without a GPU allocation on a GPU node: the device cgroup hides the GPUs, the
#: /dev/nvidia* nodes are still there).
NO_DEVICES = "No devices were found"


def parse_nvidia_smi_csv(output: str, fields: Sequence[str] = SMI_FIELDS) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=<fields> --format=csv,noheader`` as dicts
    (``memory.total`` is keyed ``memory_total``; a field not asked for is absent)."""
    keys = [_SMI_KEYS.get(f, f) for f in fields]
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(keys):
            gpus.append(dict(zip(keys, parts)))
    return gpus


def parse_cuda_version(banner: str) -> str | None:
    """The driver's CUDA version from plain ``nvidia-smi`` output (``CUDA Version: 12.4``)."""
    m = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return m.group(1) if m else None


Runner = Callable[..., ExecResult]


def query_nvidia_smi(smi: str, run: Runner = run_bounded) -> dict[str, Any]:
    """Ask *smi* for the GPUs and the driver's CUDA version; never raises.

    ``{"gpus", "fields", "error", "no_devices", "cuda_version"}``: ``fields`` are the ones
    that were answered (without ``compute_cap`` on R470); ``no_devices`` is True when
    nvidia-smi ran and said "No devices were found".
    """
    fields = list(SMI_FIELDS)
    res = run([smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader"], timeout=60)
    said = text(res.stdout) + "\n" + text(res.stderr)
    bad = _INVALID_FIELD.search(said)
    if res.returncode != 0 and bad and bad.group(1) in fields and bad.group(1) != "name":
        fields.remove(bad.group(1))
        res = run([smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader"], timeout=60)
        said = text(res.stdout) + "\n" + text(res.stderr)
    out: dict[str, Any] = {"gpus": [], "fields": fields, "error": None, "no_devices": NO_DEVICES in said,
                           "cuda_version": None}
    if res.returncode == 0:
        out["gpus"] = parse_nvidia_smi_csv(text(res.stdout), fields)
    else:
        out["error"] = last_line(res.stdout) or last_line(res.stderr) or f"exit status {res.returncode}"
    banner = run([smi], timeout=60)
    out["cuda_version"] = parse_cuda_version(text(banner.stdout))
    return out


def amd_evidence(*, exists: Callable[[str], bool] = os.path.exists,
                 which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """What says this host has an AMD GPU for ROCm: ``/dev/kfd`` (the compute device the
    ROCm runtime opens), ``/sys/class/kfd`` (the amdgpu driver's KFD), ``rocm-smi``."""
    found = [p for p in ("/dev/kfd", "/sys/class/kfd") if exists(p)]
    smi = which("rocm-smi")
    if smi:
        found.append(f"rocm-smi ({smi})")
    return found


def judge_gpu_host(*, smi: str | None, smi_result: Mapping[str, Any] | None, devices: Sequence[str],
                   proc_version: str, amd: Sequence[str] = ()) -> dict[str, Any]:
    """Whether this host has a GPU for this process, and the evidence either way (pure).

    nvidia-smi decides when it runs: it lists GPUs (NVIDIA host), or says "No devices were
    found" / lists none (no GPU *for this job*, even when /dev/nvidia* exist: a Slurm job
    without a GPU allocation sees the nodes but the device cgroup hides the GPUs).  When it
    is missing or fails otherwise, the device nodes and /proc/driver/nvidia decide (a host
    whose GPU is there but broken is a GPU host: its rows fail, they do not skip).  AMD
    (ROCm) evidence makes a GPU host when there is no NVIDIA GPU.
    """
    result = smi_result or {}
    gpus = list(result.get("gpus") or [])
    smi_error = result.get("error")
    listed_none = bool(smi) and not gpus and (bool(result.get("no_devices")) or smi_error is None)
    nvidia = bool(gpus) or (not listed_none and bool(devices or proc_version))
    vendor = "nvidia" if nvidia else ("amd" if amd else None)
    if nvidia:
        why = f"{len(gpus) or len(devices)} NVIDIA GPU(s)"
    elif amd:
        why = "an AMD GPU (ROCm: " + ", ".join(amd) + ")"
    elif listed_none and (devices or proc_version):
        said = NO_DEVICES if result.get("no_devices") else (smi_error or "no GPUs listed")
        why = (f"host has no NVIDIA GPU for this job: nvidia-smi says '{said}' although "
               f"{', '.join(devices) or '/proc/driver/nvidia'} exist (the driver is loaded but this process may "
               "use no GPU: e.g. a Slurm job without a GPU allocation; request one with --gres=gpu:1)")
    else:
        why = "host has no NVIDIA GPU (" + ", ".join(
            ["no nvidia-smi on PATH" if not smi else f"nvidia-smi: {smi_error or 'no GPUs listed'}",
             "no /dev/nvidia*", "no /proc/driver/nvidia"]) + ")"
    return {
        "has_gpu": vendor is not None,
        "gpu_vendor": vendor,
        "gpu_summary": why,
        "gpus": gpus,
        "driver_version": gpus[0]["driver_version"] if gpus else _driver_from_proc(proc_version),
        "cuda_version": result.get("cuda_version"),
        "devices": list(devices),
        "proc_driver": proc_version,
        "nvidia_smi": smi,
        "nvidia_smi_error": smi_error,
        "nvidia_smi_fields": result.get("fields"),
        "amd": list(amd),
    }


def nvidia_facts() -> dict[str, Any]:
    """Whether this host has a GPU (NVIDIA, else AMD/ROCm), and the evidence either way."""
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    proc_version = ""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as fh:
            proc_version = fh.readline().strip()
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    return judge_gpu_host(smi=smi, smi_result=query_nvidia_smi(smi) if smi else None, devices=devices,
                          proc_version=proc_version, amd=amd_evidence())


def _driver_from_proc(line: str) -> str | None:
    m = re.search(r"Kernel Module\s+([0-9.]+)", line)
    return m.group(1) if m else None


def toolkit_facts(runtimes: Iterable[str]) -> dict[str, Any]:
    """NVIDIA Container Toolkit, CDI specs and the runtimes' own GPU support."""
    out: dict[str, Any] = {
        "nvidia_ctk": shutil.which("nvidia-ctk"),
        "nvidia_container_cli": shutil.which("nvidia-container-cli"),
        "cdi_specs": sorted(glob.glob("/etc/cdi/*.y*ml") + glob.glob("/var/run/cdi/*.y*ml")
                            + glob.glob("/etc/cdi/*.json") + glob.glob("/var/run/cdi/*.json")),
    }
    if "docker" in runtimes and shutil.which("docker"):
        res = run_bounded(["docker", "info", "--format", "{{json .Runtimes}}"], timeout=30)
        if res.returncode == 0:
            try:
                import json

                out["docker_runtimes"] = sorted(json.loads(text(res.stdout)))
            except ValueError:
                out["docker_runtimes"] = text(res.stdout).strip()
    return out


def gather(runtimes: Iterable[str] = ()) -> dict[str, Any]:
    """All host facts, builtins only (they are written to the matrix JSON)."""
    runtimes = set(runtimes)
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    facts.update(nvidia_facts())
    facts["toolkit"] = toolkit_facts(runtimes)
    facts["slurm"] = {k: os.environ[k] for k in _SLURM_VARS if k in os.environ}
    return facts
