"""The .sif path against the real apptainer binary: built-in suite as root and as a non-root
user, the singularity command name, apptainer's own failures, and no instance left behind.

SIFs are built the way users build them: ``docker save`` then ``apptainer build x.sif
docker-archive://x.tar`` (tests/images/apptainer.py, cached by the docker image ID).  As root,
this sandbox withholds one capability from apptainer's non-namespaced mode, so root runs pass
``--runtime-arg=--userns`` (the tests below also prove what happens without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import ONLY_SYSTEM, RUN_LIMIT, cut_copy, standin_nvidia_smi

pytestmark = [pytest.mark.apptainer, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

USERNS = "--runtime-arg=--userns"


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _statuses(data: dict[str, Any], column: str | None = None) -> dict[str, str]:
    return {c["row"]: c["status"] for c in data["cells"] if column is None or c["column"] == column}


def instances(*, run_id: str = "", pid: int | None = None) -> list[str]:
    """This user's instances started by one run (by its run id) or one pytest process (by its pid).

    Other tests may run instances at the same time (pytest -n 2): only ours are counted.
    """
    res = subprocess.run(["apptainer", "instance", "list", "--json"], capture_output=True, text=True, timeout=60)
    listed = json.loads(res.stdout or "{}").get("instances") or []
    names = [str(i["instance"]) for i in listed]
    if pid is not None:
        return [n for n in names if n.startswith(f"containercheck-{pid}-")]
    return [n for n in names if n.startswith("containercheck-") and f"-{run_id}-" in n]


def orphan_squashfuse() -> list[str]:
    """squashfuse processes whose apptainer parent is gone (parent pid 1): a SIF mounted by nobody.

    Live ones belong to a running instance or exec (their parent is apptainer's), maybe another run's.
    """
    res = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True, timeout=30)
    return [ln for ln in res.stdout.splitlines() if "squashfuse" in ln and ln.split()[1] == "1"]


CONTAINED_CHECKS = """
import os

def test_host_dirs_stay_out(container):
    marks = os.environ["CC_MARKS"].split(":")
    for path in marks:  # the host's files in /tmp, /var/tmp and the working directory
        seen = container.run(["cat", path])
        assert seen.returncode != 0, (path, seen.stdout)
    for d in ("/tmp", "/var/tmp", os.getcwd()):
        wrote = container.run(["sh", "-c", f"echo pwned > {d}/cc-from-image-{os.getpid()}"])
        if d != os.getcwd():  # /tmp and /var/tmp are writable (private), the host's stay untouched
            assert wrote.returncode == 0, (d, wrote.stderr)
    assert container.run(["sh", "-c", "pwd"]).stdout.strip() != os.getcwd()
    container.note("contained")
"""


def test_host_tmp_and_cwd_are_not_mounted(pytester: pytest.Pytester, base_sif: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Apptainer binds the host's /tmp, /var/tmp and working directory read-write by default;
    an image run by the plugin sees none of them, and writes nothing there, while /tmp and
    /var/tmp stay writable inside (private directories, removed with the run)."""
    marks = []
    for d in ("/tmp", "/var/tmp", str(pytester.path)):
        mark = Path(d) / f"cc-host-mark-{os.getpid()}"
        mark.write_text("host secret\n")
        marks.append(str(mark))
    monkeypatch.setenv("CC_MARKS", ":".join(marks))
    pytester.makepyfile(test_contained=CONTAINED_CHECKS)
    try:
        result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "test_contained.py",
                                               "--no-builtin-checks", "--matrix-json", "m.json")
        assert result.ret == 0, result.stdout.str()[-3000:]
        for d in ("/tmp", "/var/tmp", str(pytester.path)):
            assert not list(Path(d).glob("cc-from-image-*")), d
    finally:
        for mark in marks:
            Path(mark).unlink(missing_ok=True)
    assert instances(run_id=_json(pytester.path / "m.json")["meta"]["run_id"]) == []


def test_builtin_suite_as_root_with_userns(pytester: pytest.Pytester, base_sif: Path) -> None:
    result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    data = _json(pytester.path / "m.json")
    got = _statuses(data)
    assert {r: got[r] for r in ("system.python", "system.os", "system.writable_cache")} == dict.fromkeys(
        ("system.python", "system.os", "system.writable_cache"), "pass")
    cells = {c["row"]: c for c in data["cells"]}
    # A private, empty, writable home at the user's home path: not the plugin's flags failing the image.
    assert "home /root" in cells["system.writable_cache"]["detail"]
    column = data["columns"][0]
    assert column["facts"]["runtime"] == "apptainer" and column["facts"]["sif_id"]
    assert column["facts"]["launch"]["instance"].startswith("containercheck-")
    if not data["hosts"][column["host"]]["has_gpu"]:  # no GPU evidence on this host: no --nv asked for
        gpu = column["facts"]["launch"]["gpu"]
        assert gpu["requested"] == "none" and gpu["flags"] == [] and gpu["why"].startswith("not requested: ")
    assert instances(run_id=data["meta"]["run_id"]) == [] and orphan_squashfuse() == []


def test_instance_stop_ends_once_the_instance_is_gone(base_sif: Path) -> None:
    """``instance stop`` returns when PID 1 has reaped the instance's master; ours returns when the
    master has exited (a zombie or gone), after it unmounted the SIF and deleted the instance
    file: nothing of the instance is left, and no ``instance stop`` command either."""
    from pytest_containercheck.engine.runtimes.apptainer import _instance_master, _stop_instance

    name = f"containercheck-{os.getpid()}-stoptest"
    subprocess.run(["apptainer", "instance", "start", "--userns", "--cleanenv", str(base_sif), name],
                   capture_output=True, check=True, timeout=120)
    master = _instance_master(name)
    assert master is not None and name in instances(pid=os.getpid())
    _stop_instance("apptainer", name)
    assert name not in instances(pid=os.getpid())
    state = Path(f"/proc/{master}/stat").read_text().split()[2] if Path(f"/proc/{master}").exists() else "gone"
    assert state in ("Z", "gone")
    stops = subprocess.run(["pgrep", "-f", f"instance stop --force {name}$"], capture_output=True, text=True,
                           timeout=60)
    assert stops.stdout == ""
    assert orphan_squashfuse() == []


def test_root_without_userns_is_apptainers_failure_not_the_images(pytester: pytest.Pytester, base_sif: Path) -> None:
    result = pytester.runpytest_subprocess("--image", str(base_sif), "--matrix-json", "m.json", *ONLY_SYSTEM)
    assert result.ret == 1
    cells = _json(pytester.path / "m.json")["cells"]
    assert {c["status"] for c in cells} == {"error"}
    for cell in cells:
        assert cell["detail"].startswith("apptainer: Requesting capability set"), cell["detail"]
        assert cell["fault"] == "host" and "--runtime-arg=--userns" in cell["fix"]
        assert "no Python interpreter" not in cell["detail"]
    assert instances(run_id=_json(pytester.path / "m.json")["meta"]["run_id"]) == []


def test_builtin_suite_as_a_non_root_user(nonroot: Any, base_sif: Path) -> None:
    # The cluster case: no root, apptainer through user namespaces, no --userns needed.
    res, cwd = nonroot("--image", str(base_sif), "--matrix-json", "m.json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    got = _statuses(_json(cwd / "m.json"))
    assert got["system.python"] == got["system.os"] == got["system.writable_cache"] == "pass"
    leftover = subprocess.run(["runuser", "-u", "ccuser", "--", "apptainer", "instance", "list"],
                              capture_output=True, text=True, timeout=60).stdout
    assert "containercheck-" not in leftover


def test_singularity_command_name(pytester: pytest.Pytester, base_sif: Path) -> None:
    # Debian's apptainer ships the old name too; --runtime singularity runs that executable.
    result = pytester.runpytest_subprocess("--image", f"singularity://{base_sif}", USERNS, "--matrix-json", "m.json",
                                           *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-3000:]
    data = _json(pytester.path / "m.json")
    assert data["columns"][0]["id"] == f"singularity://{base_sif.name}"
    assert data["columns"][0]["facts"]["launch"]["command"][0] == "singularity"
    assert _statuses(data)["system.python"] == "pass"


def test_same_verdicts_under_docker_and_apptainer(pytester: pytest.Pytester, full_image: str, full_sif: Path) -> None:
    # Two runs: --runtime-arg goes to every runtime of a run, and --userns means another thing to docker.
    pytester.runpytest_subprocess("--image", full_image, "--matrix-json", "docker.json")
    pytester.runpytest_subprocess("--image", str(full_sif), USERNS, "--matrix-json", "sif.json")
    docker = _statuses(_json(pytester.path / "docker.json"))
    sif = _statuses(_json(pytester.path / "sif.json"))
    assert len(docker) >= 17 and docker == sif, (docker, sif)


def test_image_variables_arrive_intact(pytester: pytest.Pytester, base_sif: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # XLA_FLAGS would be split at its comma by --env K=V; CUDA_VISIBLE_DEVICES is Slurm's GPU
    # selection, set on the host, and must cross --cleanenv.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    pytester.makepyfile(test_env="""
        def test_env(container):
            out = container.python("import os; print(os.environ['XLA_FLAGS'], os.environ['CUDA_VISIBLE_DEVICES'])")
            assert out.ok, out.stderr
            assert out.stdout.strip() == "--a=1,--b=2 3", out.stdout
            container.note(out.stdout.strip())
    """)
    result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "test_env.py", "--no-builtin-checks",
                                           "--container-env", "XLA_FLAGS=--a=1,--b=2", "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    cell = _json(pytester.path / "m.json")["cells"][0]
    # The value arrived whole (asserted in the check); the report names the variable instead of
    # its value, as for every --container-env value.
    assert cell["detail"] == "$XLA_FLAGS 3"


def test_sif_without_root_filesystem_is_a_usage_error(pytester: pytest.Pytester, apptainer: Any) -> None:
    empty = pytester.path / "empty.sif"
    made = subprocess.run(["apptainer", "sif", "new", str(empty)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    result = pytester.runpytest_subprocess("--image", str(empty))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no root file system partition" in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_command_timeout_and_interrupt_leave_no_instance(pytester: pytest.Pytester, base_sif: Path,
                                                         sig: signal.Signals) -> None:
    marker = pytester.path / "started"
    pytester.makepyfile(test_slow=f"""
        def test_timeout(container):
            out = container.python("import time; time.sleep(120)", timeout=3)
            assert out.timed_out
            container.note("timed out")

        def test_long(container):
            container.python("open({str(marker)!r}, 'w').close(); import time; time.sleep(120)")
    """)
    # The marker is written inside the instance into the test's directory, bound on purpose
    # (the host's working directory is not mounted otherwise).
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", str(base_sif),
                             USERNS, f"--runtime-arg=--bind={pytester.path}", "test_slow.py", "--no-builtin-checks",
                             "--matrix-json", "m.json"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + RUN_LIMIT
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the long test never started"
    assert instances(pid=proc.pid), "an instance should be running now"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert instances(pid=proc.pid) == [] and orphan_squashfuse() == [], out[-3000:]
    assert not [p for p in Path("/tmp").glob("containercheck-home-*") if p.name.split("-")[2] == str(proc.pid)]


def test_a_killed_pytests_instance_is_reaped_by_the_next_run(pytester: pytest.Pytester, base_sif: Path) -> None:
    marker = pytester.path / "started"
    pytester.makepyfile(test_hang=f"""
        def test_hang(container):
            container.python("open({str(marker)!r}, 'w').close(); import time; time.sleep(300)")
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", str(base_sif),
                             USERNS, f"--runtime-arg=--bind={pytester.path}", "test_hang.py", "--no-builtin-checks"],
                            cwd=pytester.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + RUN_LIMIT
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists()
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup possible
    proc.wait(timeout=60)
    assert instances(pid=proc.pid), "the killed run's instance should still be there"
    result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-2000:]
    assert instances(pid=proc.pid) == [] and orphan_squashfuse() == []


def test_nvccli_missing_runs_without_gpus_and_says_why(pytester: pytest.Pytester, base_sif: Path) -> None:
    # This host has no nvidia-container-cli: apptainer exits FATAL with --nvccli.  The image
    # still runs (without GPUs), and the launch facts carry apptainer's line and the fix.
    result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "--apptainer-gpu", "nvccli",
                                           "--matrix-json", "m.json", *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-3000:]
    data = _json(pytester.path / "m.json")
    gpu = data["columns"][0]["facts"]["launch"]["gpu"]
    assert gpu["requested"] == "nvccli" and gpu["attached"] is False
    assert "nvidia-container-cli" in gpu["error"] and "libnvidia-container-tools" in gpu["fix"]
    assert _statuses(data)["system.python"] == "pass"
    assert instances(run_id=data["meta"]["run_id"]) == []


HANG = """
def run(params, ctx):
    import subprocess, sys, time
    # A child in the probe's process group that outlives the probe's own watchdog.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # hang-child"])
    time.sleep(600)
"""


def test_probe_timeout_kills_the_probe_inside_the_instance(pytester: pytest.Pytester, base_sif: Path) -> None:
    # Killing the 'apptainer exec' client leaves its process running in the instance (it has
    # its own PID namespace): the probe's process group must be killed inside.
    probes = pytester.mkdir("p")
    (probes / "hang.py").write_text(HANG)
    pytester.makepyfile(test_hang="""
        import pytest

        def test_a_hang(container):
            container.facts("hang")

        def test_b_nothing_left(container):
            out = container.python(
                "import os\\n"
                "me = os.getpid()\\n"
                "for p in os.listdir('/proc'):\\n"
                "    if p.isdigit() and int(p) != me:\\n"
                "        try: cmd = open('/proc/%s/cmdline' % p, 'rb').read()\\n"
                "        except OSError: continue\\n"
                "        if b'hang-child' in cmd: print(p, cmd)\\n")
            assert out.ok, out.stderr
            assert out.stdout.strip() == "", out.stdout
            container.note("no probe process left")
    """)
    result = pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "test_hang.py", "--no-builtin-checks",
                                           "--probe-dir", "p", "--probe-timeout", "3", "--matrix-json", "m.json")
    cells = {c["row"]: c for c in _json(pytester.path / "m.json")["cells"]}
    assert cells["a_hang"]["status"] == "error" and "timed out" in cells["a_hang"]["detail"], cells["a_hang"]
    assert cells["b_nothing_left"]["status"] == "pass", (cells["b_nothing_left"], result.stdout.str()[-2000:])


def test_truncated_sif_is_a_usage_error(pytester: pytest.Pytester, base_sif: Path) -> None:
    # The transfer did not finish: caught from the SIF header, before apptainer mounts anything.
    half = cut_copy(base_sif, pytester.path / "half.sif")
    result = pytester.runpytest_subprocess("--image", str(half))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is truncated" in result.stderr.str() and "copy it again" in result.stderr.str()


# -- --nvccli with a stand-in nvidia-container-cli: apptainer's real lines, judged ------------------------
#
# Apptainer 1.4 looks nvidia-container-cli up on its "binary path" ("$PATH:..." by default:
# internal/pkg/util/bin FindBin); Singularity 3.x's "nvidia-container-cli path" directive is gone.
# So a stand-in first on PATH is the one apptainer runs (in the user namespace, as
# "nvidia-container-cli --user configure ... ROOTFS").  See tests/data/gpu-runtimes/README.md.


def standin_nvccli(bindir: Path, *, stderr: str = "", log: Path | None = None) -> Path:
    """An nvidia-container-cli in *bindir* that appends its arguments to *log* and, with *stderr*,
    prints it and exits 1 as the real one does on failure (``{device}``: its --device value,
    ``{rootfs}``: its last argument); else exits 0 having done nothing."""
    bindir.mkdir(parents=True, exist_ok=True)
    cli = bindir / "nvidia-container-cli"
    lines = ["#!/bin/sh"]
    if log is not None:
        lines.append(f'echo "$@" >> {log}')
    if stderr:
        lines += ['for a in "$@"; do case "$a" in --device=*) device="${a#--device=}";; esac; rootfs="$a"; done',
                  "printf '%s\\n' \"" + stderr.replace("{device}", "$device").replace("{rootfs}", "$rootfs") + "\" >&2",
                  "exit 1"]
    cli.write_text("\n".join(lines) + "\n")
    cli.chmod(0o755)
    return cli


def test_nvccli_success_is_no_gpu_failure(pytester: pytest.Pytester, base_sif: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """apptainer says "INFO: Setting --writable-tmpfs (required by nvidia-container-cli)" when all is
    well: the GPU is attached.  The environment's NVIDIA_DRIVER_CAPABILITIES reaches nvidia-container-cli
    as the users' own launch passes it (issue 29: nothing of ours added)."""
    log = tmp_path / "args.log"
    standin_nvccli(tmp_path / "bin", log=log)
    standin_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")
    pytester.runpytest_subprocess("--image", str(base_sif), USERNS, "--apptainer-gpu", "nvccli",
                                  "--matrix-json", "m.json", *ONLY_SYSTEM)
    data = _json(pytester.path / "m.json")
    gpu = data["columns"][0]["facts"]["launch"]["gpu"]
    assert (gpu["requested"], gpu["attached"], gpu["error"], gpu["warnings"]) == ("nvccli", True, None, []), gpu
    args = log.read_text().split()
    assert args[:3] == ["--user", "configure", "--no-cgroups"] and "--device=all" in args
    assert [a for a in args if a in ("--compute", "--compat32", "--graphics", "--utility", "--video", "--display")
            ] == ["--compute", "--utility"]
    assert gpu["nvccli"] is True and gpu["nvccli_capabilities"] == "compute,utility"
    # --apptainer-gpu nvccli where apptainer.conf does not ask for it: a launch difference, listed.
    launch = data["columns"][0]["facts"]["launch"]
    assert [d for d in launch["launch_differences"] if d.startswith("--nvccli")], launch["launch_differences"]
    cells = {c["row"]: c for c in data["cells"]}
    assert cells["system.python"]["status"] == "pass"
    assert cells["system.nvidia_env"]["status"] == "pass"
    assert cells["system.nvidia_env"]["detail"].startswith("apptainer nvidia-container-cli: ")
    # The stand-in set nothing up: no GPU nodes inside, and that is the host's (the driver's) part.
    assert (cells["system.gpu_devices"]["status"], cells["system.gpu_devices"]["fault"]) == ("fail", "host")
    assert "started without GPU access" not in cells["system.gpu_devices"]["detail"]
    assert instances(run_id=data["meta"]["run_id"]) == []


#: libnvidia-container's own failures (src/cli/configure.c prefixes, NVML's texts), as the stand-in
#: prints them: (text, --gpus, fault, words of the fix).  Sources: tests/data/gpu-runtimes/README.md.
NVCCLI_FAILURES = {
    "version-mismatch": ("nvidia-container-cli: initialization error: nvml error: driver/library version mismatch",
                         "all", "host", "reboot the host"),
    "driver-not-loaded": ("nvidia-container-cli: initialization error: nvml error: driver not loaded", "all", "host",
                          "modprobe nvidia"),
    "unknown-device": ("nvidia-container-cli: device error: {device}: unknown device", "device=3", None,
                       "nvidia-smi -L"),
    "image-ships-driver": ("nvidia-container-cli: mount error: file creation failed: "
                           "{rootfs}/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1: file exists", "all", "image",
                           "remove them from the image"),
}


@pytest.mark.parametrize("case", list(NVCCLI_FAILURES))
def test_nvccli_failures_are_judged_by_nvidia_container_clis_text(base_sif: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Real apptainer, failing nvidia-container-cli: the image starts without GPUs, and the GPU facts
    carry apptainer's FATAL line, libnvidia-container's fault and its fix."""
    from pytest_containercheck.engine.runtimes import LaunchOptions
    from pytest_containercheck.engine.runtimes.apptainer import ApptainerRuntime
    from pytest_containercheck.engine.targets import parse_target

    text, gpus, fault, fix = NVCCLI_FAILURES[case]
    standin_nvccli(tmp_path / "bin", stderr=text)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    options = LaunchOptions(run_id=f"nvccli{os.getpid()}", gpus=gpus, apptainer_gpu="nvccli",
                            runtime_args=("--userns",))
    session = ApptainerRuntime("apptainer").start(parse_target(str(base_sif)), options)
    try:
        gpu = session.facts["gpu"]
        assert session.alive() and gpu["attached"] is False
        assert gpu["error"].startswith("apptainer: container creation failed: nvidia-container-cli failed with exit "
                                       "status 1: nvidia-container-cli: "), gpu["error"]
        assert gpu["fault"] == fault and fix in gpu["fix"], gpu
        assert "libnvidia-container-tools" not in gpu["fix"]  # it is installed: it failed
    finally:
        session.stop()
    assert instances(run_id=options.run_id) == []
