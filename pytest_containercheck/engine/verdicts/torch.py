"""Verdicts for the ``torch.cpu`` and ``torch.cuda`` rows (``probes/torch_device.py``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..verdict import Verdict
from .common import (
    CPU_ATOL,
    CPU_RTOL,
    DEVICE_ATOL,
    DEVICE_RTOL,
    _driver_cuda,
    _fail,
    _first_line,
    _fmt,
    _pass,
    _rel,
    _skip,
    _version_tuple,
    _warning_texts,
    arch_supports,
    within,
)
from .cuda import _fault_fix, _first_known, _pair_fix, _torch_cuda_fix, classify_cuda_message
from .failure import _not_importable

__all__ = ["gpu_vendor_mismatch", "torch_cpu", "torch_cuda", "torch_cuda_build"]

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
                     "see the exception in the evidence: torch is installed and imports, the operation itself failed "
                     "(a wheel built for instructions this CPU lacks fails here)", "image")
    for op in ("matmul", "conv"):
        if not within(ops.get(op), CPU_RTOL, CPU_ATOL):
            return _fail(f"torch {version}: {op} on the CPU differs from float64 by {_rel(ops.get(op))} "
                         f"of its largest value (limit {CPU_RTOL:g}): {ops.get(op)}",
                         "the CPU kernels compute wrong results: check the CPU's "
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
