"""GPU kit II: ``apptainer exec --nv`` on the lent GPU machine, with a SIF built there.

Stdlib only; the plugin is imported only by ``record`` (from the tree, through ``PYTHONPATH``).
Subcommands (``tests/gpu/apptainer_run.sh`` runs the GPU-side ones, in this order):

``prepare OUT`` (here, on a Debian machine with network)
    Download what the GPU machine lacks: Debian sid's ``apptainer`` (Depends: libc6 >= 2.38; the
    GPU machine runs Ubuntu 24.04 with glibc 2.39) through the private apt configuration of
    ``tests/images/apptainer.py``, and bookworm's ``squashfs-tools`` (mksquashfs, unsquashfs),
    ``squashfuse`` and the libraries they load (glibc <= 2.36).  Writes ``OUT/manifest.json``
    (package, version, size, libc floor) and refuses a package whose libc floor is above the GPU
    machine's glibc, or a total over :data:`CARRY_LIMIT`.
``plan OUT [FILE ...]``
    Which carried paths go with which device-tool call (each call at most :data:`CARRY_LIMIT`).
``env OUT.json``
    The GPU machine's facts that decide how Apptainer can run (cheap, the first thing done there):
    uid, capabilities, ``unshare -U true``, ``unshare -m true``, a new ``/proc`` in new user, mount
    and PID namespaces (refused under a masked ``/proc``), ``/dev/fuse``, loop devices, the userns
    and AppArmor sysctls, seccomp, the driver (libcuda in the loader cache, nvidia-smi,
    nvidia-container-cli).  :func:`judge_env` reads them into the ways Apptainer may run, or why
    none can.
``sif-arch``
    The SIF architecture code of this machine (``apptainer sif add --partarch``): 2 on x86_64, 4 on
    aarch64 (apptainer/sif's codes, :data:`pytest_containercheck.engine.platforms.SIF_ARCH`).
``squash-args ROOT PREFIX SKELETON SQFS``
    The two ``mksquashfs`` command lines that make the image's root file system from the machine's
    own: the Apptainer skeleton first, then ``usr``, ``etc`` and the directory of the Python
    environment, without the NVIDIA driver's files (``--nv`` must bring those): :func:`squash_argv`.
``record SIF OUT [RUNTIME_ARG ...]``
    Each probe's raw envelope from inside the SIF, started as the plugin starts it (``--nv``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: What the device tool carries per command (64 MiB), less room for the tracked tree's growth.
CARRY_LIMIT = 60 * 1024 * 1024
#: The GPU machine's glibc (Ubuntu 24.04): no carried binary may need more.
GPU_MACHINE_GLIBC = (2, 39)
#: (suite, package): sid's apptainer; the rest from bookworm, whose glibc (2.36) is below the GPU
#: machine's.  squashfs-tools makes the SIF (mksquashfs) and extracts it without FUSE (unsquashfs,
#: apptainer --unsquash); squashfuse mounts it where FUSE is allowed; the libraries are each
#: unpacked only where the machine lacks their soname (apptainer_run.sh).
PACKAGES: tuple[tuple[str, str], ...] = (
    ("sid", "apptainer"),
    ("bookworm", "squashfs-tools"),
    ("bookworm", "liblzo2-2"),
    ("bookworm", "squashfuse"),
    ("bookworm", "libsquashfuse0"),
    ("bookworm", "libfuse3-3"),
    ("bookworm", "fuse3"),
    ("bookworm", "libseccomp2"),
    ("bookworm", "libsqlite3-0"),
)
#: Files of the host's NVIDIA driver that must not be in the image: ``--nv`` binds them, and an
#: image that ships them is a different test (mksquashfs ``-wildcards`` patterns, relative to the
#: image's root).  ``usr/local/cuda*`` is the toolkit: torch brings its own CUDA libraries.
DRIVER_EXCLUDES: tuple[str, ...] = (
    "usr/local/nvidia",
    "usr/local/cuda*",
    # Any multiarch directory: x86_64-linux-gnu, aarch64-linux-gnu (a GH200 machine's).
    "usr/lib/*-linux-gnu/libcuda.so*",
    "usr/lib/*-linux-gnu/libcudadebugger.so*",
    "usr/lib/*-linux-gnu/libnvidia-*",
    "usr/lib/*-linux-gnu/lib*_nvidia.so*",
    "usr/lib/*-linux-gnu/libnvcuvid.so*",
    "usr/lib/*-linux-gnu/libnvoptix.so*",
    "usr/lib/*-linux-gnu/vdpau/libvdpau_nvidia.so*",
    "usr/bin/nvidia-*",
    "usr/share/glvnd/egl_vendor.d/*nvidia*",
    "etc/glvnd/egl_vendor.d/*nvidia*",
    "usr/share/vulkan/icd.d/nvidia*",
    "usr/share/egl/egl_external_platform.d/*nvidia*",
    "etc/ld.so.conf.d/*nvidia*",
    "etc/ld.so.conf.d/*cuda*",
)

_CAPS = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
         "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
         "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
         "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
         "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
         "checkpoint_restore")


def _run(argv: Sequence[str], timeout: float = 60) -> dict[str, Any]:
    """``{"argv", "rc", "out"}`` (stdout and stderr merged, tail); rc 127 when it cannot start."""
    try:
        proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout, check=False)
        return {"argv": list(argv), "rc": proc.returncode, "out": proc.stdout[-2000:]}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"argv": list(argv), "rc": 127, "out": f"{type(exc).__name__}: {exc}"}


# -- here: what to carry ------------------------------------------------------------------------


def _libc_floor(deb: Path) -> tuple[int, ...] | None:
    out = _run(["dpkg-deb", "-f", str(deb), "Depends"])["out"]
    m = re.search(r"libc6 \(>= ?([0-9][0-9.]*)", out)
    return tuple(int(p) for p in m.group(1).split(".")[:2]) if m else None


def check_manifest(entries: Sequence[Mapping[str, Any]], limit: int = CARRY_LIMIT,
                   glibc: tuple[int, ...] = GPU_MACHINE_GLIBC) -> list[str]:
    """Why *entries* (``prepare``'s manifest) cannot be carried to the GPU machine; [] when they can."""
    problems = [f"{e['package']} {e['version']} needs libc6 >= {'.'.join(map(str, e['libc']))}, the GPU machine "
                f"has glibc {'.'.join(map(str, glibc))}" for e in entries if e.get("libc") and tuple(e["libc"]) > glibc]
    total = sum(int(e["size"]) for e in entries)
    if total > limit:
        problems.append(f"{total} bytes to carry, over the {limit} of one device-tool call")
    return problems


def prepare(out: Path, log: Any = print) -> list[dict[str, Any]]:
    """Download :data:`PACKAGES` into *out* and write ``manifest.json``; raises on a problem."""
    sys.path.insert(0, str(ROOT / "tests" / "images"))
    import apptainer as images  # type: ignore[import-not-found]  # tests/images/apptainer.py: private apt

    out.mkdir(parents=True, exist_ok=True)
    mirror, security = images.host_mirrors()
    apts: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for suite, package in PACKAGES:
        if suite not in apts:
            apts[suite] = images.PrivateApt(suite, mirror, security if suite != "sid" else None)
            apts[suite].update(log)
        version = apts[suite].candidate(package)
        if version is None:
            raise RuntimeError(f"Debian {suite} has no {package}")
        deb = apts[suite].download(package, version)
        target = out / deb.name
        shutil.copy2(deb, target)
        floor = _libc_floor(target)
        entries.append({"suite": suite, "package": package, "version": version, "file": target.name,
                        "size": target.stat().st_size, "libc": list(floor) if floor else None})
        log(f"kit2: {package} {version} ({suite}, {target.stat().st_size} bytes, libc >= "
            f"{'.'.join(map(str, floor)) if floor else '-'})")
    problems = check_manifest(entries)
    (out / "manifest.json").write_text(json.dumps({"packages": entries, "problems": problems}, indent=1) + "\n")
    if problems:
        raise RuntimeError("; ".join(problems))
    return entries


def carry_plan(sizes: Mapping[str, int], limit: int = CARRY_LIMIT) -> list[list[str]]:
    """Paths (with their sizes) grouped into device-tool calls of at most *limit* bytes each, biggest
    first, in as few calls as first-fit gives; a path over the limit must be split first (ValueError)."""
    too_big = [p for p, s in sizes.items() if s > limit]
    if too_big:
        raise ValueError(f"over {limit} bytes, split first (split -b): {', '.join(too_big)}")
    calls: list[list[str]] = []
    room: list[int] = []
    for path, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        for i, left in enumerate(room):
            if size <= left:
                calls[i].append(path)
                room[i] -= size
                break
        else:
            calls.append([path])
            room.append(limit - size)
    return calls


# -- there: can Apptainer run? ------------------------------------------------------------------


def _status_field(name: str) -> str | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def caps_of(mask: str | None) -> list[str]:
    """Capability names in a ``CapEff`` hex mask (``capsh --decode`` without capsh)."""
    if not mask:
        return []
    value = int(mask, 16)
    return [name for bit, name in enumerate(_CAPS) if value >> bit & 1]


def env_facts() -> dict[str, Any]:
    """What decides how Apptainer can run on this machine (no Apptainer needed)."""
    def read(path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            return f"unreadable: {exc.strerror}"

    fuse: dict[str, Any] = {"exists": os.path.exists("/dev/fuse")}
    if fuse["exists"]:
        try:
            os.close(os.open("/dev/fuse", os.O_RDWR))
            fuse["opens"] = True
        except OSError as exc:
            fuse.update(opens=False, error=f"{type(exc).__name__}: {exc.strerror}")
    ldcache = _run(["ldconfig", "-p"])["out"]
    return {
        "uid": os.geteuid(), "kernel": platform.release(), "glibc": os.confstr("CS_GNU_LIBC_VERSION"),
        "machine": platform.machine(),
        "cap_eff": caps_of(_status_field("CapEff")), "cap_bnd": caps_of(_status_field("CapBnd")),
        "seccomp": _status_field("Seccomp"), "no_new_privs": _status_field("NoNewPrivs"),
        "unshare_user": _run(["unshare", "-U", "true"], 10),
        "unshare_user_map_root": _run(["unshare", "-Ur", "true"], 10),
        "unshare_mount": _run(["unshare", "-m", "true"], 10),
        # What apptainer does in a user namespace: new mount and PID namespaces and a fresh /proc.
        # The kernel refuses that /proc where the current one has paths masked by mounts over them
        # (a container runtime's defaults: /proc/kcore, /proc/keys, ...): fs/namespace.c mnt_already_visible.
        "proc_in_userns": _run(["unshare", "-Urmpf", "--mount-proc", "true"], 10),
        "masked_proc": _masked_proc(),
        "loop_devices": {"loop_control": os.path.exists("/dev/loop-control"),
                         "free": _run(["losetup", "-f"], 10)},
        "squashfs_in_kernel": _kernel_fs("squashfs"),
        "max_user_namespaces": read("/proc/sys/user/max_user_namespaces"),
        "unprivileged_userns_clone": read("/proc/sys/kernel/unprivileged_userns_clone"),
        "apparmor_restrict_userns": read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        "fuse": fuse,
        "libcuda_in_ldcache": "libcuda.so" in ldcache,
        "nvidia_smi": shutil.which("nvidia-smi"), "nvidia_container_cli": shutil.which("nvidia-container-cli"),
        "libcuda_files": sorted(str(p) for d in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu")
                                for p in Path(d).glob("libcuda.so*")) if os.path.isdir("/usr/local/nvidia") else [],
    }


def _masked_proc() -> list[str]:
    """Mounts over paths inside /proc (how a container runtime masks /proc/kcore and the like)."""
    masked = []
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 1 and parts[1].startswith("/proc/"):
                    masked.append(parts[1])
    except OSError:
        pass
    return masked


def _kernel_fs(name: str) -> bool | None:
    try:
        with open("/proc/filesystems", encoding="utf-8") as fh:
            return any(line.split()[-1] == name for line in fh if line.strip())
    except OSError:
        return None


def sif_arch_code(machine: str | None = None) -> int:
    """The SIF architecture code of *machine* (default: this one), for ``apptainer sif add --partarch``.
    A SIF of another code is refused as foreign by the plugin (and by apptainer) on this machine."""
    sys.path.insert(0, str(ROOT))
    from pytest_containercheck.engine.platforms import _OCI_ARCH, SIF_ARCH

    arch = _OCI_ARCH.get((machine or platform.machine()).lower(), "")
    return int(next(code for code, name in SIF_ARCH.items() if name == arch))


def judge_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """How Apptainer may run here, from :func:`env_facts`: ``namespaces`` is ``privileged`` (root with
    CAP_SYS_ADMIN: plain exec), ``userns`` (``--userns``: unprivileged user namespaces work) or None;
    ``image`` is ``mount`` (squashfuse over /dev/fuse) or ``unsquash`` (extract to a sandbox);
    ``runtime_args`` what the plugin then passes; ``blockers`` why it cannot run at all."""
    caps = set(env.get("cap_eff") or [])
    userns = (env.get("unshare_user") or {}).get("rc") == 0
    privileged = env.get("uid") == 0 and "sys_admin" in caps
    blockers: list[str] = []
    why_userns = (env.get("unshare_user") or {}).get("out", "").strip() or "refused"
    # Apptainer as root without --userns asks for every capability it knows (starter); one missing
    # refuses it ("Requesting capability set 0x000001ffffffffff while permitted capability set is
    # 0x000001fffeffffff": seen on the development VM, which withholds cap_sys_resource).
    full = privileged and set(_CAPS) <= caps
    if full:
        namespaces: str | None = "privileged"
    elif userns:
        namespaces = "userns"
    else:
        namespaces = None
        why = [f"unshare -U true: {why_userns}"]
        if str(env.get("max_user_namespaces") or "").strip() == "0":
            why.append("user.max_user_namespaces=0")
        if str(env.get("unprivileged_userns_clone") or "").strip() == "0":
            why.append("kernel.unprivileged_userns_clone=0")
        if str(env.get("apparmor_restrict_userns") or "").strip() == "1":
            why.append("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns"
                       "=1: only programs with an AppArmor profile allowing userns may create one)")
        if env.get("seccomp") == "2":
            why.append("a seccomp filter is active (a container runtime's default profile refuses "
                       "unshare(CLONE_NEWUSER))")
        blockers.append(f"no user namespaces ({'; '.join(why)}) and not root with every capability (CapEff lacks "
                        f"{', '.join(sorted(set(_CAPS) - caps)) or 'nothing'}); Debian's apptainer has no setuid "
                        "starter to fall back on")
    proc = env.get("proc_in_userns")
    if namespaces == "userns" and isinstance(proc, Mapping) and proc.get("rc") not in (0, None):
        # apptainer mounts a new /proc in its namespaces: refused where /proc is masked.
        masked = ", ".join(env.get("masked_proc") or []) or "none seen"
        blockers.append(f"a new /proc cannot be mounted in a user namespace (unshare -Urmpf --mount-proc true: "
                        f"{str(proc.get('out') or '').strip() or 'refused'}; paths masked in /proc: {masked})")
    if namespaces == "userns" and (env.get("unshare_mount") or {}).get("rc") not in (0, None) and (
            env.get("unshare_user_map_root") or {}).get("rc") not in (0, None):
        blockers.append("no mount namespace (unshare -m true and unshare -Ur true refused)")
    fuse = env.get("fuse") or {}
    image = "mount" if fuse.get("opens") else "unsquash"
    if namespaces == "privileged" and not (env.get("loop_devices") or {}).get("loop_control") and not fuse.get("opens"):
        image = "unsquash"  # root mounts a SIF through a loop device (kernel squashfs) or squashfuse: neither here
    args = (["--userns"] if namespaces == "userns" else []) + (["--unsquash"] if image == "unsquash" else [])
    return {"namespaces": namespaces, "image": image, "runtime_args": args, "blockers": blockers,
            "fuse": "usable" if fuse.get("opens") else (fuse.get("error") or "no /dev/fuse")}


# -- there: the image ---------------------------------------------------------------------------


def squash_argv(root: str, prefix: str, skeleton: str, sqfs: str,
                excludes: Sequence[str] = DRIVER_EXCLUDES, comp: str = "lz4") -> list[list[str]]:
    """The ``mksquashfs`` command lines (run in *root*) that make the image: *skeleton* (Apptainer's
    ``.singularity.d``, the empty mount points, the /bin -> usr/bin links) as the root, then ``usr``,
    ``etc`` and the top directory holding the Python environment *prefix* appended, with the
    driver's files and every other entry of that top directory left out.

    Appending keeps it to two passes over the machine's files and no copy: mksquashfs adds each
    source as a root entry named after it (an entry that exists already would be renamed, so the
    skeleton has none of them)."""
    top = Path(prefix).resolve().relative_to(Path(root).resolve()).parts if prefix != root else ()
    sources = ["usr", "etc"]
    keep_out = list(excludes)
    if top and top[0] not in sources:
        sources.append(top[0])
        # Only the environment's own branch of that directory (e.g. opt/torch of /opt).
        here = Path(root) / top[0]
        for depth in range(1, len(top)):
            for entry in sorted(os.listdir(here)):
                if entry != top[depth]:
                    keep_out.append(str(Path(*top[:depth], entry)))
            here = here / top[depth]
    first = ["mksquashfs", skeleton, sqfs, "-noappend", "-comp", comp, "-all-root", "-no-recovery", "-quiet"]
    second = ["mksquashfs", *sources, sqfs, "-all-root", "-no-recovery", "-quiet", "-wildcards",
              "-e", *keep_out]
    return [first, second]


# -- there: raw facts from inside the SIF ------------------------------------------------------


def record(sif: str, out: Path, runtime_args: Sequence[str], apptainer_gpu: str = "nv", python: str | None = None,
           timeout: float = 240) -> int:
    """Each built-in probe's envelope from inside *sif*, started with GPU access as the plugin starts it."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import kit  # tests/gpu/kit.py: which probes the built-in checks declare

    from pytest_containercheck.engine import hostinfo, probing
    from pytest_containercheck.engine.runtimes import LaunchOptions, get_runtime
    from pytest_containercheck.engine.targets import parse_target

    out.mkdir(parents=True, exist_ok=True)
    source = {"host": socket.gethostname(), "image": sif, "runtime_args": list(runtime_args),
              "apptainer_gpu": apptainer_gpu,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "how": "tests/gpu/apptainer_kit.py record"}
    (out / "host_facts.json").write_text(json.dumps({"source": source, "facts": hostinfo.gather(["apptainer"])},
                                                    indent=1, default=str), encoding="utf-8")
    target = parse_target(sif)
    options = LaunchOptions(run_id="kit2", gpus="all", apptainer_gpu=apptainer_gpu, runtime_args=tuple(runtime_args))
    session = get_runtime(target.runtime).start(target, options)
    try:
        py = probing.find_python(session, session.python_candidates([python] if python else ["python3"]))
        for name, params, stem in kit.probe_runs():
            t0 = time.monotonic()
            try:
                res = probing.run_probe(session, py, name, params, timeout=timeout)
                doc: dict[str, Any] = {"status": res.status, "error": res.error, "facts": res.facts,
                                       "timings": res.timings, "warnings": res.warnings,
                                       "stderr_tail": res.stderr[-4000:]}
            except Exception as exc:  # one broken probe must not stop the others
                doc = {"status": "kit-error", "error": f"{type(exc).__name__}: {exc}"}
            doc["source"] = {**source, "probe": name, "params": params, "wall": round(time.monotonic() - t0, 3)}
            (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
            print(f"kit2: recorded {stem}: {doc['status']} in {doc['source']['wall']} s")
    finally:
        session.stop()
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry point; see the module docstring."""
    if argv[:1] == ["prepare"] and len(argv) == 2:
        try:
            prepare(Path(argv[1]))
        except RuntimeError as exc:
            print(f"kit2: prepare failed: {exc}")
            return 1
        return 0
    if argv[:1] == ["plan"] and len(argv) >= 2:
        files = [Path(p) for p in argv[2:]] or sorted(Path(argv[1]).iterdir())
        for i, call in enumerate(carry_plan({str(p): p.stat().st_size for p in files if p.is_file()}), 1):
            print(f"call {i}: {' '.join(call)}")
        return 0
    if argv[:1] == ["env"] and len(argv) == 2:
        env = env_facts()
        verdict = judge_env(env)
        Path(argv[1]).write_text(json.dumps({"facts": env, "verdict": verdict}, indent=1) + "\n")
        print(f"kit2: apptainer here: namespaces={verdict['namespaces']} image={verdict['image']} "
              f"runtime_args={' '.join(verdict['runtime_args']) or '-'}"
              + "".join(f"\nkit2: BLOCKED: {b}" for b in verdict["blockers"]))
        return 0 if not verdict["blockers"] else 3
    if argv[:1] == ["sif-arch"]:
        print(sif_arch_code(argv[1] if len(argv) > 1 else None))
        return 0
    if argv[:1] == ["squash-args"] and len(argv) == 5:
        print(json.dumps(squash_argv(*argv[1:5])))
        return 0
    if argv[:1] == ["record"] and len(argv) >= 3:
        gpu = os.environ.get("KIT2_APPTAINER_GPU", "nv")
        return record(argv[1], Path(argv[2]), argv[3:], gpu, os.environ.get("KIT2_CONTAINER_PYTHON") or None)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
