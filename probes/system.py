# Probe: basic facts about the image as it runs on this host.  Stdlib only, Python 3.7+.
# Facts only; the checks in pytest_containercheck/checks/test_system.py judge them.


def _os_release(paths=("/etc/os-release", "/usr/lib/os-release")):
    # Read as bytes: a file with a byte that is not UTF-8 must not end the probe (it did, as an
    # error on four rows naming no file); the bad bytes show as U+FFFD and the fact names the file.
    out = {}
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read(65536)
        except (IOError, OSError):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data.decode("utf-8", "replace")
            out["_invalid_utf8"] = "%s: byte %d is not UTF-8 (0x%02x)" % (path, exc.start, data[exc.start])
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep:
                out[key] = value.strip().strip('"')
        return out
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
    import re
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"found": False}
    fields = ["name", "driver_version", "memory.total", "compute_cap", "uuid"]

    def query():
        return subprocess.run(
            [exe, "--query-gpu=" + ",".join(fields), "--format=csv,noheader"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
        )

    try:
        proc = query()
        said = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        # R470's nvidia-smi does not know compute_cap: 'Field "compute_cap" is not a valid
        # field to query.', exit 2.  Ask again without the field it names.
        bad = re.search(r'Field "([^"]+)" is not a valid field to query', said)
        if proc.returncode != 0 and bad and bad.group(1) in fields and bad.group(1) != "name":
            fields.remove(bad.group(1))
            proc = query()
    except Exception as exc:  # timeout, permission: record, never raise
        return {"found": True, "path": exe, "error": repr(exc)}
    gpus = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == len(fields):
            gpus.append(dict(zip(fields, parts)))
    out = proc.stdout.decode("utf-8", "replace")
    return {
        "found": True,
        "path": exe,
        "returncode": proc.returncode,
        "fields": list(fields),
        "gpus": gpus,
        "no_devices": "No devices were found" in out + proc.stderr.decode("utf-8", "replace"),
        "stderr": proc.stderr.decode("utf-8", "replace")[-2000:],
        "stdout": out[-2000:] if not gpus else "",
    }


def _writable(ctx, path):
    # The system facts keep their shape: path, writable, error (ctx.writable tells more).
    return dict((k, v) for k, v in ctx.writable(path).items() if k in ("path", "writable", "error"))


_ENV_PREFIXES = ("CUDA", "NVIDIA_", "LD_LIBRARY_PATH", "__EGL", "__GLX", "VTK_", "PYVISTA",
                 "HF_", "TRANSFORMERS_", "TORCH_", "XDG_", "HOME", "TMPDIR", "APPTAINER_NAME",
                 "SINGULARITY_NAME", "SLURM_JOB_ID", "ROCR_", "HIP_", "PYTHONPATH")


def _init_env():
    # The environment of the container's first process (the session's keepalive), as the
    # runtime set it up: Podman applies a CDI spec's env edits (NVIDIA_VISIBLE_DEVICES=void)
    # to it but not to 'podman exec' processes like this probe.  None when unreadable.
    try:
        with open("/proc/1/environ", "rb") as fh:
            raw = fh.read(1 << 20)
    except (IOError, OSError):
        return None
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key.startswith(_ENV_PREFIXES):
            out[key] = value
    return out


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
            "dxg": os.path.exists("/dev/dxg"),
        },
        "nvidia_smi": _nvidia_smi(),
        "libcuda": ctx.libcuda(),
        "env": env,
        "init_env": _init_env(),
        "writable": {
            "home": _writable(ctx, home),
            "cache": _writable(ctx, cache),
            "tmp": _writable(ctx, os.environ.get("TMPDIR") or "/tmp"),
        },
        "container": {
            "dockerenv": os.path.exists("/.dockerenv"),
            "containerenv": os.path.exists("/run/.containerenv"),
            "apptainer": os.path.isdir("/.singularity.d"),
        },
    }
