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
from ..runtimes import family_of
from ..verdict import NOT_INSTALLED, Verdict
from .gpu import CAPABILITIES_FIX, driver_capabilities

WINDOW_CLASSES = {"osmesa": "vtkOSOpenGLRenderWindow", "egl": "vtkEGLRenderWindow"}

#: What provides each library a backend needs: (Debian/Ubuntu, RHEL/Fedora) packages.
PACKAGES = {
    "libOSMesa.so.8": ("libosmesa6", "mesa-libOSMesa"),
    "libEGL.so.1": ("libegl1 libegl-mesa0", "mesa-libEGL"),
    "egl-vendor": ("libegl-mesa0", "mesa-libEGL"),
    "libGL.so.1": ("libgl1", "mesa-libGL"),
}

NVIDIA_VENDOR_JSON = ('{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}')


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


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


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


def _first_vtk_message(facts: Mapping[str, Any]) -> str:
    msgs = [m for m in facts.get("vtk_messages") or [] if "Failed to create a vtkOpenGLRenderWindow" not in m]
    return msgs[0] if msgs else ""


def _missing_text(missing: Mapping[str, str]) -> str:
    parts = []
    for lib, err in missing.items():
        parts.append(f"no EGL vendor library loads ({err})" if lib == "egl-vendor" else f"{lib} does not load ({err})")
    return "; ".join(parts)


def _broken_vendor_fix(entry: Mapping[str, Any]) -> str:
    return (f"{entry.get('library_path')} is the host driver's: let the runtime inject it (Docker: include "
            "'graphics' in NVIDIA_DRIVER_CAPABILITIES, or 'all'; Apptainer: --nv), or, if the image ships "
            f"{entry.get('path')} without the driver, remove that file from the image")


def vendor_variable_problem(facts: Mapping[str, Any], runtime: str) -> tuple[str, str, str] | None:
    """``__EGL_VENDOR_LIBRARY_FILENAMES`` (or ``_DIRS``) names vendor files that do not exist:
    (what it hides, fix, fault), else None.

    glvnd reads only the files that variable names, so a stale value hides the vendor files in
    the default directories (the probe lists them as ``hidden_default_files``). Seen on an H200
    (tests/data/render/h200-egl-vendor-missing-egl.json): with the variable naming a missing
    file, no EGL vendor loaded although /usr/share/glvnd/egl_vendor.d/10_nvidia.json was there,
    and VTK fell back to OSMesa. Installing Mesa's EGL would only make EGL render on the CPU.
    """
    vendor = facts.get("egl_vendor_files") or {}
    search = str(vendor.get("search") or "default")
    if not search.startswith("__EGL_VENDOR_LIBRARY_"):
        return None
    files = vendor.get("files") or []
    gone = [str(f.get("path")) for f in files if str(f.get("error") or "").startswith("FileNotFoundError")]
    if not gone or any(f.get("loaded") for f in files):
        return None
    hidden = [str(p) for p in vendor.get("hidden_default_files") or []]
    what = (f"{search} names {', '.join(gone)}, which does not exist"
            + (f", and hides {', '.join(hidden)} from glvnd" if hidden else ""))
    fix = (f"unset {search} where it is set (the image's environment, or the launch), or point it at an existing "
           "vendor file" + (f" such as {hidden[0]}" if hidden else " (NVIDIA's 10_nvidia.json for the GPU)"))
    return what, fix, "host" if runtime == "host" else "image"


def broken_nvidia_vendor(facts: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The NVIDIA glvnd EGL vendor file whose library does not load, if there is one."""
    for f in (facts.get("egl_vendor_files") or {}).get("files") or []:
        named = f"{f.get('path')} {f.get('library_path')}".lower()
        if "nvidia" in named and not f.get("loaded"):
            return dict(f)
    return None


#: Apptainer's ``--nv`` binds the files its ``nvliblist.conf`` names; the glvnd EGL vendor file
#: ``/usr/share/glvnd/egl_vendor.d/10_nvidia.json`` joined that list in Apptainer 1.4.0 (CHANGELOG.md
#: v1.4.0: "Add configuration file binding to the `--nv` option.  Files that are recognized in the
#: NVIDIA Container Toolkit, including files for EGL ICD, were added to the default `nvliblist.conf`";
#: v1.3.6's nvliblist.conf names no .json file).
APPTAINER_BINDS_EGL_VENDOR = (1, 4)
#: Where a host driver's EGL library comes from: a compute-only (headless) driver install lacks it
#: (Ubuntu splits it into libnvidia-gl-<branch>[-server], "NVIDIA OpenGL/GLX/EGL/GLES GLVND libraries").
_HOST_EGL = ("ldconfig -p | grep libEGL_nvidia on the host; compute-only driver installs lack it: on Ubuntu "
             "install libnvidia-gl-<driver branch> (or -server), which holds the driver's EGL/GL libraries")
_VENDOR_FILE = "/usr/share/glvnd/egl_vendor.d/10_nvidia.json"


def _apptainer_vendor_file(runtime_version: str | None) -> tuple[str, str, str]:
    """(what, fix, fault) when Apptainer's --nv bound libEGL_nvidia.so.0 but no NVIDIA vendor file."""
    have = _version(str(runtime_version or ""))
    bind = f"--runtime-arg=--bind={_VENDOR_FILE}"
    if have and have[0] == 1 and have[:2] >= APPTAINER_BINDS_EGL_VENDOR:
        return (f"Apptainer {runtime_version} --nv binds {_VENDOR_FILE} when the host has it, and none arrived: the "
                "host's driver has no such file there (installed elsewhere, e.g. /etc/glvnd/egl_vendor.d, or not "
                "at all)",
                "on the host: find the driver's 10_nvidia.json and add its path to Apptainer's nvliblist.conf, or "
                f"bind it: --runtime-arg=--bind=<its path>:{_VENDOR_FILE}", "host")
    which = f"Apptainer {runtime_version}" if have else "this Apptainer (version unknown)"
    return (f"{which} --nv bound the driver's libEGL_nvidia.so.0 but not its glvnd vendor file 10_nvidia.json: "
            "Apptainer binds that file only from 1.4 on (nvliblist.conf)",
            f"upgrade Apptainer to 1.4 or later, or bind the host's file: {bind} (apptainer exec --nv --bind "
            f"{_VENDOR_FILE}); installing Mesa's EGL instead would only render on the CPU", "host")


def apptainer_vendor_problem(facts: Mapping[str, Any], runtime: str,
                             runtime_version: str | None = None) -> tuple[str, str, str] | None:
    """(what, fix, fault) when no NVIDIA EGL vendor file is in an Apptainer image on a GPU host although
    --nv bound ``libEGL_nvidia.so.0``: the vendor file was not bound (Apptainer older than 1.4)."""
    if facts.get("apptainer_libs") is None and family_of(runtime) != "sif":
        return None
    files = (facts.get("egl_vendor_files") or {}).get("files") or []
    if any("nvidia" in f"{f.get('path')} {f.get('library_path')}".lower() for f in files):
        return None
    if not ((facts.get("libraries") or {}).get("libEGL_nvidia.so.0") or {}).get("loaded"):
        return None
    return _apptainer_vendor_file(runtime_version)


def egl_software_cause(facts: Mapping[str, Any], runtime: str, runtime_version: str | None = None, *,
                       gpu_vendor: str | None = None, gpu: Mapping[str, Any] | None = None) -> tuple[str, str, str]:
    """Why EGL rendered on the CPU although the host has a GPU: (reason, fix, fault).

    Reads the probe's diagnosis: the NVIDIA device nodes, whether the driver's
    ``libEGL_nvidia.so.0`` was injected and loads, which glvnd vendor files exist, and
    ``NVIDIA_DRIVER_CAPABILITIES``; under Apptainer its *runtime_version* and whether
    nvidia-container-cli set the GPU up (*gpu*, the session's GPU facts).  On an AMD host
    (*gpu_vendor*) the causes are Mesa's (:func:`amd_software_cause`), never NVIDIA's.
    """
    if gpu_vendor == "amd":
        return amd_software_cause(facts, runtime)
    env = facts.get("env") or {}
    libs = facts.get("libraries") or {}
    vendor = facts.get("egl_vendor_files") or {}
    files = vendor.get("files") or []
    nv_files = [f for f in files if "nvidia" in str(f.get("library_path") or "").lower()]
    nv_lib = libs.get("libEGL_nvidia.so.0") or {}
    apptainer = facts.get("apptainer_libs") is not None or family_of(runtime) == "sif"
    caps = env.get("NVIDIA_DRIVER_CAPABILITIES")
    json_fix = (f"ship /usr/share/glvnd/egl_vendor.d/10_nvidia.json containing {NVIDIA_VENDOR_JSON} in the image")
    if not facts.get("dev_nvidia"):
        how = "Apptainer: --nv" if apptainer else "Docker/Podman: --gpus all with the NVIDIA Container Toolkit"
        return ("no /dev/nvidia* inside the container: the GPU was not passed in", f"start the image with GPU access "
                f"({how}); under Slurm request a GPU (--gres=gpu:1)", "host")
    if nv_files:
        f = nv_files[0]
        if f.get("loaded"):
            devices = (facts.get("egl_devices") or {}).get("devices") or []
            vendors = sorted({str(d.get("vendor")) for d in devices if d.get("vendor")})
            # The job's own GPU first: the NVIDIA device that is CUDA device 0 (EGL_NV_device_cuda).
            nvidia = [int(d["index"]) for d in sorted(devices, key=lambda d: d.get("cuda_device") != 0)
                      if "nvidia" in str(d.get("vendor") or "").lower() and isinstance(d.get("index"), int)]
            used = egl_device_used(facts)
            index = str(nvidia[0]) if nvidia else "N (the NVIDIA device's index among the EGL devices)"
            return (f"the NVIDIA EGL vendor ({f.get('path')}) loads, but VTK's EGL display is "
                    f"{facts.get('gl_renderer')} (EGL devices: {', '.join(vendors) or 'none listed'}; "
                    f"VTK used {used})",
                    f"set VTK_EGL_DEVICE_INDEX={index} (or VTK_DEFAULT_EGL_DEVICE_INDEX={index}) in the image's "
                    "environment, or check that /dev/dri and /dev/nvidia* nodes match the GPU allocated to "
                    "this job", "pair")
        err = str(f.get("error") or "")
        if "GLIBC" in err or "version `" in err:
            return (f"the host's {f.get('library_path')} (named by {f.get('path')}) needs a newer glibc than "
                    f"the image has: {err}", "rebuild the image on a newer base (glibc at least the host's)", "pair")
        return (f"the NVIDIA EGL vendor file {f.get('path')} names {f.get('library_path')}, which does not "
                f"load: {err}", _broken_vendor_fix(f), "host")
    hidden = [p for p in vendor.get("hidden_default_files") or [] if "nvidia" in p.lower()]
    if hidden:
        return (f"{vendor.get('search')} is set and hides {', '.join(hidden)} from glvnd",
                f"unset {vendor.get('search')} or add the NVIDIA vendor file to it", "image")
    if apptainer and (gpu or {}).get("nvccli"):
        # nvidia-container-cli mounts the driver's files for the capabilities it is given; it does
        # not read nvliblist.conf (apptainer launcher_linux.go: setNvCCLIConfig vs setNVLegacyConfig).
        return ("nvidia-container-cli set up the GPU and no NVIDIA EGL vendor was mounted (libEGL_nvidia.so.0: "
                f"{'loads' if nv_lib.get('loaded') else nv_lib.get('error') or 'not found'}; "
                f"NVIDIA_DRIVER_CAPABILITIES of apptainer's environment: "
                f"{(gpu or {}).get('nvccli_capabilities') or 'unset, compute,utility'})",
                "give nvidia-container-cli the 'graphics' capability (export NVIDIA_DRIVER_CAPABILITIES="
                f"compute,utility,graphics where apptainer runs) and check the host driver's EGL library "
                f"({_HOST_EGL})", "host")
    if nv_lib.get("loaded"):
        if apptainer:
            what, fix, fault = _apptainer_vendor_file(runtime_version)
            return (f"{what}, so glvnd only finds Mesa", f"{fix}; or {json_fix}", fault)
        return ("the image has no glvnd EGL vendor file for NVIDIA (10_nvidia.json), so glvnd only finds Mesa, "
                "although the driver's libEGL_nvidia.so.0 is present", json_fix, "image")
    if apptainer:
        return ("Apptainer --nv did not bind the NVIDIA driver's libEGL_nvidia.so.0 "
                f"(/.singularity.d/libs: {', '.join(facts.get('apptainer_libs') or []) or 'empty'})",
                "add libEGL_nvidia.so to Apptainer's nvliblist.conf, or check that the host driver "
                f"installed its EGL library ({_HOST_EGL})", "host")
    if caps is None or not ({"graphics", "all"} & {c.strip() for c in caps.split(",")}):
        return (f"NVIDIA_DRIVER_CAPABILITIES={caps or '(unset: toolkit default compute,utility)'} lacks 'graphics', "
                "so the NVIDIA Container Toolkit did not inject the EGL driver (libEGL_nvidia.so.0, 10_nvidia.json)",
                f"{CAPABILITIES_FIX}; or NVIDIA_DRIVER_CAPABILITIES=all", "image")
    return ("libEGL_nvidia.so.0 is not in the image although 'graphics' was requested: "
            f"{nv_lib.get('error') or 'not found'}",
            "check that the host driver has its EGL library, which the runtime can only inject if it is there "
            f"({_HOST_EGL}), then the NVIDIA Container Toolkit on the host (nvidia-ctk, a CDI spec with the graphics "
            "libraries)", "host")


#: Mesa's loader when a DRI driver does not load (mesa ``src/loader/loader.c``, ``loader_open_driver_lib``:
#: ``"MESA-LOADER: failed to open %s: %s (search paths %s, suffix %s)"`` at warning level).
_MESA_LOADER = re.compile(r"MESA-LOADER: failed to open (\w+)[^\n]*")
_MESA_DRI_FIX = ("install Mesa's hardware drivers in the image: apt-get install -y libgl1-mesa-dri libegl-mesa0 "
                 "(Debian/Ubuntu) or dnf install -y mesa-dri-drivers mesa-libEGL (RHEL/Fedora): radeonsi renders on "
                 "AMD GPUs")
#: Mesa's variables that force a software renderer (docs.mesa3d.org, "Environment Variables").
_MESA_SOFTWARE = {"LIBGL_ALWAYS_SOFTWARE": ("1", "true", "yes"), "GALLIUM_DRIVER": ("llvmpipe", "softpipe", "lavapipe")}


def amd_software_cause(facts: Mapping[str, Any], runtime: str) -> tuple[str, str, str]:
    """Why EGL rendered on the CPU on a host whose GPU is AMD's: (reason, fix, fault).

    On AMD GPUs EGL is Mesa's own: libEGL_mesa with the ``radeonsi`` DRI driver on a DRI render
    node (``/dev/dri/renderD*``), which the process must be able to open read-write.  So, in order:
    no render node inside (the launch: Docker/Podman ``--device /dev/dri``, AMD's "Running ROCm
    Docker containers"), a render node this user may not open (its group: ``--group-add``), a
    Mesa variable forcing software, Mesa's loader failing to load a driver, no ``radeonsi`` in
    the image's Mesa.  Nothing NVIDIA: no ``NVIDIA_DRIVER_CAPABILITIES``, no vendor file.
    """
    env = facts.get("env") or {}
    render = [p for p in facts.get("dev_dri") or [] if "/renderD" in str(p)]
    sif = family_of(runtime) == "sif"
    if not render:
        how = ("Apptainer binds the host's /dev unless --contain (or --containall) is given; --rocm adds the "
               "ROCm libraries") if sif else ("Docker/Podman: --device /dev/dri (the plugin passes it on an AMD "
                                              "host unless --gpus none)")
        return ("no DRI render node (/dev/dri/renderD*) inside the container: Mesa's EGL has no AMD GPU to open",
                how, "host")
    access = facts.get("dri_access") or {}
    denied = [p for p in render if access.get(p) is False]
    if denied and len(denied) == len(render):
        return (f"{', '.join(denied)} cannot be opened read-write by the image's user inside: Mesa cannot use the GPU",
                "give the container's user the render node's group: docker run --group-add $(stat -c %g "
                f"{denied[0]}) (AMD documents --group-add video / render); under Apptainer, a user in that group on "
                "the host", "pair")
    for name, values in _MESA_SOFTWARE.items():
        if str(env.get(name) or "").lower() in values:
            return (f"{name}={env.get(name)} makes Mesa render on the CPU", f"unset {name} (the image's ENV, or the "
                    "launch)", "image")
    said = "\n".join(str(facts.get(k) or "") for k in ("render_output_tail", "diagnose_output")) + "\n" + \
        "\n".join(map(str, facts.get("vtk_messages") or []))
    loader = _MESA_LOADER.search(said)
    if loader:
        return (f"Mesa could not load its {loader.group(1)} driver ({loader.group(0).strip()[:200]})", _MESA_DRI_FIX,
                "image")
    drivers = facts.get("mesa_dri_drivers")
    if isinstance(drivers, list) and "radeonsi" not in drivers:
        return (f"the image's Mesa has no driver for AMD GPUs (radeonsi_dri.so; DRI drivers found: "
                f"{', '.join(drivers) or 'none'})", _MESA_DRI_FIX, "image")
    devices = (facts.get("egl_devices") or {}).get("devices") or []
    hw = next((d for d in devices if str(d.get("drm_device_file") or "").startswith("/dev/dri/renderD")
               and "version" in d), None)
    used = egl_device_used(facts)
    if hw is not None:
        return (f"Mesa's EGL device {hw.get('index')} ({hw.get('drm_device_file')}) initialises, but VTK used {used}",
                f"set VTK_DEFAULT_EGL_DEVICE_INDEX={hw.get('index')} in the image's environment", "pair")
    return (f"no EGL device on {', '.join(render)} initialised (EGL devices: "
            f"{', '.join(str(d.get('drm_device_file') or d.get('vendor') or '?') for d in devices) or 'none listed'})",
            "check on the host that the GPU renders (rocminfo, 'eglinfo -B' from mesa-utils) and that the amdgpu "
            "kernel driver is loaded; see the render evidence", "host")


def _atoi(text: str | None) -> int | None:
    """C's ``atoi`` as VTK calls it on the device variables: leading blanks, a sign, digits; 0 for
    text without digits; None when the variable is not set."""
    if text is None:
        return None
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def egl_device_opened(facts: Mapping[str, Any]) -> int | None:
    """The index of the EGL device VTK's window opened, worked out the way
    ``vtkEGLRenderWindow::SetDeviceAsDisplay`` (Kitware/VTK, ``Rendering/OpenGL2/
    vtkEGLRenderWindow.cxx``) picks it.

    * ``VTK_EGL_DEVICE_INDEX`` >= 0 sets ``DeviceIndex``: that device, initialised or not.
    * Otherwise (``DeviceIndex`` -1) the default device, ``VTK_DEFAULT_EGL_DEVICE_INDEX`` when it is
      >= 0 (else the build's default, 0); if it does not initialise, VTK "Trying other devices..." in
      enumeration order and keeps the first that does.

    Whether a device initialises is read from the probe's own enumeration (``egl_devices``, the
    same libEGL in the same environment). None when this is not an EGL window or nothing tells.
    """
    if facts.get("window_class") != "vtkEGLRenderWindow":
        return None
    index = facts.get("egl_device_index")
    if isinstance(index, int) and index >= 0:
        return index
    env = facts.get("env") or {}
    default = _atoi(env.get("VTK_DEFAULT_EGL_DEVICE_INDEX"))
    default = default if default is not None and default >= 0 else 0
    devices = [d for d in (facts.get("egl_devices") or {}).get("devices") or [] if isinstance(d.get("index"), int)]
    chosen = next((d for d in devices if d["index"] == default), None)
    if chosen is not None and "init_error" in chosen:
        return next((d["index"] for d in devices if d["index"] != default and "version" in d), None)
    return default


def _cuda_of(device: Mapping[str, Any] | None) -> str:
    """What ``EGL_NV_device_cuda`` said of one EGL device, for a reason text."""
    if device is None:
        return ""
    if isinstance(device.get("cuda_device"), int):
        return f", CUDA device {device['cuda_device']}"
    if device.get("cuda_device_error"):
        return ", a GPU this process's CUDA does not see"
    return ""


def _egl_device(facts: Mapping[str, Any], index: int | None) -> Mapping[str, Any] | None:
    devices = (facts.get("egl_devices") or {}).get("devices") or []
    return next((d for d in devices if d.get("index") == index), None) if index is not None else None


def egl_device_used(facts: Mapping[str, Any]) -> str:
    """Which EGL device VTK rendered on, as far as the facts tell.

    ``vtkEGLRenderWindow`` (VTK 9.x, ``vtkEGLRenderWindow.cxx``) keeps ``DeviceIndex = -1``
    unless ``VTK_EGL_DEVICE_INDEX`` is set; with -1 it opens the default device,
    ``VTK_DEFAULT_EGL_DEVICE_INDEX`` (build default 0), trying the others if that one fails
    to initialise.  A window of another class (OSMesa) has no EGL device at all.  Where the
    NVIDIA driver answered ``EGL_CUDA_DEVICE_NV`` for that device, the CUDA device it is follows.
    """
    if facts.get("window_class") != "vtkEGLRenderWindow":
        return "no EGL device (not an EGL window)"
    env = facts.get("env") or {}
    count = facts.get("egl_device_count")
    of = f" of {count}" if isinstance(count, int) else ""
    opened = egl_device_opened(facts)
    cuda = _cuda_of(_egl_device(facts, opened))
    index = facts.get("egl_device_index")
    if isinstance(index, int) and index >= 0:
        return f"EGL device {index}{of} (VTK_EGL_DEVICE_INDEX={env.get('VTK_EGL_DEVICE_INDEX', index)}){cuda}"
    default = env.get("VTK_DEFAULT_EGL_DEVICE_INDEX")
    if default is not None:
        text = f"EGL device {default}{of} (VTK_DEFAULT_EGL_DEVICE_INDEX={default})"
    else:
        text = f"the default EGL device, 0{of} (neither VTK_EGL_DEVICE_INDEX nor VTK_DEFAULT_EGL_DEVICE_INDEX set)"
    wanted = _atoi(default) if default is not None else 0
    if opened is not None and opened != wanted:
        text += f", which did not initialise, so EGL device {opened}"
    return text + cuda


def foreign_egl_device(facts: Mapping[str, Any]) -> tuple[str, str] | None:
    """VTK rendered on an NVIDIA GPU that this process's CUDA does not see, while another EGL device
    is its CUDA device 0: on a shared node, a GPU the job was not given. (reason, fix), or None.

    Sources: the Khronos ``EGL_NV_device_cuda`` extension maps an EGL device to a CUDA device
    (``EGL_CUDA_DEVICE_NV``, 0x323A, through ``eglQueryDeviceAttribEXT``); the ordinals it answers
    are those of the process's CUDA, relative to ``CUDA_VISIBLE_DEVICES`` (RLinf/RLinf pull 1458,
    which maps them back for its workers); EGL's enumeration order is not CUDA's
    (google-deepmind/mujoco issue 3245: ``CUDA_VISIBLE_DEVICES=2`` rendered on GPU 0 of 7);
    VTK renders on EGL device ``VTK_DEFAULT_EGL_DEVICE_INDEX`` (0) whatever CUDA uses
    (``vtkEGLRenderWindow.cxx``). The rule acts only on a failed query for the device VTK used and
    a device that answered 0: where the driver answers for every GPU it says nothing.
    """
    opened = egl_device_opened(facts)
    used = _egl_device(facts, opened)
    if used is None or "nvidia" not in str(used.get("vendor") or "").lower() or not used.get("cuda_device_error"):
        return None
    devices = (facts.get("egl_devices") or {}).get("devices") or []
    job = next((d for d in devices if d.get("cuda_device") == 0 and isinstance(d.get("index"), int)), None)
    if job is None:
        return None
    env = facts.get("env") or {}
    given = ", ".join(f"{k}={env[k]}" for k in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
                      if k in env)
    k = job["index"]
    return (f"VTK rendered on EGL device {opened}, an NVIDIA GPU this process's CUDA does not see "
            f"({given or 'CUDA_VISIBLE_DEVICES not in the facts'}); the GPU CUDA uses, CUDA device 0, is "
            f"EGL device {k}",
            f"render on the job's own GPU: set VTK_DEFAULT_EGL_DEVICE_INDEX={k} in the job (the index depends "
            "on the node and on the GPUs the job was given: map CUDA device 0 to its EGL device through "
            "EGL_NV_device_cuda, as this check does), or let jobs open only their own GPUs (Slurm: "
            "ConstrainDevices=yes in cgroup.conf)")


def _driver_text(gl_version: str | None) -> str:
    """``4.5 (Core Profile) Mesa 22.3.6`` -> ``Mesa 22.3.6``; ``4.6.0 NVIDIA 550.54`` -> ``NVIDIA 550.54``."""
    m = re.search(r"\b(Mesa|NVIDIA)\s+\S+", gl_version or "")
    return m.group(0) if m else (gl_version or "GL version unknown")


def capabilities_problem(facts: Mapping[str, Any], runtime: str, gpu: Mapping[str, Any] | None,
                         emulated: Sequence[str] = ()) -> tuple[str, str, str] | None:
    """(reason, fix, fault) when the NVIDIA driver capabilities the container got lack ``graphics``
    (:func:`~.gpu.driver_capabilities`): then the runtime gives it no EGL driver and EGL
    can only render on the CPU, under the users' own launch as under the check's."""
    decided = driver_capabilities(facts.get("env") or {}, family_of(runtime), gpu, emulated)
    if decided is None or "graphics" in decided["caps"]:
        return None
    return (f"NVIDIA_DRIVER_CAPABILITIES={decided['value']} ({decided['source']}) lacks 'graphics': the NVIDIA EGL "
            "driver (libEGL_nvidia.so.0, 10_nvidia.json) is not given to the container, so EGL can only render on "
            "the CPU", decided["fix"], decided["fault"])


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
            if err.startswith("ModuleNotFoundError"):
                return Verdict("skip", f"pyvista/vtk {NOT_INSTALLED} ({err})", missing=lib)
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
                                 fix="install the system libraries the error names (e.g. libxrender1, libgomp1)",
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
