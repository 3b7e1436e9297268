"""Facts about the host a run happens on: GPUs, driver, toolkit, runtimes, Slurm.

Gathered once per run on the controller (and handed to xdist workers), so every GPU
verdict can say whether a missing GPU is the image's fault or the host's.
"""

from __future__ import annotations

import dataclasses
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
    out["gpu_modes"] = query_gpu_modes(smi, run) if out["gpus"] else {}
    return out


#: The modes that decide whether a process may use a GPU at all: ``compute_mode`` (Default,
#: Exclusive_Process, Prohibited: with Exclusive_Process one CUDA context at a time, and the next
#: gets cudaErrorDevicesUnavailable) and ``mig.mode.current`` (Enabled: CUDA sees MIG devices only).
MODE_FIELDS = ("index", "compute_mode", "mig.mode.current")


def parse_gpu_modes(output: str, fields: Sequence[str] = MODE_FIELDS) -> dict[str, dict[str, str]]:
    """``{index: {"compute_mode": ..., "mig_mode": ...}}`` from ``nvidia-smi --query-gpu=<fields>
    --format=csv,noheader`` (a line that does not have the fields asked for is left out)."""
    keys = {"compute_mode": "compute_mode", "mig.mode.current": "mig_mode"}
    modes: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(fields) and parts[0].isdigit():
            modes[parts[0]] = {keys[f]: v for f, v in zip(fields[1:], parts[1:]) if f in keys}
    return modes


def query_gpu_modes(smi: str, run: Runner = run_bounded) -> dict[str, dict[str, str]]:
    """Each GPU's compute and MIG modes (:data:`MODE_FIELDS`); without the MIG field where the driver
    does not know it; {} when nvidia-smi cannot answer.  Never raises."""
    for fields in (MODE_FIELDS, MODE_FIELDS[:2]):
        res = run([smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader"], timeout=60)
        if res.returncode == 0:
            return parse_gpu_modes(text(res.stdout), fields)
    return {}


#: The KFD topology: one node per CPU socket and per GPU; a GPU's has SIMDs (``simd_count``).
_KFD_NODES = "sys/class/kfd/kfd/topology/nodes"
_KFD_GPU = "KFD GPU node "
_RENDER = "/dev/dri/renderD"


def amd_evidence(*, exists: Callable[[str], bool] = os.path.exists,
                 which: Callable[[str], str | None] = shutil.which, root: str = "/") -> list[str]:
    """What says this host has an AMD GPU for ROCm: ``/dev/kfd`` (the compute interface the
    ROCm runtime opens), ``/sys/class/kfd`` (the amdgpu driver's KFD), each GPU node of the KFD
    topology (``simd_count`` > 0; CPU nodes have none), the DRI render nodes
    (``/dev/dri/renderD<N>``, one per GPU) and ``rocm-smi``/``amd-smi``.  *root* is where the
    file system starts (tests)."""
    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    found = [p for p in ("/dev/kfd", "/sys/class/kfd") if exists(at(p))]
    for props in sorted(glob.glob(at(f"{_KFD_NODES}/*/properties"))):
        try:
            with open(props, encoding="utf-8", errors="replace") as fh:
                values = dict(line.split(None, 1) for line in fh if len(line.split(None, 1)) == 2)
            with open(os.path.join(os.path.dirname(props), "name"), encoding="utf-8", errors="replace") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if values.get("simd_count", "0").strip() not in ("", "0"):
            found.append(f"{_KFD_GPU}{os.path.basename(os.path.dirname(props))} ({name or '?'})")
    found += [_RENDER + p.rsplit("renderD", 1)[1] for p in sorted(glob.glob(at(_RENDER + "*")))]
    for tool in ("rocm-smi", "amd-smi"):
        smi = which(tool)
        if smi:
            found.append(f"{tool} ({smi})")
    return found


def amd_gpu_host(evidence: Sequence[str]) -> bool:
    """An AMD GPU for ROCm: ``/dev/kfd``, a GPU node in the KFD topology, and a render node.
    ``/dev/kfd`` alone is not one: amdgpu creates it with its KFD even where ROCm finds no GPU
    to use (an integrated GPU without render nodes for this process, a driver without devices)."""
    return ("/dev/kfd" in evidence and any(e.startswith(_KFD_GPU) for e in evidence)
            and any(e.startswith(_RENDER) for e in evidence))


def judge_gpu_host(*, smi: str | None, smi_result: Mapping[str, Any] | None, devices: Sequence[str],
                   proc_version: str, amd: Sequence[str] = ()) -> dict[str, Any]:
    """Whether this host has a GPU for this process, and the evidence either way (pure).

    nvidia-smi decides when it runs: it lists GPUs (NVIDIA host), or says "No devices were
    found" / lists none (no GPU *for this job*, even when /dev/nvidia* exist: a Slurm job
    without a GPU allocation sees the nodes but the device cgroup hides the GPUs).  When it
    is missing or fails otherwise, the device nodes and /proc/driver/nvidia decide (a host
    whose GPU is there but broken is a GPU host: its rows fail, they do not skip).  AMD
    (ROCm) evidence makes a GPU host when there is no NVIDIA GPU and it is a whole GPU
    (:func:`amd_gpu_host`).
    """
    result = smi_result or {}
    gpus = list(result.get("gpus") or [])
    smi_error = result.get("error")
    listed_none = bool(smi) and not gpus and (bool(result.get("no_devices")) or smi_error is None)
    nvidia = bool(gpus) or (not listed_none and bool(devices or proc_version))
    vendor = "nvidia" if nvidia else ("amd" if amd_gpu_host(amd) else None)
    if nvidia:
        why = f"{len(gpus) or len(devices)} NVIDIA GPU(s)"
    elif vendor == "amd":
        why = "an AMD GPU (ROCm: " + ", ".join(amd) + ")"
    elif "/dev/kfd" in amd:
        lacks = [what for what, prefix in (("a GPU node in the KFD topology", _KFD_GPU),
                                           ("a /dev/dri/renderD* node", _RENDER))
                 if not any(e.startswith(prefix) for e in amd)]
        why = (f"host has no GPU for ROCm: {', '.join(amd)} without {' and '.join(lacks)} "
               "(amdgpu's /dev/kfd alone is no GPU: e.g. an integrated GPU ROCm does not use)")
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
        "gpu_modes": dict(result.get("gpu_modes") or {}),
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
    """The driver version in ``/proc/driver/nvidia/version``'s first line, proprietary ("NVRM version:
    NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ...") or open ("NVRM version: NVIDIA UNIX
    Open Kernel Module for x86_64  580.159.04  Release Build  (...)", recorded on the H200)."""
    m = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)*)\s", line + " ")
    return m.group(1) if m else None


#: What ``nvidia-smi --query-compute-apps`` is asked: the processes holding a CUDA context, per GPU.
APP_FIELDS = ("gpu_uuid", "pid", "process_name", "used_memory")


def parse_compute_apps(output: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv,noheader``
    -> ``[{"gpu_uuid", "pid", "process_name", "used_memory"}]``.  A process name may hold commas:
    the first two fields and the last are split off, the rest is the name."""
    apps = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].startswith(("GPU-", "MIG-")):
            continue
        apps.append({"gpu_uuid": parts[0], "pid": parts[1], "process_name": ", ".join(parts[2:-1]),
                     "used_memory": parts[-1]})
    return apps


def query_compute_apps(smi: str | None = None, run: Runner = run_bounded) -> list[dict[str, str]] | None:
    """The processes nvidia-smi lists with a CUDA context on this host's GPUs, now; None when it
    cannot answer.  Inside a container or another PID namespace it lists only what it can see."""
    smi = smi or shutil.which("nvidia-smi")
    if not smi:
        return None
    res = run([smi, "--query-compute-apps=" + ",".join(APP_FIELDS), "--format=csv,noheader"], timeout=60)
    if res.returncode != 0 or res.timed_out:
        return None
    return parse_compute_apps(text(res.stdout))


def with_gpu_processes(host: Mapping[str, Any], facts: Any, run: Runner = run_bounded) -> Mapping[str, Any]:
    """*host* with ``gpu_processes`` read again now, when *facts* (a probe's, any shape) say a GPU
    refused a context ("busy or unavailable"): a "busy" is judged by who holds the GPU when it is
    seen, not at the start of the run.  *host* unchanged otherwise."""
    import json

    if "busy or unavailable" not in json.dumps(facts, default=str):
        return host
    return {**host, "gpu_processes": query_compute_apps(host.get("nvidia_smi"), run)}


def _openable(paths: Sequence[str]) -> list[str] | None:
    """Which of the device *paths* this process may open; None when it may open all of them (no
    device cgroup restricting it: nothing to learn).  A device cgroup refuses the open itself
    (EPERM), whatever the file's mode."""
    allowed: list[str] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        os.close(fd)
        allowed.append(path)
    return None if len(allowed) == len(paths) else allowed


def _minor(path: str) -> int | None:
    m = re.search(r"(\d+)$", path)
    return int(m.group(1)) if m else None


def job_gpu_facts(vendor: str, run: Runner = run_bounded, root: str = "/") -> dict[str, Any]:
    """What :func:`~.gpumap.map_job_gpus` needs to name a Slurm job's GPUs: the node's GPUs with
    their NVML index, minor number and UUID (and MIG devices), the device files this job may open,
    ``CUDA_VISIBLE_DEVICES``, the Slurm release and gres.conf's ``AutoDetect``.  Read only in a
    Slurm job with GPUs (opening ``/dev/nvidiaN`` is how its device cgroup shows)."""
    from . import gpumap  # here: only a Slurm job with GPUs needs it

    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    facts: dict[str, Any] = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    scontrol = shutil.which("scontrol")
    if scontrol:
        facts["slurm_version"] = gpumap.parse_slurm_version(text(run([scontrol, "--version"], timeout=30).stdout))
    conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    try:
        with open(os.path.join(os.path.dirname(conf), "gres.conf"), encoding="utf-8", errors="replace") as fh:
            facts["autodetect"] = gpumap.parse_autodetect(fh.read(), socket.gethostname().split(".")[0])
    except OSError:
        facts["autodetect"] = None
    if vendor == "amd":
        nodes = []
        for props in sorted(glob.glob(at(f"{_KFD_NODES}/*/properties")), key=lambda p: int(p.split("/")[-2])):
            try:
                with open(props, encoding="utf-8", errors="replace") as fh:
                    values = dict(line.split(None, 1) for line in fh if len(line.split(None, 1)) == 2)
            except OSError:
                continue
            minor = values.get("drm_render_minor", "").strip()
            if values.get("simd_count", "0").strip() not in ("", "0") and minor.isdigit():
                nodes.append({"node": int(props.split("/")[-2]), "render_minor": int(minor)})
        facts["amd_gpus"] = nodes
        allowed = _openable([f"{_RENDER}{n['render_minor']}" for n in nodes])
        facts["accessible_render"] = None if allowed is None else [m for m in map(_minor, allowed) if m is not None]
        return facts
    gpus: list[dict[str, Any]] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        res = run([smi, "--query-gpu=" + ",".join(gpumap.SMI_MAP_FIELDS), "--format=csv,noheader"], timeout=60)
        if res.returncode == 0:
            migs = gpumap.parse_smi_list(text(run([smi, "-L"], timeout=60).stdout))
            gpus = [{**dataclasses.asdict(g), "mig": list(migs.get(g.uuid, ()))}
                    for g in gpumap.parse_smi_gpus(text(res.stdout))]
    if not gpus:
        files = {}
        for info in sorted(glob.glob(at("/proc/driver/nvidia/gpus/*/information"))):
            try:
                with open(info, encoding="utf-8", errors="replace") as fh:
                    files[info] = fh.read()
            except OSError:
                continue
        gpus = [dataclasses.asdict(g) for g in gpumap.parse_proc_information(files)]
    facts["gpus"] = gpus
    allowed = _openable(sorted(glob.glob(at("/dev/nvidia[0-9]*"))))
    facts["accessible_minors"] = None if allowed is None else [m for m in map(_minor, allowed) if m is not None]
    return facts


def nvswitch_devices(root: str = "/") -> list[str]:
    """The NVSwitch device nodes (``/dev/nvidia-nvswitch<N>``, made by the driver's nvswitch module
    on HGX/DGX boards): the systems where CUDA waits for the Fabric Manager."""
    return sorted(glob.glob(os.path.join(root, "dev/nvidia-nvswitch[0-9]*")))


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
    if facts.get("gpu_vendor") == "nvidia":
        facts["nvswitch"] = nvswitch_devices()
        facts["gpu_processes"] = query_compute_apps(facts.get("nvidia_smi"))
    facts["toolkit"] = toolkit_facts(runtimes)
    facts["slurm"] = {k: os.environ[k] for k in _SLURM_VARS if k in os.environ}
    if facts.get("has_gpu") and (facts["slurm"].get("SLURM_STEP_GPUS") or facts["slurm"].get("SLURM_JOB_GPUS")):
        facts["job_gpus"] = job_gpu_facts(str(facts.get("gpu_vendor")))
    return facts
