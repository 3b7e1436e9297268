"""Provision a real single-node Slurm cluster on a Debian 12 or Debian 13 machine, without systemd.

    python3 tests/images/slurm.py [--stop]

Importable (tests/images is not a package; ``provision.py`` puts this directory on sys.path)::

    info = slurm.ensure_slurm(log)    # {"version": "slurm-wlm 22.05.8", "partitions": "part-a part-b", ...}

What it sets up, for testing the README's on-cluster recipe (``sbatch``, ``srun``) for real:

* Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` (installed with apt when
  missing) and a munge key (the package's own, or a new one).
* ``/etc/slurm/slurm.conf`` for ONE node, this machine (its hostname, and the CPUs and memory
  ``slurmd -C`` reads from it; no GPUs, no gres), in TWO partitions, ``part-a`` and
  ``part-b``.  No cgroups (``proctrack/linuxproc``, ``task/none``), no slurmdbd: finished jobs
  are recorded by ``jobcomp/filetxt``, so ``sacct -c`` shows their start and end times.
  State, spool, logs and pid files live under ``/var/lib/containercheck-slurm``.
* The daemons started directly (the machine has no systemd as init): ``munged`` as the
  ``munge`` user, then ``slurmctld`` and ``slurmd``; each daemonizes itself.

Idempotent: running daemons are kept (found by their process names), the configuration is
rewritten (and the daemons restarted) only when it changes, and the cluster is ready when
``sinfo`` lists the node, idle or busy, in both partitions.  A ``slurm.conf`` not written by
this script is never replaced.  Stdlib only; prints the Slurm version and the time of each step.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PARTITIONS", "SLURM_CONF", "STATE_DIR", "SlurmError", "ensure_slurm", "main", "sinfo", "stop_slurm"]

Log = Callable[[str], None]

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PARTITIONS = ("part-a", "part-b")
SLURM_CONF = Path(os.environ.get("CONTAINERCHECK_SLURM_CONF", "/etc/slurm/slurm.conf"))
STATE_DIR = Path(os.environ.get("CONTAINERCHECK_SLURM_DIR", "/var/lib/containercheck-slurm"))
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_DIRS = (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge"))
MARKER = "# Written by pytest-containercheck tests/images/slurm.py: a single-node test cluster."
READY_TIMEOUT_S = 90.0
#: Node states in which jobs can run (sinfo %t, without the flag suffixes such as '*' or '~').
USABLE_STATES = ("idle", "mix", "alloc", "comp")
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class SlurmError(RuntimeError):
    """A step failed; str() is a one-line reason (details in the daemons' logs it names)."""


def _print(message: str) -> None:
    print(message, flush=True)


def _done(log: Log, started: float, what: str) -> None:
    log(f"[provision] slurm: {what} in {time.monotonic() - started:.1f}s")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _run(argv: Sequence[str], *, timeout: float = 60,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout and stderr merged; never raises (exit 127 when it cannot start)."""
    try:
        return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              text=True, errors="replace", timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, f"{argv[0]}: {exc}", "")


# --------------------------------------------------------------------------- packages


def _dpkg_installed(package: str) -> bool:
    proc = _run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package])
    return proc.returncode == 0 and proc.stdout.startswith("ii")


def _apt_install(packages: Sequence[str], log: Log) -> list[str]:
    """Install the Debian packages that are missing (``apt-get update`` once if that fails); returns them."""
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise SlurmError(f"missing Debian packages {' '.join(missing)}: run this script as root once")
    lock_wait = ["-o", "DPkg::Lock::Timeout=900"]
    argv = ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", *missing]
    proc = _run(argv, timeout=1800, env=_APT_ENV)
    if proc.returncode != 0:  # stale or missing package lists: refresh once, retry
        _run(["apt-get", *lock_wait, "update"], timeout=900, env=_APT_ENV)
        proc = _run(argv, timeout=1800, env=_APT_ENV)
    if proc.returncode != 0:
        raise SlurmError(f"apt-get install {' '.join(missing)} failed: {_last_line(proc.stdout)}")
    return missing


def slurm_version() -> str:
    """'slurm-wlm 22.05.8' (``slurmctld -V``: needs no slurm.conf), or '' when it does not answer."""
    proc = _run(["slurmctld", "-V"])
    return proc.stdout.strip() if proc.returncode == 0 else ""


# --------------------------------------------------------------------------- processes


def _pids(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name``."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _start_daemon(argv: Sequence[str], name: str, log_file: Path) -> None:
    """Start a self-daemonizing ``argv``; wait for its foreground process to return."""
    try:
        proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              text=True, errors="replace", timeout=60, start_new_session=True, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{name} did not start: {exc}") from exc
    if proc.returncode != 0:
        raise SlurmError(f"{name} exited with {proc.returncode}: {_last_line(proc.stdout) or _log_tail(log_file)} "
                         f"(log: {log_file})")


def _log_tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(errors="replace")[-4000:])
    except OSError:
        return ""


def _stop(name: str, timeout: float = 30.0) -> bool:
    """SIGTERM every ``name`` process and wait for them to go; True if there was one."""
    pids = _pids(name)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while _pids(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return bool(pids)


# --------------------------------------------------------------------------- munge


def _munge_works() -> bool:
    encoded = _run(["munge", "-n"], timeout=30)
    if encoded.returncode != 0:
        return False
    try:
        proc = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def ensure_munge(log: Log = _print) -> str:
    """A munge key and a running ``munged`` that answers ``munge -n | unmunge``; returns what was done."""
    if _munge_works():
        return "munged running"
    if os.geteuid() != 0:
        raise SlurmError("munged is not running: run this script as root once")
    user = _system_user("munge")
    for directory in MUNGE_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, user.pw_uid, user.pw_gid)
    Path("/run/munge").chmod(0o755)
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size < 32:
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(128))
        log(f"[provision] slurm: wrote a new munge key {MUNGE_KEY}")
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    MUNGE_KEY.chmod(0o400)
    _stop("munged", timeout=10)  # one that does not answer: replace it
    _start_daemon(["runuser", "-u", "munge", "--", "munged"], "munged", Path("/var/log/munge/munged.log"))
    deadline = time.monotonic() + 30
    while not _munge_works():
        if time.monotonic() > deadline:
            raise SlurmError(f"munged does not answer 'munge -n | unmunge' after 30s: "
                             f"{_log_tail(Path('/var/log/munge/munged.log'))}")
        time.sleep(0.2)
    return "munged started"


# --------------------------------------------------------------------------- slurm.conf


def node_line() -> str:
    """This machine as a Slurm node (``slurmd -C``: hostname, CPUs, sockets/cores/threads, RealMemory)."""
    proc = _run(["slurmd", "-C"])
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NodeName=")), "")
    if proc.returncode != 0 or not line:
        raise SlurmError(f"'slurmd -C' did not describe this node: {_last_line(proc.stdout)}")
    return line.strip()


def node_name(line: str) -> str:
    match = re.match(r"NodeName=(\S+)", line)
    return match.group(1) if match else socket.gethostname().split(".")[0]


def render_conf(node: str, state_dir: Path = STATE_DIR) -> str:
    """slurm.conf for one node (``node``: a ``slurmd -C`` line) in the two test partitions."""
    name = node_name(node)
    partitions = "\n".join(
        f"PartitionName={p} Nodes={name} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP"
        for i, p in enumerate(PARTITIONS)
    )
    return f"""\
{MARKER}
# One node (this machine, as 'slurmd -C' describes it; no GPUs, no gres) in two partitions.
# No systemd, no cgroups, no slurmdbd: finished jobs go to the jobcomp file ('sacct -c').
ClusterName=containercheck
SlurmctldHost={name}
AuthType=auth/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={state_dir}/ctld
SlurmdSpoolDir={state_dir}/spool
SlurmctldPidFile={state_dir}/run/slurmctld.pid
SlurmdPidFile={state_dir}/run/slurmd.pid
SlurmctldLogFile={state_dir}/log/slurmctld.log
SlurmdLogFile={state_dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={state_dir}/jobcomp.log
MinJobAge=3600
SlurmctldTimeout=60
SlurmdTimeout=60
{node} State=UNKNOWN
{partitions}
"""


def _write_conf(text: str) -> bool:
    """Write slurm.conf if it differs; True when written.  Refuses to replace one this script did not write."""
    if SLURM_CONF.exists():
        current = SLURM_CONF.read_text(errors="replace")
        if current == text:
            return False
        if not current.startswith(MARKER):
            raise SlurmError(f"{SLURM_CONF} exists and was not written by this script: not replacing it "
                             f"(move it away to let this script configure the test cluster)")
    if os.geteuid() != 0:
        raise SlurmError(f"{SLURM_CONF} must be (re)written: run this script as root once")
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    tmp = SLURM_CONF.with_name(SLURM_CONF.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, SLURM_CONF)
    return True


def _system_user(name: str) -> pwd.struct_passwd:
    """The system user ``name`` (the packages create ``slurm`` and ``munge``; created here if they did not)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    proc = _run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise SlurmError(f"there is no '{name}' user and useradd failed: {_last_line(proc.stdout)}") from None


def _make_dirs(state_dir: Path) -> None:
    slurm = _system_user("slurm")
    for sub in ("", "ctld", "run", "log"):
        directory = state_dir / sub
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, slurm.pw_uid, slurm.pw_gid)
        directory.chmod(0o755)
    (state_dir / "spool").mkdir(parents=True, exist_ok=True)
    (state_dir / "spool").chmod(0o755)


# --------------------------------------------------------------------------- cluster


def sinfo() -> dict[str, list[tuple[str, str]]]:
    """{partition: [(node, state), ...]} as ``sinfo`` reports it; {} when slurmctld does not answer."""
    proc = _run(["sinfo", "--noheader", "--Node", "--format=%P %N %t"], timeout=30)
    if proc.returncode != 0:
        return {}
    parts: dict[str, list[tuple[str, str]]] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:
            parts.setdefault(fields[0].rstrip("*"), []).append((fields[1], fields[2].rstrip("*~#!%$@^-")))
    return parts


def _ready(name: str) -> bool:
    parts = sinfo()
    return all(any(n == name and s in USABLE_STATES for n, s in parts.get(p, [])) for p in PARTITIONS)


def _node_state(name: str) -> str:
    return next((s for nodes in sinfo().values() for n, s in nodes if n == name), "not listed")


def ensure_slurm(log: Log = _print) -> dict[str, str]:
    """A running single-node Slurm cluster with the two test partitions; returns its facts.

    Keys: ``version`` (``slurmctld -V``), ``node`` (the ``slurmd -C`` line), ``partitions``,
    ``conf`` (the slurm.conf path), ``state`` (``present`` or ``started``), ``installed``
    (the Debian packages installed now, or '').  Raises SlurmError with a one-line reason.
    """
    started = time.monotonic()
    t0 = time.monotonic()
    installed = _apt_install(PACKAGES, log)
    version = slurm_version()
    _done(log, t0, f"{version or 'slurm (version unknown)'} "
                   f"{'installed (' + ' '.join(installed) + ')' if installed else 'present'}")

    node = node_line()
    name = node_name(node)
    ours = SLURM_CONF.exists() and SLURM_CONF.read_text(errors="replace") == render_conf(node)
    # sinfo waits seconds for a slurmctld that is not there: look for the daemons first.
    if ours and _pids("slurmctld") and _pids("slurmd") and _ready(name):
        _done(log, started, f"cluster present: node {name} in {' '.join(PARTITIONS)} ({_node_state(name)})")
        return {"version": version, "node": node, "partitions": " ".join(PARTITIONS), "conf": str(SLURM_CONF),
                "state": "present", "installed": ""}

    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise SlurmError("the test cluster is not running: run this script as root once")
    changed = _write_conf(render_conf(node))
    _make_dirs(STATE_DIR)
    _done(log, t0, f"{SLURM_CONF} {'written' if changed else 'unchanged'} ({node})")

    t0 = time.monotonic()
    _done(log, t0, ensure_munge(log))

    t0 = time.monotonic()
    if changed:  # daemons reading another configuration: restart them
        for daemon in ("slurmd", "slurmctld"):
            if _stop(daemon):
                log(f"[provision] slurm: stopped {daemon} (configuration changed)")
    actions = []
    if not _pids("slurmctld"):
        _start_daemon(["slurmctld"], "slurmctld", STATE_DIR / "log" / "slurmctld.log")
        actions.append("slurmctld")
    if not _pids("slurmd"):
        _start_daemon(["slurmd"], "slurmd", STATE_DIR / "log" / "slurmd.log")
        actions.append("slurmd")
    deadline = time.monotonic() + READY_TIMEOUT_S
    resumed = False
    while not _ready(name):
        state = _node_state(name)
        if not resumed and state in ("drain", "drng", "down"):  # left so by an earlier run: back to service
            _run(["scontrol", "update", f"NodeName={name}", "State=RESUME"])
            resumed = True
        if time.monotonic() > deadline:
            for daemon in ("slurmctld", "slurmd"):
                if not _pids(daemon):
                    raise SlurmError(f"{daemon} is not running: {_log_tail(STATE_DIR / 'log' / f'{daemon}.log')} "
                                     f"(log: {STATE_DIR / 'log' / f'{daemon}.log'})")
            raise SlurmError(f"node {name} is not usable in partitions {' '.join(PARTITIONS)} after "
                             f"{READY_TIMEOUT_S:.0f}s (state: {state}; logs: {STATE_DIR / 'log'})")
        time.sleep(0.5)
    _done(log, t0, f"{' and '.join(actions) + ' started' if actions else 'daemons running'}; "
                   f"node {name} {_node_state(name)} in {' '.join(PARTITIONS)}")
    _done(log, started, "cluster ready")
    return {"version": version, "node": node, "partitions": " ".join(PARTITIONS), "conf": str(SLURM_CONF),
            "state": "started", "installed": " ".join(installed)}


def stop_slurm(log: Log = _print) -> None:
    """Stop slurmd, slurmctld and munged (the configuration and the job records stay)."""
    t0 = time.monotonic()
    stopped = [d for d in ("slurmd", "slurmctld", "munged") if _stop(d)]
    _done(log, t0, f"stopped {' '.join(stopped) or 'nothing (none was running)'}")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a real single-node Slurm cluster with two partitions.")
    parser.add_argument("--stop", action="store_true", help="stop the daemons instead")
    args = parser.parse_args(argv)
    try:
        if args.stop:
            stop_slurm(_print)
            return 0
        info = ensure_slurm(_print)
    except SlurmError as exc:
        print(f"[provision] slurm: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("[provision] slurm: interrupted", file=sys.stderr)
        return 130
    for key in ("version", "node", "partitions", "conf", "state"):
        _print(f"  {key:11} {info[key]}")
    _print(_run(["sinfo"]).stdout.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
