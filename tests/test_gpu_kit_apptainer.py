"""GPU kit II (tests/gpu/apptainer_run.sh, tests/gpu/apptainer_kit.py) on the CPU: what it carries
and whether that fits, how it reads a machine's namespaces/FUSE/capabilities, and the device script
itself, for real: it builds a SIF from an unpacked Debian root file system with this machine's
Apptainer and squashfs-tools, runs the built-in suite in it, and packs what the GPU machine would
send back.  No GPU machine was available to this session: the kit stays ready (tests/gpu/README.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.checks import builtin_rows

from helpers import missing

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "gpu" / "apptainer_run.sh"
ROOTFS_CACHE = Path(os.environ.get("CONTAINERCHECK_CACHE_DIR", "/var/cache/containercheck")) / "rootfs"


def _module() -> Any:
    path = ROOT / "tests" / "gpu" / "apptainer_kit.py"
    spec = importlib.util.spec_from_file_location("containercheck_gpu_kit2", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kit2 = _module()
MiB = 1024 * 1024


# -- what is carried ---------------------------------------------------------------------------


def test_prepared_packages_fit_one_call_and_the_gpu_machines_glibc(tmp_path: Path) -> None:
    """The real downloads: sid's apptainer and bookworm's squashfs-tools/squashfuse, with their libc floors."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None or os.geteuid() != 0:
        missing("Debian's apt", "needs Debian's apt-get and dpkg-deb, as root (the private apt configuration)")
    entries = kit2.prepare(tmp_path, log=lambda _msg: None)
    assert [e["package"] for e in entries] == [p for _s, p in kit2.PACKAGES]
    assert kit2.check_manifest(entries) == []
    total = sum(e["size"] for e in entries)
    assert total <= kit2.CARRY_LIMIT < 64 * MiB, f"{total / MiB:.1f} MiB"
    assert all(tuple(e["libc"] or (0,)) <= kit2.GPU_MACHINE_GLIBC for e in entries)
    apptainer = next(e for e in entries if e["package"] == "apptainer")
    assert tuple(apptainer["libc"]) >= (2, 38)  # sid's: why Debian 12 needs a private libc and Ubuntu 24.04 not
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["problems"] == []
    assert {p["file"] for p in manifest["packages"]} <= {f.name for f in tmp_path.iterdir()}


def test_manifest_check_refuses_a_newer_libc_and_an_overweight_call() -> None:
    ok = {"package": "squashfs-tools", "version": "1:4.5.1-1", "size": 182756, "libc": [2, 33]}
    trixie = {"package": "squashfuse", "version": "0.5.2-2", "size": 30000, "libc": [2, 41]}
    assert kit2.check_manifest([ok]) == []
    assert kit2.check_manifest([ok, trixie]) == [
        "squashfuse 0.5.2-2 needs libc6 >= 2.41, the GPU machine has glibc 2.39"]
    big = {**ok, "size": 70 * MiB}
    assert kit2.check_manifest([big])[0].endswith(f"over the {kit2.CARRY_LIMIT} of one device-tool call")


def test_carry_plan_splits_into_calls_under_the_limit() -> None:
    sizes = {"debs": 20 * MiB, "vtk.whl.part-aa": 55 * MiB, "vtk.whl.part-ab": 50 * MiB, "pyvista.whl": 3 * MiB,
             "xgboost.whl": 40 * MiB}
    calls = kit2.carry_plan(sizes)
    assert sorted(p for call in calls for p in call) == sorted(sizes)
    assert all(sum(sizes[p] for p in call) <= kit2.CARRY_LIMIT for call in calls)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="split first"):
        kit2.carry_plan({"vtk.whl": 140 * MiB})


# -- can Apptainer run there? ------------------------------------------------------------------

ALL_CAPS = list(kit2._CAPS)
#: Docker's default capability set (an unprivileged container): what a GPU pod may well have.
DOCKER_CAPS = ["chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
               "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap"]
REFUSED = {"argv": ["unshare", "-U", "true"], "rc": 1, "out": "unshare: unshare failed: Operation not permitted\n"}
WORKS = {"argv": ["unshare", "-U", "true"], "rc": 0, "out": ""}


@pytest.mark.parametrize(("env", "namespaces", "image", "args", "blocked"), [
    # this development VM: root without cap_sys_resource, user namespaces and /dev/fuse work
    ({"uid": 0, "cap_eff": [c for c in ALL_CAPS if c != "sys_resource"], "unshare_user": WORKS,
      "fuse": {"exists": True, "opens": True}}, "userns", "mount", ["--userns"], False),
    # a privileged container or VM: root with every capability
    ({"uid": 0, "cap_eff": ALL_CAPS, "unshare_user": WORKS, "fuse": {"exists": True, "opens": True}},
     "privileged", "mount", [], False),
    # user namespaces but no FUSE: the SIF is extracted to a sandbox
    ({"uid": 0, "cap_eff": DOCKER_CAPS, "unshare_user": WORKS, "fuse": {"exists": False}},
     "userns", "unsquash", ["--userns", "--unsquash"], False),
    # an unprivileged Docker container (seen here): no userns, no /dev/fuse, Docker's capabilities
    ({"uid": 0, "cap_eff": DOCKER_CAPS, "unshare_user": REFUSED, "fuse": {"exists": False},
      "max_user_namespaces": "63413"}, None, "unsquash", ["--unsquash"], True),
])
def test_judge_env_says_how_apptainer_can_run(env: dict[str, Any], namespaces: str | None, image: str,
                                              args: list[str], blocked: bool) -> None:
    v = kit2.judge_env(env)
    assert (v["namespaces"], v["image"], v["runtime_args"], bool(v["blockers"])) == (namespaces, image, args, blocked)
    if blocked:
        assert "unshare -U true: unshare: unshare failed: Operation not permitted" in v["blockers"][0]
        assert "sys_admin" in v["blockers"][0]


def test_env_facts_of_this_machine() -> None:
    env = kit2.env_facts()
    assert {"uid", "cap_eff", "unshare_user", "fuse", "max_user_namespaces", "libcuda_in_ldcache"} <= set(env)
    assert kit2.caps_of("000001fffeffffff") == [c for c in ALL_CAPS if c != "sys_resource"]
    assert kit2.judge_env(env)["namespaces"] in ("privileged", "userns", None)


# -- the image from the machine's own files ------------------------------------------------------


def test_squash_argv_keeps_the_environment_and_leaves_the_driver_out(tmp_path: Path) -> None:
    for d in ("usr/bin", "etc", "opt/torch/.venv/bin", "opt/other", "opt/torch/cache"):
        (tmp_path / d).mkdir(parents=True)
    first, second = kit2.squash_argv(str(tmp_path), str(tmp_path / "opt/torch/.venv"), "/k/sbox", "/k/x.sqfs")
    assert first[:4] == ["mksquashfs", "/k/sbox", "/k/x.sqfs", "-noappend"]
    assert second[:5] == ["mksquashfs", "usr", "etc", "opt", "/k/x.sqfs"]
    excluded = second[second.index("-e") + 1:]
    assert {"opt/other", "opt/torch/cache", "usr/local/nvidia", "usr/lib/x86_64-linux-gnu/libcuda.so*",
            "usr/share/glvnd/egl_vendor.d/*nvidia*"} <= set(excluded)
    assert not any(e.startswith("opt/torch/.venv") for e in excluded)
    plain = kit2.squash_argv(str(tmp_path), str(tmp_path / "usr"), "/k/sbox", "/k/x.sqfs")[1]
    assert plain[:4] == ["mksquashfs", "usr", "etc", "/k/x.sqfs"]


def _base_rootfs() -> Path | None:
    found = sorted(ROOTFS_CACHE.glob("base-*.tar"))
    return found[0] if found else None


real_apptainer = pytest.mark.skipif(
    shutil.which("apptainer") is None or shutil.which("mksquashfs") is None or os.geteuid() != 0
    or _base_rootfs() is None,
    reason="needs apptainer, mksquashfs, root and the base test rootfs (python3 tests/images/build.py base)")


def _run_kit(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = tmp_path / "root"
    rootfs = _base_rootfs()
    if not root.exists() and rootfs is not None:
        root.mkdir()
        with tarfile.open(rootfs) as tar:
            # Our own rootfs, links and devices as they are: extraction filters exist from 3.11.4 (and
            # 3.9.17, 3.10.12) on, and Debian 12's python3 is 3.11.2, which has no 'filter' argument.
            if hasattr(tarfile, "fully_trusted_filter"):
                tar.extractall(root, filter="fully_trusted")
            else:
                tar.extractall(root)
    (tmp_path / "gl").mkdir(exist_ok=True)
    back = tmp_path / "back"
    shutil.rmtree(back, ignore_errors=True)
    full = {**os.environ, "OUT": str(back), "KIT2_OUT": str(tmp_path / "kit"), "KIT2_DEBS": str(tmp_path / "nodebs"),
            "KIT2_ROOT": str(root), "KIT_PYTHON": sys.executable, "KIT2_CONTAINER_PYTHON": "/usr/bin/python3",
            "KIT2_PREFIX": str(root / "usr"), "KIT_WHEELS": str(tmp_path / "nowheels"), "KIT_GL": str(tmp_path / "gl"),
            **env}
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full, cwd=ROOT, timeout=900)
    return res, back


@real_apptainer
def test_kit2_builds_a_sif_here_and_runs_the_suite_in_it(tmp_path: Path) -> None:
    """KIT_ASSUME_GPU=1: the GPU path on this CPU machine, for real (which must then fail its GPU rows)."""
    res, back = _run_kit(tmp_path, KIT_ASSUME_GPU="1")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-2000:]
    assert "SIF built:" in res.stdout and "apptainer runs the SIF with: --nv" in res.stdout
    assert sorted(p.name for p in back.iterdir()) == ["env.json", "kit2.log", "kit2.tgz", "verdict.txt"]
    with tarfile.open(back / "kit2.tgz") as tar:
        names = set(tar.getnames())
        assert not any(n.endswith((".sif", ".sqfs")) for n in names)  # the image stays there
        matrix = json.loads(tar.extractfile("./nv/matrix.json").read())  # type: ignore[union-attr]
        system = json.loads(tar.extractfile("./probes/system.json").read())  # type: ignore[union-attr]
        attempts = tar.extractfile("./apptainer-attempts.txt").read().decode()  # type: ignore[union-attr]
    assert {"./env.json", "./sif-build.log", "./squash-args.json", "./nv/junit.xml",
            "./probes/host_facts.json"} <= names
    assert matrix["complete"] is True and [c["row"] for c in matrix["cells"]] == [r.name for r in builtin_rows()]
    assert next(c for c in matrix["cells"] if c["row"] == "system.python")["status"] == "pass"
    # the raw facts come from inside the SIF, started as the plugin starts it
    assert system["status"] == "ok" and system["facts"]["container"]["apptainer"] is True
    assert system["facts"]["os_release"]["ID"] == "debian"
    assert ": exit 0\n" in attempts
    assert "KIT: FAIL" in (back / "verdict.txt").read_text()


@real_apptainer
def test_kit2_skips_without_a_gpu_and_says_so(tmp_path: Path) -> None:
    res, back = _run_kit(tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "no GPU: kit II skipped (host has no NVIDIA GPU" in res.stdout
    assert (back / "SKIPPED").read_text().startswith("host has no NVIDIA GPU")
    assert json.loads((back / "env.json").read_text())["verdict"]["runtime_args"] is not None


def test_kit2_without_apptainer_packs_why(tmp_path: Path) -> None:
    """No apptainer on PATH and none carried: the blocked path, packed with the environment's facts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "python3", "tar", "gzip", "date", "tee", "mkdir", "rm", "cp", "cut", "du", "id", "hostname",
                 "ls", "dpkg-deb", "ldconfig", "unshare", "cat", "grep", "awk", "xargs", "basename", "dirname"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    back = tmp_path / "back"
    env = {"PATH": str(bindir), "OUT": str(back), "KIT2_OUT": str(tmp_path / "kit"),
           "KIT2_DEBS": str(tmp_path / "none"), "KIT_PYTHON": sys.executable, "HOME": str(tmp_path)}
    res = subprocess.run([shutil.which("bash") or "bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "apptainer is not installed and no apptainer .deb was carried" in (back / "APPTAINER_BLOCKED").read_text()
    with tarfile.open(back / "kit2.tgz") as tar:
        assert {"./env.json", "./kit2.log", "./APPTAINER_BLOCKED"} <= set(tar.getnames())
