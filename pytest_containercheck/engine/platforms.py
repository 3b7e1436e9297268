"""Which CPU architecture an image is for, and whether this host can run it.

An image built on an Apple-silicon laptop (``linux/arm64``) and run on an x86_64 cluster node
fails with ``exec format error`` at its first process, which reads as "no Python interpreter".
The image says what it is built for (its config's ``architecture``, a SIF header's arch code):
the run is refused before anything starts, with the fix, unless the host has an emulator
registered for that architecture (``binfmt_misc``, as ``qemu-user-static`` installs one).
"""

from __future__ import annotations

import os
import platform
from typing import Final

#: ``platform.machine()`` -> the OCI architecture name (image-spec config.md; Go's GOARCH).
_OCI_ARCH: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386",
                    "armv7l": "arm", "armv6l": "arm"}
#: OCI architecture -> the name binfmt_misc registers its emulator under (qemu-<name>).
_QEMU: Final = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
                "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el"}
#: The SIF header's arch code (apptainer/sif pkg/sif/sif.go, "SIF architecture values").
SIF_ARCH: Final = {"01": "386", "02": "amd64", "03": "arm", "04": "arm64", "05": "ppc64", "06": "ppc64le",
                   "07": "mips", "08": "mipsle", "09": "mips64", "10": "mips64le", "11": "s390x"}
BINFMT_DIR: Final = "/proc/sys/fs/binfmt_misc"


def host_architecture() -> str:
    """This host's architecture as OCI names it (``amd64``, ``arm64``, ...)."""
    machine = platform.machine().lower()
    return _OCI_ARCH.get(machine, machine)


def emulated(arch: str, binfmt_dir: str = BINFMT_DIR) -> bool:
    """Whether binfmt_misc has an enabled emulator for *arch* (``qemu-aarch64`` for arm64)."""
    name = _QEMU.get(arch, arch)
    for entry in (f"qemu-{name}", f"qemu-{name}-static", name):
        try:
            with open(os.path.join(binfmt_dir, entry)) as fh:
                if fh.readline().strip() == "enabled":
                    return True
        except OSError:
            continue
    return False


def foreign_problem(arch: str | None, spec: str, *, binfmt_dir: str = BINFMT_DIR) -> str | None:
    """Why image *spec*, built for *arch*, cannot run on this host, or None (same architecture,
    unknown architecture, or an emulator registered for it)."""
    if not arch or arch in ("unknown", "?"):
        return None
    host = host_architecture()
    if arch == host or emulated(arch, binfmt_dir):
        return None
    return (f"--image {spec}: the image is built for linux/{arch}, and this host is linux/{host} "
            f"({platform.machine()}) with no emulator registered for {arch}; build it for this host's platform "
            f"('docker buildx build --platform linux/{host} ...', also on an Apple-silicon Mac), or register "
            f"one (qemu-user-static) to run it emulated")
