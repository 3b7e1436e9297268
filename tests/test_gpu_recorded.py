"""Verdicts on facts recorded on a real GPU: one NVIDIA H200 (driver 580.159.04, CUDA 13.0), by the
GPU acceptance kit (``tests/gpu/run_kit.sh``) on 2026-11-29.  Where, how and with what:
``tests/data/gpu/README.md``.

These are the first GPU facts this project has observed.  Each test takes a recording as it came
back, checks the verdict the plugin gives on it, and then breaks the one fact the verdict rests on
(the device a result stayed on, the renderer's name) to show that the same verdict function
refuses the broken copy: a pass here is earned by the facts, not by the function passing
everything.  The constructed GPU facts used elsewhere (``test_verdicts_ml.py``,
``test_render_unit.py``) are checked against these recordings' shape at the end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import imagecompare, verdicts_gpu, verdicts_ml, verdicts_render

from helpers import load_kit

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

kit = load_kit()  # tests/gpu/kit.py, loaded once


def envelope(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / path).read_text(encoding="utf-8"))
    return doc


def facts(path: str) -> dict[str, Any]:
    doc = envelope(path)
    assert doc["status"] == "ok", doc.get("error")
    return copy.deepcopy(dict(doc["facts"]))


@pytest.fixture
def host() -> dict[str, Any]:
    """``hostinfo.gather()`` on the H200 machine."""
    return copy.deepcopy(dict(envelope("ml/host_facts_h200.json")["facts"]))


# -- the host and the system rows --------------------------------------------------------------


def test_the_recorded_host_is_one_h200(host: dict[str, Any]) -> None:
    assert host["has_gpu"] is True and host["gpu_vendor"] == "nvidia"
    assert [g["name"] for g in host["gpus"]] == ["NVIDIA H200"]
    assert host["driver_version"] == "580.159.04" and host["cuda_version"] == "13.0"
    # The driver's own view, saved beside it by the kit, says the same.
    csv = (DATA / "gpu" / "h200-nvidia-smi-query.csv").read_text(encoding="utf-8").splitlines()
    assert csv[1].split(", ")[:4] == ["NVIDIA H200", "580.159.04", "143771 MiB", "9.0"]


def test_system_gpu_rows_pass_on_the_h200(host: dict[str, Any]) -> None:
    system = facts("gpu/h200-system.json")
    devices = verdicts_gpu.gpu_devices(system, host)
    smi = verdicts_gpu.nvidia_smi(system, host)
    cuda = verdicts_gpu.libcuda(system, host)
    assert devices.status == "pass" and "/dev/nvidia0" in devices.detail
    assert smi.status == "pass" and smi.detail == "NVIDIA H200 (driver 580.159.04, sm 9.0)"
    assert cuda.status == "pass", cuda
    assert cuda.detail.startswith("CUDA driver API 13.0 from /usr/local/nvidia/lib64/libcuda.so.580.159.04")

    # The same facts without the device node, or with cuInit refused, fail as the host's.
    gone = copy.deepcopy(system)
    gone["devices"]["nvidia"] = [n for n in gone["devices"]["nvidia"] if n != "/dev/nvidia0"]
    assert (verdicts_gpu.gpu_devices(gone, host).status, verdicts_gpu.gpu_devices(gone, host).fault) == \
        ("fail", "host")
    refused = copy.deepcopy(system)
    refused["libcuda"]["cuInit"] = 100  # CUDA_ERROR_NO_DEVICE (cuda.h)
    assert verdicts_gpu.libcuda(refused, host).status == "fail"


# -- torch, xgboost, transformers ----------------------------------------------------------------


def test_torch_cuda_passes_on_the_h200(host: dict[str, Any]) -> None:
    torch = facts("ml/torch_h200_cu130.json")
    assert torch["version"] == "2.11.0+cu130" and torch["cuda"]["devices"][0]["capability"] == [9, 0]
    v = verdicts_ml.torch_cuda(torch, host)
    assert v.status == "pass", v
    assert "cuda:0 NVIDIA H200 (sm_90" in v.detail and "selected cuda:0" in v.detail
    assert verdicts_ml.torch_cpu(torch).status == "pass"

    # The result left on the CPU (a silent fallback) fails the same facts.
    fallback = copy.deepcopy(torch)
    fallback["ops"]["cuda:0"].update(result_device="cpu", conv_result_device="cpu")
    assert verdicts_ml.torch_cuda(fallback, host).status == "fail"
    # So does a build whose kernels do not cover sm_90 (torch's own arch list, edited).
    no_kernels = copy.deepcopy(torch)
    no_kernels["cuda"]["arch_list"] = ["sm_100", "sm_120"]
    assert verdicts_ml.torch_cuda(no_kernels, host).status == "fail"


def test_xgboost_cuda_wheel_trains_on_the_h200(host: dict[str, Any]) -> None:
    xgb = facts("ml/xgboost_h200_cuda_wheel.json")
    run = xgb["train"]["cuda"]
    # xgboost src/context.cc: DeviceOrd::Name() is "cuda:<ordinal>"; no "No visible GPU" warning.
    assert run["booster_device"] == "cuda:0" and run["warnings"] == []
    assert xgb["build_info"]["USE_CUDA"] is True
    v = verdicts_ml.xgboost_cuda(xgb, host)
    assert v.status == "pass", v
    assert v.detail.startswith("xgboost 3.4.1: hist on cuda:0 (CUDA 13.3)")
    assert verdicts_ml.xgboost_cpu(xgb).status == "pass"

    # What the same wheel reports on a host without a visible GPU (tests/data/ml/README.md):
    # the booster says cpu and the warning is there.  On this GPU host that fails.
    cpu = copy.deepcopy(xgb)
    cpu["train"]["cuda"].update(booster_device="cpu",
                                warnings=[{"category": "UserWarning",
                                           "message": "No visible GPU is found, setting device to CPU."}])
    assert verdicts_ml.xgboost_cuda(cpu, host).status == "fail"


def test_transformers_cuda_passes_on_the_h200(host: dict[str, Any]) -> None:
    tf = facts("ml/transformers_h200_tiny.json")
    v = verdicts_ml.transformers_cuda(tf, host)
    assert v.status == "pass", v
    assert v.detail.endswith("on cuda:0 match cpu")
    assert verdicts_ml.transformers_cpu(tf).status == "pass"
    assert verdicts_ml.transformers_cache(tf).status == "pass"

    moved = copy.deepcopy(tf)
    moved["models"]["encoder"]["device"].update(output_device="cpu", param_device="cpu")
    assert verdicts_ml.transformers_cuda(moved, host).status == "fail"


# -- rendering -----------------------------------------------------------------------------------


def test_egl_renders_on_the_h200_and_meets_require_hw_render() -> None:
    egl = facts("render/h200-egl.json")
    assert egl["gl_renderer"] == "NVIDIA H200/PCIe/SSE2" and egl["egl_vendor"] == "NVIDIA"
    assert egl["window_class"] == "vtkEGLRenderWindow" and egl["egl_device_index"] == -1
    v = verdicts_render.render_verdict(egl, "egl", require_hw_render=True, require_gpu=True, host_has_gpu=True,
                                       runtime="host")
    assert v.status == "pass", v
    assert v.note.startswith("NVIDIA H200, NVIDIA 580.159.04")
    # VTK kept DeviceIndex -1 and took the default device, the only one here.
    assert verdicts_render.egl_device_used(egl) == ("the default EGL device, 0 of 1 (neither VTK_EGL_DEVICE_INDEX "
                                                   "nor VTK_DEFAULT_EGL_DEVICE_INDEX set)")

    # The same facts with Mesa's renderer name: the silent CPU fallback the product exists for.
    mesa = copy.deepcopy(egl)
    mesa.update(gl_renderer="llvmpipe (LLVM 15.0.6, 256 bits)", gl_vendor="Mesa",
                gl_version="4.5 (Core Profile) Mesa 22.3.6")
    broken = verdicts_render.render_verdict(mesa, "egl", require_hw_render=True, require_gpu=True,
                                            host_has_gpu=True, runtime="host")
    assert broken.status == "fail" and "llvmpipe" in broken.detail


def test_the_h200_frame_matches_the_shipped_llvmpipe_baseline() -> None:
    """The GPU's frame against the CPU-rendered baseline shipped in the package: the tolerant
    comparison (another renderer fingerprint) must accept it, and it is not pixel-identical."""
    shipped = ROOT / "pytest_containercheck" / "baselines" / "builtin.egl.llvmpipe_mesa-22.3.6_vtk9.7_aa-none.png"
    frame = (DATA / "render" / "h200-egl-builtin.png").read_bytes()
    result = imagecompare.compare(frame, shipped.read_bytes(), exact=False)
    assert result.passed, result.reason
    assert not result.identical and result.ssim is not None and result.ssim >= 0.999
    # The exact rule (same fingerprint) would not: the GPU rasterises differently.
    assert not imagecompare.compare(frame, shipped.read_bytes(), exact=True, max_differing_pixels=0).passed


def test_osmesa_without_libosmesa_on_the_gpu_machine_fails_as_the_images() -> None:
    """The bare GPU machine has no libOSMesa: VTK 9.5.2 warns "libOSMesa not found" and then
    dies with SIGSEGV at the first render (recorded); the verdict names the package."""
    osmesa = facts("render/h200-osmesa.json")
    assert osmesa["libraries"]["libOSMesa.so.8"]["loaded"] is False
    assert osmesa["render_exit"] == "killed by signal 11 (SIGSEGV)"
    v = verdicts_render.render_verdict(osmesa, "osmesa", host_has_gpu=True, runtime="host")
    assert (v.status, v.fault) == ("fail", "image")
    assert "libOSMesa.so.8 does not load" in v.detail and v.fix is not None and "libosmesa6" in v.fix


# -- the kit's own verdict on the matrix it brought back -------------------------------------------


def test_the_recorded_matrix_passes_every_gpu_row() -> None:
    matrix = envelope("gpu/h200-matrix.json")
    cells = {c["row"]: c for c in matrix["cells"]}
    assert matrix["complete"] is True and len(cells) == 17
    for row in ("system.gpu_devices", "system.nvidia_smi", "system.libcuda", "torch.cuda", "xgboost.cuda",
                "transformers.cuda", "render.egl"):
        assert cells[row]["status"] == "pass", cells[row]
    assert "NVIDIA H200" in cells["render.egl"]["detail"]
    # The kit's verdict on it, on the rows there were when it was recorded (a row added since needs a
    # recording of its own): one problem, the bare machine's missing OSMesa.
    problems = kit.judge(matrix, required=[r for r in kit.required_rows() if r in cells])
    assert len(problems) == 1 and problems[0].startswith("render.osmesa: FAIL [image fault]"), problems


# -- the constructed GPU facts have the recorded shape -----------------------------------------------


def test_constructed_torch_gpu_facts_have_the_recorded_fields() -> None:
    """``torch_on_gpu()`` in test_verdicts_ml.py builds the per-device result from the CPU one:
    the real CUDA result has exactly those fields."""
    real = facts("ml/torch_h200_cu130.json")
    cpu_fields = set(real["ops"]["cpu"])
    assert set(real["ops"]["cuda:0"]) == cpu_fields
    assert {"index", "name", "capability", "total_memory"} <= set(real["cuda"]["devices"][0])
    assert real["selection"] == {"api": "torch.accelerator.current_accelerator(check_available=True)",
                                 "compiled_accelerator": "cuda", "selected": "cuda:0"}


def test_constructed_transformers_gpu_facts_have_the_recorded_fields() -> None:
    """``_transformers_on_gpu()`` in test_verdicts_ml.py makes the device entry from a copy of the CPU
    entry, so it also carries ``finite`` and ``parameters``, which the real device entry lacks; the
    fields ``transformers_cuda`` reads (``ok``, ``output_device``, ``vs_cpu``) are the real ones."""
    real = facts("ml/transformers_h200_tiny.json")
    for entry in real["models"].values():
        dev = entry["device"]
        assert {"device", "output_device", "param_device", "vs_cpu", "ok"} <= set(dev)
        assert set(dev["vs_cpu"]) == set(entry["cpu"]["vs_float64"])
    assert real["selected_device"] == "cuda:0" and real["torch_cuda_build"] == "13.0"


def test_constructed_render_gpu_facts_match_the_recorded_vendor_entry() -> None:
    """``on_gpu_host()`` in test_render_unit.py adds an NVIDIA vendor file entry and
    ``libEGL_nvidia.so.0``: the real probe reports them with the same keys."""
    real = facts("render/h200-egl.json")
    nvidia = [f for f in real["egl_vendor_files"]["files"] if f["library_path"] == "libEGL_nvidia.so.0"]
    assert nvidia and set(nvidia[0]) == {"path", "library_path", "origin", "loaded"}
    assert set(real["libraries"]["libEGL_nvidia.so.0"]) == {"loaded", "path"}
    assert real["gl_version"] == "4.6.0 NVIDIA 580.159.04" and real["gl_vendor"] == "NVIDIA Corporation"


# -- the same machine, second run (2026-11-29 23:08 UTC): bundles, and two faults of GPU nodes --------


def test_the_gpu_rows_pass_with_probe_bundles_on_the_h200() -> None:
    """The second kit run, after probe bundles (_envelope.bundle) were added: torch imported once
    in a zygote and CUDA first touched in the children forked from it; pyvista/VTK imported once
    and EGL opened in the children.  The same rows passed as in the first run."""
    matrix = envelope("gpu/h200-bundled-matrix.json")
    cells = {c["row"]: c for c in matrix["cells"]}
    for row in ("torch.cuda", "transformers.cuda", "render.egl", "xgboost.cuda", "system.libcuda"):
        assert cells[row]["status"] == "pass", cells[row]
    torch_run = cells["torch.cuda"]["probes"]["torch_device"]
    assert torch_run["bundle"] == {"with": ["torch_device", "transformers_infer"], "shared_imports": ["torch"],
                                   "shared": True}
    assert torch_run["timings"]["import"] < 0.05  # torch came from the zygote
    assert cells["render.egl"]["probes"]["render"]["bundle"]["shared"] is True
    assert "NVIDIA H200" in cells["render.egl"]["detail"]
    assert [p.split(":")[0] for p in kit.judge(matrix, required=[r for r in kit.required_rows() if r in cells])] \
        == ["render.osmesa"]


@pytest.fixture
def hidden_host() -> dict[str, Any]:
    """hostinfo.gather() with CUDA_VISIBLE_DEVICES="": nvidia-smi ignores it, so still a GPU host."""
    return copy.deepcopy(dict(envelope("ml/host_facts_h200_gpu_hidden.json")["facts"]))


def test_a_job_without_its_gpu_fails_every_compute_row_as_the_hosts(hidden_host: dict[str, Any]) -> None:
    """CUDA_VISIBLE_DEVICES="" on the H200 (a Slurm job on a GPU node without --gres): torch sees
    no device, xgboost trains on the CPU after its own warning, transformers would run on the CPU.
    Each is a FAIL whose fault is the host's and whose fix names CUDA_VISIBLE_DEVICES, never a
    pass: this is the silent CPU fallback the plugin exists for, observed for real."""
    assert hidden_host["has_gpu"] is True
    torch = facts("ml/torch_h200_gpu_hidden.json")
    assert torch["cuda"] == {"arch_list": [], "compiled": True, "device_count": 0, "devices": [],
                             "is_available": False}
    xgb = facts("ml/xgboost_h200_gpu_hidden.json")
    # xgboost src/context.cc, CUDAOrdinal() / the device fallback: both warnings, seen verbatim.
    said = [w["message"] for w in xgb["train"]["cuda"]["warnings"]]
    assert xgb["train"]["cuda"]["booster_device"] == "cpu"
    assert any("context.cc:55: No visible GPU is found, setting device to CPU." in m for m in said)
    assert any("Device is changed from GPU to CPU as we couldn't find any available GPU" in m for m in said)
    tf = facts("ml/transformers_h200_gpu_hidden.json")
    assert tf["selected_device"] == "cpu"
    for verdict in (verdicts_ml.torch_cuda(torch, hidden_host), verdicts_ml.xgboost_cuda(xgb, hidden_host),
                    verdicts_ml.transformers_cuda(tf, hidden_host)):
        assert (verdict.status, verdict.fault) == ("fail", "host"), verdict
        assert verdict.fix is not None and "CUDA_VISIBLE_DEVICES" in verdict.fix
    # The CPU rows are unaffected.
    assert verdicts_ml.torch_cpu(torch).status == verdicts_ml.xgboost_cpu(xgb).status == "pass"
    # cuInit answers CUDA_ERROR_NO_DEVICE (cuda.h: 100): the host's, naming the variable.
    system = facts("gpu/h200-gpu-hidden-system.json")
    assert system["libcuda"]["cuInit"] == 100
    v = verdicts_gpu.libcuda(system, hidden_host)
    assert (v.status, v.fault) == ("fail", "host") and "CUDA_VISIBLE_DEVICES" in (v.fix or "")
    # The matrix the plugin wrote in that run says the same.
    cells = {c["row"]: c for c in envelope("gpu/h200-gpu-hidden-matrix.json")["cells"]}
    assert {r: (cells[r]["status"], cells[r]["fault"]) for r in ("torch.cuda", "xgboost.cuda", "transformers.cuda",
                                                                  "system.libcuda")} == dict.fromkeys(
        ("torch.cuda", "xgboost.cuda", "transformers.cuda", "system.libcuda"), ("fail", "host"))


def test_egl_still_renders_on_the_gpu_when_cuda_cannot_see_it() -> None:
    """Observed: with CUDA_VISIBLE_DEVICES="" NVIDIA's EGL still listed its device and rendered on
    the H200, so render.egl passes there (truly: it ran on the GPU) while every CUDA row fails."""
    egl = facts("render/h200-gpu-hidden-egl.json")
    assert egl["gl_renderer"] == "NVIDIA H200/PCIe/SSE2" and egl["egl_device_count"] == 1
    v = verdicts_render.render_verdict(egl, "egl", require_hw_render=True, require_gpu=True, host_has_gpu=True,
                                       runtime="host")
    assert v.status == "pass", v
    cells = {c["row"]: c for c in envelope("gpu/h200-gpu-hidden-matrix.json")["cells"]}
    assert cells["render.egl"]["status"] == "pass"


def test_a_vendor_variable_naming_a_missing_file_is_named_with_its_fix() -> None:
    """__EGL_VENDOR_LIBRARY_FILENAMES=/nonexistent/10_nvidia.json on the H200: glvnd loads no
    vendor, VTK falls back to OSMesa (absent there, so it crashes).  The fix is the variable,
    not installing Mesa's EGL (which would render on the CPU): the run's matrix suggested
    libegl-mesa0 before this was fixed."""
    egl = facts("render/h200-egl-vendor-missing-egl.json")
    assert egl["egl_vendor_files"]["search"] == "__EGL_VENDOR_LIBRARY_FILENAMES"
    assert egl["egl_vendor_files"]["hidden_default_files"] == ["/usr/share/glvnd/egl_vendor.d/10_nvidia.json"]
    assert egl["window_class"] == "vtkOSOpenGLRenderWindow"
    recorded = {c["row"]: c for c in envelope("gpu/h200-egl-vendor-missing-matrix.json")["cells"]}["render.egl"]
    assert "libegl-mesa0" in (recorded["fix"] or "")  # what that run said: the defect fixed here
    for runtime, fault in (("host", "host"), ("docker", "image"), ("apptainer", "image")):
        v = verdicts_render.render_verdict(egl, "egl", require_hw_render=True, require_gpu=True, host_has_gpu=True,
                                           runtime=runtime)
        assert (v.status, v.fault) == ("fail", fault), v
        assert "__EGL_VENDOR_LIBRARY_FILENAMES names /nonexistent/10_nvidia.json, which does not exist" in v.detail
        assert "hides /usr/share/glvnd/egl_vendor.d/10_nvidia.json" in v.detail
        assert v.fix is not None and "libegl-mesa0" not in v.fix and "unset __EGL_VENDOR_LIBRARY_FILENAMES" in v.fix
    # A variable naming a file that exists but whose library fails is another case (not this one).
    other = copy.deepcopy(egl)
    other["egl_vendor_files"]["files"][0]["error"] = "OSError: libEGL_nvidia.so.0: cannot open shared object file"
    assert verdicts_render.vendor_variable_problem(other, "docker") is None
