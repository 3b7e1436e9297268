"""The launch users make, and every way the check's launch differs from it (pure).

A check must not make an image pass that its users' own launch fails: ``docker run --gpus all
IMAGE``, ``podman run --device nvidia.com/gpu=all IMAGE``, ``apptainer exec --nv IMAGE`` (on an
AMD host ``--device /dev/kfd --device /dev/dri`` and ``--rocm``).  So the plugin adds nothing the
GPU stack reads, and what an option of the run does add (a variable a deployment sets, a runtime
flag, another GPU selection) is listed in the report as a launch difference: none in a plain run.

Not differences, because they change no verdict: the plumbing that keeps a session alive and
removes it (``--detach --rm --name --label --entrypoint sleep``, an Apptainer instance), and the
isolation that keeps the run's own machine out of the judgement (``--network none``: no check
uses the network; Apptainer's ``--cleanenv``, private home and ``/tmp``, ``--no-mount tmp,cwd``:
the host's shell variables and files are not the image's).  Each is documented where it is set
(``runtimes/oci.py``, ``runtimes/apptainer.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .runtimes import LaunchOptions, family_of

__all__ = ["GPU_STACK_VARS", "differences", "plain_launch"]

#: Variables the GPU stack or the libraries read to decide which GPU and which driver files a
#: process gets: NVIDIA's runtime hook (``NVIDIA_*``, nvidia-container-toolkit
#: ``internal/config/image``), Apptainer's nvidia-container-cli path (``NVIDIA_*`` of its own
#: environment: apptainer ``internal/pkg/runtime/launch/launcher_linux.go`` ``setNvCCLIConfig``),
#: CUDA's and ROCm's device selection, and glvnd's EGL vendor search.
GPU_STACK_VARS = re.compile(r"^(?:NVIDIA_\w+|CUDA_VISIBLE_DEVICES|CUDA_DEVICE_ORDER|ROCR_VISIBLE_DEVICES|"
                            r"HIP_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL|__EGL_VENDOR_LIBRARY_\w+|"
                            r"__GLX_VENDOR_LIBRARY_NAME|VTK_(?:DEFAULT_)?EGL_DEVICE_INDEX)$")


def plain_launch(runtime: str, gpu_vendor: str = "nvidia") -> str:
    """The launch this runtime's users make, with GPUs (an empty string for the host)."""
    family = family_of(runtime)
    if family == "host":
        return ""
    if family == "sif":
        return f"{runtime} exec --{'rocm' if gpu_vendor == 'amd' else 'nv'} IMAGE"
    if gpu_vendor == "amd":
        return f"{runtime} run --device /dev/kfd --device /dev/dri IMAGE"
    if runtime == "docker":
        return "docker run --gpus all IMAGE"
    return f"{runtime} run --device nvidia.com/gpu=all IMAGE"


def differences(runtime: str, options: LaunchOptions, gpu: Mapping[str, Any] | None = None) -> list[str]:
    """Every way a session of *runtime* started with *options* differs from :func:`plain_launch`,
    one line each; *gpu* is the session's GPU facts (what was requested and why).  [] for a plain
    run.  Values are shown only for the variables the GPU stack reads (:data:`GPU_STACK_VARS`):
    another ``--container-env`` value may be a secret."""
    family = family_of(runtime)
    if family == "host":
        return []
    gpu = gpu or {}
    out: list[str] = []
    if options.gpus == "none" and not options.gpus_auto:
        out.append("no GPU requested (--gpus none)")
    elif not options.gpus_auto and options.gpus != "all" and family == "oci":
        out.append(f"GPUs: --gpus {options.gpus} (the plain launch gives every GPU)")
    elif options.job_gpus and family == "oci":
        if options.job_gpus_problem:
            out.append(f"no GPU requested: the Slurm job's GPUs ({options.job_gpus_from}={options.job_gpus}) could "
                       "not be named for the daemon, which is outside the job's cgroup")
        else:
            out.append(f"GPUs: the Slurm job's only ({options.job_gpus_how}), as {', '.join(options.job_devices)}; "
                       "the plain launch would give every GPU of the node")
    if family == "sif" and not options.apptainer_gpu_auto:
        if options.apptainer_gpu == "nvccli" and not gpu.get("nvccli_configured"):
            out.append("--nvccli: nvidia-container-cli sets up the GPU instead of --nv's own binding "
                       "(apptainer.conf does not say 'use nvidia-container-cli = yes')")
        elif options.apptainer_gpu == "none":
            out.append("no GPU requested (--apptainer-gpu none)")
        elif options.apptainer_gpu in ("nv", "rocm") and (options.apptainer_gpu == "rocm") != (
                options.gpu_vendor == "amd"):
            out.append(f"--{options.apptainer_gpu} (--apptainer-gpu {options.apptainer_gpu})")
    if family == "sif" and not options.gpus_auto and options.gpus not in ("all", "none"):
        out.append(f"GPUs: --gpus {options.gpus}, passed as the device variables")
    for name, value in options.env.items():
        if GPU_STACK_VARS.match(name) and family == "sif" and name.startswith("NVIDIA_"):
            # --container-env reaches the image (APPTAINERENV_), not apptainer: --nv reads no NVIDIA_*
            # variable, and nvidia-container-cli reads apptainer's own environment.
            out.append(f"{name}={value} set inside the image by --container-env (apptainer's GPU setup does not "
                       "read it there: export it before pytest to emulate a job's environment)")
        elif GPU_STACK_VARS.match(name):
            out.append(f"{name}={value} set by --container-env (emulating a deployment's environment; the plain "
                       f"launch leaves the image's own {name})")
        else:
            out.append(f"{name} set by --container-env")
    out += [f"--runtime-arg={arg}" for arg in options.runtime_args]
    return out
