"""Verdicts for the ``transformers.*`` rows (``probes/transformers_infer.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..verdict import NOT_INSTALLED, Verdict
from .common import (
    CPU_ATOL,
    CPU_RTOL,
    DEVICE_ATOL,
    DEVICE_RTOL,
    HALF_RTOL,
    _driver_cuda,
    _fail,
    _first_line,
    _pass,
    _rel,
    _skip,
    _version_tuple,
    _warning_texts,
    within,
)
from .cuda import _fault_fix, _first_known, classify_cuda_message
from .failure import _NO_TMP, _import_failure, version_mismatch
from .torch import _cpu_only_torch, gpu_vendor_mismatch

__all__ = ["transformers_cache", "transformers_cpu", "transformers_cuda", "transformers_cuda_build",
           "transformers_torch_mismatch"]

def transformers_torch_mismatch(facts: Mapping[str, Any], err: str) -> tuple[str, str] | None:
    """``(what, fix)`` when *err* (an import error, or a model's build error: transformers 5.x raises
    its torch floor only when a model is built) is transformers refusing the image's torch, from the
    versions the probe always records and the lines transformers logged (``import_log``)."""
    dist = facts.get("dist_versions") or {}
    versions = {"torch": facts.get("torch_version") or dist.get("torch"),
                "transformers": facts.get("version") or dist.get("transformers"), "numpy": dist.get("numpy")}
    return version_mismatch("transformers", err, versions, " ".join(map(str, facts.get("import_log") or [])))


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
    return _import_failure(str(facts.get("failed_module") or "transformers"), err,
                           "see the evidence: the probe found no requirement or library that breaks it; the error "
                           "names what raised", facts.get("dist_versions"), str(facts.get("error")), facts)


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
                         "the CPU kernels compute wrong results: see the torch.cpu row (the same torch)", "image")
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
