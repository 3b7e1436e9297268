"""Prepare a fresh Debian bookworm machine for pytest-containercheck's test suite.

    python3 tests/images/provision.py [--images NAME ...] [--no-images] [--no-podman] [--no-slurm]

Idempotent: every phase first checks whether its work is already done. Phases, each timed:

1. Docker engine: install Debian's ``docker.io`` if needed and start ``dockerd`` directly
   (works without systemd), wait until ``docker info`` answers.  Fatal if it cannot.
2. ``debootstrap`` (to build the test images without a registry).
3. Mesa for offscreen VTK on the host: libosmesa6 libegl1 libegl-mesa0 libgl1.
4. The test images (``tests/images/build.py``): all of them, or those named.
5. Apptainer (required): a real apptainer from Debian (see ``apptainer.py``), the non-root
   test user, and SIFs of the base and full test images built with ``apptainer build
   x.sif docker-archive://x.tar``.
6. Slurm (required): Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge``, and a
   single-node cluster of this machine in two partitions, daemons started directly
   (``slurm.py``), for the README's Slurm recipe (``tests/test_slurm.py``).
7. Podman (optional): install Debian's ``podman``, write a containers.conf drop-in with
   ulimits this VM accepts, ``docker save | podman load`` one image and ``podman run`` it.
   A failure here is reported and does not fail the script; under CI=true the Podman tests
   then fail (tests/test_podman.py), as every test of a missing runtime does.

Stdlib only.  Exits non-zero with a one-line reason when a required phase fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import apptainer
import build
import slurm

DOCKERD_LOG = Path("/var/log/containercheck-dockerd.log")
DOCKER_TIMEOUT_S = 120.0
MESA = ("libosmesa6", "libegl1", "libegl-mesa0", "libgl1")
PODMAN_CONF = Path("/etc/containers/containers.conf.d/50-containercheck-tests.conf")
PODMAN_CONF_TEXT = """\
# Written by pytest-containercheck tests/images/provision.py.
# This VM refuses podman's default rlimits ("error setting rlimit type 7: operation not
# permitted"), so containers get limits it accepts.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
"""
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class ProvisionError(RuntimeError):
    """A required phase failed; str() is the one-line reason."""


def log(message: str) -> None:
    print(message, flush=True)


def phase_done(name: str, started: float, what: str = "ready") -> None:
    log(f"[provision] {name}: {what} in {time.monotonic() - started:.1f}s")


def one_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit] + " ..."


def is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------- apt


def dpkg_installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and proc.stdout.startswith("ii")


def _has_candidate(package: str) -> bool:
    proc = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False)
    return "Candidate:" in proc.stdout and "Candidate: (none)" not in proc.stdout


def _apt_get(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=_APT_ENV,
        check=False,
    )


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages that are missing; ``apt-get update`` only when needed."""
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if not is_root():
        raise ProvisionError(
            f"missing Debian packages: {' '.join(missing)} -- run as root, or: sudo apt-get install {' '.join(missing)}"
        )
    updated = False
    if not all(_has_candidate(p) for p in missing):
        update = _apt_get(["update"])
        updated = True
        if update.returncode != 0:
            raise ProvisionError(f"apt-get update failed: {one_line(update.stdout)}")
    install = _apt_get(["install", "-y", *missing])
    if install.returncode != 0 and not updated:  # stale package lists: refresh and retry once
        _apt_get(["update"])
        install = _apt_get(["install", "-y", *missing])
    if install.returncode != 0:
        raise ProvisionError(f"apt-get install {' '.join(missing)} failed: {one_line(install.stdout)}")


# --------------------------------------------------------------------------- docker


def docker_info() -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["docker", "info"], 1, "", str(exc))


def ensure_docker() -> str:
    info = docker_info()
    if info.returncode == 0:
        return info.stdout.strip()
    if shutil.which("docker") and not is_root() and "permission denied" in info.stderr.lower():
        raise ProvisionError(
            "cannot reach the Docker daemon: permission denied on its socket -- run as root or join the 'docker' group"
        )
    if not is_root():
        raise ProvisionError(
            "Docker is not working (need docker.io installed and dockerd "
            f"running): {one_line(info.stderr)} -- run this script as root"
        )
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        apt_install(["docker.io"])
        info = docker_info()  # the package's init script may have started it
        if info.returncode == 0:
            return info.stdout.strip()
    return wait_for_docker(start_dockerd())


def _dockerd_running() -> bool:
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "dockerd":
                return True
        except OSError:
            continue
    return False


def start_dockerd() -> subprocess.Popen[bytes] | None:
    """Start dockerd in its own session, logging to DOCKERD_LOG; None if one already runs."""
    if _dockerd_running():
        log("[provision] docker engine: dockerd already running, waiting for it to answer")
        return None
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(DOCKERD_LOG, "ab") as out:
        out.write(f"\n--- started by provision.py at {time.ctime()} ---\n".encode())
        out.flush()
        proc = subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    log(f"[provision] docker engine: started dockerd pid {proc.pid} (log: {DOCKERD_LOG})")
    return proc


def wait_for_docker(dockerd: subprocess.Popen[bytes] | None) -> str:
    deadline = time.monotonic() + DOCKER_TIMEOUT_S
    info = docker_info()
    while info.returncode != 0:
        if time.monotonic() > deadline:
            raise ProvisionError(
                f"dockerd did not answer within {DOCKER_TIMEOUT_S:.0f}s (see {DOCKERD_LOG}): {one_line(_log_tail())}"
            )
        if dockerd is not None and dockerd.poll() is not None:
            raise ProvisionError(
                f"dockerd exited with {dockerd.returncode}: {one_line(_log_tail())} (see {DOCKERD_LOG})"
            )
        time.sleep(1.0)
        info = docker_info()
    return info.stdout.strip()


def _log_tail() -> str:
    try:
        return DOCKERD_LOG.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- podman


def ensure_podman(name: str) -> str:
    """Install/configure podman and run test image ``name`` with it; returns a summary."""
    apt_install(["podman"])
    if is_root():
        write_podman_conf()
    elif not PODMAN_CONF.exists():
        raise ProvisionError(f"{PODMAN_CONF} is missing (run this script as root once)")
    loaded = build.ensure_podman_image(name, log=log)
    proc = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", loaded, "cat", "/proc/self/limits"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ProvisionError(f"podman run {loaded} failed: {one_line(proc.stderr)}")
    soft = {
        line[:26].strip(): line[26:].split()[0]
        for line in proc.stdout.splitlines()
        if line.startswith(("Max open files", "Max processes"))
    }
    limits = f"nofile={soft.get('Max open files', '?')} nproc={soft.get('Max processes', '?')}"
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return f"{version}; podman run {loaded} ok ({limits})"


def write_podman_conf() -> None:
    if PODMAN_CONF.exists() and PODMAN_CONF.read_text() == PODMAN_CONF_TEXT:
        return
    PODMAN_CONF.parent.mkdir(parents=True, exist_ok=True)
    PODMAN_CONF.write_text(PODMAN_CONF_TEXT)


# --------------------------------------------------------------------------- main


#: Test images the Apptainer tests run as SIFs (built the users' way: docker save, apptainer build).
SIF_IMAGES = ("base", "full", "owncheck")


def run(images: Sequence[str], with_podman: bool, with_apptainer: bool = True, with_slurm: bool = True) -> None:
    t0 = time.monotonic()
    version = ensure_docker()
    phase_done("docker engine", t0, f"ready (server {version})")

    t0 = time.monotonic()
    # debootstrap builds the test images; python3-venv gives the non-root test user (and the
    # install tests) venvs of Debian's own python3; gcc builds the small libraries the loader's
    # search is checked with (tests/test_depth_probe.py); rpm (with rpmbuild) answers the own-check
    # helper's package question as RPM-based images would (tests/test_owncheck.py).
    apt_install(["debootstrap", "python3-venv", "gcc", "libc6-dev", "rpm"])
    phase_done("debootstrap, python3-venv, gcc, rpm", t0)

    t0 = time.monotonic()
    apt_install(MESA)
    phase_done("host mesa", t0)

    t0 = time.monotonic()
    # tests/test_docs.py looks at the built docs site in a real browser, at 1280 px.
    apt_install(["chromium"])
    phase_done("chromium", t0)

    for name in images:
        t0 = time.monotonic()
        present = build.image_exists(build.image_ref(name))
        if not present and not is_root():
            raise ProvisionError(
                f"test image {build.image_ref(name)} is missing and building "
                "it needs root (debootstrap, chroot): run this script as root"
            )
        try:
            ref = build.ensure_image(name, log=log)
        except build.BuildError as exc:
            log(str(exc))
            raise ProvisionError(f"building test image {name!r} failed: {str(exc).splitlines()[0]}") from exc
        phase_done(f"image {name}", t0, f"{ref} {'present' if present else 'built'}")

    if with_apptainer:
        # Required: the .sif path is the headline command (tests fail, never skip, under CI=true).
        try:
            installed = apptainer.ensure_apptainer(log=log)
            apptainer.ensure_test_user(log=log)
            for name in SIF_IMAGES:
                if name in images:
                    apptainer.ensure_sif(build.image_ref(name), log=log)
        except apptainer.ApptainerError as exc:
            raise ProvisionError(f"apptainer: {str(exc).splitlines()[0]}") from exc
        log(f"[provision] apptainer: {installed.get('version')} via {installed.get('route')} "
            f"(Debian {installed.get('debian')}, libc {installed.get('libc')})")

    if with_slurm:
        # Required: the README's Slurm recipe runs for real (its test fails, never skips, under CI=true).
        try:
            slurm.ensure_slurm(log=log)
        except (slurm.SlurmError, OSError) as exc:
            raise ProvisionError(f"slurm: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc

    if with_podman:
        t0 = time.monotonic()
        try:
            summary = ensure_podman("nopython")
            phase_done("podman", t0, f"ready ({summary})")
        except (ProvisionError, build.BuildError, OSError, subprocess.SubprocessError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log(f"[provision] podman: NOT available ({reason}); podman tests will skip")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare this machine for the test suite.")
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="NAME",
        choices=list(build.RECIPES),
        help=f"test images to build (default: all: {' '.join(build.RECIPES)})",
    )
    parser.add_argument("--no-images", action="store_true", help="build no test images")
    parser.add_argument("--no-podman", action="store_true", help="skip the podman phase")
    parser.add_argument("--no-apptainer", action="store_true", help="skip the apptainer phase")
    parser.add_argument("--no-slurm", action="store_true", help="skip the slurm phase")
    args = parser.parse_args(argv)
    images: list[str] = [] if args.no_images else (args.images or list(build.RECIPES))
    started = time.monotonic()
    try:
        run(images, with_podman=not args.no_podman, with_apptainer=not args.no_apptainer,
            with_slurm=not args.no_slurm)
    except ProvisionError as exc:
        print(f"[provision] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("[provision] interrupted", file=sys.stderr)
        return 130
    phase_done("total", started, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
