"""What the NVIDIA container stack's refusals mean: whose fault, and the fix.

Two runtimes meet the same texts: Docker's NVIDIA hook and Apptainer's ``--nvccli`` both run
``nvidia-container-cli`` (libnvidia-container), and Podman (always) and Docker (in CDI mode)
apply a CDI spec written by ``nvidia-ctk cdi generate``.  Every text is quoted from its source
(``tests/data/gpu-runtimes/README.md``):

* libnvidia-container ``src/cli/configure.c`` prefixes each failure with its stage:
  ``initialization error:`` (``nvc_init``: loading NVML), ``detection error:``, ``device error:``
  (``select_devices``: ``"%s: unknown device"`` for an id the driver does not list),
  ``requirement error:``, ``mount error:``, ``ldcache error:``, ``container error:``,
  ``permission error:``; NVML's own text follows ``nvml error:`` (``src/driver.c``,
  ``error_set_nvml``), e.g. ``driver/library version mismatch`` and ``driver not loaded``.
* A CDI spec names the driver's files by their versioned names; after a driver upgrade they are
  gone, and the OCI runtime or the CDI library says so when the container is created (real
  Podman 4.3 + runc here: ``error mounting "...libcuda.so.535.104.05" ... no such file or
  directory``; ``failed to stat CDI host device "/dev/dri/renderD129"``).

:func:`classify` is pure: a runtime's stderr in, ``{"error", "fault", "fix", "cause"}`` out.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["CAUSES", "Cause", "classify", "is_refusal"]

_REGENERATE = ("regenerate the CDI spec after every driver upgrade: 'nvidia-ctk cdi generate "
               "--output=/etc/cdi/nvidia.yaml' (or restart nvidia-cdi-refresh), then check 'nvidia-ctk cdi list'")


class Cause(NamedTuple):
    """One known refusal: its name, the pattern of its text, whose fault, and the fix."""

    name: str
    pattern: re.Pattern[str]
    fault: str | None
    """One of the verdict faults, or None: the launch's own options are wrong (a usage error)."""
    fix: str


#: In order: the first cause whose pattern matches the runtime's stderr names the refusal.
CAUSES: tuple[Cause, ...] = (
    Cause("driver_library_mismatch",
          re.compile(r"nvml error: driver/library version mismatch|Driver/library version mismatch", re.IGNORECASE),
          "host",
          "the host's NVIDIA kernel module and its driver libraries are different versions (the driver was upgraded "
          "and the old module is still loaded; 'nvidia-smi' on the host fails the same way): reboot the host, or "
          "reload the modules once no process uses the GPU (rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia; "
          "modprobe nvidia)"),
    Cause("driver_not_loaded", re.compile(r"nvml error: driver not loaded", re.IGNORECASE), "host",
          "the NVIDIA kernel module is not loaded on the host: load it ('modprobe nvidia', or run 'nvidia-smi' as "
          "root), and check 'dmesg' for NVRM errors and that the driver was built for the running kernel (DKMS)"),
    Cause("no_nvml", re.compile(r"load library failed: libnvidia-ml\.so", re.IGNORECASE), "host",
          "the host has no NVIDIA driver libraries (libnvidia-ml.so.1 is part of the driver): install the NVIDIA "
          "driver on the host, or point the toolkit at a driver container's root (--driver-root)"),
    Cause("unknown_device", re.compile(r"device error: (?P<device>[^:\n]+): unknown device", re.IGNORECASE), None,
          "--gpus names a GPU this host does not have: list them with 'nvidia-smi -L', and give --gpus all, "
          "a count, or device=<index or UUID> of one listed"),
    Cause("image_ships_driver",
          re.compile(r"mount error: file creation failed: (?P<path>\S+): file exists", re.IGNORECASE), "image",
          "the image ships NVIDIA driver files (a libnvidia-*/libcuda package, or the driver itself) where the "
          "runtime mounts the host's: remove them from the image (e.g. apt-get purge 'libnvidia-*' "
          "'libcuda1*'; keep only the CUDA toolkit/runtime libraries, never the driver)"),
    Cause("stale_cdi_spec",
          re.compile(r"(?:error mounting \"[^\"]*\" to rootfs at \"[^\"]*\": stat |cannot stat `|error stat'ing file "
                     r"|failed to stat CDI host device \")"
                     r"(?P<path>(?:/dev/dri/|/[^\"`:\s]*(?:nvidia|libcuda))[^\"`:\s]*)"
                     r"[\"`]?:? ?no such file or directory", re.IGNORECASE),
          "host", "the CDI spec names driver files that are gone (the driver was upgraded or removed after the spec "
          "was generated): " + _REGENERATE),
    Cause("unknown_cdi_device",
          re.compile(r"unresolvable CDI devices (?P<device>nvidia\.com/gpu=(?!all\b)\S+)", re.IGNORECASE), None,
          "no CDI spec on this host names that device: list the names with 'nvidia-ctk cdi list' and give --gpus "
          "all or a device that is listed; " + _REGENERATE),
    Cause("nvidia_container_cli", re.compile(
        r"nvidia-container-cli: (?:initialization|detection|device|mount|ldcache|container|permission) error:",
        re.IGNORECASE), "host",
          "nvidia-container-cli (libnvidia-container) failed on the host: run 'nvidia-container-cli -k -d /dev/tty "
          "info' on the host to see why"),
)

#: Texts meaning "no NVIDIA GPU support at all": no toolkit, no CDI spec, no runtime hook.
_NO_TOOLKIT = re.compile(r'could not select device driver ".*" with capabilities|unresolvable CDI devices|'
                         r"nvidia-container-runtime|failed to inject (?:CDI )?devices|nvidia-container-cli",
                         re.IGNORECASE)


def classify(stderr: str) -> dict[str, str | None] | None:
    """The known cause of a GPU refusal in *stderr*: ``{"error", "fault", "fix", "cause"}`` (``error``
    is the line that says it), or None when no cause of :data:`CAUSES` matches."""
    for cause in CAUSES:
        m = cause.pattern.search(stderr)
        if m:
            line = next((ln.strip() for ln in stderr.splitlines() if cause.pattern.search(ln)), m.group(0))
            return {"error": line, "fault": cause.fault, "fix": cause.fix, "cause": cause.name}
    return None


def is_refusal(stderr: str) -> bool:
    """Whether a failed start's *stderr* is the GPU stack refusing (the image may still start
    without GPUs) rather than the image or the runtime failing for another reason."""
    return bool(_NO_TOOLKIT.search(stderr)) or classify(stderr) is not None
