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
from collections.abc import Iterable
from typing import Any

from .runtimes.base import last_line, run_bounded, text

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
               "SLURMD_NODENAME", "SLURM_JOB_PARTITION", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS",
               "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")


def parse_nvidia_smi_csv(output: str) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,uuid
    --format=csv,noheader`` as dicts."""
    keys = ("name", "driver_version", "memory_total", "compute_cap", "uuid")
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(keys):
            gpus.append(dict(zip(keys, parts, strict=False)))
    return gpus


def parse_cuda_version(banner: str) -> str | None:
    """The driver's CUDA version from plain ``nvidia-smi`` output (``CUDA Version: 12.4``)."""
    m = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return m.group(1) if m else None


def nvidia_facts() -> dict[str, Any]:
    """Whether this host has an NVIDIA GPU, and the evidence either way."""
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    proc_version = ""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as fh:
            proc_version = fh.readline().strip()
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    gpus: list[dict[str, str]] = []
    cuda = None
    smi_error = None
    if smi:
        res = run_bounded([smi, "--query-gpu=name,driver_version,memory.total,compute_cap,uuid",
                           "--format=csv,noheader"], timeout=60)
        if res.returncode == 0:
            gpus = parse_nvidia_smi_csv(text(res.stdout))
        else:
            smi_error = last_line(res.stdout) or last_line(res.stderr)
        banner = run_bounded([smi], timeout=60)
        cuda = parse_cuda_version(text(banner.stdout))
    has_gpu = bool(gpus or devices or proc_version)
    if has_gpu:
        why = f"{len(gpus) or len(devices)} NVIDIA GPU(s)"
    else:
        why = "host has no NVIDIA GPU (" + ", ".join(
            ["no nvidia-smi on PATH" if not smi else f"nvidia-smi: {smi_error or 'no GPUs listed'}",
             "no /dev/nvidia*", "no /proc/driver/nvidia"]) + ")"
    return {
        "has_gpu": has_gpu,
        "gpu_summary": why,
        "gpus": gpus,
        "driver_version": gpus[0]["driver_version"] if gpus else _driver_from_proc(proc_version),
        "cuda_version": cuda,
        "devices": devices,
        "proc_driver": proc_version,
        "nvidia_smi": smi,
        "nvidia_smi_error": smi_error,
    }


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
