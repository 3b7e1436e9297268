"""The GPUs the scheduler gave a job, as the container runtime must name them (pure).

Slurm tells a job its GPUs as numbers, ``SLURM_JOB_GPUS`` / ``SLURM_STEP_GPUS``
(``src/plugins/gres/common/gres_common.c``, ``gres_common_gpu_set_env``).  What a number *is*
depends on the Slurm release and the node's ``gres.conf``, which Slurm's own documentation calls
system dependent:

* before 21.08 it was ``dev_num``, the number at the end of the gres ``File=`` device name: the
  ``/dev/nvidiaN`` **minor number** (``/dev/dri/renderD128`` -> 128 for AMD);
* from 21.08 it is the gres **index**, the GPU's position in Slurm's list of the node's devices
  (SchedMD/slurm commit 0ebfd37834 "GPUs: Use index instead of dev_num for CUDA_VISIBLE_DEVICES":
  "this number (i.e. the minor number) is not guaranteed to be in order of PCI bus ID ... Use
  index instead, which _will_ be in PCI bus order if AutoDetect is used"), i.e. NVML's order
  with ``AutoDetect=nvml`` and the order of the ``File=`` lines without it.

Docker's ``--gpus device=N`` and CDI's ``nvidia.com/gpu=N`` read ``N`` as the NVML index
(NVIDIA/libnvidia-container ``src/cli/common.c`` ``select_devices``: a number selects
``available[n]`` in NVML's enumeration, PCI bus order), and a Docker or Podman daemon is outside
the job's device cgroup: a wrong reading hands the container another job's GPU.  UUIDs name one
GPU everywhere, so they are what is passed: ``select_devices`` matches ``GPU-...`` against each
device's UUID; ``nvidia-ctk cdi generate`` names every device by index *and* UUID by default
(nvidia-container-toolkit ``cmd/nvidia-ctk/cdi/generate/generate.go``, ``device-name-strategy``
default ``index, uuid``).

The evidence, best first:

1. UUIDs Slurm itself put in ``CUDA_VISIBLE_DEVICES``: MIG devices always, other GPUs with
   ``gres.conf`` ``Flags=env_uuid`` (``gres_common.c``: "MIG devices always use UUID.  Non-MIG
   GPUs use UUID when env_uuid is set in gres.conf"; Slurm 26.05, ``CHANGELOG/slurm-26.05.md``
   "Add option to use UUID strings with CUDA_VISIBLE_DEVICES");
2. the device files the job's device cgroup lets it open (``ConstrainDevices=yes``): those are
   the scheduler's GPUs whatever the numbering;
3. the numbers read both ways (minor number, NVML index): where both readings name the same
   GPUs, or the release and ``AutoDetect`` say which reading holds, that one.

Otherwise the mapping cannot be made: :class:`JobGPUs` carries the problem, and nothing is
tested on a GPU at all rather than on one the job was not given.

AMD: a DRI render node's minor number is 128 or more (Linux ``drm_minor_alloc``: render minors
start at 128), so a number of 128 or more is a render minor and a smaller one a gres index.  The
runtime is given the job's render nodes themselves (``--device /dev/dri/renderD<minor>``, with
``/dev/kfd``): ROCm then sees only those GPUs.  Each KFD topology node names its render minor
(``/sys/class/kfd/kfd/topology/nodes/N/properties`` ``drm_render_minor``, which libhsakmt opens:
ROCm/ROCR-Runtime ``libhsakmt/src/topology.c``); ROCm's device order is the order of the GPU
nodes there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["JobGPUs", "NodeGPU", "map_job_gpus", "parse_autodetect", "parse_proc_information",
           "parse_slurm_version", "parse_smi_gpus", "parse_smi_list"]

#: What ``nvidia-smi --query-gpu`` is asked for the mapping (``minor_number``: "the Nvidia device
#: node file for each GPU will have the form /dev/nvidia[minor number]", nvidia-smi --help-query-gpu).
SMI_MAP_FIELDS = ("index", "minor_number", "uuid", "pci.bus_id")
#: Slurm 21.08 numbers GPUs by gres index instead of device minor (commit 0ebfd37834, first tag
#: slurm-21-08-0-0rc1).
INDEX_SINCE = (21, 8)
#: Linux DRM: render node minors start here (drivers/gpu/drm/drm_drv.c, ``DRM_MINOR_RENDER``).
RENDER_MINOR_BASE = 128

_UUID = re.compile(r"^(?:GPU|MIG)-[0-9A-Fa-f-]+$|^MIG-GPU-[0-9A-Fa-f-]+/\d+/\d+$")


@dataclasses.dataclass(frozen=True)
class NodeGPU:
    """One NVIDIA GPU of the node."""

    index: int
    """NVML's index (PCI bus order): what ``--gpus device=N`` selects."""
    minor: int | None
    """``/dev/nvidia<minor>``; None when not known."""
    uuid: str
    bus: str = ""
    mig: tuple[str, ...] = ()
    """The MIG devices' UUIDs on this GPU (``nvidia-smi -L``), when MIG is enabled."""


@dataclasses.dataclass(frozen=True)
class JobGPUs:
    """The job's GPUs as the runtime takes them, or why they cannot be named."""

    devices: tuple[str, ...] = ()
    """NVIDIA ``GPU-``/``MIG-`` UUIDs, or AMD ``/dev/dri/renderD<minor>`` nodes."""
    how: str = ""
    """One line: from which ids, by which evidence."""
    problem: str = ""
    """Non-empty: the mapping cannot be made (then *devices* is empty)."""


# -- parsing the node's facts ------------------------------------------------------------------


def parse_smi_gpus(output: str) -> list[NodeGPU]:
    """``nvidia-smi --query-gpu=index,minor_number,uuid,pci.bus_id --format=csv,noheader`` ->
    the node's GPUs (a line that is not four fields, or whose index is not a number, is left out;
    a minor of ``[N/A]`` is None)."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        gpus.append(NodeGPU(index=int(parts[0]), minor=int(parts[1]) if parts[1].isdigit() else None,
                            uuid=parts[2], bus=parts[3]))
    return gpus


_SMI_L_GPU = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[0-9A-Fa-f-]+)\)")
_SMI_L_MIG = re.compile(r"^\s+MIG .*Device\s+(\d+): \(UUID: (MIG-[0-9A-Za-z/-]+)\)")


def parse_smi_list(output: str) -> dict[str, tuple[str, ...]]:
    """``nvidia-smi -L`` -> ``{GPU uuid: (MIG uuids on it, in order)}``.

    Its lines (NVIDIA's MIG user guide, "Listing MIG devices"): ``GPU 0: NVIDIA A100-SXM4-40GB
    (UUID: GPU-...)`` and, under a GPU in MIG mode, ``  MIG 1g.5gb      Device  0: (UUID: MIG-...)``.
    """
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines():
        g = _SMI_L_GPU.match(line)
        if g:
            current = g.group(2)
            out[current] = []
            continue
        m = _SMI_L_MIG.match(line)
        if m and current is not None:
            out[current].append(m.group(2))
    return {k: tuple(v) for k, v in out.items()}


def parse_proc_information(files: Mapping[str, str]) -> list[NodeGPU]:
    """The GPUs from ``/proc/driver/nvidia/gpus/<bus>/information`` files (path -> text), for a
    node whose nvidia-smi does not answer: ``GPU UUID:``, ``Bus Location:`` and ``Device Minor:``
    lines (NVIDIA/open-gpu-kernel-modules ``kernel-open/nvidia/nv-procfs.c``,
    ``nv_procfs_read_gpu_info``: ``"Device Minor: \\t %u\\n"``).  The index is the position in bus
    order, NVML's order."""
    found = []
    for _path, text in files.items():
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        minor = fields.get("Device Minor", "")
        if fields.get("GPU UUID", "").startswith("GPU-"):
            found.append((fields.get("Bus Location", "").lower(), int(minor) if minor.isdigit() else None,
                          fields["GPU UUID"]))
    return [NodeGPU(index=i, minor=minor, uuid=uuid, bus=bus) for i, (bus, minor, uuid) in enumerate(sorted(found))]


def parse_slurm_version(output: str) -> tuple[int, int] | None:
    """``scontrol --version`` (``slurm 23.02.7``) -> ``(23, 2)``."""
    m = re.search(r"slurm(?:-wlm)?\s+(\d+)\.(\d+)", output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_autodetect(gres_conf: str, node: str) -> str | None:
    """``gres.conf``'s ``AutoDetect`` for *node*: a ``NodeName=`` line naming it wins over a line
    without ``NodeName`` (gres.conf(5)); None when it says nothing (then Slurm detects nothing)."""
    found: str | None = None
    for raw in gres_conf.splitlines():
        line = raw.split("#", 1)[0]
        m = re.search(r"\bAutoDetect\s*=\s*(\w+)", line, re.IGNORECASE)
        if not m:
            continue
        names = re.search(r"\bNodeName\s*=\s*(\S+)", line, re.IGNORECASE)
        if names is None:
            found = found or m.group(1).lower()
        elif node and node in _expand_hostlist(names.group(1)):
            return m.group(1).lower()
    return found


def _expand_hostlist(spec: str) -> list[str]:
    """``gpu[01-03],login`` -> the names (Slurm hostlist syntax: one bracket of ranges per name)."""
    names = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", spec):
        m = re.match(r"^(.*)\[([^\]]*)\](.*)$", part)
        if not m:
            names.append(part)
            continue
        for rng in m.group(2).split(","):
            lo, _, hi = rng.partition("-")
            if hi and lo.isdigit() and hi.isdigit():
                names += [f"{m.group(1)}{n:0{len(lo)}d}{m.group(3)}" for n in range(int(lo), int(hi) + 1)]
            else:
                names.append(f"{m.group(1)}{lo}{m.group(3)}")
    return names


# -- the mapping -------------------------------------------------------------------------------


def _ids(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def map_job_gpus(ids: str, variable: str, facts: Mapping[str, Any], vendor: str = "nvidia") -> JobGPUs:
    """The job's GPUs (*ids*, the value of Slurm's *variable*) as the runtime takes them.

    *facts* (:func:`~.hostinfo.job_gpu_facts`): ``gpus`` (``NodeGPU`` fields as dicts),
    ``cuda_visible_devices``, ``accessible_minors`` (the ``/dev/nvidiaN`` this process may open, when
    some may not), ``slurm_version`` (``[major, minor]``), ``autodetect`` (gres.conf's), and for AMD
    ``amd_gpus`` (``[{"node", "render_minor"}]`` in KFD node order) and ``accessible_render``.
    """
    wanted = _ids(ids)
    if not wanted:
        return JobGPUs(problem=f"{variable} is empty")
    if vendor == "amd":
        return _map_amd(wanted, variable, facts)
    return _map_nvidia(wanted, variable, facts)


def _gpus(facts: Mapping[str, Any]) -> list[NodeGPU]:
    out = []
    for g in facts.get("gpus") or []:
        if isinstance(g, Mapping) and isinstance(g.get("index"), int) and g.get("uuid"):
            out.append(NodeGPU(index=int(g["index"]), minor=g.get("minor") if isinstance(g.get("minor"), int) else None,
                               uuid=str(g["uuid"]), bus=str(g.get("bus") or ""),
                               mig=tuple(str(m) for m in g.get("mig") or ())))
    return sorted(out, key=lambda g: g.index)


def _version(facts: Mapping[str, Any]) -> tuple[int, ...] | None:
    v = facts.get("slurm_version")
    return tuple(int(x) for x in v[:2]) if isinstance(v, (list, tuple)) and len(v) >= 2 else None


def _fmt_version(v: tuple[int, ...] | None) -> str:
    return f"Slurm {v[0]}.{v[1]:02d}" if v else "the Slurm release (unknown here)"


def _map_nvidia(wanted: list[str], variable: str, facts: Mapping[str, Any]) -> JobGPUs:
    given = f"{variable}={','.join(wanted)}"
    if not all(w.isdigit() for w in wanted):
        if all(_UUID.match(w) for w in wanted):
            return JobGPUs(devices=tuple(wanted), how=f"{given}: UUIDs, passed as they are")
        return JobGPUs(problem=f"{given}: neither GPU numbers nor UUIDs")
    visible = _ids(str(facts.get("cuda_visible_devices") or ""))
    if visible and len(visible) == len(wanted) and all(_UUID.match(v) for v in visible):
        # Slurm wrote the job's UUIDs itself (MIG, or Flags=env_uuid): no numbering to interpret.
        return JobGPUs(devices=tuple(visible),
                       how=f"{given}, and Slurm set CUDA_VISIBLE_DEVICES to their UUIDs ({','.join(visible)})")
    gpus = _gpus(facts)
    if not gpus:
        return JobGPUs(problem=f"{given}: the node's GPUs (index, minor number, UUID) could not be read (nvidia-smi "
                       "--query-gpu=index,minor_number,uuid,pci.bus_id, /proc/driver/nvidia/gpus/*/information), so "
                       "those numbers cannot be matched to a GPU")
    if any(g.mig for g in gpus):
        migs = ", ".join(m for g in gpus for m in g.mig)
        return JobGPUs(problem=f"{given} on a node whose GPUs are in MIG mode: Slurm numbers MIG devices by its own "
                       f"list and writes their UUIDs to CUDA_VISIBLE_DEVICES, which holds "
                       f"{','.join(visible) or 'nothing'} here; the MIG devices are {migs}")
    numbers = [int(w) for w in wanted]
    by_minor = [next((g for g in gpus if g.minor == n), None) for n in numbers]
    by_index = [next((g for g in gpus if g.index == n), None) for n in numbers]
    minor_ok = all(by_minor)
    index_ok = all(by_index)
    uuids_minor = tuple(g.uuid for g in by_minor if g is not None)
    uuids_index = tuple(g.uuid for g in by_index if g is not None)
    accessible = facts.get("accessible_minors")
    if isinstance(accessible, list) and all(isinstance(m, int) for m in accessible):
        allowed = [g for g in gpus if g.minor in accessible]
        if allowed and len(allowed) < len(gpus) and len(allowed) == len(numbers):
            uuids = tuple(g.uuid for g in allowed)
            agrees = ("minor numbers" if minor_ok and set(uuids_minor) == set(uuids) else
                      "NVML indexes" if index_ok and set(uuids_index) == set(uuids) else "")
            return JobGPUs(devices=uuids, how=f"{given}: the job's device cgroup lets it open "
                           f"{', '.join(f'/dev/nvidia{g.minor}' for g in allowed)} only"
                           + (f" (its ids read as {agrees})" if agrees else
                              " (its ids match neither the minor numbers nor the NVML indexes)"))
    if minor_ok and index_ok and set(uuids_minor) == set(uuids_index):
        return JobGPUs(devices=uuids_minor, how=f"{given}: minor numbers and NVML indexes name the same GPUs here")
    if len(set(numbers)) == len(gpus):
        # As many GPUs as the node has: all of them, whatever the numbering.
        return JobGPUs(devices=tuple(g.uuid for g in gpus), how=f"{given}: every GPU of the node")
    version = _version(facts)
    autodetect = str(facts.get("autodetect") or "")
    if version is not None and version < INDEX_SINCE and minor_ok:
        return JobGPUs(devices=uuids_minor,
                       how=f"{given}: {_fmt_version(version)} numbers GPUs by device minor (before 21.08)")
    if version is not None and version >= INDEX_SINCE and autodetect == "nvml" and index_ok:
        return JobGPUs(devices=uuids_index,
                       how=f"{given}: {_fmt_version(version)} with AutoDetect=nvml numbers GPUs in NVML order")
    table = "; ".join(f"index {g.index} = /dev/nvidia{g.minor if g.minor is not None else '?'} = {g.uuid}"
                      for g in gpus)
    why = (f"{_fmt_version(version)}" + (f", AutoDetect={autodetect}" if autodetect else ", no AutoDetect known")
           + ": before 21.08 Slurm's GPU numbers are device minors, from 21.08 its gres.conf order (NVML's only "
           "with AutoDetect=nvml)")
    readings = []
    if minor_ok:
        readings.append(f"as minor numbers {','.join(uuids_minor)}")
    if index_ok:
        readings.append(f"as NVML indexes {','.join(uuids_index)}")
    return JobGPUs(problem=f"{given} cannot be matched to this node's GPUs for sure: "
                   + (" or ".join(readings) or "they are neither its minor numbers nor its NVML indexes")
                   + f" ({why}); the node: {table}")


def _map_amd(wanted: list[str], variable: str, facts: Mapping[str, Any]) -> JobGPUs:
    given = f"{variable}={','.join(wanted)}"
    if not all(w.isdigit() for w in wanted):
        return JobGPUs(problem=f"{given}: not GPU numbers")
    nodes = [g for g in facts.get("amd_gpus") or []
             if isinstance(g, Mapping) and isinstance(g.get("render_minor"), int)]
    if not nodes:
        return JobGPUs(problem=f"{given}: the node's GPUs could not be read from the KFD topology "
                       "(/sys/class/kfd/kfd/topology/nodes/*/properties, drm_render_minor)")
    minors = [int(g["render_minor"]) for g in nodes]
    numbers = [int(w) for w in wanted]
    if all(n >= RENDER_MINOR_BASE for n in numbers):
        missing = [n for n in numbers if n not in minors]
        if missing:
            return JobGPUs(problem=f"{given}: no GPU of this node has render minor "
                           f"{', '.join(map(str, missing))} (its render nodes: {', '.join(map(str, minors))})")
        index = ", ".join(f"renderD{n} = ROCm device {minors.index(n)}" for n in numbers)
        return JobGPUs(devices=tuple(f"/dev/dri/renderD{n}" for n in numbers),
                       how=f"{given}: render minors (Slurm before 21.08 numbers GPUs by device file): {index}")
    accessible = facts.get("accessible_render")
    if isinstance(accessible, list) and all(isinstance(m, int) for m in accessible):
        allowed = [m for m in minors if m in accessible]
        if allowed and len(allowed) < len(minors) and len(allowed) == len(numbers):
            return JobGPUs(devices=tuple(f"/dev/dri/renderD{m}" for m in allowed),
                           how=f"{given}: the job's device cgroup lets it open "
                               f"{', '.join(f'/dev/dri/renderD{m}' for m in allowed)} only")
    if len(set(numbers)) == len(minors):
        return JobGPUs(devices=tuple(f"/dev/dri/renderD{m}" for m in minors), how=f"{given}: every GPU of the node")
    return JobGPUs(problem=f"{given} cannot be matched to this node's GPUs for sure: numbers below "
                   f"{RENDER_MINOR_BASE} are Slurm's gres index (21.08 and later), whose order is its gres.conf's, and "
                   f"the job's device cgroup does not say which render nodes are its own; the node's render nodes in "
                   f"ROCm order: {', '.join(f'renderD{m}' for m in minors)}")
