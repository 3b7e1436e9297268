# Probe: basic facts about the image as it runs on this host.  Stdlib only, Python 3.7+.
# Facts only; the checks in pytest_containercheck/checks/test_system.py judge them.


def _os_release():
    out = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as fh:
                for line in fh:
                    key, sep, value = line.strip().partition("=")
                    if sep:
                        out[key] = value.strip().strip('"')
            return out
        except (IOError, OSError):
            continue
    return out


def _glibc():
    import os
    import platform

    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return {"name": name, "version": version}
    except (AttributeError, ValueError, OSError):
        lib, version = platform.libc_ver()
        return {"name": lib or None, "version": version or None}


def _nvidia_smi():
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"found": False}
    fields = "name,driver_version,memory.total,compute_cap,uuid"
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=" + fields, "--format=csv,noheader"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
        )
    except Exception as exc:  # timeout, permission: record, never raise
        return {"found": True, "path": exe, "error": repr(exc)}
    gpus = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            gpus.append(dict(zip(fields.split(","), parts)))
    return {
        "found": True,
        "path": exe,
        "returncode": proc.returncode,
        "gpus": gpus,
        "stderr": proc.stderr.decode("utf-8", "replace")[-2000:],
        "stdout": proc.stdout.decode("utf-8", "replace")[-2000:] if not gpus else "",
    }


def _libcuda():
    import ctypes

    out = {"loaded": False}
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        out["error"] = str(exc)
        return out
    out["loaded"] = True
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "libcuda.so" in line:
                    out["path"] = line.split()[-1]
                    break
    except (IOError, OSError):
        pass
    version = ctypes.c_int(0)
    try:
        out["cuInit"] = int(lib.cuInit(0))
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            out["driver_cuda_version"] = "%d.%d" % (version.value // 1000, (version.value % 1000) // 10)
        count = ctypes.c_int(0)
        if out["cuInit"] == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
            out["device_count"] = count.value
    except Exception as exc:
        out["error"] = repr(exc)
    return out


def _writable(path):
    import os
    import tempfile

    if not path:
        return {"path": path, "writable": False, "error": "not set"}
    try:
        if not os.path.isdir(path):
            os.makedirs(path)
        fd, name = tempfile.mkstemp(prefix=".containercheck-", dir=path)
        os.close(fd)
        os.unlink(name)
        return {"path": path, "writable": True}
    except Exception as exc:
        return {"path": path, "writable": False, "error": "%s: %s" % (type(exc).__name__, exc)}


_ENV_PREFIXES = ("CUDA", "NVIDIA_", "LD_LIBRARY_PATH", "__EGL", "__GLX", "VTK_", "PYVISTA",
                 "HF_", "TRANSFORMERS_", "TORCH_", "XDG_", "HOME", "TMPDIR", "APPTAINER_NAME",
                 "SINGULARITY_NAME", "SLURM_JOB_ID", "ROCR_", "HIP_", "PYTHONPATH")


def run(params, ctx):
    import glob
    import os
    import platform
    import sys

    home = os.environ.get("HOME") or os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    env = dict((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    try:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        user = None
    return {
        "python": {
            "version": platform.python_version(),
            "version_info": list(sys.version_info[:3]),
            "executable": sys.executable,
            "implementation": platform.python_implementation(),
        },
        "os_release": _os_release(),
        "glibc": _glibc(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "user": {"uid": os.getuid(), "gid": os.getgid(), "name": user},
        "devices": {
            "nvidia": sorted(glob.glob("/dev/nvidia*")),
            "dri": sorted(glob.glob("/dev/dri/*")),
            "kfd": os.path.exists("/dev/kfd"),
        },
        "nvidia_smi": _nvidia_smi(),
        "libcuda": _libcuda(),
        "env": env,
        "writable": {
            "home": _writable(home),
            "cache": _writable(cache),
            "tmp": _writable(os.environ.get("TMPDIR") or "/tmp"),
        },
        "container": {
            "dockerenv": os.path.exists("/.dockerenv"),
            "containerenv": os.path.exists("/run/.containerenv"),
            "apptainer": os.path.isdir("/.singularity.d"),
        },
    }
