"""Verdicts for the system GPU rows: pure functions of the ``system`` probe's facts.

``system.gpu_devices``, ``system.nvidia_smi``, ``system.libcuda`` and ``system.nvidia_env`` run after the GPU gate
(``container.gpu_expected()``): the host has a GPU and the image was started with GPU
access, so what is missing inside is a real defect.  Unit-tested on constructed facts
(``tests/test_verdicts_gpu.py``; sources in ``tests/data/ml/README.md``).

The ``cuInit`` codes are the driver API's ``CUresult`` values (NVIDIA's ``cuda.h``):
``CUDA_ERROR_STUB_LIBRARY`` 34, ``CUDA_ERROR_NO_DEVICE`` 100, ``CUDA_ERROR_SYSTEM_NOT_READY`` 802
("the system is not yet ready to start any CUDA work ... verify ... all required driver daemons are
actively running": on NVSwitch systems, the Fabric Manager), ``CUDA_ERROR_SYSTEM_DRIVER_MISMATCH``
803 ("a mismatch between the versions of the display driver and the CUDA driver"),
``CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE`` 804 ("the system was upgraded to run with
forward compatibility but the visible hardware detected by CUDA does not support this
configuration"), ``CUDA_ERROR_UNKNOWN`` 999.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..verdict import Verdict, failed, passed, skipped
from .native import explain_native

__all__ = ["CUINIT_ERRORS", "driver_capabilities", "explain_cuinit", "gpu_devices", "libcuda", "nvidia_env",
           "nvidia_smi"]

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
    802: ("CUDA_ERROR_SYSTEM_NOT_READY", "host",
          "the driver is loaded but the system is not ready for CUDA work: on NVSwitch systems (HGX/DGX "
          "A100, H100, H200, B200) the NVIDIA Fabric Manager is not running, or does not match the driver",
          "on the host: start the Fabric Manager (systemctl enable --now nvidia-fabricmanager; install the "
          "nvidia-fabricmanager package of exactly the driver's version if it is missing), then rerun"),
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
        render = [d for d in devices.get("dri") or [] if "/renderD" in d]
        if not devices.get("kfd") or not render:
            lacks = " and no ".join(w for w, ok in (("/dev/kfd", devices.get("kfd")),
                                                    ("DRI render node (/dev/dri/renderD*)", render)) if not ok)
            return failed(f"the host has {host.get('gpu_summary')} but the image has no {lacks}", fault="host",
                          fix="pass the ROCm devices in (AMD: 'docker run --device /dev/kfd --device /dev/dri'; the "
                              "plugin does so on an AMD host unless --gpus none); Apptainer: --rocm (--apptainer-gpu "
                              "rocm); check on the host with 'rocm-smi' or 'amd-smi list'")
        return passed(", ".join(["/dev/kfd", *list(devices.get("dri") or [])]))
    nodes = list(devices.get("nvidia") or [])
    if devices.get("dxg") and not nodes:
        # WSL2 passes GPUs through its paravirtualised /dev/dxg, with no /dev/nvidia* at all
        # (nvidia-container-toolkit pkg/nvcdi/device-wsl.go: dxgDeviceNode = "/dev/dxg").
        return passed("/dev/dxg (WSL2 GPU paravirtualisation: no /dev/nvidia* nodes under WSL)")
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


#: 999 with /dev/nvidia-uvm inside: the table's usual cause is ruled out (field experience, not a
#: documented meaning: see tests/data/ml/README.md).
_UNKNOWN_WITH_UVM = (
    "CUDA could not initialise although /dev/nvidia-uvm is present inside, so not for the usual reason",
    "on the host: check that 'nvidia-smi' works and read the kernel log (dmesg: NVRM and Xid errors); a GPU in an "
    "error state needs a reset (nvidia-smi -r, as root, with the GPU idle) or a reboot, and so does a driver "
    "upgraded without one")
#: 804 from a compat libcuda found through the loader cache (not LD_LIBRARY_PATH): the NVIDIA Container
#: Toolkit adds an image's /usr/local/cuda/compat when it is newer than the host driver
#: (nvidia-container-toolkit >= 1.18: the enable-cuda-compat hook, cuda-compat-mode; CHANGELOG.md,
#: api/config/v1/runtime.go, api/config/v1/features.go).
_COMPAT_BY_TOOLKIT = (
    "the image's CUDA forward-compatibility libcuda ({path}) was put on the loader path without LD_LIBRARY_PATH: "
    "the NVIDIA Container Toolkit (1.18 and later) adds an image's /usr/local/cuda/compat when it is newer than "
    "the host driver, and this GPU does not support forward compatibility",
    "upgrade the host driver to one that supports the image's CUDA, or use an image built for the host's CUDA; or "
    "stop the toolkit adding the compat libraries, on the host in /etc/nvidia-container-runtime/config.toml: "
    "[features] disable-cuda-compat-lib-hook = true, or cuda-compat-mode = \"disabled\" under "
    "[nvidia-container-runtime.modes.legacy] (CDI: nvidia-ctk cdi generate --disable-hook enable-cuda-compat)")


#: 802 on a host without NVSwitch: the Fabric Manager is not the cause (it manages NVSwitch fabrics only,
#: and refuses to start without one: "request to query NVSwitch device information from NVSwitch driver
#: failed with error:WARNING Nothing to do [NV_WARN_NOTHING_TO_DO]", NVIDIA/gpu-operator#610).  802 is seen
#: there too (wilicc/gpu-burn#133: "system not yet initialized" on a machine whose NVSwitch was in
#: question; the CUDA 12.9/13.0 release notes' known issues were pointed to there): what remains is the
#: driver's own state.
_NOT_READY_NO_NVSWITCH = (
    "the driver is loaded but the system is not ready for CUDA work, and this host has no NVSwitch "
    "(no /dev/nvidia-nvswitch*), so it is not the Fabric Manager",
    "do not install the Fabric Manager (it has no NVSwitch to manage); on the host read the kernel log (dmesg | "
    "grep -i -e NVRM -e nvidia) and the CUDA release notes' known issues for this driver and kernel, and try the "
    "driver branch the GPU's vendor qualifies; a reboot clears a stale driver state")


def _mig_enabled(host: Mapping[str, Any]) -> list[str]:
    """Indexes of the host's GPUs whose MIG mode is Enabled (``hostinfo`` ``gpu_modes``)."""
    modes = host.get("gpu_modes") or {}
    return [str(i) for i, m in sorted(modes.items()) if isinstance(m, Mapping)
            and str(m.get("mig_mode", "")).strip().lower() == "enabled"]


def explain_cuinit(rc: Any, path: str, facts: Mapping[str, Any] | None = None,
                   host: Mapping[str, Any] | None = None) -> tuple[str, str | None, str, str] | None:
    """``(name, fault, meaning, fix)`` of a failed ``cuInit`` (:data:`CUINIT_ERRORS`), sharpened by what
    else the ``system`` probe's *facts* and the *host* facts show; None for a code not in the table.

    A libcuda from a toolkit ``stubs`` directory is the stub whatever it answers.  802 names the Fabric
    Manager only where the host has NVSwitch (``nvswitch``); 999 names the missing
    or present ``/dev/nvidia-uvm``; 804 from a compat libcuda that ``LD_LIBRARY_PATH`` does not name was
    put there by the container toolkit; 100 on a host whose GPUs are in MIG mode means no MIG device.
    """
    known = CUINIT_ERRORS[34] if "/stubs/" in path else (CUINIT_ERRORS.get(rc) if isinstance(rc, int) else None)
    if known is None:
        return None
    name, fault, meaning, fix = known
    facts, host = facts or {}, host or {}
    if name == "CUDA_ERROR_UNKNOWN":
        nodes = list((facts.get("devices") or {}).get("nvidia") or [])
        if "/dev/nvidia-uvm" in nodes:
            meaning, fix = _UNKNOWN_WITH_UVM
        else:
            meaning += "; /dev/nvidia-uvm is missing inside"
    elif name == "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE" and "/compat/" in path:
        ld_path = str((facts.get("env") or {}).get("LD_LIBRARY_PATH") or "").split(":")
        if path.rsplit("/", 1)[0] not in ld_path:
            meaning, fix = _COMPAT_BY_TOOLKIT[0].format(path=path), _COMPAT_BY_TOOLKIT[1]
    elif name == "CUDA_ERROR_SYSTEM_NOT_READY" and host.get("nvswitch") == []:
        # hostinfo lists the NVSwitch device nodes on an NVIDIA host; an empty list is "none here".
        meaning, fix = _NOT_READY_NO_NVSWITCH
    elif name == "CUDA_ERROR_SYSTEM_NOT_READY" and host.get("nvswitch"):
        meaning = f"{meaning} (this host has NVSwitch: {', '.join(map(str, host['nvswitch']))})"
    elif name == "CUDA_ERROR_NO_DEVICE" and _mig_enabled(host):
        mig = ", ".join(_mig_enabled(host))
        meaning = (f"the host's GPU {mig} is in MIG mode, where CUDA sees only MIG devices, and none is visible "
                   "to this process (no GPU instance was created, or none was given to this container)")
        fix = ("create GPU and compute instances on the host (nvidia-smi mig -cgi <profile> -C), and pass a MIG "
               "device in (Docker --gpus device=MIG-<uuid>, NVIDIA_VISIBLE_DEVICES=MIG-<uuid>; under Slurm a MIG "
               "gres); nvidia-smi -L lists them")
    return name, fault, meaning, fix


def libcuda(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``system.libcuda``: libcuda.so.1 loads in the image and ``cuInit(0)`` succeeds."""
    amd = _amd_skip(host, "libcuda")
    if amd is not None:
        return amd
    cuda = facts.get("libcuda") or {}
    broken = explain_native(cuda.get("resolution"), str(cuda.get("error") or ""))
    if not cuda.get("loaded") and broken is not None:
        return failed(f"libcuda.so.1 does not load in the image: {broken.what}", fix=broken.fix, fault=broken.fault)
    if not cuda.get("loaded"):
        return failed(f"libcuda.so.1 does not load in the image: {cuda.get('error')}", fault="host",
                      fix="Docker: NVIDIA_DRIVER_CAPABILITIES must include 'compute'; Apptainer: use --nv; "
                          "do not ship a libcuda stub in the image's library path")
    rc = cuda.get("cuInit")
    if rc != 0:
        path = str(cuda.get("path") or "?")
        known = explain_cuinit(rc, path, facts, host)
        if known is None:
            return failed(f"cuInit failed with CUDA error {rc} ({path})" + (f": {cuda['error']}" if cuda.get("error")
                                                                            else ""),
                          fault=None, fix="look the code up in the CUDA driver API's CUresult list; see the evidence")
        name, fault, meaning, fix = known
        return failed(f"cuInit failed with {rc} ({name}, {path}): {meaning}", fault=fault, fix=fix)
    return passed(f"CUDA driver API {cuda.get('driver_cuda_version')} from {cuda.get('path')}, "
                  f"{cuda.get('device_count')} device(s)")


#: nvidia-container-toolkit ``internal/config/image/capabilities.go``: ``DefaultDriverCapabilities
#: = "utility,compute"`` (what the hook grants when the image sets none) and
#: ``SupportedDriverCapabilities`` (what ``all`` means).
DEFAULT_CAPABILITIES: frozenset[str] = frozenset({"utility", "compute"})
ALL_CAPABILITIES: frozenset[str] = frozenset({"compute", "compat32", "graphics", "utility", "video", "display", "ngx"})
#: apptainer ``internal/pkg/util/gpu/nvidia.go`` ``nVDriverDefaultCapabilities``: nvidia-container-cli's
#: capabilities when apptainer's own environment sets none.
NVCCLI_DEFAULT_CAPABILITIES: frozenset[str] = frozenset({"compute", "utility"})
CAPABILITIES_FIX = ("ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or all) in the image's Dockerfile: the "
                    "NVIDIA Container Toolkit injects the driver's EGL/GL libraries (libEGL_nvidia.so.0, "
                    "10_nvidia.json) only for 'graphics'")


def driver_capabilities(env: Mapping[str, Any], family: str, gpu: Mapping[str, Any] | None = None,
                        emulated: Sequence[str] = ()) -> dict[str, Any] | None:
    """The NVIDIA driver capabilities the container was given, and who decided them; None where no
    capability gates the driver files.

    ``{"caps": set, "value": str, "source": str, "fault": str, "fix": str}``:

    * Docker's NVIDIA hook reads the container's own ``NVIDIA_DRIVER_CAPABILITIES``
      (nvidia-container-toolkit ``cmd/nvidia-container-runtime-hook/container_config.go``
      ``getDriverCapabilities``): a non-empty value is used as it is; unset in a "legacy" image
      (``CUDA_VERSION`` without ``NVIDIA_REQUIRE_CUDA``, ``cuda_image.go`` ``IsLegacy``) every
      capability; otherwise ``utility,compute``.  ``docker run --gpus all`` sets no capability
      (moby ``daemon/devices_nvidia_linux.go``: only the ``--gpus`` capabilities that are driver
      capabilities, and ``all`` has none), so the value is the image's, or a ``--container-env``
      one that emulates a deployment (*emulated* names those).
    * A CDI spec (Podman; ``gpu["cdi"]``) mounts the graphics libraries whatever the variable says
      (nvidia-container-toolkit ``pkg/nvcdi/common-nvml.go``: ``newCommonNVMLDiscoverer`` merges
      ``NewGraphicsMountsDiscoverer`` into every spec): None.
    * Apptainer's own ``--nv`` binds what ``nvliblist.conf`` lists, EGL included: None.  Through
      nvidia-container-cli (``--nvccli``, or ``use nvidia-container-cli = yes``) the capabilities
      are apptainer's *own* environment's (``gpu["nvccli_capabilities"]``), default
      ``compute,utility`` (apptainer ``internal/pkg/util/gpu/nvidia.go`` ``NVCLIEnvToFlags``), never
      the image's.
    """
    gpu = gpu or {}
    if family == "sif":
        if not gpu.get("nvccli"):
            return None
        value = str(gpu.get("nvccli_capabilities") or "")
        caps = {c.strip() for c in value.split(",") if c.strip()} or set(NVCCLI_DEFAULT_CAPABILITIES)
        return {"caps": caps, "value": value or "unset (nvidia-container-cli's default compute,utility)",
                "source": "apptainer's own environment, which nvidia-container-cli reads (never the image's)",
                "fault": "host",
                "fix": "export NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics where apptainer runs (the job "
                       "script), or let --nv bind the driver itself ('use nvidia-container-cli = no' in "
                       "apptainer.conf)"}
    if family != "oci" or gpu.get("cdi"):
        return None
    raw = env.get("NVIDIA_DRIVER_CAPABILITIES")
    legacy = bool(env.get("CUDA_VERSION")) and not env.get("NVIDIA_REQUIRE_CUDA")
    if raw:
        caps = {c.strip() for c in str(raw).split(",") if c.strip()}
        value = str(raw)
    elif raw is None and legacy:
        caps = set(ALL_CAPABILITIES)
        value = "unset in a legacy CUDA image (CUDA_VERSION without NVIDIA_REQUIRE_CUDA: all)"
    else:
        caps, value = set(DEFAULT_CAPABILITIES), "unset (the NVIDIA Container Toolkit's default utility,compute)"
    if "all" in caps:
        caps = set(ALL_CAPABILITIES)
    if "NVIDIA_DRIVER_CAPABILITIES" in emulated:
        return {"caps": caps, "value": value, "fault": "host",
                "source": "--container-env, emulating the deployment's environment",
                "fix": "set NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or all) where the deployment sets it "
                       "(its docker run -e, the pod's env)"}
    return {"caps": caps, "value": value, "source": "the image's own environment", "fault": "image",
            "fix": CAPABILITIES_FIX}


def nvidia_env(facts: Mapping[str, Any], family: str, requested: str | None = None, *, cdi: bool = False,
               host: Mapping[str, Any] | None = None, gpu: Mapping[str, Any] | None = None,
               emulated: Sequence[str] = ()) -> Verdict:
    """``system.nvidia_env``: the variables the NVIDIA runtime hooks read hide no GPU and drop no
    capability CUDA needs.  *family* is the target's runtime family; *requested* the Apptainer GPU
    flag (``nv``, ``nvccli``) the session asked for; *cdi*: the GPUs were requested as CDI devices
    (Podman's ``--device nvidia.com/gpu=...``); *gpu* the session's GPU facts; *emulated* the
    variables ``--container-env`` set (a deployment's, not the image's).

    Fails when ``NVIDIA_VISIBLE_DEVICES`` is ``void``, ``none`` or empty and no GPU node is inside
    (the image's fault), and when the capabilities (:func:`driver_capabilities`) lack ``compute``
    or ``utility``: the image's fault, with the ``ENV`` to add, unless a deployment's value was
    emulated.  A missing ``graphics`` is noted: it matters to ``render.egl``, which judges it.
    ``void`` under CDI is the spec's own: NVIDIA's generated specs set it in every container
    (nvidia-container-toolkit ``pkg/nvcdi/wrapper.go`` ``GetCommonEdits``, since 1.15) so the
    NVIDIA runtime makes no further changes; the GPUs come from the spec's device nodes.  A SIF
    passes with a note: Apptainer does not read the image's values.  An AMD host skips: nothing
    NVIDIA to read.
    """
    amd = _amd_skip(host or {}, "NVIDIA runtime variables")
    if amd is not None:
        return amd
    env = facts.get("env") or {}
    if family == "sif":
        # Apptainer's --nv binds the driver whatever the image's NVIDIA_* variables say, and
        # --nvccli reads them from apptainer's own environment, not the image's
        # (apptainer internal/pkg/runtime/launch/launcher_linux.go setNvCCLIConfig).
        how = "nvidia-container-cli" if (gpu or {}).get("nvccli") else f"--{requested}"
        return passed(f"apptainer {how}: the image's NVIDIA_DRIVER_CAPABILITIES="
                      f"{env.get('NVIDIA_DRIVER_CAPABILITIES')} and NVIDIA_VISIBLE_DEVICES="
                      f"{env.get('NVIDIA_VISIBLE_DEVICES')} are not read; CUDA_VISIBLE_DEVICES="
                      f"{env.get('CUDA_VISIBLE_DEVICES')}")
    # The container's own environment (its first process's) where the probe could read it: Podman
    # applies a CDI spec's env edits to it, not to the 'podman exec' process the probe runs in.
    if family == "oci":
        env = {**env, **(facts.get("init_env") or {})}
    visible = env.get("NVIDIA_VISIBLE_DEVICES")
    nodes = [n for n in (facts.get("devices") or {}).get("nvidia") or [] if re.fullmatch(r"/dev/nvidia\d+", n)]
    if visible in ("void", "none", "") and cdi:
        return passed(f"NVIDIA_VISIBLE_DEVICES={visible} is the CDI spec's own (nvidia-ctk sets it so the NVIDIA "
                      f"runtime changes nothing more); GPU nodes from the spec: {', '.join(nodes) or 'none'}; "
                      f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}")
    if visible in ("void", "none", "") and nodes:
        return passed(f"NVIDIA_VISIBLE_DEVICES={visible}, yet {', '.join(nodes)} are inside: the runtime injected "
                      "the GPUs (a CDI spec sets 'void' itself); "
                      f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}")
    if visible in ("void", "none", ""):
        return failed(f"NVIDIA_VISIBLE_DEVICES={visible!r} in the image hides every GPU", fault="image",
                      fix="unset NVIDIA_VISIBLE_DEVICES in the image (ENV) or set it to 'all'")
    decided = driver_capabilities(env, family, {"cdi": cdi, **(gpu or {})}, emulated)
    caps = env.get("NVIDIA_DRIVER_CAPABILITIES")
    note = ""
    if decided is not None:
        missing = [c for c in ("compute", "utility") if c not in decided["caps"]]
        if missing:
            return failed(f"NVIDIA_DRIVER_CAPABILITIES={decided['value']} ({decided['source']}) lacks "
                          f"{', '.join(missing)}: without 'compute' CUDA does not load, without 'utility' there is no "
                          "nvidia-smi", fault=decided["fault"], fix=decided["fix"])
        if "graphics" not in decided["caps"]:
            note = ("; no 'graphics': the NVIDIA EGL driver is not injected, so EGL renders on the CPU "
                    "(render.egl judges it)")
    return passed(f"NVIDIA_VISIBLE_DEVICES={visible}, NVIDIA_DRIVER_CAPABILITIES={caps}, "
                  f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}{note}")
