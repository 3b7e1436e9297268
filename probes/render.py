# Probe: headless VTK rendering through pyvista, with a requested OpenGL window backend.
# Stdlib-only at import, Python 3.7+.  Facts only: pytest_containercheck/checks/test_render.py
# judges them.
#
# Params: backend ("osmesa" | "egl"), width, height (400x300), aa ("none" | "fxaa" | "ssaa" |
# "msaa"; default "none"), scene (optional pyvista script run with `plotter`, `pv`, `np`, and
# `builtin_scene()`, which adds the built-in scene to `plotter`).
#
# Why the rendering runs in a forked child: VTK does not fail politely.  Without libOSMesa
# it prints a warning and then segfaults inside the first render; other broken stacks abort.
# The child renders, streams what it learns to us stage by stage over a pipe, and writes its
# stdout/stderr into a file we read afterwards, so a crash becomes facts ("killed by SIGSEGV
# after the window was created, with these VTK messages") instead of a crashed probe.  The
# ctypes/EGL diagnosis also runs in its own child: initialising a broken EGL driver can crash.

# May run in a bundle (see _envelope.bundle): numpy and pyvista (with VTK) imported once,
# silently, before each backend's process is forked.  VTK picks the window class from
# VTK_DEFAULT_OPENGL_WINDOW when it creates a render window, not at import (VTK's
# Documentation/docs/advanced/runtime_settings.md, "OpenGL"; seen with VTK 9.7.2: a window
# created after the variable was set in a child forked after the import had the requested
# class, EGL and OSMesa alike), and importing pyvista opens no display.
SHARED_IMPORTS = ("numpy", "pyvista", "pyvista.plotting")
# The libraries this probe judges: whose absence skips its rows (the pythons probe looks for them).
LIBRARIES = ("pyvista", "vtk")

_RENDER_WINDOW_CLASSES = {"osmesa": "vtkOSOpenGLRenderWindow", "egl": "vtkEGLRenderWindow"}

# Sonames VTK's PyPI wheels dlopen (seen with LD_DEBUG=libs), plus the rest of the GL stack
# for diagnosis (libEGL_nvidia: whether the NVIDIA driver's EGL was injected into the image).
# A missing libGL does not stop OSMesa or EGL rendering (VTK does not load it); reported only.
_GL_SONAMES = (
    "libOSMesa.so.8",
    "libEGL.so.1",
    "libGL.so.1",
    "libGLX.so.0",
    "libGLESv2.so.2",
    "libOpenGL.so.0",
    "libGLdispatch.so.0",
    "libEGL_mesa.so.0",
    "libEGL_nvidia.so.0",
)

# glvnd's default search path for EGL vendor (ICD) files: sysconfdir first, then datadir.
_EGL_VENDOR_DIRS = ("/etc/glvnd/egl_vendor.d", "/usr/share/glvnd/egl_vendor.d")

_RENDER_ENV_KEYS = (
    "NVIDIA_DRIVER_CAPABILITIES",
    "NVIDIA_VISIBLE_DEVICES",
    # What the NVIDIA hook reads besides: a "legacy" CUDA image (CUDA_VERSION without
    # NVIDIA_REQUIRE_CUDA) gets every capability when it sets none.
    "CUDA_VERSION",
    "NVIDIA_REQUIRE_CUDA",
    "LIBGL_DRIVERS_PATH",
    "__EGL_VENDOR_LIBRARY_FILENAMES",
    "__EGL_VENDOR_LIBRARY_DIRS",
    "__GLX_VENDOR_LIBRARY_NAME",
    "VTK_DEFAULT_OPENGL_WINDOW",
    "VTK_DEFAULT_EGL_DEVICE_INDEX",
    "VTK_EGL_DEVICE_INDEX",
    "CUDA_VISIBLE_DEVICES",
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
    "LD_LIBRARY_PATH",
    "LIBGL_ALWAYS_SOFTWARE",
    "GALLIUM_DRIVER",
    "MESA_LOADER_DRIVER_OVERRIDE",
    "EGL_PLATFORM",
    "DISPLAY",
    "APPTAINER_NAME",
    "SINGULARITY_NAME",
)

_CAPABILITY_KEYS = {
    "OpenGL vendor string": "gl_vendor",
    "OpenGL renderer string": "gl_renderer",
    "OpenGL version string": "gl_version",
    "EGL vendor string": "egl_vendor",
    "EGL version string": "egl_version",
    "EGL client APIs": "egl_client_apis",
}

_OUTPUT_TAIL = 6000


# --------------------------------------------------------------------------- isolation


def _render_isolated(func, params, ctx=None):
    """Run `func(params, send)` in a forked child; return (messages, exit, output).

    `send(dict)` streams one message to us; `exit` is "ok" or how the child died; `output`
    is everything the child printed (VTK and Mesa write their complaints to stderr).
    An exception `func` raises becomes an {"error": ctx.exc_text(exc)} message; without
    *ctx* (render.py loaded on its own, as its unit tests do) the traceback module's
    one-line form is used.
    """
    import json
    import os
    import signal
    import sys
    import tempfile
    import traceback

    def describe(exc):
        if ctx is not None:
            return ctx.exc_text(exc)
        return traceback.format_exception_only(type(exc), exc)[-1].strip()

    if not hasattr(os, "fork"):
        messages = []
        try:
            func(params, messages.append)
        except Exception as exc:
            messages.append({"error": describe(exc)})
        return messages, "ok (in-process: no fork)", ""

    sys.stdout.flush()
    sys.stderr.flush()
    # Without ctx (render.py loaded on its own, by its unit tests) a plain temporary file.
    capture = ctx.scratch_file() if ctx is not None else tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    remaining = signal.alarm(0) if hasattr(signal, "alarm") else 0
    if remaining:
        signal.alarm(remaining)
    pid = os.fork()
    if pid == 0:  # the child: never return into the parent's code
        code = 0
        try:
            os.close(read_fd)
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            if remaining:  # alarms are not inherited; keep the probe's own watchdog
                signal.alarm(remaining)

            def send(message):
                data = (json.dumps(message) + "\n").encode("utf-8")
                while data:
                    data = data[os.write(write_fd, data):]

            try:
                func(params, send)
            except BaseException as exc:
                send({"error": describe(exc), "traceback": traceback.format_exc()[-4000:]})
        except BaseException:
            code = 70
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    capture.seek(0)
    output = capture.read().decode("utf-8", "replace")
    capture.close()
    if output:
        # Keep the child's output as evidence on our stderr too (it is never parsed there).
        sys.stderr.write(output if output.endswith("\n") else output + "\n")
        sys.stderr.flush()
    messages = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            pass  # a truncated last line from a child that died mid-write
    return messages, _render_exit_text(status), output


def _render_exit_text(status):
    import os
    import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        return "killed by signal %d (%s)" % (sig, name)
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else "exit status %d" % code


def _strip_ansi(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _vtk_messages(output):
    """VTK's warnings/errors (loguru 'WARN|'/'ERR|' lines, or vtkOutputWindow 'ERROR:')."""
    found = []
    for line in _strip_ansi(output).splitlines():
        if "WARN|" in line or "ERR|" in line or "FATL|" in line:
            text = line.split("|", 1)[1].strip() if "|" in line else line.strip()
        elif line.startswith(("ERROR:", "Warning:", "Generic Warning:")):
            text = line.strip()
        else:
            continue
        if text and text not in found:
            found.append(text[:500])
    return found[:30]


# --------------------------------------------------------------------------- diagnosis


def _egl_vendor_files(ctx, env):
    """The glvnd EGL vendor files glvnd would consider, and whether each one's library loads."""
    import glob
    import json
    import os

    listed = []
    names = env.get("__EGL_VENDOR_LIBRARY_FILENAMES")
    dirs = env.get("__EGL_VENDOR_LIBRARY_DIRS")
    # glvnd: FILENAMES wins outright; else DIRS replaces the defaults.
    if names:
        listed = [(p, "__EGL_VENDOR_LIBRARY_FILENAMES") for p in names.split(":") if p]
        search = "__EGL_VENDOR_LIBRARY_FILENAMES"
    else:
        search_dirs = [d for d in dirs.split(":") if d] if dirs else list(_EGL_VENDOR_DIRS)
        search = "__EGL_VENDOR_LIBRARY_DIRS" if dirs else "default"
        for d in search_dirs:
            for path in sorted(glob.glob(os.path.join(d, "*.json"))):
                listed.append((path, d))
    out = []
    for path, origin in listed:
        entry = {"path": path, "origin": origin}
        try:
            with open(path) as fh:
                doc = json.load(fh)
            entry["library_path"] = (doc.get("ICD") or {}).get("library_path")
        except Exception as exc:
            entry["error"] = ctx.exc_text(exc)
            out.append(entry)
            continue
        if entry["library_path"]:
            entry.update(ctx.load_library(entry["library_path"])[1])
        out.append(entry)
    # Files in the default dirs that an env override hides: a common misconfiguration.
    others = []
    if search != "default":
        for d in _EGL_VENDOR_DIRS:
            others.extend(sorted(glob.glob(os.path.join(d, "*.json"))))
    return {"search": search, "files": out, "hidden_default_files": others}


def _egl_devices():
    """Enumerate EGL devices through libEGL directly: count, vendor, version, extensions.

    This says which drivers EGL can reach (Mesa's software device, NVIDIA's GPUs) without
    involving VTK; glvnd picks vendors from the vendor files reported above.
    """
    import ctypes

    out = {}
    try:
        egl = ctypes.CDLL("libEGL.so.1")
    except OSError as exc:
        out["error"] = str(exc)[:500]
        return out
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    egl.eglQueryString.restype = ctypes.c_char_p
    egl.eglQueryString.argtypes = [ctypes.c_void_p, ctypes.c_int]
    egl.eglInitialize.restype = ctypes.c_uint
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    egl.eglTerminate.argtypes = [ctypes.c_void_p]
    egl.eglGetError.restype = ctypes.c_int
    client = egl.eglQueryString(None, 0x3055)  # EGL_EXTENSIONS of EGL_NO_DISPLAY
    out["client_extensions"] = (client or b"").decode("ascii", "replace").split()
    query_addr = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    if not query_addr:
        out["error"] = "eglQueryDevicesEXT not available (no EGL_EXT_device_enumeration)"
        return out
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.c_int))(query_addr)
    count = ctypes.c_int(0)
    if not query(0, None, ctypes.byref(count)):
        out["error"] = "eglQueryDevicesEXT failed (EGL error 0x%x)" % egl.eglGetError()
        return out
    out["device_count"] = count.value
    n = min(count.value, 16)
    devices = (ctypes.c_void_p * max(n, 1))()
    query(n, devices, ctypes.byref(count))
    string_addr = egl.eglGetProcAddress(b"eglQueryDeviceStringEXT")
    display_addr = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    attrib_addr = egl.eglGetProcAddress(b"eglQueryDeviceAttribEXT")
    dev_string = (ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)(string_addr)
                  if string_addr else None)
    # EGLBoolean eglQueryDeviceAttribEXT(EGLDeviceEXT, EGLint, EGLAttrib *) (EGL_EXT_device_query);
    # EGLAttrib is intptr_t.
    dev_attrib = (ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_ssize_t))(attrib_addr)
                  if attrib_addr else None)
    get_display = (ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_int))(display_addr)
                   if display_addr else None)
    listed = []
    for i in range(n):
        dev = {"index": i}
        if dev_string:
            ext = dev_string(devices[i], 0x3055)
            dev["extensions"] = (ext or b"").decode("ascii", "replace").split()
            if "EGL_EXT_device_drm" in dev["extensions"]:
                drm = dev_string(devices[i], 0x3233)  # EGL_DRM_DEVICE_FILE_EXT
                dev["drm_device_file"] = (drm or b"").decode("ascii", "replace") or None
            if "EGL_NV_device_cuda" in dev["extensions"] and dev_attrib:
                # EGL_CUDA_DEVICE_NV (0x323A, Khronos EGL_NV_device_cuda): the CUDA device this EGL
                # device is, as an ordinal of this process's CUDA (relative to CUDA_VISIBLE_DEVICES).
                # The query's answer for a GPU outside CUDA_VISIBLE_DEVICES is not documented: both
                # outcomes are recorded as they come.
                value = ctypes.c_ssize_t(-1)
                if dev_attrib(devices[i], 0x323A, ctypes.byref(value)):
                    dev["cuda_device"] = int(value.value)
                else:
                    dev["cuda_device_error"] = ("eglQueryDeviceAttribEXT(EGL_CUDA_DEVICE_NV) failed "
                                                "(EGL error 0x%x)" % egl.eglGetError())
        if get_display:
            dpy = get_display(0x313F, devices[i], None)  # EGL_PLATFORM_DEVICE_EXT
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            if dpy and egl.eglInitialize(dpy, ctypes.byref(major), ctypes.byref(minor)):
                dev["version"] = "%d.%d" % (major.value, minor.value)
                dev["vendor"] = (egl.eglQueryString(dpy, 0x3053) or b"").decode("ascii", "replace")
                egl.eglTerminate(dpy)
            else:
                dev["init_error"] = "eglInitialize failed (EGL error 0x%x)" % egl.eglGetError()
        listed.append(dev)
    out["devices"] = listed
    return out


def _render_diagnose(ctx, params, send):
    """Child: which GL libraries load, the EGL vendor files, EGL devices, Apptainer libs."""
    import glob
    import os

    env = dict(os.environ)
    send({"facts": {"libraries": dict((name, ctx.load_library(name)[1]) for name in _GL_SONAMES)}})
    send({"facts": {"egl_vendor_files": _egl_vendor_files(ctx, env)}})
    facts = {}
    if os.path.isdir("/.singularity.d"):
        try:
            facts["apptainer_libs"] = sorted(os.listdir("/.singularity.d/libs"))
        except OSError as exc:
            facts["apptainer_libs"] = None
            facts["apptainer_libs_error"] = str(exc)
    facts["dev_dri"] = sorted(glob.glob("/dev/dri/*"))
    facts["dev_nvidia"] = sorted(glob.glob("/dev/nvidia*"))
    # Whether this user may open each render node (Mesa's hardware drivers need read and write;
    # the nodes belong to the 'render' group on most distributions).
    facts["dri_access"] = dict((p, os.access(p, os.R_OK | os.W_OK)) for p in facts["dev_dri"] if "/renderD" in p)
    # Mesa's DRI drivers in the image (radeonsi for AMD GPUs, swrast/llvmpipe for the CPU).
    dirs = [d for d in (env.get("LIBGL_DRIVERS_PATH") or "").split(":") if d]
    dirs += glob.glob("/usr/lib*/dri") + glob.glob("/usr/lib/*/dri")
    facts["mesa_dri_drivers"] = sorted(set(os.path.basename(p)[:-len("_dri.so")] for d in dirs
                                           for p in glob.glob(os.path.join(d, "*_dri.so"))))
    # Mesa's software driver (llvmpipe), which EGL on the CPU loads through the DRI loader, which says
    # nothing when it fails: whether it loads, and if not what breaks it (its LLVM, libstdc++, libdrm).
    swrast = next((os.path.join(d, "swrast_dri.so") for d in dirs if os.path.isfile(os.path.join(d, "swrast_dri.so"))),
                  None)
    if swrast:
        facts["mesa_swrast"] = dict(ctx.load_library(swrast)[1], file=swrast)
    send({"facts": facts})
    # Last: the one step that runs driver code and could crash.
    send({"facts": {"egl_devices": {"error": "started, did not finish"}}})
    send({"facts": {"egl_devices": _egl_devices()}})


# --------------------------------------------------------------------------- rendering


def _render_png(frame):
    """Encode an (h, w, 3|4) uint8 array as PNG with zlib: no imaging library needed."""
    import struct
    import zlib

    height, width = int(frame.shape[0]), int(frame.shape[1])
    channels = int(frame.shape[2]) if len(frame.shape) == 3 else 1
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    data = frame.tobytes()
    stride = width * channels
    raw = b"".join(b"\x00" + data[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(tag, body):
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def _render_builtin_scene(plotter, pv):
    """The fixed scene of the built-in rows: every colour, light and camera pinned, so the
    pixels depend on the renderer only (not on pyvista's theme or light-kit defaults)."""
    plotter.set_background((0.15, 0.17, 0.22))
    plotter.add_mesh(pv.Plane(center=(0.0, 0.0, -0.55), i_size=4.2, j_size=2.6, i_resolution=1,
                              j_resolution=1),
                     color=(0.78, 0.78, 0.74), smooth_shading=False)
    plotter.add_mesh(pv.Sphere(radius=0.55, center=(0.0, 0.0, 0.0), theta_resolution=40,
                               phi_resolution=40),
                     color=(0.86, 0.22, 0.2), smooth_shading=True, specular=0.5,
                     specular_power=25)
    plotter.add_mesh(pv.Cube(center=(1.35, 0.15, -0.15), x_length=0.8, y_length=0.8,
                             z_length=0.8).rotate_z(30, inplace=False),
                     color=(0.2, 0.5, 0.88), smooth_shading=False)
    plotter.add_mesh(pv.Cone(center=(-1.35, 0.1, -0.05), direction=(0.0, 0.0, 1.0), height=1.0,
                             radius=0.45, resolution=48),
                     color=(0.26, 0.72, 0.32), smooth_shading=False)
    plotter.remove_all_lights()
    plotter.add_light(pv.Light(position=(3.0, -4.0, 6.0), focal_point=(0.0, 0.0, 0.0),
                               color=(1.0, 1.0, 1.0), intensity=0.9, light_type="scene light"))
    plotter.add_light(pv.Light(position=(-4.0, -2.0, 2.0), focal_point=(0.0, 0.0, 0.0),
                               color=(1.0, 1.0, 1.0), intensity=0.35, light_type="scene light"))
    plotter.camera_position = [(0.4, -5.6, 3.0), (0.0, 0.0, -0.1), (0.0, 0.0, 1.0)]
    plotter.camera.view_angle = 30.0


def _render_make_plotter(pv, width, height, aa):
    theme_cls = getattr(pv.themes, "Theme", None) or getattr(pv.themes, "DefaultTheme")
    theme = theme_cls()
    # pyvista defaults to 8x MSAA; pin it, since sampling changes every edge pixel.
    theme.multi_samples = 0
    try:
        theme.anti_aliasing = None
    except Exception:
        pass
    plotter = pv.Plotter(off_screen=True, window_size=[width, height], theme=theme,
                         lighting="none")
    plotter.render_window.SetMultiSamples(0)
    if aa == "none":
        plotter.disable_anti_aliasing()
    elif aa == "msaa":
        plotter.enable_anti_aliasing("msaa", multi_samples=8)
    else:
        plotter.enable_anti_aliasing(aa)
    return plotter


def _render_capabilities(text):
    facts = {"gl_extension_count": 0}
    in_ext = False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _CAPABILITY_KEYS:
            facts[_CAPABILITY_KEYS[key.strip()]] = value.strip()
            in_ext = False
        elif key.strip() == "OpenGL extensions":
            in_ext = True
        elif in_ext and line.strip().startswith("GL_"):
            facts["gl_extension_count"] += 1
    return facts


def _render_normalise_aa(value):
    if value in (None, False, "", "none", "off", "0", 0):
        return "none"
    if value is True:
        return "msaa"
    value = str(value).lower()
    if value not in ("fxaa", "ssaa", "msaa"):
        raise ValueError("aa must be one of none, fxaa, ssaa, msaa; got %r" % (value,))
    return value


def _render_vtk_dist():
    """Which distributions provide VTK: PyPI's ``vtk`` or Kitware's ``vtk-osmesa`` / ``vtk-egl``
    (wheels.vtk.org), with versions; {} without metadata (Python 3.7, a source build)."""
    try:
        from importlib import metadata
    except ImportError:
        return {}
    found = {}
    for name in ("vtk", "vtk-osmesa", "vtk-egl"):
        try:
            found[name] = metadata.version(name)
        except Exception:
            continue
    return found


def _render_pyvista_dist():
    """pyvista's installed version and its VTK requirement, from its metadata (3.8+)."""
    try:
        from importlib import metadata

        requires = metadata.requires("pyvista") or []
        return {"version": metadata.version("pyvista"),
                "requires_vtk": [r for r in requires if r.replace(" ", "").lower().startswith("vtk")
                                 and "extra" not in r]}
    except Exception as exc:
        return {"error": "%s: %s" % (type(exc).__name__, exc)}


def _render_frames(ctx, params, send):
    """Child: import VTK/pyvista with the requested window, render twice, send the facts."""
    import hashlib
    import os
    import time
    import warnings

    backend = params["backend"]
    # The window class is picked from this variable when VTK first creates a render window;
    # set it before the import so nothing inherited from the image's env can win.
    os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = _RENDER_WINDOW_CLASSES[backend]
    width, height = int(params.get("width", 400)), int(params.get("height", 300))
    aa = _render_normalise_aa(params.get("aa"))
    scene = params.get("scene")

    t0 = time.perf_counter()
    core, imported = ctx.import_library("vtkmodules.vtkCommonCore")
    if core is None:
        send({"facts": {"vtk_import_error": imported.get("error"), "vtk_import": imported}})
        return
    send({"facts": {"vtk_version": core.vtkVersion.GetVTKVersion(), "vtk_dist": _render_vtk_dist()}})
    pv, imported = ctx.import_library("pyvista", "pyvista.plotting", "numpy")
    if pv is None:
        # pyvista and VTK that do not fit fail here (AttributeError from vtkmodules): record
        # pyvista's own VTK requirement from its metadata, without importing it again.
        send({"facts": {"pyvista_import_error": imported.get("error"), "pyvista_import": imported,
                        "pyvista_dist": _render_pyvista_dist()}})
        return
    import numpy as np

    send({"stage": "imported", "timings": {"import": round(time.perf_counter() - t0, 6)},
          "facts": {"pyvista_version": pv.__version__}})

    frames = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, label in enumerate(("first_render", "second_render")):
            t = time.perf_counter()
            plotter = _render_make_plotter(pv, width, height, aa)
            window = plotter.render_window
            if i == 0:
                # Known before the first render: a silent fallback shows here already.
                send({"stage": "window", "facts": {"window_class": window.GetClassName()}})
            if scene:
                try:
                    exec(compile(scene, "<scene>", "exec"),
                         {"plotter": plotter, "pv": pv, "pyvista": pv, "np": np,
                          "builtin_scene": lambda p=plotter: _render_builtin_scene(p, pv)})
                except Exception as exc:
                    import traceback

                    send({"facts": {"scene_error": ctx.exc_text(exc),
                                    "scene_traceback": traceback.format_exc()[-3000:]}})
                    plotter.close()
                    return
            else:
                _render_builtin_scene(plotter, pv)
            send({"stage": label + ":started"})
            frame = np.ascontiguousarray(plotter.screenshot(return_img=True))
            elapsed = round(time.perf_counter() - t, 6)
            if i == 0:
                facts = _render_capabilities(window.ReportCapabilities() or "")
                facts["window_class"] = window.GetClassName()
                facts["multi_samples"] = int(window.GetMultiSamples())
                facts["fxaa"] = bool(plotter.renderer.GetUseFXAA())
                # GetNumberOfDevices/GetDeviceIndex exist on every vtkRenderWindow (0 and -1
                # on OSMesa): only an EGL window's are facts about EGL devices.  Its
                # DeviceIndex stays -1 unless VTK_EGL_DEVICE_INDEX is set; the device then
                # used is VTK_DEFAULT_EGL_DEVICE_INDEX (default 0), see vtkEGLRenderWindow.cxx.
                if window.GetClassName() == "vtkEGLRenderWindow":
                    facts["egl_device_count"] = int(window.GetNumberOfDevices())
                    facts["egl_device_index"] = int(window.GetDeviceIndex())
                send({"facts": facts})
            plotter.close()
            frames.append(frame)
            send({"stage": label, "timings": {label: elapsed}})
    digests = [hashlib.sha256(f.tobytes()).hexdigest() for f in frames]
    import base64

    send({
        "stage": "done",
        "facts": {
            "image_shape": list(frames[0].shape),
            "frame_sha256": digests,
            "frames_identical": digests[0] == digests[1] and frames[0].shape == frames[1].shape,
            "warnings": [str(w.message)[:500] for w in caught][:20],
        },
        "png": base64.b64encode(_render_png(frames[0])).decode("ascii"),
    })


# --------------------------------------------------------------------------- entry point


def run(params, ctx):
    import base64
    import functools
    import os

    backend = params.get("backend", "egl")
    if backend not in _RENDER_WINDOW_CLASSES:
        raise ValueError("backend must be one of %s; got %r"
                         % (", ".join(sorted(_RENDER_WINDOW_CLASSES)), backend))
    aa = _render_normalise_aa(params.get("aa"))
    facts = {
        "backend": backend,
        "requested_window_class": _RENDER_WINDOW_CLASSES[backend],
        "width": int(params.get("width", 400)),
        "height": int(params.get("height", 300)),
        "aa": aa,
        "scene": "user" if params.get("scene") else "builtin",
        "env": dict((k, os.environ[k]) for k in _RENDER_ENV_KEYS if k in os.environ),
    }

    with ctx.timed("diagnose"):
        messages, exit_text, output = _render_isolated(functools.partial(_render_diagnose, ctx), params, ctx)
    for msg in messages:
        facts.update(msg.get("facts") or {})
    facts["diagnose_exit"] = exit_text
    if exit_text != "ok":
        facts["diagnose_output"] = _strip_ansi(output)[-_OUTPUT_TAIL:]

    stage = "started"
    render = {}
    with ctx.timed("render_process"):
        messages, exit_text, output = _render_isolated(functools.partial(_render_frames, ctx), params, ctx)
    png = None
    for msg in messages:
        stage = msg.get("stage", stage)
        render.update(msg.get("facts") or {})
        for name, seconds in (msg.get("timings") or {}).items():
            ctx.timings[name] = seconds
        if msg.get("error"):
            render["error"] = msg["error"]
            render["traceback"] = msg.get("traceback")
        if msg.get("png"):
            png = base64.b64decode(msg["png"])
    facts.update(render)
    facts["render_exit"] = exit_text
    facts["render_stage"] = stage
    facts["rendered"] = stage == "done" and png is not None
    facts["vtk_messages"] = _vtk_messages(output)
    facts["render_output_tail"] = _strip_ansi(output)[-_OUTPUT_TAIL:]
    if png is not None:
        ctx.artifact("png", png)
    return facts
