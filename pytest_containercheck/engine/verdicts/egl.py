"""Why EGL did not render on the host's GPU: the glvnd vendor files, the NVIDIA driver's EGL library, the
runtime's GPU setup (Docker/Podman capabilities, Apptainer's ``--nv``), AMD's Mesa, and which EGL device VTK
used.  Pure functions of the ``render`` probe's facts, for :func:`.render.render_verdict`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..runtimes import family_of
from .gpu import CAPABILITIES_FIX, driver_capabilities

__all__ = ["NVIDIA_VENDOR_JSON", "amd_software_cause", "apptainer_vendor_problem", "broken_nvidia_vendor",
           "capabilities_problem", "egl_device_opened", "egl_device_used", "egl_software_cause",
           "foreign_egl_device", "vendor_variable_problem"]

NVIDIA_VENDOR_JSON = ('{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}')


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


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
