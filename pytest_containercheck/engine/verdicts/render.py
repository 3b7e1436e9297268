"""Verdicts on the ``render`` probe's facts: the ``render.osmesa`` and ``render.egl`` rows.

A render row passes when the requested VTK window really ran and two renders of the built-in
scene are identical (the image comparison against baselines is :mod:`.imagecompare`).  Pure
functions of recorded facts, unit-tested in tests/test_render_unit.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..imagecompare import SOFTWARE_RENDERERS, normalize_renderer, renderer_label
from ..verdict import NOT_INSTALLED, Verdict
from .egl import (
    NVIDIA_VENDOR_JSON,
    _broken_vendor_fix,
    _version,
    apptainer_vendor_problem,
    broken_nvidia_vendor,
    capabilities_problem,
    egl_device_opened,
    egl_device_used,
    egl_software_cause,
    foreign_egl_device,
    vendor_variable_problem,
)
from .failure import explain_import
from .native import Cause, explain_native

# The EGL diagnosis lives in .egl; its public names stay importable from here.
__all__ = ["NVIDIA_VENDOR_JSON", "PACKAGES", "WINDOW_CLASSES", "capabilities_problem", "egl_device_opened",
           "egl_device_used", "egl_software_cause", "foreign_egl_device", "legacy_vtk_wheel", "missing_libraries",
           "pyvista_vtk_mismatch", "render_verdict", "vendor_variable_problem", "vtk_specifiers"]

WINDOW_CLASSES = {"osmesa": "vtkOSOpenGLRenderWindow", "egl": "vtkEGLRenderWindow"}

#: What provides each library a backend needs: (Debian/Ubuntu, RHEL/Fedora) packages.
PACKAGES = {
    "libOSMesa.so.8": ("libosmesa6", "mesa-libOSMesa"),
    "libEGL.so.1": ("libegl1 libegl-mesa0", "mesa-libEGL"),
    "egl-vendor": ("libegl-mesa0", "mesa-libEGL"),
    "libGL.so.1": ("libgl1", "mesa-libGL"),
}


def _install_fix(libs: list[str]) -> str:
    debian = " ".join(dict.fromkeys(p for lib in libs for p in PACKAGES[lib][0].split()))
    rhel = " ".join(dict.fromkeys(PACKAGES[lib][1] for lib in libs))
    return f"install in the image: apt-get install -y {debian} (Debian/Ubuntu) or dnf install -y {rhel} (RHEL/Fedora)"


def missing_libraries(facts: Mapping[str, Any], backend: str) -> dict[str, str]:
    """Libraries *backend* needs that did not load in the image: {library: loader error}.

    OSMesa needs ``libOSMesa.so.8``; EGL needs ``libEGL.so.1`` and at least one glvnd EGL
    vendor (a vendor JSON whose library loads).  VTK loads nothing else (LD_DEBUG=libs).
    """
    libs = facts.get("libraries") or {}
    missing: dict[str, str] = {}
    needed = ["libOSMesa.so.8"] if backend == "osmesa" else ["libEGL.so.1"]
    for name in needed:
        info = libs.get(name) or {}
        if not info.get("loaded"):
            missing[name] = str(info.get("error") or "not checked")
    if backend == "egl" and "libEGL.so.1" not in missing:
        files = (facts.get("egl_vendor_files") or {}).get("files") or []
        if not any(f.get("loaded") for f in files):
            if files:
                why = "; ".join(f"{f.get('path')} -> {f.get('library_path')}: {f.get('error')}" for f in files)
            else:
                search = (facts.get("egl_vendor_files") or {}).get("search", "default")
                why = (f"no EGL vendor JSON files (searched: {search}; default "
                       "/etc/glvnd/egl_vendor.d, /usr/share/glvnd/egl_vendor.d)")
            missing["egl-vendor"] = why
    return missing


_SPECIFIER = re.compile(r"^\s*(>=|<=|==|!=|>|<|~=)\s*([0-9][0-9.]*)\s*$")


def vtk_specifiers(requirements: list[str]) -> list[str]:
    """The version specifiers of pyvista's VTK requirements, one per item, whether its metadata lists
    them one per ``Requires-Dist`` line (``vtk>=9.3.1``, ``vtk<9.8.0``) or combined in one
    (``vtk!=9.4.0,!=9.4.1,<9.8.0,>=9.3.1``, with or without an environment marker or parentheses)."""
    found: list[str] = []
    for req in requirements:
        body = str(req).split(";", 1)[0].strip()
        body = re.sub(r"^\s*vtk\b", "", body, flags=re.IGNORECASE).strip().strip("()")
        for part in body.split(","):
            m = _SPECIFIER.match(part)
            if m:
                found.append(m.group(1) + m.group(2))
    return found


def _violated(spec: str, have: tuple[int, ...]) -> bool:
    """Does VTK *have* violate one specifier like ``>=9.3.1`` / ``<9.8.0`` / ``!=9.4.0`` (``vtk`` may lead)?"""
    m = _SPECIFIER.match(re.sub(r"^\s*vtk\b", "", spec, flags=re.IGNORECASE))
    if not m or not have:
        return False
    op, want = m.group(1), _version(m.group(2))
    n = max(len(want), len(have))
    a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
    return not {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, "<": a < b,
                "~=": a >= b}[op]


def pyvista_vtk_mismatch(facts: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(what, fix)`` when pyvista failed to import because the image's VTK does not fit it.

    pyvista declares its VTK range in its metadata (0.49.1: ``vtk>=9.3.1``, ``vtk<9.8.0``,
    ``vtk!=9.4.0``, ``vtk!=9.4.1``) and checks the floor itself (``pyvista/__init__.py``:
    "VTK version must be X or greater."), but an older VTK usually fails earlier, with an
    AttributeError or ImportError from ``vtkmodules`` while pyvista's modules import.
    """
    err = str(facts.get("pyvista_import_error") or "")
    dist = facts.get("pyvista_dist") or {}
    vtk = str(facts.get("vtk_version") or "")
    specs = vtk_specifiers([str(r) for r in dist.get("requires_vtk") or []])
    broken = [r for r in specs if _violated(r, _version(vtk))]
    from_vtk = "vtkmodules" in err or "VTK version must be" in err or "VTKVersionError" in err
    if not broken and not (from_vtk and specs):
        return None
    needs = ", ".join(f"vtk{s}" for s in specs) or "another VTK"
    pv = dist.get("version") or "?"
    what = f"pyvista {pv} needs {needs}; the image has VTK {vtk or '?'}"
    # One requirement with every specifier: 'vtk>=9.3.1,vtk<9.8.0' is not one pip accepts.
    fix = (f"install a VTK that pyvista {pv} supports (pip install 'vtk{','.join(specs)}'),"
           f" or a pyvista release that supports VTK {vtk or 'the installed one'} (pyvista<{pv})")
    return what, fix


#: Choosing the OpenGL window at run time (``VTK_DEFAULT_OPENGL_WINDOW``, with EGL and OSMesa in one
#: build) arrived in VTK 9.4 (Kitware/VTK Documentation/release/9.4/support-runtime-opengl-window-
#: selection.md).  Before it, PyPI's ``vtk`` wheel is built for X11 only, and Kitware's variants on
#: wheels.vtk.org (``vtk-osmesa`` since 9.2.6) for one backend each; the docs of 9.4: "The vtk-osmesa
#: wheels are no longer provided" (Documentation/docs/advanced/available_python_wheels.md).
RUNTIME_WINDOW_VTK = (9, 4)
_OSMESA_WHEEL_SINCE = (9, 2, 6)


def legacy_vtk_wheel(facts: Mapping[str, Any], backend: str) -> tuple[str, str] | None:
    """``(what, fix)`` when a VTK older than 9.4 could not give the *backend*'s window: its window
    class was fixed when it was built; None when VTK is 9.4+ or it did render as asked."""
    version = str(facts.get("vtk_version") or "")
    have = _version(version)
    requested = WINDOW_CLASSES[backend]
    if not have or have[:2] >= RUNTIME_WINDOW_VTK or (facts.get("window_class") == requested
                                                      and facts.get("rendered")):
        return None
    dist = facts.get("vtk_dist") or {}
    if "vtk-osmesa" in dist:
        built = "Kitware's vtk-osmesa wheel, built for OSMesa only"
    elif "vtk-egl" in dist:
        built = "Kitware's vtk-egl wheel, built for EGL only"
    elif "vtk" in dist:
        built = "PyPI's vtk wheel, built for X11 only: it has neither EGL nor OSMesa"
    else:
        built = "a build whose render window was fixed when it was compiled"
    said = facts.get("window_class") or next(
        (cls for cls in ("vtkXOpenGLRenderWindow", "vtkOSOpenGLRenderWindow", "vtkEGLRenderWindow")
         if any(cls in str(m) for m in facts.get("vtk_messages") or [])), None)
    what = (f"VTK {version} ({built}) cannot create {requested}: choosing the render window at run time "
            f"(VTK_DEFAULT_OPENGL_WINDOW) arrived in VTK 9.4" + (f"; it made a {said}" if said else "")
            + (f" (render: {facts.get('render_exit')})" if not facts.get("rendered") and facts.get("render_exit")
               else ""))
    fix = ("install VTK 9.4 or later in the image (pip install 'vtk>=9.4', within the range pyvista accepts): its "
           "wheel has EGL and OSMesa and picks one at run time")
    if backend == "osmesa" and have >= _OSMESA_WHEEL_SINCE and "vtk-osmesa" not in dist:
        fix += (f"; or keep VTK {version} with Kitware's OSMesa build: pip uninstall -y vtk && pip install "
                f"--extra-index-url https://wheels.vtk.org vtk-osmesa=={version} (renders on the CPU)")
    return what, fix


def broken_library(facts: Mapping[str, Any], missing: Mapping[str, str]) -> Cause | None:
    """What breaks a library a backend needs that is installed but does not load (a dependency of the
    wrong version, missing, or without a symbol; :func:`.native.explain_native`), or None: then it is
    not installed, and :func:`_install_fix` names its package."""
    libs = facts.get("libraries") or {}
    for lib in missing:
        if lib == "egl-vendor":
            for entry in (facts.get("egl_vendor_files") or {}).get("files") or []:
                cause = explain_native(entry.get("resolution"), str(entry.get("error") or ""))
                if cause is not None:
                    return cause
            continue
        info = libs.get(lib) or {}
        cause = explain_native(info.get("resolution"), str(info.get("error") or ""))
        if cause is not None:
            return cause
        there = (info.get("resolution") or {}).get("target_path")
        if there:  # installed, and nothing the loader's search shows explains it: never "install" it
            return Cause(f"{lib} is installed ({there}) but does not load: {info.get('error')}",
                         "the loader's message names what fails; no dependency is missing, too old or without the "
                         "symbol (the evidence has every file the loader resolves)")
    swrast = facts.get("mesa_swrast") or {}
    if facts.get("backend") == "egl" and not swrast.get("loaded"):
        # Mesa's DRI loader fails quietly: EGL then finds no device, and VTK falls back or fails.
        return explain_native(swrast.get("resolution"), str(swrast.get("error") or ""))
    return None


def _first_vtk_message(facts: Mapping[str, Any]) -> str:
    msgs = [m for m in facts.get("vtk_messages") or [] if "Failed to create a vtkOpenGLRenderWindow" not in m]
    return msgs[0] if msgs else ""


def _missing_text(missing: Mapping[str, str]) -> str:
    parts = []
    for lib, err in missing.items():
        parts.append(f"no EGL vendor library loads ({err})" if lib == "egl-vendor" else f"{lib} does not load ({err})")
    return "; ".join(parts)


def _driver_text(gl_version: str | None) -> str:
    """``4.5 (Core Profile) Mesa 22.3.6`` -> ``Mesa 22.3.6``; ``4.6.0 NVIDIA 550.54`` -> ``NVIDIA 550.54``."""
    m = re.search(r"\b(Mesa|NVIDIA)\s+\S+", gl_version or "")
    return m.group(0) if m else (gl_version or "GL version unknown")


def render_verdict(facts: Mapping[str, Any], backend: str, *, require_hw_render: bool = False,
                   require_gpu: bool = False, host_has_gpu: bool = False, runtime: str = "docker",
                   timings: Mapping[str, float] | None = None, runtime_version: str | None = None,
                   gpu_vendor: str | None = None, gpu: Mapping[str, Any] | None = None,
                   emulated: Sequence[str] = (), intent: str | None = None) -> Verdict:
    """Judge a ``render`` probe's facts for the *backend* row (image comparison aside).

    *runtime_version* is the container runtime's version (Apptainer's decides whether ``--nv`` binds
    the NVIDIA EGL vendor file); *gpu_vendor* the host's GPU vendor; *gpu* the session's GPU facts
    (attached, CDI, nvidia-container-cli); *emulated* the variables ``--container-env`` set;
    *intent* the image's declared intent.

    On an NVIDIA host, with the GPU attached, ``render.egl`` fails when EGL did not render on the
    GPU and the driver capabilities lack ``graphics`` (:func:`capabilities_problem`): the users'
    own launch gives that image no EGL driver either, so a pass on llvmpipe would hide it.  Not
    for an image whose declared intent is ``cpu``.
    """
    requested = WINDOW_CLASSES[backend]
    gpu_facts = gpu or {}
    caps_problem = None
    if (backend == "egl" and host_has_gpu and gpu_vendor != "amd" and gpu_facts.get("attached")
            and intent != "cpu"):
        caps_problem = capabilities_problem(facts, runtime, gpu_facts, emulated)
    if caps_problem is not None:
        on_gpu = (facts.get("rendered") and facts.get("window_class") == requested
                  and normalize_renderer(facts.get("gl_renderer")) not in (*SOFTWARE_RENDERERS, "unknown"))
        if not on_gpu and not any(facts.get(f"{lib}_import_error") for lib in ("vtk", "pyvista")):
            how = (f"it rendered with {renderer_label(facts)}" if facts.get("rendered") else
                   f"it did not render ({facts.get('render_exit')} during {facts.get('render_stage')})")
            return Verdict("fail", f"{backend} on the host's GPU: {caps_problem[0]}; {how}", fix=caps_problem[1],
                           fault=caps_problem[2])
    for lib in ("vtk", "pyvista"):
        err = facts.get(f"{lib}_import_error")
        if err:
            imported = facts.get(f"{lib}_import") or {}
            top = str(imported.get("missing_module") or "").split(".")[0]
            if err.startswith("ModuleNotFoundError") and (not imported or top in (lib, "vtkmodules")):
                return Verdict("skip", f"pyvista/vtk {NOT_INSTALLED} ({err})", missing=lib)
            below = explain_import(lib, imported) if imported.get("found") else None
            if below is not None:
                return Verdict("fail", f"import {lib} failed: {below.what}", fix=below.fix, fault=below.fault)
            mismatch = pyvista_vtk_mismatch(facts) if lib == "pyvista" else None
            if "MPLCONFIGDIR" in err:
                # pyvista imports matplotlib, which needs a writable config directory: a read-only
                # root file system (docker --read-only) with a read-only HOME breaks the import
                # for every user of this image launched that way, not only for the probe.
                return Verdict("fail", f"import {lib} failed: matplotlib (imported by pyvista) found no writable "
                               f"config directory ({err})",
                               fix="give it one: ENV MPLCONFIGDIR=<writable dir> in the image, or "
                                   "--container-env MPLCONFIGDIR=/dev/shm (or a --tmpfs mount) for a read-only root",
                               fault="pair")
            if mismatch is not None:
                return Verdict("fail", f"import pyvista failed: {mismatch[0]} ({err})", fix=mismatch[1],
                               fault="image")
            return Verdict("fail", f"import {lib} failed in the image: {err}",
                                 fix="install the system library the error names (its package: apt-file search "
                                     "<name> on Debian, dnf provides '*/<name>' on RHEL/Fedora)",
                                 fault="image")
    legacy = legacy_vtk_wheel(facts, backend)
    if legacy is not None:
        return Verdict("fail", f"{backend} cannot render: {legacy[0]}", fix=legacy[1], fault="image")
    missing = missing_libraries(facts, backend)
    stale = vendor_variable_problem(facts, runtime) if "egl-vendor" in missing else None
    if stale is None and host_has_gpu and "egl-vendor" in missing:
        # Apptainer < 1.4 binds libEGL_nvidia.so.0 but not 10_nvidia.json: installing Mesa's vendor
        # file would make EGL "work" on the CPU; the vendor file is what is missing.
        stale = apptainer_vendor_problem(facts, runtime, runtime_version)
    window = facts.get("window_class")
    if facts.get("scene_error"):
        return Verdict("fail", f"the scene script raised {facts['scene_error']}",
                             fix="fix the scene script (see the evidence for its traceback)")
    if window and window != requested:
        # VTK creates the requested window class, or quietly another one that works.
        if stale is not None:
            return Verdict("fail", f"VTK fell back from {requested} to {window}: no EGL vendor library loads: "
                                   f"{stale[0]}", fix=stale[1], fault=stale[2])
        depth = broken_library(facts, missing) if missing or backend == "egl" else None
        if depth is not None:
            return Verdict("fail", f"VTK fell back to {window}: {depth.what}", fix=depth.fix,
                           fault=depth.fault)
        cause = _missing_text(missing) if missing else (_first_vtk_message(facts) or "VTK gave no reason")
        return Verdict("fail", f"VTK fell back from {requested} to {window}: {cause}",
                             fix=_install_fix(list(missing)) if missing else
                             f"see VTK's messages in the evidence; {requested} could not be created",
                             fault="image" if missing else None)
    if not facts.get("rendered"):
        where = f"{facts.get('render_exit')} during {facts.get('render_stage')}"
        if stale is not None:
            return Verdict("fail", f"{backend} cannot render: no EGL vendor library loads: {stale[0]} (render {where})",
                           fix=stale[1], fault=stale[2])
        depth = broken_library(facts, missing) if missing or backend == "egl" else None
        if depth is not None:
            return Verdict("fail", f"{backend} cannot render: {depth.what} (render {where})", fix=depth.fix,
                           fault=depth.fault)
        if missing:
            fix = _install_fix(list(missing))
            broken = broken_nvidia_vendor(facts) if host_has_gpu and "egl-vendor" in missing else None
            if broken is not None:
                fix += f"; for the GPU: {_broken_vendor_fix(broken)}"
            return Verdict("fail", f"{backend} cannot render: {_missing_text(missing)} (render {where})",
                                 fix=fix, fault="image")
        said = _first_vtk_message(facts)
        return Verdict("fail", f"{backend} render failed: {facts.get('error') or where}"
                             + (f"; VTK: {said}" if said else ""),
                             fix="see VTK's and Mesa's output in the evidence")
    if not facts.get("frames_identical"):
        digests = facts.get("frame_sha256") or []
        return Verdict("fail", "nondeterministic render: two renders of the same scene differ "
                             f"({', '.join(d[:12] for d in digests)})",
                             fix="anti-aliasing and multi-sampling are off, so the driver is not deterministic: "
                                 "report it with the GL_RENDERER/GL_VERSION in the evidence")
    label = renderer_label(facts)
    t = timings or {}
    note = f"{label}, {_driver_text(facts.get('gl_version'))}"
    if "first_render" in t:
        note += f", {t['first_render']:.2f} s"
    renderer = normalize_renderer(facts.get("gl_renderer"))
    software = renderer in SOFTWARE_RENDERERS
    if backend == "osmesa" and (software or renderer == "unknown"):
        # OSMesa is CPU-only by design: there is no hardware to demand from it.
        return Verdict("pass", f"OSMesa renders with {label} (CPU-only by design)", note=note)
    demand_hw = require_hw_render or (host_has_gpu and require_gpu)
    if renderer == "unknown":
        # No GL_RENDERER (ReportCapabilities said nothing): the frames exist, but nothing
        # shows they came from a GPU, so a hardware demand is not met.
        said = "VTK reported no GL_RENDERER, so hardware rendering is not proven"
        if demand_hw:
            flag = "--require-hw-render" if require_hw_render else "--require-gpu on a GPU host"
            return Verdict("fail", f"{flag}: EGL rendered, but {said}", note=note, fault=None,
                           fix="see the render evidence (gl_vendor, gl_version, VTK's messages): the GL context "
                               "did not report its renderer")
        return Verdict("pass", f"{backend} renders; {said}", note=note + "; renderer unknown")
    if software and demand_hw:
        flag = "--require-hw-render" if require_hw_render else "--require-gpu on a GPU host"
        if host_has_gpu:
            reason, fix, fault = egl_software_cause(facts, runtime, runtime_version, gpu_vendor=gpu_vendor,
                                                    gpu=gpu_facts)
            return Verdict("fail", f"{flag}: EGL rendered with {label}: {reason}", note=note, fix=fix,
                                 fault=fault)
        return Verdict("fail", f"{flag}: EGL rendered with {label} and the host has no GPU", note=note,
                             fix="run on a host with a GPU (Slurm: --gres=gpu:1)", fault="host")
    if software and host_has_gpu:
        # Passes (no flag demands hardware), but the cell says why the GPU was not used.
        reason, fix, _fault = egl_software_cause(facts, runtime, runtime_version, gpu_vendor=gpu_vendor,
                                                 gpu=gpu_facts)
        note += f"; host has a GPU: {reason}"
        return Verdict("pass", f"{backend} renders with {label}; host has a GPU: {reason}", note=note, fix=fix)
    foreign = foreign_egl_device(facts) if backend == "egl" and not software else None
    if foreign is not None:
        if demand_hw:
            flag = "--require-hw-render" if require_hw_render else "--require-gpu on a GPU host"
            return Verdict("fail", f"{flag}: EGL rendered with {label}, but not on this job's GPU: {foreign[0]}",
                           note=note, fix=foreign[1], fault="pair")
        note += f"; not this job's GPU: {foreign[0]}"
        return Verdict("pass", f"{backend} renders with {label}, not on this job's GPU: {foreign[0]}", note=note,
                       fix=foreign[1])
    return Verdict("pass", f"{backend} renders with {label}", note=note)
