"""Verdicts for the ``xgboost.cpu`` and ``xgboost.cuda`` rows (``probes/xgboost_train.py``).

The messages matched here are xgboost's own, quoted from its source:

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..verdict import Verdict
from .common import (
    XGB_MAX_ACCURACY_GAP,
    XGB_MIN_ACCURACY,
    _driver_cuda,
    _fail,
    _first_line,
    _fmt,
    _pass,
    _skip,
    _version_tuple,
    _warning_texts,
)
from .cuda import _fault_fix, _pair_fix, classify_cuda_message
from .failure import _not_importable
from .gpu import explain_cuinit

__all__ = ["XGB_CPU_ONLY_TAG", "XGB_GPU_GLIBC", "xgboost_booster_device", "xgboost_cpu", "xgboost_cuda",
           "xgboost_cuda_build"]

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
                     "see the exception in the evidence: xgboost is installed and imports, training itself failed",
                     "image")
    device = xgboost_booster_device(facts, run)
    if device != "cpu":
        return _fail(f"{name}: asked for cpu, the booster says device={device}",
                     "see the evidence (booster config)", None)
    acc = run.get("accuracy") or 0.0
    if acc < XGB_MIN_ACCURACY:
        return _fail(f"{name}: CPU training reached accuracy {acc:.3f} < {XGB_MIN_ACCURACY} on a learnable task",
                     "the build trains wrong models: compare another build of the same version (the xgboost or "
                     "xgboost-cpu wheel) and check the CPU's instruction set against the wheel's", "image")
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
