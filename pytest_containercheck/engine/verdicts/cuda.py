"""The GPU messages the ML libraries print, what each means and whose fault it is, and the fixes.

The GPU messages matched here are the libraries' own, quoted from their source:

* torch, ``c10/cuda/CUDAFunctions.cpp`` (``device_count_impl``), emitted as the
  ``UserWarning`` "CUDA initialization: <message>" by ``c10::cuda::device_count()`` and
  raised as ``RuntimeError`` by ``torch.cuda._lazy_init()``:
  "The NVIDIA driver on your system is too old (found version N)",
  "Found no NVIDIA driver on your system", "CUDA driver initialization failed, you might
  not have a CUDA gpu.", "CUDA unknown error - this may be due to an incorrectly set up
  environment".
* torch, ``torch/cuda/__init__.py``: ``_check_capability``/``_warn_unsupported_code``
  ("Found GPU0 <name> which is of compute capability (CC) X.Y", "does not include kernels
  for this GPU", "No published PyTorch CUDA builds ... support this GPU") and the older
  ``_check_cubins`` ("with CUDA capability sm_XY is not compatible with the current
  PyTorch installation").
* The CUDA runtime's string for ``cudaErrorNoKernelImageForDevice``: "no kernel image is
  available for execution on the device".
* The CUDA runtime's string for ``cudaErrorUnsupportedPtxVersion`` (driver
  ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION``, 222): "the provided PTX was compiled with an
  unsupported toolchain." -- PTX from a newer toolkit than the driver can JIT: a pair fault.

xgboost's own messages are quoted in :mod:`.xgboost`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .common import _driver_cuda, _fmt, _version_tuple
from .gpu import CUINIT_ERRORS, explain_cuinit

__all__ = ["TORCH_CUDA_VARIANTS", "TORCH_CUDA_VARIANTS_AARCH64", "classify_cuda_message", "message_fix",
           "torch_cuda_index", "torch_variants"]

#: The CUDA variants PyTorch publishes for each release (``https://download.pytorch.org/whl/cuXY``):
#: the "Stable CUDA" and "Experimental CUDA" columns of the Release Compatibility Matrix in
#: pytorch/pytorch ``RELEASE.md`` (cited in tests/data/ml/README.md).  Only these are ever named.
TORCH_CUDA_VARIANTS: dict[tuple[int, int], tuple[str, ...]] = {
    (1, 12): ("11.3", "11.6"), (1, 13): ("11.6", "11.7"), (2, 0): ("11.7", "11.8"),
    (2, 1): ("11.8", "12.1"), (2, 2): ("11.8", "12.1"), (2, 3): ("11.8", "12.1"),
    (2, 4): ("11.8", "12.1", "12.4"), (2, 5): ("11.8", "12.1", "12.4"), (2, 6): ("11.8", "12.4", "12.6"),
    (2, 7): ("11.8", "12.6", "12.8"), (2, 8): ("12.6", "12.8", "12.9"), (2, 9): ("12.6", "12.8", "13.0"),
    (2, 10): ("12.6", "12.8", "13.0"), (2, 11): ("12.6", "12.8", "13.0"), (2, 12): ("12.6", "13.0", "13.2"),
    (2, 13): ("12.6", "13.0", "13.2"), (2, 14): ("12.6", "13.0", "13.2"),
}
#: The CUDA variants PyTorch builds for Linux aarch64 (Grace Hopper, GB200: ``manylinux_2_28_aarch64``
#: wheels), a subset of the x86_64 ones: pytorch/pytorch ``.github/scripts/generate_binary_build_matrix.py``
#: ``CUDA_AARCH64_ARCHES``, read in the revisions whose ``CUDA_ARCHES`` are those releases' x86_64 variants
#: (2.7: ``["12.8-aarch64"]`` beside ``["11.8", "12.6", "12.8"]``, revision 00018c94; 2.9: ``["12.6-aarch64",
#: "12.8-aarch64", "13.0-aarch64"]`` beside ``["12.6", "12.8", "13.0"]``).  A release not listed here is not
#: guessed: the fix names no index for it.
TORCH_CUDA_VARIANTS_AARCH64: dict[tuple[int, int], tuple[str, ...]] = {
    (2, 7): ("12.8",), (2, 9): ("12.6", "12.8", "13.0")}
#: ``platform.machine()`` names of the architectures PyTorch builds CUDA wheels for.
_AARCH64 = ("aarch64", "arm64")
#: CUDA minor-version compatibility (NVIDIA, "CUDA Compatibility", Minor Version Compatibility,
#: Table 1): a build for CUDA X.y runs on every driver of the same major X (X.0's driver branch
#: and later: 11.x >= 450, 12.x >= 525, 13.x >= 580), and on every later major.
_PREVIOUS_VERSIONS = "https://pytorch.org/get-started/previous-versions/"


def _variant_runs(variant: str, driver: Sequence[int]) -> bool:
    v = _version_tuple(variant)
    return v is not None and bool(driver) and v[0] <= driver[0]


def _release(version: Any) -> tuple[int, int] | None:
    """``"2.13.0+cu130"`` -> ``(2, 13)``, the key of :data:`TORCH_CUDA_VARIANTS`."""
    v = _version_tuple(str(version or ""))
    return (v[0], v[1]) if v and len(v) >= 2 else None


def torch_variants(machine: str | None = None) -> dict[tuple[int, int], tuple[str, ...]]:
    """The published CUDA variants per release for this CPU architecture: x86_64's table, or
    aarch64's (:data:`TORCH_CUDA_VARIANTS_AARCH64`) on an Arm host."""
    return TORCH_CUDA_VARIANTS_AARCH64 if str(machine or "").lower() in _AARCH64 else TORCH_CUDA_VARIANTS


def torch_cuda_index(version: Any, driver: Sequence[int] | None, machine: str | None = None) -> str | None:
    """The ``pip install torch==... --index-url .../cuXY`` that runs on a driver for CUDA *driver*:
    the newest published variant (:func:`torch_variants` for *machine*) of torch *version*'s release
    whose CUDA major the driver has (minor-version compatibility), else of the newest earlier release
    that has one.  None when the release is unknown or no listed release fits."""
    release = _release(version)
    table = torch_variants(machine)
    if release is None or not driver:
        return None
    base = str(version).split("+")[0]
    fits = [v for v in table.get(release, ()) if _variant_runs(v, driver)]
    if fits:
        return f"pip install torch=={base} --index-url https://download.pytorch.org/whl/cu{fits[-1].replace('.', '')}"
    if release not in table:
        return None
    for older in sorted((r for r in table if r < release), reverse=True):
        fits = [v for v in table[older] if _variant_runs(v, driver)]
        if fits:
            return (f"pip install 'torch=={older[0]}.{older[1]}.*' --index-url https://download.pytorch.org/whl/"
                    f"cu{fits[-1].replace('.', '')} (torch {release[0]}.{release[1]} has no build for a CUDA "
                    f"{driver[0]}.x driver; {older[0]}.{older[1]} is the newest release that has one)")
    return None


def _torch_cuda_fix(version: Any, host: Mapping[str, Any]) -> str:
    """What to install instead of a CPU-only torch *version*: the variant for the host's driver when
    it is known, else the variants published for that release (never an index that does not exist)."""
    base = str(version or "").split("+")[0]
    machine = host.get("machine")
    pick = torch_cuda_index(version, _driver_cuda(host), machine)
    if pick:
        return f"install a CUDA build of torch: {pick} (it runs on this host's driver, CUDA {host.get('cuda_version')})"
    release = _release(base)
    variants = torch_variants(machine).get(release, ()) if release else ()
    if release and not variants and str(machine or "").lower() in _AARCH64:
        return (f"install a CUDA build of torch {base} for aarch64: PyTorch builds fewer CUDA variants for aarch64 "
                "than for x86_64, so take a cuXY index that has its manylinux_2_28_aarch64 wheel (pip download "
                f"torch=={base} --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 --index-url "
                "https://download.pytorch.org/whl/cuXY tells) whose CUDA major the host driver has")
    if release and variants:
        names = ", ".join("cu" + v.replace(".", "") for v in variants)
        return (f"install a CUDA build of torch, e.g. pip install torch=={base} --index-url "
                f"https://download.pytorch.org/whl/cu{variants[0].replace('.', '')}: torch {release[0]}.{release[1]} "
                f"is published for {names}; take the newest whose CUDA major the GPU hosts' driver has "
                "(12.x needs a driver >= 525, 13.x >= 580)")
    return (f"install a CUDA build of torch {base} from the cuXY index that {_PREVIOUS_VERSIONS} lists for it "
            "(take the newest whose CUDA major the GPU hosts' driver has)")


#: (needle in the library's own message, fault, what it means) -- see the module docstring.
_CUDA_MESSAGES: tuple[tuple[str, str, str], ...] = (
    ("driver on your system is too old", "pair",
     "the image's CUDA runtime is newer than the host driver supports"),
    ("the provided PTX was compiled with an unsupported toolchain", "pair",
     "the build ships PTX from a newer CUDA toolkit than the host driver can JIT-compile"),
    ("no kernel image is available for execution on the device", "image",
     "the build has no kernels for this GPU's architecture"),
    ("is not compatible with the current PyTorch installation", "image",
     "the torch build has no kernels for this GPU's architecture"),
    ("does not include kernels for this GPU", "image",
     "the torch build has no kernels for this GPU's architecture"),
    ("No published PyTorch CUDA builds", "image",
     "no torch CUDA build of this release supports this GPU"),
    ("Found no NVIDIA driver on your system", "host",
     "the NVIDIA driver libraries are not visible inside the image"),
    ("CUDA driver initialization failed", "host", "the CUDA driver failed to initialize in the image"),
    ("CUDA unknown error", "host", "CUDA failed to initialize (device nodes, CUDA_VISIBLE_DEVICES)"),
    # cudaGetErrorString(cudaErrorDevicesUnavailable, 46): a context refused (driver_types.h: "Devices
    # are often busy/unavailable due to use of cudaComputeModeProhibited, cudaComputeModeExclusiveProcess").
    ("busy or unavailable", "host",
     "the GPU refused a new CUDA context: it is in an exclusive or prohibited compute mode and another "
     "process holds it, or another workload fills it"),
    ("out of memory", "host", "the GPU is out of memory"),
)

#: torch's cudaGetDeviceCount() failure (c10/cuda/CUDAFunctions.cpp, device_count_impl):
#: "... Error <code>: <cudaGetErrorString>".  The runtime's codes 34, 802, 803 and 804 are the driver's
#: CUresult values of the same name (driver_types.h / cuda.h), so cuInit's table reads them.
_DEVICE_COUNT_ERROR = re.compile(r"cudaGetDeviceCount\(\).*?Error (\d+): ", re.DOTALL)
_SHARED_CODES = (34, 802, 803, 804)
#: cudaGetErrorString() of those codes, wherever a library quotes them without the number.
_RUNTIME_TEXTS = {"system not yet initialized": 802,  # cudaErrorSystemNotReady
                  "forward compatibility was attempted on non supported hw": 804}  # ...CompatNotSupportedOnDevice


def _cuda_code(text: str) -> int | None:
    """The CUDA error code a message carries, when cuInit's table (:data:`CUINIT_ERRORS`) knows it."""
    m = _DEVICE_COUNT_ERROR.search(text)
    if m and int(m.group(1)) in _SHARED_CODES:
        return int(m.group(1))
    low = text.lower()
    return next((code for said, code in _RUNTIME_TEXTS.items() if said in low), None)
#: torch's out-of-memory text (c10/cuda/CUDACachingAllocator.cpp, quoted in PyTorch's own docs): "GPU 0
#: has a total capacity of 79.11 GiB of which 2.93 GiB is free. ... this process has 76.17 GiB memory in use."
_OOM_TOTAL = re.compile(r"total capac\w* of ([\d.]+) (GiB|MiB)")
_OOM_SELF = re.compile(r"this process has ([\d.]+) (GiB|MiB) memory in use")


def _gib(value: str, unit: str) -> float:
    return float(value) / (1024.0 if unit == "MiB" else 1.0)


def _oom(text: str) -> tuple[str, str, str] | None:
    """``(fault, meaning, fix)`` for torch's out-of-memory text when it says who holds the memory."""
    total, mine = _OOM_TOTAL.search(text), _OOM_SELF.search(text)
    if not (total and mine):
        return None
    t, m = _gib(*total.groups()), _gib(*mine.groups())
    if m >= 0.5 * t:
        return ("pair", f"this workload alone uses {m:.1f} of the GPU's {t:.1f} GiB: it does not fit this GPU",
                "run it on a GPU with more memory, or make it smaller (a smaller model, float16/bfloat16, a "
                "smaller batch)")
    return ("host", f"other processes hold the GPU's memory (this process uses {m:.1f} of {t:.1f} GiB)",
            "free the GPU: nvidia-smi lists the processes that hold it; under Slurm request a whole GPU")


def classify_cuda_message(text: str) -> tuple[str, str] | None:
    """``(fault, meaning)`` for a known torch/CUDA/xgboost GPU message, else None."""
    code = _cuda_code(text)
    if code is not None:
        _name, fault, meaning, _fix = CUINIT_ERRORS[code]
        return fault or "host", meaning
    oom = _oom(text) if "out of memory" in text.lower() else None
    if oom is not None:
        return oom[0], oom[1]
    for needle, fault, meaning in _CUDA_MESSAGES:
        if needle.lower() in text.lower():
            return fault, meaning
    return None


def _busy_fix(host: Mapping[str, Any]) -> str:
    """The fix for a refused context (cudaErrorDevicesUnavailable, "busy or unavailable"), judged with
    the GPUs' compute modes (``gpu_modes``, read before any probe started) and the processes
    nvidia-smi lists with a CUDA context (``gpu_processes``: re-read when the verdict is made, see
    :func:`~.hostinfo.with_gpu_processes`).  This run's own probes are not the cause on an exclusive
    GPU: they create their contexts one at a time there (:func:`~.scheduling.exclusive_gpus`)."""
    modes = host.get("gpu_modes") or {}
    held = {str(i): str(m.get("compute_mode")) for i, m in sorted(modes.items())
            if isinstance(m, Mapping) and str(m.get("compute_mode", "")).startswith(("Exclusive", "Prohibited"))}
    said = "; ".join(f"GPU {i} is in {mode} compute mode" for i, mode in held.items())
    if any(mode == "Prohibited" for mode in held.values()):
        return f"{said} (nvidia-smi): no process may use it; have it set to Default (nvidia-smi -c DEFAULT, as root)"
    apps = host.get("gpu_processes")
    listed = ", ".join(f"pid {a.get('pid')} {a.get('process_name')} ({a.get('used_memory')}) on {a.get('gpu_uuid')}"
                       for a in apps or [] if isinstance(a, Mapping))
    if held:
        if listed:
            return (f"{said} (nvidia-smi), and another process holds its one context: {listed}; this run's CUDA probes "
                    "ran one at a time, so it is not theirs: wait for it to end or free the GPU, and under a scheduler "
                    "make sure jobs get the GPU exclusively")
        if apps is not None:
            return (f"{said} (nvidia-smi), and nvidia-smi lists no process holding it: the holder is one it cannot "
                    "see (another container or PID namespace; inside a container nvidia-smi shows only its own), or it "
                    "ended meanwhile; this run's CUDA probes ran one at a time, so it is not theirs: look on the node "
                    "itself (nvidia-smi as root, outside containers)")
        return (f"{said} (nvidia-smi): another process holds its one context (this run's CUDA probes ran one at a "
                "time); nvidia-smi could not list the processes: look on the node (nvidia-smi as root)")
    if listed:
        return (f"the GPU is in Default compute mode, so 'busy' is not the mode: other processes use it ({listed}); "
                "free the GPU, or under a scheduler request a whole GPU")
    return ("the GPU is in Default compute mode and nvidia-smi lists no other process: look at the node itself "
            "(nvidia-smi as root, the kernel log for Xid errors); a GPU in an error state needs a reset")


def message_fix(text: str, host: Mapping[str, Any]) -> str | None:
    """The fix a known message names by itself (802, 804, a busy GPU, out of memory), else None."""
    code = _cuda_code(text)
    if code is not None:
        known = explain_cuinit(code, "", None, host)  # 802 depends on the host's NVSwitch
        return known[3] if known else CUINIT_ERRORS[code][3]
    low = text.lower()
    if "busy or unavailable" in low:
        return _busy_fix(host)
    if "out of memory" in low:
        oom = _oom(text)
        return oom[2] if oom else ("free the GPU (nvidia-smi lists the processes that hold it), or run a smaller "
                                   "workload / use a GPU with more memory")
    return None


def _first_known(messages: Iterable[str]) -> tuple[str, str, str] | None:
    """``(message, fault, meaning)`` for the first known GPU message, else None."""
    for msg in messages:
        hit = classify_cuda_message(msg)
        if hit is not None:
            return msg, hit[0], hit[1]
    return None


def _pair_fix(library: str, build: tuple[int, ...] | None, driver: tuple[int, ...] | None,
              host: Mapping[str, Any], version: Any = None) -> str:
    """Install a build the host driver runs (CUDA minor-version compatibility: any build of the driver's
    CUDA major), naming only published torch indexes, or upgrade the driver."""
    drv = host.get("driver_version") or "?"
    major = f"{driver[0]}.x" if driver else "?"
    if library == "torch":
        pick = torch_cuda_index(version, driver, host.get("machine"))
        wheel = (f"a torch build that runs on this driver's CUDA {_fmt(driver)}: {pick}" if pick else
                 f"a torch build for CUDA {major} or older (the cuXY indexes {_PREVIOUS_VERSIONS} lists for "
                 "your torch release)")
    else:
        wheel = (f"an {library} build for CUDA {major} or older (any {major} build runs on this driver: CUDA "
                 "minor-version compatibility)")
    return (f"install {wheel} in the image, or upgrade the host driver ({drv}) to one that supports "
            f"CUDA {_fmt(build)}")


def _fault_fix(fault: str, library: str, build: tuple[int, ...] | None, driver: tuple[int, ...] | None,
               host: Mapping[str, Any], arch: str = "", *, message: str = "", version: Any = None) -> str:
    """The fix for *fault*; a *message* that names its own fix (:func:`message_fix`) wins."""
    named = message_fix(message, host) if message else None
    if named:
        return named
    if fault == "pair":
        return _pair_fix(library, build, driver, host, version)
    if fault == "image":
        return (f"install a {library} build whose kernels include {arch or 'this GPU architecture'} "
                f"(torch.cuda.get_arch_list() must list it; newer GPUs need newer CUDA builds)")
    return ("start the image with GPU access and the driver libraries (Docker --gpus all with the NVIDIA "
            "Container Toolkit, Apptainer --nv); check CUDA_VISIBLE_DEVICES and that nothing else fills the GPU")
