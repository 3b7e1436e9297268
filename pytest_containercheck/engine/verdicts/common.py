"""What the ML verdicts (torch, xgboost, transformers) share: tolerances, version numbers, the GPU intent.

Each ML row reads one probe's facts (``probes/torch_device.py``, ``probes/xgboost_train.py``,
``probes/transformers_infer.py``) and, for GPU rows, the host facts
(:mod:`pytest_containercheck.engine.hostinfo`), and returns a :class:`Verdict`.  Nothing here runs a
probe or touches pytest, so every rule is unit-tested on facts recorded from real runs
(``tests/data/ml/``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..verdict import failed, passed, skipped

__all__ = ["CPU_ATOL", "CPU_RTOL", "DEVICE_ATOL", "DEVICE_RTOL", "HALF_RTOL", "XGB_MAX_ACCURACY_GAP",
           "XGB_MIN_ACCURACY", "arch_supports", "gpu_intent", "within"]

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
