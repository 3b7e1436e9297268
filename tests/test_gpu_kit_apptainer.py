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
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.checks import builtin_rows

from helpers import WAIT_LIMIT, missing

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
    assert {"opt/other", "opt/torch/cache", "usr/local/nvidia", "usr/lib/*-linux-gnu/libcuda.so*",
            "usr/share/glvnd/egl_vendor.d/*nvidia*"} <= set(excluded)
    assert not any(e.startswith("opt/torch/.venv") for e in excluded)
    plain = kit2.squash_argv(str(tmp_path), str(tmp_path / "usr"), "/k/sbox", "/k/x.sqfs")[1]
    assert plain[:4] == ["mksquashfs", "usr", "etc", "/k/x.sqfs"]


def _base_rootfs() -> Path | None:
    found = sorted(ROOTFS_CACHE.glob("base-*.tar"))
    return found[0] if found else None


def _need_real_apptainer() -> None:
    """Apptainer, mksquashfs, root and the base test rootfs: fails under CI=true when missing."""
    if shutil.which("apptainer") is None or shutil.which("mksquashfs") is None:
        missing("Apptainer", "needs apptainer and mksquashfs (python3 tests/images/provision.py)")
    if os.geteuid() != 0 or _base_rootfs() is None:
        missing("Apptainer", "needs root and the base test rootfs (python3 tests/images/build.py base)")


def _kit_env(tmp_path: Path, **env: str) -> dict[str, str]:
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
    return {**os.environ, "OUT": str(back), "KIT2_OUT": str(tmp_path / "kit"), "KIT2_DEBS": str(tmp_path / "nodebs"),
            "KIT2_ROOT": str(root), "KIT_PYTHON": sys.executable, "KIT2_CONTAINER_PYTHON": "/usr/bin/python3",
            "KIT2_PREFIX": str(root / "usr"), "KIT_WHEELS": str(tmp_path / "nowheels"), "KIT_GL": str(tmp_path / "gl"),
            **env}


def _run_kit(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    full = _kit_env(tmp_path, **env)
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=900)
    return res, Path(full["OUT"])


def _members(tgz: Path) -> set[str]:
    with tarfile.open(tgz) as tar:
        return set(tar.getnames())


def _read(tgz: Path, name: str) -> str:
    with tarfile.open(tgz) as tar:
        return tar.extractfile(name).read().decode()  # type: ignore[union-attr]


#: What may come back from $OUT: the device tool returns at most 8 files (its README's Limits).
OUT_FILES = {"kit.log", "preflight.json", "preflight.tgz", "sif.tgz", "nv.tgz", "nvccli.tgz", "probes.tgz",
             "verdict.txt"}


def test_kit2_builds_a_sif_here_and_runs_the_suite_in_it(tmp_path: Path) -> None:
    """KIT_ASSUME_GPU=1: the GPU path on this CPU machine, for real (which must then fail its GPU rows).
    Every stage's files are in $OUT, at most 8 files; the SIF is this machine's architecture (the old
    script wrote --partarch 2, amd64, whatever the machine: an aarch64 GPU machine's SIF was foreign)."""
    _need_real_apptainer()
    res, back = _run_kit(tmp_path, KIT_ASSUME_GPU="1")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-2000:]
    assert "SIF built:" in res.stdout and "apptainer runs here with: --userns" in res.stdout
    got = {p.name for p in back.iterdir()}
    assert got == OUT_FILES - {"nvccli.tgz"} and len(got) <= 8, got
    matrix = json.loads(_read(back / "nv.tgz", "nv/matrix.json"))
    system = json.loads(_read(back / "probes.tgz", "probes/system.json"))
    attempts = _read(back / "sif.tgz", "apptainer-attempts.txt")
    assert {"sif-build.log", "squash-args.json"} <= _members(back / "sif.tgz")
    assert not any(n.endswith((".sif", ".sqfs")) for t in back.glob("*.tgz") for n in _members(t))  # the image stays
    assert matrix["complete"] is True and [c["row"] for c in matrix["cells"]] == [r.name for r in builtin_rows()]
    assert next(c for c in matrix["cells"] if c["row"] == "system.python")["status"] == "pass"
    assert system["status"] == "ok" and system["facts"]["container"]["apptainer"] is True
    assert system["facts"]["os_release"]["ID"] == "debian"
    assert ": exit 0\n" in attempts
    assert "KIT: FAIL" in (back / "verdict.txt").read_text()
    with open(tmp_path / "kit" / "image.sif", "rb") as fh:
        assert int(fh.read(48)[45:47].decode()) == kit2.sif_arch_code()
    assert kit2.sif_arch_code("aarch64") == 4 and kit2.sif_arch_code("x86_64") == 2


def test_kit2_skips_without_a_gpu_and_says_so(tmp_path: Path) -> None:
    _need_real_apptainer()
    res, back = _run_kit(tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "no GPU: kit skipped" in res.stdout
    assert (back / "verdict.txt").read_text().startswith("SKIPPED: no GPU here (host has no NVIDIA GPU")
    assert json.loads((back / "preflight.json").read_text())["verdict"]["runtime_args"] is not None


def test_kit2_without_apptainer_packs_why(tmp_path: Path) -> None:
    """No apptainer on PATH and none carried: blocked at the install stage, with the environment's facts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "python3", "tar", "gzip", "date", "tee", "mkdir", "rm", "cp", "cut", "du", "id", "hostname",
                 "ls", "dpkg-deb", "ldconfig", "unshare", "cat", "grep", "awk", "xargs", "basename", "dirname",
                 "timeout", "tail", "sed", "sleep", "losetup"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    back = tmp_path / "back"
    env = {"PATH": str(bindir), "OUT": str(back), "KIT2_OUT": str(tmp_path / "kit"),
           "KIT2_DEBS": str(tmp_path / "none"), "KIT_PYTHON": sys.executable, "HOME": str(tmp_path)}
    res = subprocess.run([shutil.which("bash") or "bash", str(SCRIPT), "preflight"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "apptainer is not installed and no apptainer .deb was carried" in (back / "verdict.txt").read_text()
    assert {"env.json", "install.log", "BLOCKED"} <= _members(back / "preflight.tgz")


# -- the first call: can Apptainer start there?  In a fresh Debian 13 root file system (glibc 2.41, like
# the GPU machine's Ubuntu 24.04 above sid apptainer's 2.38 floor) without Apptainer: the carried
# packages are installed, a tiny SIF built, and each capability Apptainer needs is taken away in turn by
# the container's own restrictions (Docker's defaults: a seccomp filter refusing user namespaces, masked
# /proc paths, no /dev/fuse).


@pytest.fixture(scope="module")
def carried_debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages the kit carries (``apptainer_kit.py prepare``): sid's apptainer, bookworm's squashfs tools."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None or os.geteuid() != 0:
        missing("Debian's apt", "needs Debian's apt-get and dpkg-deb, as root (the private apt configuration)")
    out = tmp_path_factory.mktemp("kit-debs")
    kit2.prepare(out, log=lambda _msg: None)
    return out


@pytest.mark.docker
@pytest.mark.parametrize(("restrictions", "rc", "says"), [
    # Docker's defaults: seccomp refuses unshare(CLONE_NEWUSER), and root lacks CAP_SYS_ADMIN.
    ([], 5, ["no user namespaces (unshare -U true: unshare: unshare failed: Operation not permitted",
             "a seccomp filter is active", "not root with every capability", "no setuid starter"]),
    # User namespaces allowed, /proc still masked: apptainer cannot mount its /proc.
    (["--security-opt", "seccomp=unconfined"], 5,
     ["a new /proc cannot be mounted in a user namespace", "paths masked in /proc: ", "/proc/keys",
      "can't mount proc filesystem to /proc: operation not permitted"]),
    # /proc unmasked, no /dev/fuse: the SIF is extracted (--unsquash) instead of mounted.
    (["--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined"], 0,
     ["APPTAINER RUNS HERE with: --userns --unsquash"]),
    # Everything: squashfuse mounts it.
    (["--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined", "--device", "/dev/fuse"], 0,
     ["APPTAINER RUNS HERE with: --userns"]),
])
def test_the_first_call_says_in_seconds_whether_apptainer_can_start(
        docker: str, image_factory: Any, carried_debs: Path, tmp_path: Path, restrictions: list[str], rc: int,
        says: list[str]) -> None:
    image = image_factory("stock-trixie")
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.monotonic()
    res = subprocess.run([docker, "run", "--rm", "--network", "none", *restrictions,
                          "-v", f"{ROOT}:/kit:ro", "-v", f"{carried_debs}:/debs:ro", "-v", f"{out}:/out",
                          "-e", "OUT=/out", "-e", "KIT2_DEBS=/debs", "-e", "KIT_GL=/nonexistent", image,
                          # After it: the merged-/usr links still stand and a program linked through /lib still
                          # starts (the old 'dpkg-deb -x' replaced /lib by a directory: "gzip: Cannot exec").
                          "bash", "-c", "bash /kit/tests/gpu/apptainer_run.sh preflight; rc=$?; test -L /lib && "
                          "test -L /bin && gzip --version > /dev/null || echo ROOT-BROKEN; exit $rc"],
                         capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert res.returncode == rc, res.stdout[-3000:] + res.stderr[-2000:]
    assert "ROOT-BROKEN" not in res.stdout
    assert took < 30, f"the first call took {took:.1f} s"  # the bound, container start included
    verdict = (out / "verdict.txt").read_text()
    assert all(s in verdict for s in says), verdict
    # The carried install path: this root file system had no apptainer; the carried one ran.
    assert "apptainer 1.4" in (out / "kit.log").read_text() and "unpacked apptainer_" in _read(
        out / "preflight.tgz", "install.log")
    assert {p.name for p in out.iterdir()} == {"kit.log", "preflight.json", "preflight.tgz", "verdict.txt"}
    if rc == 5:
        # Stopped there: no later stage ran.
        assert "stage driver" not in (out / "kit.log").read_text()


def test_judge_env_names_apparmors_restriction() -> None:
    """Ubuntu 24.04 sets kernel.apparmor_restrict_unprivileged_userns=1 (constructed facts: an unprivileged
    user whose unshare -U is refused there; the GPU machine runs commands as root)."""
    env = {"uid": 1000, "cap_eff": [], "unshare_user": REFUSED, "apparmor_restrict_userns": "1",
           "fuse": {"exists": True, "opens": True}}
    v = kit2.judge_env(env)
    assert v["namespaces"] is None and "AppArmor restricts unprivileged user namespaces" in v["blockers"][0]


# -- the deadline, and a call killed at its limit ------------------------------------------------------


def test_a_run_stopped_by_its_deadline_returns_the_stages_it_finished(tmp_path: Path) -> None:
    """KIT_STALL holds the install stage until an event that never comes: the deadline stops it, and the
    finished env stage's file, the log and the verdict are in $OUT."""
    _need_real_apptainer()
    res, back = _run_kit(tmp_path, "preflight", KIT_STALL="install", KIT_DEADLINE="12", KIT_RESERVE="2")
    assert res.returncode == 7, res.stdout + res.stderr
    assert json.loads((back / "preflight.json").read_text())["verdict"]["namespaces"] == "userns"
    assert "INCOMPLETE: the deadline (12 s) stopped stage install" in (back / "verdict.txt").read_text()
    assert "stage env: exit 0" in (back / "kit.log").read_text()
    assert "stalled at install" in _read(back / "install-partial.tgz", "install.log")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_call_killed_at_its_limit_still_returns_the_finished_stages(tmp_path: Path, sig: signal.Signals) -> None:
    """The device tool stops a command at timeout_s (rc 124 or 137): TERM is trapped and says where it
    stopped; even SIGKILL, which nothing can trap, leaves each finished stage's files in $OUT."""
    _need_real_apptainer()
    env = _kit_env(tmp_path, KIT_STALL="smoke")
    back = Path(env["OUT"])
    proc = subprocess.Popen(["bash", str(SCRIPT), "preflight"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "stage smoke: started" not in (
                (back / "kit.log").read_text() if (back / "kit.log").exists() else ""):
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            proc.send_signal(sig)  # the script itself, as `timeout` does
            assert proc.wait(timeout=60) == 143
            assert "INCOMPLETE: stopped by a signal during stage smoke" in (back / "verdict.txt").read_text()
        else:
            os.killpg(proc.pid, sig)  # the whole command, as the device tool does at its limit
            proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=WAIT_LIMIT)
        go = tmp_path / "kit" / ".go-smoke"  # release a stage left behind, if any
        go.parent.mkdir(parents=True, exist_ok=True)
        go.touch()
    assert json.loads((back / "preflight.json").read_text())["facts"]["uid"] == 0
    assert "stage install: exit 0" in (back / "kit.log").read_text()
