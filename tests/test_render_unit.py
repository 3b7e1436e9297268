"""The render row's verdict on recorded facts, and the render probe's own helpers.

Facts come from real probe runs (tests/data/render/README.md).  GPU-host cases are those
facts with the fields a GPU host changes edited in; each test names what it edits.
"""

from __future__ import annotations

import copy
import faulthandler
import io
import json
import os
import runpy
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pytest_containercheck.engine.imagecompare import compare_arrays, load_rgb
from pytest_containercheck.engine.verdicts_render import (
    NVIDIA_VENDOR_JSON,
    egl_device_used,
    egl_software_cause,
    missing_libraries,
    pyvista_vtk_mismatch,
    render_verdict,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "render"


def facts(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    out: dict[str, Any] = doc["facts"]
    return out


def timings(name: str) -> dict[str, float]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    out: dict[str, float] = doc["timings"]
    return out


def on_gpu_host(f: dict[str, Any], *, nvidia_lib: bool, nvidia_json: bool | str = False,
                caps: str | None = None) -> dict[str, Any]:
    """Recorded llvmpipe facts as a Docker container on a GPU host would report them."""
    g = copy.deepcopy(f)
    g["dev_nvidia"] = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    if nvidia_lib:
        g["libraries"]["libEGL_nvidia.so.0"] = {"loaded": True,
                                                "path": "/usr/lib/x86_64-linux-gnu/libEGL_nvidia.so.550.54.15"}
    if nvidia_json:
        entry: dict[str, Any] = {"path": "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
                                 "library_path": "libEGL_nvidia.so.0", "origin": "/usr/share/glvnd/egl_vendor.d"}
        if nvidia_json is True:
            entry["loaded"] = True
        else:
            entry.update(loaded=False, error=nvidia_json)
        g["egl_vendor_files"]["files"].insert(0, entry)
    if caps is not None:
        g["env"]["NVIDIA_DRIVER_CAPABILITIES"] = caps
    return g


# -- recorded facts as they are --------------------------------------------------------------


@pytest.mark.parametrize("name", ["host-egl", "host-osmesa", "full-egl", "full-osmesa", "noosmesa-egl"])
def test_working_images_pass_naming_llvmpipe(name: str) -> None:
    backend = name.rsplit("-", 1)[1]
    v = render_verdict(facts(name), backend, timings=timings(name))
    assert v.status == "pass", v.detail
    assert v.note.startswith("llvmpipe (software), Mesa 22.3.6, ")
    assert v.note.endswith(f"{timings(name)['first_render']:.2f} s")


@pytest.mark.parametrize("image", ["noosmesa", "nogl"])
def test_missing_osmesa_names_the_packages(image: str) -> None:
    f = facts(f"{image}-osmesa")
    assert f["render_exit"] == "killed by signal 11 (SIGSEGV)"  # what VTK really does
    v = render_verdict(f, "osmesa")
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("osmesa cannot render: libOSMesa.so.8 does not load "
                                "(libOSMesa.so.8: cannot open shared object file: No such file or directory)")
    assert v.fix is not None and "apt-get install -y libosmesa6 " in v.fix and "dnf install -y mesa-libOSMesa " in v.fix


def test_no_gl_at_all_egl_falls_back_to_osmesa_and_says_so() -> None:
    f = facts("nogl-egl")
    assert f["window_class"] == "vtkOSOpenGLRenderWindow"
    v = render_verdict(f, "egl")
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("VTK fell back from vtkEGLRenderWindow to vtkOSOpenGLRenderWindow: "
                                "libEGL.so.1 does not load")
    assert v.fix is not None and "libegl1 libegl-mesa0" in v.fix and "mesa-libEGL" in v.fix


def test_silent_fallback_with_libraries_present_is_still_a_failure() -> None:
    # VTK fell back although every library loads (e.g. a broken EGL driver): the window
    # class alone decides; the reason comes from VTK's own messages.
    f = copy.deepcopy(facts("host-egl"))
    f["window_class"] = "vtkOSOpenGLRenderWindow"
    f["vtk_messages"] = ["Could not initialize a device. Exiting...",
                         "Failed to create a vtkOpenGLRenderWindow subclass with "
                         "VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow"]
    v = render_verdict(f, "egl")
    assert v.status == "fail"
    assert v.detail == ("VTK fell back from vtkEGLRenderWindow to vtkOSOpenGLRenderWindow: "
                         "Could not initialize a device. Exiting...")


def test_missing_egl_vendor_is_named() -> None:
    f = copy.deepcopy(facts("noosmesa-egl"))
    f["egl_vendor_files"]["files"] = []
    f["rendered"], f["render_exit"], f["render_stage"] = False, "killed by signal 11 (SIGSEGV)", "first_render:started"
    assert "egl-vendor" in missing_libraries(f, "egl")
    v = render_verdict(f, "egl")
    assert v.status == "fail" and "no EGL vendor library loads" in v.detail
    assert v.fix is not None and "libegl-mesa0" in v.fix


def test_nondeterministic_render_fails() -> None:
    f = copy.deepcopy(facts("host-egl"))
    f["frames_identical"] = False
    f["frame_sha256"] = ["a" * 64, "b" * 64]
    v = render_verdict(f, "egl")
    assert v.status == "fail" and v.detail.startswith("nondeterministic render: two renders of the same scene differ")


def test_not_installed_skips_but_a_broken_import_fails() -> None:
    f = {"backend": "egl", "vtk_import_error": "ModuleNotFoundError: No module named 'vtkmodules'"}
    v = render_verdict(f, "egl")
    assert (v.status, v.detail) == ("skip", "pyvista/vtk not installed in the image "
                                              "(ModuleNotFoundError: No module named 'vtkmodules')")
    broken = {"backend": "egl", "vtk_version": "9.7.2",
              "pyvista_import_error": "ImportError: libXrender.so.1: cannot open shared object file"}
    v = render_verdict(broken, "egl")
    assert (v.status, v.fault) == ("fail", "image") and "libXrender.so.1" in v.detail


def test_scene_error_fails_with_its_message() -> None:
    f = copy.deepcopy(facts("host-egl"))
    f.update(scene_error="NameError: name 'plotterr' is not defined", rendered=False)
    assert render_verdict(f, "egl").detail == "the scene script raised NameError: name 'plotterr' is not defined"


# -- software rendering and GPU policy ---------------------------------------------------------


def test_require_hw_render_fails_egl_on_llvmpipe_without_gpu() -> None:
    v = render_verdict(facts("host-egl"), "egl", require_hw_render=True)
    assert (v.status, v.fault) == ("fail", "host")
    assert v.detail == "--require-hw-render: EGL rendered with llvmpipe (software) and the host has no GPU"


@pytest.mark.parametrize("gl_renderer", ["softpipe", "Mesa OffScreen", "lavapipe (LLVM 15.0.6, 256 bits)",
                                         "virgl (NVIDIA GeForce RTX 3090/PCIe/SSE2)"])
def test_require_hw_render_fails_egl_on_every_software_renderer(gl_renderer: str) -> None:
    # Edited: the recorded llvmpipe EGL render, with another CPU renderer's GL_RENDERER.
    f = copy.deepcopy(facts("host-egl"))
    f["gl_renderer"] = gl_renderer
    v = render_verdict(f, "egl", require_hw_render=True)
    assert (v.status, v.fault) == ("fail", "host")
    assert v.detail.startswith("--require-hw-render: EGL rendered with ") and "(software)" in v.detail
    # On a GPU host without --require-*, it passes but says why the GPU was not used.
    soft = render_verdict(on_gpu_host(f, nvidia_lib=False), "egl", host_has_gpu=True)
    assert soft.status == "pass" and "; host has a GPU: " in soft.detail


def test_osmesa_is_software_by_design() -> None:
    v = render_verdict(facts("host-osmesa"), "osmesa", require_hw_render=True, require_gpu=True, host_has_gpu=True)
    assert v.status == "pass" and "CPU-only by design" in v.detail


def test_require_gpu_without_gpu_host_passes_software_egl() -> None:
    # --require-gpu is about GPU hosts; on a CPU host llvmpipe is the right answer.
    assert render_verdict(facts("host-egl"), "egl", require_gpu=True).status == "pass"


def test_gpu_host_missing_vendor_json_is_the_images_fault() -> None:
    # Edited: /dev/nvidia* present and libEGL_nvidia.so.0 loads (toolkit injected it), no 10_nvidia.json.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=True, caps="all")
    v = render_verdict(f, "egl", require_gpu=True, host_has_gpu=True)
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("--require-gpu on a GPU host: EGL rendered with llvmpipe (software): "
                                "the image has no glvnd EGL vendor file for NVIDIA (10_nvidia.json)")
    assert v.fix is not None and NVIDIA_VENDOR_JSON in v.fix
    # Without --require-gpu it passes, but the cell says why the GPU was not used.
    soft = render_verdict(f, "egl", host_has_gpu=True)
    assert soft.status == "pass" and "host has a GPU: the image has no glvnd EGL vendor file" in soft.note


def test_gpu_host_docker_without_graphics_capability() -> None:
    # Edited: /dev/nvidia* present; NVIDIA_DRIVER_CAPABILITIES=compute,utility; no NVIDIA EGL at all.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=False, caps="compute,utility")
    reason, fix, fault = egl_software_cause(f, "docker")
    assert reason.startswith("NVIDIA_DRIVER_CAPABILITIES=compute,utility lacks 'graphics'")
    assert "NVIDIA_DRIVER_CAPABILITIES=all" in fix and fault == "image"


def test_gpu_host_apptainer_without_vendor_file_binding() -> None:
    # Edited: an Apptainer --nv container: /.singularity.d/libs holds libEGL_nvidia, no vendor file.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=True)
    f["apptainer_libs"] = ["libEGL_nvidia.so.0", "libGLX_nvidia.so.0", "libcuda.so.1", "libnvidia-eglcore.so.550.54.15"]
    reason, fix, fault = egl_software_cause(f, "apptainer")
    assert fault == "host" and "but not its glvnd vendor file 10_nvidia.json" in reason
    assert "--bind=/usr/share/glvnd/egl_vendor.d/10_nvidia.json" in fix and "Apptainer to 1.4" in fix


def test_gpu_host_driver_needs_newer_glibc_is_a_pair_fault() -> None:
    # Edited: 10_nvidia.json present, but the bound host library needs a newer glibc than the image.
    err = "/.singularity.d/libs/libEGL_nvidia.so.0: version `GLIBC_2.34' not found"
    f = on_gpu_host(facts("full-egl"), nvidia_lib=False, nvidia_json=err)
    reason, _fix, fault = egl_software_cause(f, "apptainer")
    assert fault == "pair" and "needs a newer glibc" in reason and "GLIBC_2.34" in reason


def test_gpu_host_without_device_nodes_is_the_hosts_fault() -> None:
    reason, fix, fault = egl_software_cause(facts("full-egl"), "docker")
    assert fault == "host" and reason.startswith("no /dev/nvidia* inside the container")
    assert "--gpus all" in fix


def test_gpu_host_nvidia_vendor_loads_but_mesa_renders() -> None:
    # Edited: everything NVIDIA is there and loads, yet GL_RENDERER is llvmpipe.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=True, nvidia_json=True)
    reason, fix, fault = egl_software_cause(f, "docker")
    assert fault == "pair" and "VTK_DEFAULT_EGL_DEVICE_INDEX" in fix and "VTK_EGL_DEVICE_INDEX=" in fix
    assert "EGL devices: Mesa Project" in reason


def test_gpu_render_passes_with_the_gpu_named() -> None:
    # Edited: GL strings as an NVIDIA GPU reports them.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=True, nvidia_json=True)
    f.update(gl_renderer="NVIDIA A100-SXM4-80GB/PCIe/SSE2", gl_version="4.6.0 NVIDIA 550.54.15",
             gl_vendor="NVIDIA Corporation")
    v = render_verdict(f, "egl", require_hw_render=True, require_gpu=True, host_has_gpu=True)
    assert v.status == "pass" and v.note.startswith("NVIDIA A100-SXM4-80GB, NVIDIA 550.54.15")


# -- the probe's own helpers (probes/render.py, loaded as the image would run it) ---------------


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "probes" / "render.py"))


def test_probe_png_encoder_round_trips(probe: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    for channels in (3, 4):
        frame = rng.integers(0, 256, size=(7, 11, channels), dtype=np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(probe["_render_png"](frame))))
        assert decoded.shape == frame.shape and (decoded == frame).all()


def test_probe_parses_report_capabilities(probe: dict[str, Any]) -> None:
    # The head of vtkEGLRenderWindow.ReportCapabilities() as VTK 9.7.2 printed it here.
    text = ("EGL version string:  1.5\nEGL vendor string:  Mesa Project\nEGL client APIs:  OpenGL OpenGL_ES \n"
            "OpenGL vendor string:  Mesa/X.org\nOpenGL renderer string:  llvmpipe (LLVM 15.0.6, 256 bits)\n"
            "OpenGL version string:  4.5 (Core Profile) Mesa 22.3.6\nOpenGL extensions:  \n"
            "  GL_3DFX_texture_compression_FXT1\n  GL_AMD_conservative_depth\n")
    assert probe["_render_capabilities"](text) == {
        "egl_version": "1.5", "egl_vendor": "Mesa Project", "egl_client_apis": "OpenGL OpenGL_ES",
        "gl_vendor": "Mesa/X.org", "gl_renderer": "llvmpipe (LLVM 15.0.6, 256 bits)",
        "gl_version": "4.5 (Core Profile) Mesa 22.3.6", "gl_extension_count": 2}


def test_probe_extracts_vtk_messages_from_real_output(probe: dict[str, Any]) -> None:
    f = facts("nogl-egl")
    assert probe["_vtk_messages"](f["render_output_tail"]) == f["vtk_messages"]
    assert f["vtk_messages"][0] == ("Failed to load EGL! Please install the EGL library from your "
                                    "distribution's package manager.")


def test_probe_isolation_turns_a_crash_into_facts(probe: dict[str, Any]) -> None:
    def crash(params: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        send({"stage": "window", "facts": {"window_class": "vtkOSOpenGLRenderWindow"}})
        faulthandler.disable()  # pytest's handler would print this child's stack to the terminal
        os.write(2, b"segfault ahead\n")
        os.kill(os.getpid(), signal.SIGSEGV)

    messages, exit_text, output = probe["_render_isolated"](crash, {})
    assert exit_text == "killed by signal 11 (SIGSEGV)"
    assert messages == [{"stage": "window", "facts": {"window_class": "vtkOSOpenGLRenderWindow"}}]
    assert output == "segfault ahead\n"


def test_probe_isolation_reports_exceptions(probe: dict[str, Any]) -> None:
    def boom(params: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        raise RuntimeError("no display")

    messages, exit_text, _ = probe["_render_isolated"](boom, {})
    assert exit_text == "ok" and messages[0]["error"] == "RuntimeError: no display"


# -- issue 12 (constructed facts: tests/data/render/README.md says from what) ----------------------


def test_unknown_renderer_is_not_proven_hardware() -> None:
    # Edited: GL_RENDERER missing (ReportCapabilities said nothing); everything else as recorded.
    f = copy.deepcopy(facts("host-egl"))
    f.pop("gl_renderer", None)
    v = render_verdict(f, "egl", require_hw_render=True)
    assert v.status == "fail" and "hardware rendering is not proven" in v.detail
    soft = render_verdict(f, "egl")
    assert soft.status == "pass" and "renderer unknown" in soft.note


def test_egl_device_used_follows_vtk_egl_device_index() -> None:
    # vtkEGLRenderWindow.cxx: DeviceIndex stays -1 unless VTK_EGL_DEVICE_INDEX is set.
    f = copy.deepcopy(facts("host-egl"))
    f.update(egl_device_count=2, egl_device_index=-1)
    assert egl_device_used(f).startswith("the default EGL device, 0 of 2 (neither VTK_EGL_DEVICE_INDEX")
    f["env"]["VTK_DEFAULT_EGL_DEVICE_INDEX"] = "1"
    assert egl_device_used(f) == "EGL device 1 of 2 (VTK_DEFAULT_EGL_DEVICE_INDEX=1)"
    f.update(egl_device_index=0)
    f["env"]["VTK_EGL_DEVICE_INDEX"] = "0"
    assert egl_device_used(f) == "EGL device 0 of 2 (VTK_EGL_DEVICE_INDEX=0)"
    # An OSMesa window has no EGL device, whatever an older probe recorded for it.
    assert egl_device_used(facts("host-osmesa")) == "no EGL device (not an EGL window)"


def test_nvidia_egl_device_index_is_named_in_the_fix() -> None:
    # Edited: NVIDIA vendor loads, EGL enumerates Mesa's device first and the GPU second.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=True, nvidia_json=True)
    f["egl_devices"] = {"device_count": 2, "devices": [{"index": 0, "vendor": "Mesa Project"},
                                                       {"index": 1, "vendor": "NVIDIA"}]}
    _reason, fix, _fault = egl_software_cause(f, "docker")
    assert "VTK_EGL_DEVICE_INDEX=1" in fix


PYVISTA_0_49_1 = {"version": "0.49.1", "requires_vtk": ["vtk!=9.4.0", "vtk!=9.4.1", "vtk<9.8.0", "vtk>=9.3.1"]}


def test_pyvista_needing_a_newer_vtk_says_so() -> None:
    # Edited: an image with VTK 9.2.6 under pyvista 0.49.1 (its metadata as installed here).
    f = copy.deepcopy(facts("host-egl"))
    f.update(vtk_version="9.2.6", pyvista_dist=PYVISTA_0_49_1,
             pyvista_import_error="AttributeError: module 'vtkmodules.vtkCommonCore' has no attribute 'vtkXXX'")
    v = render_verdict(f, "egl")
    assert (v.status, v.fault) == ("fail", "image")
    assert "pyvista 0.49.1 needs vtk!=9.4.0, vtk!=9.4.1, vtk<9.8.0, vtk>=9.3.1; the image has VTK 9.2.6" in v.detail
    # one requirement with every specifier ('vtk!=9.4.0,vtk!=9.4.1,...' is not a requirement pip accepts)
    assert v.fix is not None and "pip install 'vtk!=9.4.0,!=9.4.1,<9.8.0,>=9.3.1'" in v.fix
    assert "libxrender1" not in v.fix
    # A VTK inside the range with another import error is not called a mismatch.
    f.update(vtk_version="9.7.2", pyvista_import_error="ImportError: libXrender.so.1: cannot open shared object")
    assert pyvista_vtk_mismatch(f) is None


def test_pyvista_metadata_is_read_by_the_probe(probe: dict[str, Any]) -> None:
    pytest.importorskip("pyvista")
    dist = probe["_render_pyvista_dist"]()
    from importlib import metadata

    assert dist["version"] == metadata.version("pyvista")
    assert all(r.replace(" ", "").startswith("vtk") for r in dist["requires_vtk"])


BROKEN_NVIDIA = "libEGL_nvidia.so.0: cannot open shared object file: No such file or directory"


def test_broken_nvidia_vendor_file_is_in_the_detail_and_the_fix() -> None:
    # Edited: a GPU host whose image ships 10_nvidia.json but has no libEGL_nvidia.so.0.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=False, nvidia_json=BROKEN_NVIDIA, caps="all")
    soft = render_verdict(f, "egl", host_has_gpu=True)
    assert soft.status == "pass"
    assert "10_nvidia.json" in soft.detail and BROKEN_NVIDIA in soft.detail
    assert soft.fix is not None and "remove that file" in soft.fix
    hard = render_verdict(f, "egl", require_gpu=True, host_has_gpu=True)
    assert hard.status == "fail" and "10_nvidia.json" in hard.detail and "remove that file" in (hard.fix or "")


def test_no_vendor_loads_on_a_gpu_host_names_the_nvidia_file() -> None:
    # Edited: as above, and Mesa's vendor file is gone too: EGL cannot render at all.
    f = on_gpu_host(facts("full-egl"), nvidia_lib=False, nvidia_json=BROKEN_NVIDIA, caps="all")
    f["egl_vendor_files"]["files"] = [e for e in f["egl_vendor_files"]["files"] if "nvidia" in e["path"]]
    f.update(rendered=False, render_exit="killed by signal 11 (SIGSEGV)", render_stage="window", window_class=None)
    v = render_verdict(f, "egl", host_has_gpu=True)
    assert v.status == "fail" and "10_nvidia.json" in v.detail
    assert v.fix is not None and "for the GPU:" in v.fix and "libegl-mesa0" in v.fix


def test_ssim_rejects_noise_without_strong_differences() -> None:
    # Constructed: the shipped llvmpipe baseline plus uniform noise of +-60 levels (seed 0):
    # no pixel differs by more than STRONG_DIFF_LEVEL (64), SSIM about 0.11.
    base = load_rgb((ROOT / "pytest_containercheck" / "baselines" /
                     "builtin.egl.llvmpipe_mesa-22.3.6_vtk9.7_aa-none.png").read_bytes())
    noise = np.random.default_rng(0).integers(-60, 61, size=base.shape)
    noisy = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    c = compare_arrays(noisy, base, exact=False)
    assert c.strong_diff_fraction == 0.0 and c.ssim is not None and c.ssim < 0.2
    assert not c.passed


@pytest.mark.parametrize("backend", ["osmesa", "egl"])
def test_probe_reports_egl_device_facts_only_for_egl_windows(backend: str) -> None:
    """Real run of the render probe on this interpreter (skips without pyvista)."""
    pytest.importorskip("pyvista")
    from pytest_containercheck.engine.dev import try_probe

    f = try_probe("render", quiet=True, backend=backend).facts
    if f.get("window_class") != "vtkEGLRenderWindow":
        assert "egl_device_count" not in f and "egl_device_index" not in f, f
    else:
        assert isinstance(f["egl_device_count"], int)
        if "VTK_EGL_DEVICE_INDEX" not in os.environ and "VTK_DEFAULT_EGL_DEVICE_INDEX" not in os.environ:
            assert f["egl_device_index"] == -1  # vtkEGLRenderWindow's default without the variable
            assert egl_device_used(f).startswith("the default EGL device, 0")
    # EGL_CUDA_DEVICE_NV is asked only of devices that list EGL_NV_device_cuda (Mesa's software
    # device here lists EGL_MESA_device_software): nothing is claimed of the others.
    for dev in (f.get("egl_devices") or {}).get("devices") or []:
        asked = "cuda_device" in dev or "cuda_device_error" in dev
        assert asked == ("EGL_NV_device_cuda" in dev.get("extensions", [])), dev
