"""Verdicts for the ML rows (torch, xgboost, transformers): pure functions of probe facts.

Each function takes the facts a probe reported (``probes/torch_device.py``,
``probes/xgboost_train.py``, ``probes/transformers_infer.py``) and, for GPU rows, the host
facts (:mod:`pytest_containercheck.engine.hostinfo`), and returns a :class:`Verdict`.  Nothing
here runs a probe or touches pytest, so every rule is unit-tested on facts recorded from
real runs (``tests/data/ml/``).

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
* xgboost, ``src/context.cc`` (``CUDAOrdinal``): "No visible GPU is found, setting device
  to CPU." -- logged, not raised, when ``cudaGetDeviceCount`` fails or finds nothing
  (``src/common/cuda_rt_utils.cc``, ``AllVisibleGPUs``), so a driver too old for the
  wheel's CUDA looks exactly like a missing GPU.  xgboost 3.x then also logs "Device is
  changed from GPU to CPU as we couldn't find any available GPU on the system." -- and
  a build without CUDA (``xgboost-cpu``) logs only that second line (observed with
  3.2.0, ``tests/data/ml/``): the warning blames the system even when the wheel is at
  fault, which is why ``build_info()`` decides.
* xgboost 1.x, ``GenericParameter::ConfigureGpuId`` (``src/learner.cc``; ``Context`` in
  ``src/context.cc`` from 1.7): 1.x has no ``device`` parameter, GPU training is
  ``tree_method="gpu_hist"``, the config stores only ``gpu_id``, and with no visible GPU it
  logs "No visible GPU is found, setting `gpu_id` to -1" (:func:`xgboost_booster_device`).
* The CUDA runtime's string for ``cudaErrorUnsupportedPtxVersion`` (driver
  ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION``, 222): "the provided PTX was compiled with an
  unsupported toolchain." -- PTX from a newer toolkit than the driver can JIT: a pair fault.
* Version mismatches at import time (:func:`version_mismatch`): NumPy's own text for a module
  built against NumPy 1.x ("A module that was compiled using NumPy 1.x cannot be run in NumPy
  2.x", then ``_ARRAY_API not found`` / ``numpy.core.multiarray failed to import``), and
  transformers' ``PYTORCH_IMPORT_ERROR`` ("{0} requires PyTorch >= 2.6, but PyTorch was not
  found or an older version is installed", ``transformers/utils/import_utils.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..verdict import NOT_INSTALLED, Verdict, failed, passed, skipped
from .gpu import CUINIT_ERRORS, explain_cuinit

__all__ = [
    "CPU_ATOL",
    "CPU_RTOL",
    "DEVICE_ATOL",
    "DEVICE_RTOL",
    "HALF_RTOL",
    "XGB_MAX_ACCURACY_GAP",
    "XGB_MIN_ACCURACY",
    "Verdict",
    "arch_supports",
    "classify_cuda_message",
    "gpu_intent",
    "torch_cpu",
    "torch_cuda",
    "torch_cuda_build",
    "transformers_cache",
    "transformers_cpu",
    "transformers_cuda",
    "transformers_cuda_build",
    "version_mismatch",
    "within",
    "xgboost_booster_device",
    "xgboost_cpu",
    "xgboost_cuda",
    "xgboost_cuda_build",
]

#: float32 on the CPU against a float64 run of the same computation.  The inputs are
#: O(1), the reductions a few hundred terms long: float32 rounding (2**-24 per
#: operation) stays near 1e-6 relative; 1e-4 of the largest output leaves two orders
#: of magnitude of margin and still catches a wrong kernel, which is off by O(1).
CPU_RTOL = 1e-4
CPU_ATOL = 1e-6
#: A GPU against the CPU, both float32.  cuDNN convolutions may use TF32 by default
#: (``torch.backends.cudnn.allow_tf32`` is True): a 10-bit mantissa, unit roundoff
#: 2**-11 ~ 4.9e-4, accumulated over the reduction.  1e-2 of the largest output admits
#: that and different summation orders; a broken kernel or a wrong architecture gives
#: O(1) differences, NaN or garbage.
DEVICE_RTOL = 1e-2
DEVICE_ATOL = 1e-4
#: Real models in float16/bfloat16 (``--hf-model``): 8-11 bit mantissas through many layers.
HALF_RTOL = 1e-1
#: The synthetic xgboost task is a noisy linear rule; 20 rounds of depth-4 trees reach
#: 0.92 on held-out rows (measured on CPU).  Below 0.85 the build trains garbage.
XGB_MIN_ACCURACY = 0.85
#: GPU ``hist`` and CPU ``hist`` build slightly different trees; their accuracies agree
#: within a few held-out rows.
XGB_MAX_ACCURACY_GAP = 0.05

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


_pass = passed
_skip = skipped
_fail = failed


# -- shared helpers ---------------------------------------------------------------------------


def within(diff: Mapping[str, Any] | None, rtol: float, atol: float) -> bool:
    """True when a probe's ``{max_abs_diff, max_abs_ref, finite}`` is within tolerance.

    The bound is ``atol + rtol * max|reference|``: relative to the output's scale, so the
    same rule fits logits of 0.6 and hidden states of 40.
    """
    if not diff or not diff.get("finite"):
        return False
    got = diff.get("max_abs_diff")
    ref = diff.get("max_abs_ref")
    if not isinstance(got, (int, float)) or not isinstance(ref, (int, float)) or math.isnan(got):
        return False
    return bool(got <= atol + rtol * abs(ref))


def _rel(diff: Mapping[str, Any] | None) -> str:
    if not diff or diff.get("max_abs_diff") is None:
        return "n/a"
    ref = abs(diff.get("max_abs_ref") or 0.0)
    return f"{diff['max_abs_diff'] / ref:.1e}" if ref else f"{diff['max_abs_diff']:.1e} abs"


def _version_tuple(value: Any) -> tuple[int, ...] | None:
    """``"12.9"`` / ``[12, 9]`` / ``"12.9.1"`` -> ``(12, 9)``; None when absent or odd."""
    if isinstance(value, (list, tuple)):
        parts = [int(v) for v in value[:2] if isinstance(v, int)]
        return tuple(parts) if parts else None
    if isinstance(value, str):
        m = re.match(r"^(\d+)(?:\.(\d+))?", value.strip())
        if m:
            return (int(m.group(1)), int(m.group(2) or 0))
    return None


def _fmt(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "?"


def _driver_cuda(host: Mapping[str, Any], driver_facts: Mapping[str, Any] | None = None) -> tuple[int, ...] | None:
    """The newest CUDA the host driver supports: nvidia-smi's banner, else libcuda in the image."""
    v = _version_tuple(host.get("cuda_version"))
    if v is None and driver_facts:
        v = _version_tuple(driver_facts.get("version"))
    return v


def _warning_texts(warnings: Iterable[Mapping[str, Any]] | None) -> list[str]:
    return [str(w.get("message", "")) for w in warnings or () if isinstance(w, Mapping)]


def _first_line(text: str, limit: int = 220) -> str:
    line = " ".join(text.strip().split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def gpu_intent(*, row: str, host: Mapping[str, Any], require_gpu: bool, required_rows: Sequence[str],
               image_env: Mapping[str, Any] | None, declared: str | None = None,
               declared_by: str = "") -> str | None:
    """Why this image is *meant* to compute on a GPU here, or None when nothing says so.

    A CPU-only torch build is a legitimate choice for a CPU image (PyTorch's own install
    matrix offers a "CPU" platform), so it fails the ``torch.cuda`` row only when GPU use
    is expected.  An intent the image's expectations *declared* (``gpu`` or ``cpu``, from its
    label ``org.containercheck.intent`` or the repository's file, *declared_by*) decides;
    without one it is guessed: the host has a GPU, the run is a GPU gate (``--require-gpu``),
    the row is declared required (``containercheck_require``), or the image was built on an
    NVIDIA CUDA base image, whose Dockerfiles set ``CUDA_VERSION`` and ``NVIDIA_REQUIRE_CUDA``.
    """
    if declared == "cpu":
        return None  # a CPU image: a CPU-only build is what it promises, on any host
    if declared == "gpu":
        return f"the image's intent is gpu ({declared_by or 'declared'})"
    if host.get("has_gpu"):
        return f"the host has {host.get('gpu_summary') or 'a GPU'}"
    if require_gpu:
        return "--require-gpu was given"
    if row in required_rows:
        return f"row {row} is required (containercheck_require)"
    env = image_env or {}
    for key in ("NVIDIA_REQUIRE_CUDA", "CUDA_VERSION"):
        if env.get(key):
            return f"the image is built on an NVIDIA CUDA base image ({key}={_first_line(str(env[key]), 60)})"
    return None


def arch_supports(arch_list: Sequence[str], capability: Sequence[int]) -> bool | None:
    """Can a build with *arch_list* (``torch.cuda.get_arch_list()``) run on *capability*?

    Rules of NVIDIA's CUDA C++ Programming Guide ("Binary Compatibility", "PTX
    Compatibility"): a cubin ``sm_XY`` runs on compute capability X.Z with Z >= Y (same
    major only); PTX ``compute_XY`` is JIT-compiled for any capability >= X.Y;
    architecture-specific ``sm_XYa`` runs on X.Y exactly, family-specific ``sm_XYf`` on
    X.Z with Z >= Y.  None when the list has no CUDA entries (ROCm ``gfx...``, empty).
    """
    if len(capability) < 2:
        return None
    device = int(capability[0]) * 10 + int(capability[1])
    seen = False
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)([af]?)", str(arch))
        if not m:
            continue
        seen = True
        kind, code, suffix = m.group(1), int(m.group(2)), m.group(3)
        same_major = code // 10 == device // 10
        if suffix == "a":
            ok = code == device
        elif kind == "sm":
            ok = same_major and device >= code
        else:
            ok = device >= code
        if ok:
            return True
    return False if seen else None


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


# -- torch --------------------------------------------------------------------------------------


_NO_TMP = "No usable temporary directory"
_NO_TMP_FIX = ("give the container a writable /tmp (docker run --tmpfs /tmp; Apptainer binds /tmp unless "
               "--contain is given) or point TMPDIR at a writable directory")


#: NumPy's own messages for an extension module compiled against NumPy 1.x imported under
#: NumPy 2.x (``numpy/core/_multiarray_umath.py``, and the C-API import that follows it).
_NUMPY_ABI = ("compiled using NumPy 1.x", "_ARRAY_API not found", "numpy.core.multiarray failed to import",
              "numpy._core.multiarray failed to import")
#: transformers' ``PYTORCH_IMPORT_ERROR`` (utils/import_utils.py): its torch floor.
_TF_TORCH_FLOOR = re.compile(r"requires PyTorch >= ?([0-9][0-9.]*), but PyTorch was not found or an older version")
#: transformers 4.x's ``PYTORCH_IMPORT_ERROR`` (4.57.6: "{0} requires the PyTorch library but it was not
#: found in your environment. Check out the instructions ..."), raised whenever it disabled torch, and
#: the warning it logs when it does ("Disabling PyTorch because PyTorch >= 2.1 is required but found X";
#: 5.x logs the same words with its own floor).
_TF4_NO_TORCH = "requires the PyTorch library but it was not found in your environment"
_TF_DISABLED = re.compile(r"Disabling PyTorch because PyTorch >= ?([0-9][0-9.]*) is required but found (\S+)")


def version_mismatch(library: str, err: str, versions: Mapping[str, Any] | None = None,
                     log: str = "") -> tuple[str, str] | None:
    """``(what, fix)`` when *library*'s import error is two packages of the image that do
    not fit together (not a missing system library); None otherwise.

    *versions* holds what the probe could read without importing (distribution versions); *log*
    what the library logged (transformers 4.x names its torch floor only there).
    """
    versions = versions or {}
    if any(needle in err for needle in _NUMPY_ABI):
        numpy = versions.get("numpy")
        return (f"{library} was built against NumPy 1.x but the image has NumPy {numpy or '2.x'}",
                f"install numpy<2 in the image, or upgrade {library} to a release built for NumPy 2")
    m = _TF_TORCH_FLOOR.search(err)
    floor = m.group(1) if m else None
    if floor is None and _TF4_NO_TORCH in err:
        # 4.x words it without a version; the floor is in the line it logged when it disabled torch.
        disabled = _TF_DISABLED.search(log)
        floor = disabled.group(1) if disabled else ""
    torch = versions.get("torch")
    if floor is not None and torch:
        tf = f"transformers {versions.get('transformers')}" if versions.get("transformers") else "transformers"
        if floor:
            return (f"{tf} needs torch >= {floor}, the image has torch {torch}",
                    f"upgrade torch to >= {floor} in the image, or install a transformers release that supports "
                    f"torch {torch}")
        return (f"{tf} does not use the image's torch {torch}: it says PyTorch was not found although torch is "
                "installed (it disables a torch below its floor)",
                f"upgrade torch in the image (the floor is in transformers' log: 'Disabling PyTorch because PyTorch "
                f">= X is required'), or install a transformers release that supports torch {torch}")
    return None


def transformers_torch_mismatch(facts: Mapping[str, Any], err: str) -> tuple[str, str] | None:
    """``(what, fix)`` when *err* (an import error, or a model's build error: transformers 5.x raises
    its torch floor only when a model is built) is transformers refusing the image's torch, from the
    versions the probe always records and the lines transformers logged (``import_log``)."""
    dist = facts.get("dist_versions") or {}
    versions = {"torch": facts.get("torch_version") or dist.get("torch"),
                "transformers": facts.get("version") or dist.get("transformers"), "numpy": dist.get("numpy")}
    return version_mismatch("transformers", err, versions, " ".join(map(str, facts.get("import_log") or [])))


def _import_failure(library: str, err: str, fix: str, versions: Mapping[str, Any] | None = None,
                    raw: str | None = None) -> Verdict:
    if _NO_TMP in err:
        # Python's tempfile found no writable directory: the launch made the whole
        # filesystem read-only (docker --read-only without --tmpfs), not the image.
        return _fail(f"{library} does not import: {err}", _NO_TMP_FIX, "host")
    mismatch = version_mismatch(library, raw or err, versions)
    if mismatch is not None:
        return _fail(f"{library} does not import: {mismatch[0]} ({err})", mismatch[1], "image")
    return _fail(f"{library} is installed but does not import: {err}", fix, "image")


def _not_importable(facts: Mapping[str, Any], library: str, fix: str) -> Verdict | None:
    """Skip when *library* is absent; fail when it is installed but does not import."""
    if facts.get("installed"):
        return None
    err = _first_line(str(facts.get("error")), 200)
    if facts.get("found"):
        return _import_failure(library, err, fix, facts.get("dist_versions"), str(facts.get("error")))
    return _skip(f"{library} is {NOT_INSTALLED} ({err})", missing=library)


def _torch_not_installed(facts: Mapping[str, Any]) -> Verdict | None:
    return _not_importable(facts, "torch", "see the evidence; a missing system library (ldd on torch/lib/*.so "
                           "names it) or a wheel for another Python/platform")


def torch_cpu(facts: Mapping[str, Any]) -> Verdict:
    """``torch.cpu``: a matmul and a conv on the CPU agree with float64."""
    skip = _torch_not_installed(facts)
    if skip:
        return skip
    version = facts.get("version")
    ops = (facts.get("ops") or {}).get("cpu") or {}
    if not ops.get("ok"):
        return _fail(f"torch {version}: matmul/conv on the CPU raised {ops.get('error')}",
                     "reinstall torch in the image; the evidence has the exception", "image")
    for op in ("matmul", "conv"):
        if not within(ops.get(op), CPU_RTOL, CPU_ATOL):
            return _fail(f"torch {version}: {op} on the CPU differs from float64 by {_rel(ops.get(op))} "
                         f"of its largest value (limit {CPU_RTOL:g}): {ops.get(op)}",
                         "the CPU kernels compute wrong results: reinstall torch, check the CPU's "
                         "instruction set against the wheel's (e.g. an AVX-512 build on an old CPU)", "image")
    return _pass(f"torch {version}: matmul+conv on cpu match float64 (rel {_rel(ops.get('matmul'))}, "
                 f"{_rel(ops.get('conv'))}) in {ops.get('seconds', 0) * 1000:.1f} ms")


def _cpu_only_build(version: Any, cuda: Any, hip: Any) -> str | None:
    if cuda or hip:
        return None
    return f"torch {version} is a CPU-only build (torch.version.cuda and torch.version.hip are None)"


def torch_cuda_build(facts: Mapping[str, Any], intent: str | None, host: Mapping[str, Any]) -> Verdict | None:
    """``torch.cuda`` before any GPU is needed: the image-side defects a CPU-only host sees.

    Returns None when the build could use a GPU (the GPU gate decides next).
    """
    skip = _torch_not_installed(facts)
    if skip:
        return skip
    return (_cpu_only_torch(facts.get("version"), facts.get("cuda_build"), facts.get("hip_build"), intent, host,
                            "{cpu_only}: it can never use a GPU, and {intent}")
            or gpu_vendor_mismatch("torch", facts.get("version"), facts.get("cuda_build"), facts.get("hip_build"),
                                   host))


#: PyTorch publishes ROCm builds on its own index, one per ROCm release (rocmX.Y); AMD publishes
#: images with torch built for ROCm (rocm/pytorch).
_TORCH_ROCM_FIX = ("on an AMD host use a ROCm build of torch: pip install torch --index-url "
                   "https://download.pytorch.org/whl/rocm<X.Y> (the rocmX.Y that pytorch.org lists for your torch "
                   "release), or AMD's rocm/pytorch images; check the host with 'rocm-smi' or 'amd-smi list'; or run "
                   "this image on an NVIDIA host")
_TORCH_CUDA_ON_NVIDIA_FIX = ("on an NVIDIA host use a CUDA build of torch (pip install torch --index-url "
                             "https://download.pytorch.org/whl/cuXYZ), or run this image on an AMD host")


def gpu_vendor_mismatch(library: str, version: Any, cuda_build: Any, hip_build: Any,
                        host: Mapping[str, Any]) -> Verdict | None:
    """A torch built for one GPU vendor on a host whose GPU is the other's: the pair's fault.

    A CUDA build (``torch.version.cuda`` set, ``torch.version.hip`` None) never uses an AMD GPU,
    and a ROCm build (``torch.version.hip`` set) never uses an NVIDIA one.  None when they match
    or the host has no GPU.
    """
    vendor = host.get("gpu_vendor")
    if vendor == "amd" and cuda_build and not hip_build:
        return _fail(f"{library} {version} is a CUDA build (CUDA {cuda_build}) and this host's GPU is AMD "
                     f"({host.get('gpu_summary')}): a CUDA build never runs on an AMD GPU", _TORCH_ROCM_FIX, "pair")
    if vendor == "nvidia" and hip_build and not cuda_build:
        return _fail(f"{library} {version} is a ROCm build (HIP {hip_build}) and this host's GPU is NVIDIA's "
                     f"({host.get('gpu_summary')}): a ROCm build never runs on an NVIDIA GPU",
                     _TORCH_CUDA_ON_NVIDIA_FIX, "pair")
    return None


def _cpu_only_torch(version: Any, cuda_build: Any, hip_build: Any, intent: str | None, host: Mapping[str, Any],
                    failure: str) -> Verdict | None:
    """The verdict on a CPU-only torch build (None when the build could use a GPU).

    An image meant for GPUs (*intent*) fails as the image's fault, with *failure* formatted
    with ``cpu_only`` and ``intent``; otherwise the row skips with the GPU gate's own reason,
    plus what a GPU host would find.
    """
    cpu_only = _cpu_only_build(version, cuda_build, hip_build)
    if cpu_only is None:
        return None
    if intent:
        return _fail(failure.format(cpu_only=cpu_only, intent=intent), _torch_cuda_fix(version, host), "image")
    return _skip(f"{host.get('gpu_summary') or 'host has no GPU'}; note: {cpu_only}")


def torch_cuda(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``torch.cuda`` with a GPU attached: the work provably ran on every CUDA device."""
    early = torch_cuda_build(facts, "a GPU is attached", host)
    if early is not None:
        return early
    version = facts.get("version")
    cuda = facts.get("cuda") or {}
    build = _version_tuple(facts.get("cuda_build"))
    driver = _driver_cuda(host, facts.get("driver"))
    messages = _warning_texts(facts.get("warnings"))
    for key in ("error", "init_error"):
        if cuda.get(key):
            messages.append(str(cuda[key]))
    known = _first_known(messages)

    if not cuda.get("is_available") or cuda.get("init_error") or not cuda.get("device_count"):
        if known:
            msg, fault, meaning = known
            return _fail(f"torch {version} (CUDA {facts.get('cuda_build')}): CUDA unusable, {meaning} "
                         f"(driver CUDA {_fmt(driver)}): {_first_line(msg)}",
                         _fault_fix(fault, "torch", build, driver, host, message=msg, version=version), fault)
        if build and driver and build[0] > driver[0]:
            return _fail(f"torch {version} needs CUDA {_fmt(build)}; the host driver supports CUDA {_fmt(driver)}: "
                         f"torch.cuda.is_available() is False", _pair_fix("torch", build, driver, host, version),
                         "pair")
        env = facts.get("env") or {}
        return _fail(f"torch {version} sees no CUDA device although the image has GPU access "
                     f"(is_available={cuda.get('is_available')}, CUDA_VISIBLE_DEVICES="
                     f"{env.get('CUDA_VISIBLE_DEVICES', 'unset')})", _fault_fix("host", "torch", build, driver, host),
                     "host")

    ops = facts.get("ops") or {}
    arch_list = list(cuda.get("arch_list") or [])
    passed: list[str] = []
    for dev in cuda.get("devices") or []:
        name = f"cuda:{dev.get('index')}"
        label = f"{name} {dev.get('name', '?')}"
        cap = dev.get("capability") or []
        sm = f"sm_{cap[0]}{cap[1]}" if len(cap) == 2 else "?"
        if not facts.get("hip_build") and arch_supports(arch_list, cap) is False:
            fix = _fault_fix("image", "torch", build, driver, host, sm)
            # torch >= 2.10 names the builds that would work in its own warning: use that.
            suggestion = next((m.group(1) for t in messages
                               for m in [re.search(r"use (pip install torch==\S+ --index-url \S+)", t)] if m), None)
            if suggestion:
                fix = f"{fix}, e.g. {suggestion}"
            return _fail(f"torch {version} has no kernels for {label} ({sm}): arch list {' '.join(arch_list)}",
                         fix, "image")
        op = ops.get(name) or {}
        if not op.get("ok"):
            err = str(op.get("error") or "no result for this device")
            c = classify_cuda_message(err)
            op_fault = c[0] if c else None
            fix = (_fault_fix(op_fault, "torch", build, driver, host, sm, message=err, version=version) if op_fault
                   else "see the evidence; rerun with CUDA_LAUNCH_BLOCKING=1 to find the failing kernel")
            said = f"{c[1]}: " if c else ""
            return _fail(f"torch {version}: matmul/conv on {label} failed: {said}{_first_line(err)}", fix, op_fault)
        if op.get("result_device") != name or op.get("conv_result_device") != name:
            return _fail(f"torch {version}: asked for {name} but the result lives on "
                         f"{op.get('result_device')}/{op.get('conv_result_device')} (silent fallback)",
                         "see the evidence: something in the image overrides device placement", "image")
        for kind in ("matmul", "conv"):
            if not within(op.get(kind), DEVICE_RTOL, DEVICE_ATOL):
                return _fail(f"torch {version}: {kind} on {label} differs from the CPU by {_rel(op.get(kind))} "
                             f"of its largest value (limit {DEVICE_RTOL:g}): {op.get(kind)}",
                             _fault_fix("image", "torch", build, driver, host, sm) + "; or the GPU is faulty "
                             "(check dmesg for Xid errors)", None)
        passed.append(f"{label} ({sm}, rel {_rel(op.get('matmul'))}/{_rel(op.get('conv'))})")
    if not passed:
        return _fail(f"torch {version}: CUDA reports {cuda.get('device_count')} device(s) but none ran work",
                     "see the evidence", None)
    selected = (facts.get("selection") or {}).get("selected") or "?"
    if not str(selected).startswith("cuda"):
        return _fail(f"torch {version}: CUDA works, but {facts['selection'].get('api')} selects {selected}",
                     "see the evidence: the image forces the CPU (e.g. CUDA_VISIBLE_DEVICES='')", "image")
    return _pass(f"torch {version} CUDA {facts.get('cuda_build')}: matmul+conv on {', '.join(passed)} match cpu; "
                 f"selected {selected}")


# -- xgboost ------------------------------------------------------------------------------------


def _xgb_not_installed(facts: Mapping[str, Any]) -> Verdict | None:
    return _not_importable(facts, "xgboost", "see the evidence: a missing shared library (the error names it), "
                           "numpy missing, or a wheel for another Python/platform")


def _xgb_name(facts: Mapping[str, Any]) -> str:
    dists = [d.get("name") for d in facts.get("distributions") or [] if isinstance(d, Mapping)]
    suffix = " (xgboost-cpu)" if "xgboost-cpu" in dists else ""
    return f"xgboost {facts.get('version')}{suffix}"


def _xgb_major(facts: Mapping[str, Any]) -> int | None:
    v = _version_tuple(facts.get("version"))
    return v[0] if v else None


def xgboost_booster_device(facts: Mapping[str, Any], run: Mapping[str, Any]) -> str | None:
    """Where a trained booster says it trained: ``cpu``, ``cuda:N``, or None when unknown.

    xgboost >= 2 records it (``learner.generic_param.device``, ``DeviceOrd::Name()``).
    xgboost 1.x has no ``device``: GPU training is ``tree_method="gpu_hist"`` and the config
    keeps only ``gpu_id`` (a string, ``"-1"`` for the CPU), which ``ConfigureGpuId`` resets
    to -1 with "No visible GPU is found, setting `gpu_id` to -1" when no GPU is visible.
    """
    device = run.get("booster_device")
    if device:
        return str(device)
    generic = run.get("generic_param") or {}
    major = _xgb_major(facts)
    if (major is not None and major >= 2) or "gpu_id" not in generic:
        return None
    try:
        gpu_id = int(str(generic.get("gpu_id")))
    except ValueError:
        return None
    tree_method = str(run.get("tree_method") or (run.get("params") or {}).get("tree_method") or "")
    if gpu_id >= 0 and tree_method.startswith("gpu_"):
        return f"cuda:{gpu_id}"
    return "cpu"


def _xgb_gpu_api(facts: Mapping[str, Any]) -> str:
    """How code asks this xgboost for a GPU: the API changed in 2.0."""
    major = _xgb_major(facts)
    if major is not None and major < 2:
        return "xgboost 1.x trains on a GPU with tree_method='gpu_hist' (and gpu_id=N); 'device' is 2.0+"
    return "xgboost >= 2 trains on a GPU with device='cuda' (tree_method='gpu_hist' is deprecated)"


#: xgboost's docs (doc/install.rst, 2.1.0 on): "Starting from 2.1.0, XGBoost Python package will be
#: distributed in two variants: manylinux_2_28: for recent Linux distros with glibc 2.28 or newer. This
#: variant comes with all features enabled. manylinux2014: for old Linux distros with glibc older than
#: 2.28. This variant does not support GPU algorithms or federated learning. The pip package manager will
#: automatically choose the correct variant depending on your system."
XGB_CPU_ONLY_TAG = "manylinux2014"
XGB_GPU_GLIBC = (2, 28)


def _xgb_wheel_tags(facts: Mapping[str, Any]) -> list[str]:
    return [str(t) for d in facts.get("distributions") or [] if isinstance(d, Mapping) and d.get("name") == "xgboost"
            for t in d.get("wheel_tags") or []]


def _xgb_cuda_fix(facts: Mapping[str, Any]) -> str:
    """What to install when this xgboost has no CUDA: depends on where it came from."""
    dists = {d.get("name"): d.get("version") for d in facts.get("distributions") or [] if isinstance(d, Mapping)}
    path = str(facts.get("module_path") or "")
    tags = _xgb_wheel_tags(facts)
    if tags and all(XGB_CPU_ONLY_TAG in t for t in tags) and "xgboost-cpu" not in dists:
        # pip picked the CPU-only manylinux2014 wheel because the image's glibc is older than 2.28:
        # reinstalling from PyPI in the same image picks the same wheel again.
        return (f"this is xgboost's {XGB_CPU_ONLY_TAG} wheel ({', '.join(tags)}), which is CPU-only (xgboost 2.1+ "
                "builds CUDA into its manylinux_2_28 wheel only, and pip takes manylinux2014 where glibc is older "
                "than 2.28): rebuild the image on a base with glibc >= 2.28 (e.g. Debian 10+, Ubuntu 20.04+, "
                "RHEL/Rocky 8+) and pip install xgboost there, or build xgboost from source with -DUSE_CUDA=ON")
    if "xgboost-cpu" in dists:
        return ("install the `xgboost` wheel (CUDA-enabled), not xgboost-cpu: "
                "pip uninstall -y xgboost-cpu && pip install xgboost")
    if facts.get("conda"):
        # xgboost doc/install.rst: conda picks the variant from the GPU it sees, and a build of the
        # image sees none; "GPU variant: conda install -c conda-forge py-xgboost=*=cuda*".
        return ("this xgboost is conda's CPU variant (conda chooses it where it sees no GPU, as in an image "
                "build): conda install -c conda-forge py-xgboost=*=cuda*, with CONDA_OVERRIDE_CUDA=<the CUDA "
                "version> set where the image is built without a GPU")
    system = path.startswith(("/usr/lib/", "/usr/lib64/")) and ("/dist-packages/" in path
                                                                 or "/site-packages/" in path)
    if system or not dists:
        return (f"this xgboost comes from a distribution package ({path or 'no pip metadata'}: Debian/Ubuntu "
                "python3-xgboost, a Fedora/RHEL RPM), built without CUDA: remove it and pip install xgboost (the "
                "PyPI wheel has CUDA), or build xgboost with -DUSE_CUDA=ON")
    return ("this xgboost was built without CUDA (a source build or a custom wheel): rebuild it with "
            "cmake -DUSE_CUDA=ON, or pip install the PyPI `xgboost` wheel (CUDA-enabled)")


def xgboost_cpu(facts: Mapping[str, Any]) -> Verdict:
    """``xgboost.cpu``: device="cpu" training ran on the CPU and learned the task."""
    skip = _xgb_not_installed(facts)
    if skip:
        return skip
    name = _xgb_name(facts)
    run = (facts.get("train") or {}).get("cpu") or {}
    if not run.get("ok"):
        return _fail(f"{name}: training on the CPU raised {run.get('error')}",
                     "reinstall xgboost in the image; the evidence has the exception", "image")
    device = xgboost_booster_device(facts, run)
    if device != "cpu":
        return _fail(f"{name}: asked for cpu, the booster says device={device}",
                     "see the evidence (booster config)", None)
    acc = run.get("accuracy") or 0.0
    if acc < XGB_MIN_ACCURACY:
        return _fail(f"{name}: CPU training reached accuracy {acc:.3f} < {XGB_MIN_ACCURACY} on a learnable task",
                     "the build trains wrong models: reinstall xgboost", "image")
    return _pass(f"{name}: hist on cpu, accuracy {acc:.3f}, {run.get('train_seconds', 0):.2f} s")


def xgboost_cuda_build(facts: Mapping[str, Any], intent: str | None = None,
                       host: Mapping[str, Any] | None = None) -> Verdict | None:
    """``xgboost.cuda`` before any GPU is needed: a build without CUDA, judged like a CPU-only torch.

    A CPU-only xgboost is a legitimate choice for a CPU image (the ``xgboost-cpu`` wheel, conda's
    CPU variant, distribution packages), so it fails only when GPU use is expected (*intent*, from
    :func:`gpu_intent`: a GPU host, ``--require-gpu``, a required row, an NVIDIA CUDA base image) and
    skips otherwise, as torch does.  When it fails, the message says what the library does not:
    such a build trains ``device="cuda"`` models on the CPU with only a warning that blames the
    system ("... couldn't find any available GPU on the system").
    """
    skip = _xgb_not_installed(facts)
    if skip:
        return skip
    info = facts.get("build_info")
    if not isinstance(info, Mapping):
        return None  # xgboost < 1.6: no build_info(); the GPU run decides
    if not info.get("USE_CUDA"):
        what = (f"{_xgb_name(facts)} is built without CUDA (build_info USE_CUDA={info.get('USE_CUDA')}): "
                f"device='cuda' trains on the CPU on every host")
        if intent:
            return _fail(f"{what}, and {intent}", _xgb_cuda_fix(facts), "image")
        return _skip(f"{(host or {}).get('gpu_summary') or 'host has no GPU'}; note: {what}")
    return None


def _xgb_cuinit(facts: Mapping[str, Any],
                host: Mapping[str, Any]) -> tuple[Any, tuple[str, str | None, str, str]] | None:
    """``(code, (name, fault, meaning, fix))`` when ``cuInit`` failed in the xgboost probe's process:
    xgboost says only "No visible GPU" whatever the cause (``AllVisibleGPUs`` swallows the error)."""
    cu = facts.get("libcuda") or {}
    rc = cu.get("cuInit")
    if not cu.get("loaded") or rc in (None, 0):
        return None
    known = explain_cuinit(rc, str(cu.get("path") or "?"), None, host)
    return (rc, known) if known else None


def xgboost_cuda(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``xgboost.cuda`` with a GPU attached: the booster trained on cuda and learned the task."""
    early = xgboost_cuda_build(facts, "a GPU is attached", host)
    if early is not None:
        return early
    name = _xgb_name(facts)
    info = facts.get("build_info") or {}
    build = _version_tuple(info.get("CUDA_VERSION"))
    driver = _driver_cuda(host)
    train = facts.get("train") or {}
    run = train.get("cuda") or {}
    messages = _warning_texts(run.get("warnings")) + ([str(run["log"])] if run.get("log") else [])
    if not run.get("ok"):
        err = str(run.get("error"))
        if "not compiled with GPU support" in err:  # 1.x: common::AssertGPUSupport()
            return _fail(f"{name} is built without CUDA: {_first_line(err)}", _xgb_cuda_fix(facts), "image")
        cuinit = _xgb_cuinit(facts, host)
        if cuinit is not None and "No visible GPU is found" in err:  # 1.x: CHECK_GE(AllVisibleGPUs(), 1)
            rc, (cname, cfault, meaning, cfix) = cuinit
            return _fail(f"{name}: device='cuda' training raised {_first_line(err, 160)}; cuInit returned {rc} "
                         f"({cname}): {meaning}", cfix, cfault)
        c = classify_cuda_message(err)
        if c is None and "No visible GPU is found" in err:
            c = ("host", "no GPU is visible to xgboost")
        fault = c[0] if c else None
        fix = _fault_fix(fault, "xgboost", build, driver, host, message=err) if fault else "see the evidence"
        return _fail(f"{name}: device='cuda' training raised {_first_line(err)}", fix, fault)
    device = str(xgboost_booster_device(facts, run) or "")
    asked = "tree_method='gpu_hist'" if (_xgb_major(facts) or 2) < 2 else "device='cuda'"
    if not device.startswith("cuda"):
        fallback = next((m for m in messages if "No visible GPU" in m or "changed from GPU to CPU" in m), None)
        cuinit = _xgb_cuinit(facts, host)
        if cuinit is not None:
            rc, (cname, cfault, meaning, cfix) = cuinit
            return _fail(f"{name}: {asked} trained on the CPU; cuInit returned {rc} ({cname}): {meaning}"
                         + (f" (xgboost: {_first_line(fallback, 120)})" if fallback else ""), cfix, cfault)
        if build and driver and build[0] > driver[0]:
            return _fail(f"{name} (CUDA {_fmt(build)}) fell back to the CPU: the host driver supports CUDA "
                         f"{_fmt(driver)} only" + (f" ({_first_line(fallback, 120)})" if fallback else ""),
                         _pair_fix("xgboost", build, driver, host), "pair")
        if fallback:
            return _fail(f"{name}: {asked} trained on the CPU: {_first_line(fallback, 160)}",
                         _fault_fix("host", "xgboost", build, driver, host) + f"; {_xgb_gpu_api(facts)}", "host")
        return _fail(f"{name}: {asked} trained on the CPU without a warning (booster device={device or '?'})",
                     f"{_xgb_cuda_fix(facts)}; {_xgb_gpu_api(facts)}", "image")
    acc = run.get("accuracy") or 0.0
    cpu_acc = (train.get("cpu") or {}).get("accuracy")
    if acc < XGB_MIN_ACCURACY or (isinstance(cpu_acc, (int, float)) and abs(acc - cpu_acc) > XGB_MAX_ACCURACY_GAP):
        return _fail(f"{name}: GPU training reached accuracy {acc:.3f} (CPU {cpu_acc}); expected >= "
                     f"{XGB_MIN_ACCURACY} and within {XGB_MAX_ACCURACY_GAP} of the CPU",
                     "the GPU build trains wrong models: check the driver and the xgboost CUDA version", None)
    return _pass(f"{name}: hist on {device} (CUDA {_fmt(build)}), accuracy {acc:.3f} vs cpu {cpu_acc}, "
                 f"{run.get('train_seconds', 0):.2f} s")


# -- transformers -------------------------------------------------------------------------------


def _tf_not_runnable(facts: Mapping[str, Any]) -> Verdict | None:
    if facts.get("installed"):
        return None
    err = _first_line(str(facts.get("error")), 160)
    if facts.get("transformers_installed") is False:
        return _skip(f"transformers is {NOT_INSTALLED}", missing="transformers")
    if facts.get("transformers_installed") and facts.get("torch_installed") is False:
        return _skip(f"transformers is installed but torch is not: no backend to run a model ({err})")
    # Both present but the import failed.
    mismatch = transformers_torch_mismatch(facts, str(facts.get("error")))
    if mismatch is not None and _NO_TMP not in err:
        return _fail(f"transformers does not import: {mismatch[0]} ({err})", mismatch[1], "image")
    return _import_failure("transformers", err, "see the evidence; reinstall transformers and torch with "
                           "matching versions", facts.get("dist_versions"), str(facts.get("error")))


def _model_entries(facts: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(k, v) for k, v in sorted((facts.get("models") or {}).items()) if isinstance(v, Mapping)]


def _rtol_for(run: Mapping[str, Any], base: float) -> float:
    dtype = str(run.get("dtype") or "")
    return max(base, HALF_RTOL) if ("float16" in dtype or "bfloat16" in dtype) else base


def _model_label(key: str, entry: Mapping[str, Any]) -> str:
    return f"{entry.get('class') or key}" + (f" ({entry['path']})" if entry.get("path") else "")


def transformers_cpu(facts: Mapping[str, Any]) -> Verdict:
    """``transformers.cpu``: every model ran on the CPU and agrees with its float64 run."""
    skip = _tf_not_runnable(facts)
    if skip:
        return skip
    version = facts.get("version")
    entries = _model_entries(facts)
    if not entries:
        return _fail(f"transformers {version}: no model ran", "see the evidence", None)
    done: list[str] = []
    for key, entry in entries:
        label = _model_label(key, entry)
        mismatch = transformers_torch_mismatch(facts, str(entry["error"])) if entry.get("error") else None
        if mismatch is not None:
            return _fail(f"transformers {version}: {label} could not be built: {mismatch[0]} "
                         f"({_first_line(str(entry['error']), 160)})", mismatch[1], "image")
        if entry.get("error"):
            real = facts.get("mode") == "model_path"
            return _fail(f"transformers {version}: {label} could not be built: {_first_line(str(entry['error']))}",
                         "check that --hf-model names a model directory inside the image (config.json + weights)"
                         if real else "see the evidence; transformers and torch versions may not match", "image")
        run = entry.get("cpu") or {}
        if not run.get("ok"):
            return _fail(f"transformers {version}: {label} on the CPU raised {_first_line(str(run.get('error')))}",
                         "see the evidence; transformers and torch versions may not match", "image")
        if not run.get("finite", False):
            return _fail(f"transformers {version}: {label} on the CPU produced NaN/inf",
                         "see the evidence", "image")
        ref = run.get("vs_float64")
        if ref is not None and not within(ref, _rtol_for(run, CPU_RTOL), CPU_ATOL):
            return _fail(f"transformers {version}: {label} on the CPU differs from float64 by {_rel(ref)} "
                         f"of its largest output (limit {_rtol_for(run, CPU_RTOL):g})",
                         "the CPU kernels compute wrong results: reinstall torch", "image")
        done.append(f"{label} rel {_rel(ref)}" if ref is not None else label)
    return _pass(f"transformers {version} (torch {facts.get('torch_version')}): {', '.join(done)} on cpu, "
                 f"offline")


def transformers_cuda_build(facts: Mapping[str, Any], intent: str | None,
                            host: Mapping[str, Any]) -> Verdict | None:
    """``transformers.cuda`` before any GPU is needed: a CPU-only torch under it."""
    skip = _tf_not_runnable(facts)
    if skip:
        return skip
    return (_cpu_only_torch(facts.get("torch_version"), facts.get("torch_cuda_build"), facts.get("torch_hip_build"),
                            intent, host, "transformers cannot use a GPU: {cpu_only}, and {intent}")
            or gpu_vendor_mismatch("torch", facts.get("torch_version"), facts.get("torch_cuda_build"),
                                   facts.get("torch_hip_build"), host))


def transformers_cuda(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Verdict:
    """``transformers.cuda`` with a GPU attached: inference ran on cuda and agrees with the CPU."""
    early = transformers_cuda_build(facts, "a GPU is attached", host)
    if early is not None:
        return early
    version = facts.get("version")
    selected = str(facts.get("selected_device") or "cpu")
    if not selected.startswith("cuda"):
        known = _first_known(_warning_texts(facts.get("warnings")))
        build = _version_tuple(facts.get("torch_cuda_build"))
        driver = _driver_cuda(host)
        if known:
            msg, fault, meaning = known
            return _fail(f"transformers {version} would run on {selected}: {meaning}: {_first_line(msg)}",
                         _fault_fix(fault, "torch", build, driver, host, message=msg,
                                    version=facts.get("torch_version")), fault)
        return _fail(f"transformers {version} would run on {selected}: torch selects no CUDA device although "
                     f"the image has GPU access (see the torch.cuda row)",
                     _fault_fix("host", "torch", build, driver, host), "host")
    done: list[str] = []
    for key, entry in _model_entries(facts):
        label = _model_label(key, entry)
        run = entry.get("device") or {}
        if entry.get("error") or not run.get("ok"):
            err = str(entry.get("error") or run.get("error") or "no result on the device")
            mismatch = transformers_torch_mismatch(facts, err)
            if mismatch is not None:
                return _fail(f"transformers {version}: {label} could not be built: {mismatch[0]} "
                             f"({_first_line(err, 160)})", mismatch[1], "image")
            c = classify_cuda_message(err)
            run_fault = c[0] if c else None
            fix = (_fault_fix(run_fault, "torch", _version_tuple(facts.get("torch_cuda_build")), _driver_cuda(host),
                              host, message=err, version=facts.get("torch_version")) if run_fault
                   else "see the evidence")
            return _fail(f"transformers {version}: {label} on {selected} failed: {_first_line(err)}", fix, run_fault)
        if not str(run.get("output_device", "")).startswith("cuda"):
            return _fail(f"transformers {version}: {label} was sent to {selected} but its output is on "
                         f"{run.get('output_device')} (silent fallback)", "see the evidence", "image")
        diff = run.get("vs_cpu")
        rtol = _rtol_for(run, DEVICE_RTOL)
        if not within(diff, rtol, DEVICE_ATOL):
            return _fail(f"transformers {version}: {label} on {selected} differs from the CPU by {_rel(diff)} "
                         f"of its largest output (limit {rtol:g}): {diff}",
                         "the GPU kernels compute wrong results: check the torch build's arch list "
                         "(torch.cuda row) and the GPU (dmesg Xid errors)", None)
        done.append(f"{label} rel {_rel(diff)}")
    if not done:
        return _fail(f"transformers {version}: no model ran on {selected}", "see the evidence", None)
    return _pass(f"transformers {version}: {', '.join(done)} on {selected} match cpu")


def transformers_cache(facts: Mapping[str, Any]) -> Verdict:
    """``transformers.cache``: the hub cache directories resolved in the image are writable."""
    skip = _tf_not_runnable(facts)
    if skip:
        return skip
    dirs = (facts.get("cache") or {}).get("dirs") or {}
    if not dirs:
        return _fail("the probe could not resolve the Hugging Face cache directories", "see the evidence", None)
    bad = [f"{k} {v.get('path')} ({_first_line(str(v.get('error')), 80)})" for k, v in sorted(dirs.items())
           if isinstance(v, Mapping) and not v.get("writable")]
    if bad:
        # Whose fault depends on who set HF_HOME/HOME (image ENV or the runtime): the pair.
        return _fail("Hugging Face cache not writable: " + "; ".join(bad),
                     "point HF_HOME at a writable directory (--container-env HF_HOME=/tmp/hf, or bind one), "
                     "or ship the model in the image and load it from its path with HF_HUB_OFFLINE=1", "pair")
    hub = dirs.get("hub_cache") or next(iter(dirs.values()))
    return _pass(f"HF cache writable: {hub.get('path')}" + ("" if hub.get("exists") else " (will be created)"))
