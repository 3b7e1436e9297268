"""Provision a real Apptainer on a Debian 12 or Debian 13 machine, a non-root user, and SIF test images.

    python3 tests/images/apptainer.py [--image REF ...] [--no-sif] [--refresh]

Importable (tests/images is not a package; ``provision.py`` puts this directory on sys.path)::

    info = apptainer.ensure_apptainer(log)          # {"route": ..., "version": ..., "libc": ...}
    user = apptainer.ensure_test_user(log)          # "ccuser"
    sif = apptainer.ensure_sif("containercheck-test/base:latest", None, log)

Where Apptainer comes from: Debian's ``sid`` suite (Debian 12 and 13 have no ``apptainer``),
read through a *private* apt configuration under ``<cache>/apt-private/<suite>/`` (its own
sources file, package lists and cache): sid is never added to the machine's own sources.

* Route ``apt``: the machine's libc6 satisfies the package's own ``Depends: libc6 (>= X)``
  (Debian 13 today): ``apt-get install ./apptainer_*.deb``; its other dependencies come from
  the machine's own suite.
* Route ``private-libc``: it does not (Debian 12 has 2.36, sid's apptainer wants more): the
  first libc6 from ``trixie`` or ``sid`` that satisfies it is unpacked into
  ``/opt/containercheck-apptainer/libc-<version>/``, the package's ELF executables
  (``apptainer``, ``starter``) get that prefix's dynamic loader as interpreter and its lib dir
  as rpath (``patchelf``), and the package's files are copied to their own paths
  (``/usr/bin/apptainer``, ``/etc/apptainer``, ``/usr/lib/<triplet>/apptainer``).  Everything
  else (``squashfuse``, ``fuse2fs``, ``squashfs-tools``, ``uidmap``, libseccomp, sqlite) is the
  machine's own Debian packages.

Both routes install ``squashfuse`` (without it ``exec`` falls back to extracting the SIF into a
sandbox) and put a ``singularity`` command on PATH (``/usr/local/bin/singularity`` ->
``/usr/bin/apptainer``) so the older command name can be exercised.  Nothing pins an Apptainer
or libc version: the versions installed are printed, so a CI failure after a new sid upload
names its cause.

Stdlib only.  Idempotent: an install recorded in ``/opt/containercheck-apptainer/installed.json``
whose ``apptainer version`` still answers is kept (``--refresh`` reinstalls from today's sid).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "PREFIX",
    "SIF_DIR",
    "TEST_USER",
    "ApptainerError",
    "PrivateApt",
    "apptainer_version",
    "ensure_apptainer",
    "ensure_sif",
    "ensure_test_user",
    "main",
    "sif_path_for",
]

Log = Callable[[str], None]

CACHE_DIR = Path(os.environ.get("CONTAINERCHECK_CACHE_DIR", "/var/cache/containercheck"))
PREFIX = Path(os.environ.get("CONTAINERCHECK_APPTAINER_PREFIX", "/opt/containercheck-apptainer"))
APT_DIR = CACHE_DIR / "apt-private"
SIF_DIR = CACHE_DIR / "sif"
STATE_FILE = PREFIX / "installed.json"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE_SUITE = "sid"
#: Where a newer libc6 is taken from when the machine's is too old, first match wins.
LIBC_SUITES = ("trixie", "sid")
#: The machine's own packages both routes need (squashfuse: mount SIFs instead of extracting them).
HOST_PACKAGES = ("squashfs-tools", "squashfuse", "fuse2fs", "uidmap")
SINGULARITY_LINK = Path("/usr/local/bin/singularity")
TEST_USER = os.environ.get("CONTAINERCHECK_APPTAINER_USER", "ccuser")
SUBID_COUNT = 65536
LISTS_MAX_AGE_S = 6 * 3600
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
_TAIL_LINES = 20


class ApptainerError(RuntimeError):
    """A provisioning step failed; str() names the step and ends with its last output lines."""


def _print(message: str) -> None:
    print(message, flush=True)


def _done(log: Log, started: float, what: str) -> None:
    log(f"[provision] apptainer: {what} in {time.monotonic() - started:.1f}s")


def _run(
    step: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = 1800,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with stdout and stderr merged; raise ApptainerError naming ``step`` on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not check:
            return subprocess.CompletedProcess(list(argv), 127, str(exc), "")
        raise ApptainerError(f"{step} failed: {' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-_TAIL_LINES:])
        raise ApptainerError(f"{step} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- host facts


def os_release() -> dict[str, str]:
    facts: dict[str, str] = {}
    for candidate in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            text = candidate.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                facts[key.strip()] = value.strip().strip("'\"")
        break
    return facts


def host_codename() -> str:
    facts = os_release()
    codename = facts.get("VERSION_CODENAME", "")
    if not codename:
        raise ApptainerError(f"cannot tell the Debian release: no VERSION_CODENAME in /etc/os-release ({facts})")
    return codename


def dpkg_version(package: str) -> str | None:
    """The installed version of a Debian package, None if not installed."""
    proc = _run(
        "dpkg-query", ["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package], check=False, timeout=60
    )
    status, _, version = proc.stdout.strip().partition(" ")
    return version.strip() if proc.returncode == 0 and status.startswith("ii") and version.strip() else None


def version_ge(version: str, minimum: str) -> bool:
    proc = _run("dpkg --compare-versions", ["dpkg", "--compare-versions", version, "ge", minimum], check=False)
    return proc.returncode == 0


def debian_arch() -> str:
    return _run("dpkg --print-architecture", ["dpkg", "--print-architecture"]).stdout.strip()


def _sources_entries() -> list[tuple[list[str], list[str], list[str]]]:
    """(types, uris, suites) of the machine's apt sources, one-line and deb822 formats."""
    entries: list[tuple[list[str], list[str], list[str]]] = []
    one_line = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in one_line:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                entries.append(([words[0]], [words[1]], [words[2]]))
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = ""
            for raw in stanza.splitlines():
                if raw.startswith("#") or not raw.strip():
                    continue
                if raw[0] in " \t" and key:
                    fields[key] += " " + raw.strip()
                    continue
                key, _, value = raw.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "uris" in fields and "suites" in fields:
                entries.append((fields.get("types", "deb").split(), fields["uris"].split(), fields["suites"].split()))
    return entries


def host_mirrors() -> tuple[str, str]:
    """(archive mirror, security mirror) the machine's own sources use, else deb.debian.org.

    ``CONTAINERCHECK_DEBIAN_MIRROR`` overrides the archive mirror.  A snapshot.debian.org URI is
    not used: its suites are frozen in time, and sid's would be stale or expired.
    """
    codename = host_codename()
    mirror = os.environ.get("CONTAINERCHECK_DEBIAN_MIRROR", "")
    security = ""
    for types, uris, suites in _sources_entries():
        if "deb" not in types:
            continue
        for uri in uris:
            if "snapshot.debian.org" in uri or not uri.startswith(("http://", "https://")):
                continue
            if not mirror and codename in suites:
                mirror = uri
            if not security and f"{codename}-security" in suites:
                security = uri
    return (mirror or DEFAULT_MIRROR).rstrip("/"), (security or DEFAULT_SECURITY_MIRROR).rstrip("/")


# --------------------------------------------------------------------------- private apt


class PrivateApt:
    """apt-get / apt-cache on one Debian suite through a private configuration.

    Own sources file, no source parts, own lists and cache: the machine's apt setup (and its
    dpkg lock) is untouched; only the dpkg status of the machine is read.
    """

    def __init__(self, suite: str, mirror: str, security_mirror: str | None = None) -> None:
        self.suite = suite
        self.root = APT_DIR / suite
        self.sources = self.root / "sources.list"
        self.parts = self.root / "sources.list.d"
        self.lists = self.root / "lists"
        self.cache = self.root / "cache"
        self.debs = self.root / "debs"
        lines = [f"deb [signed-by={KEYRING}] {mirror} {suite} main"]
        if suite not in ("sid", "unstable"):
            lines.append(f"deb [signed-by={KEYRING}] {mirror} {suite}-updates main")
            if security_mirror:
                lines.append(f"deb [signed-by={KEYRING}] {security_mirror} {suite}-security main")
        self.sources_text = "# written by pytest-containercheck tests/images/apptainer.py\n" + "\n".join(lines) + "\n"

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", f"Dir::Etc::SourceParts={self.parts}",
            "-o", f"Dir::State::Lists={self.lists}",
            "-o", f"Dir::Cache={self.cache}",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", f"Dir::Etc::PreferencesParts={self.parts}",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def _prepare(self) -> None:
        for directory in (self.parts, self.lists / "partial", self.cache / "archives" / "partial", self.debs):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.sources.exists() or self.sources.read_text() != self.sources_text:
            self.sources.write_text(self.sources_text)
            for stale in self.lists.glob("*_*"):
                stale.unlink(missing_ok=True)

    def _lists_age(self) -> float | None:
        releases = list(self.lists.glob("*InRelease")) + list(self.lists.glob("*_Release"))
        if not releases:
            return None
        return time.time() - min(p.stat().st_mtime for p in releases)

    def update(self, log: Log, force: bool = False) -> None:
        self._prepare()
        age = self._lists_age()
        if not force and age is not None and age < LISTS_MAX_AGE_S:
            return
        t0 = time.monotonic()
        _run(f"apt-get update ({self.suite}, private)", ["apt-get", *self.options(), "update"], env=_APT_ENV)
        _done(log, t0, f"package lists of {self.suite} (private apt config {self.root}) updated")

    def candidate(self, package: str) -> str | None:
        proc = _run(
            f"apt-cache policy {package} ({self.suite})",
            ["apt-cache", *self.options(), "policy", package],
            check=False,
        )
        match = re.search(r"^\s*Candidate:\s*(\S+)", proc.stdout, re.MULTILINE)
        return match.group(1) if match and match.group(1) != "(none)" else None

    def download(self, package: str, version: str) -> Path:
        """The .deb of ``package`` at ``version`` (cached in ``debs/``)."""
        arch_all = list(self.debs.glob(f"{package}_{_deb_version(version)}_*.deb"))
        if arch_all:
            return arch_all[0]
        with tempfile.TemporaryDirectory(dir=self.debs) as tmp:
            _run(
                f"apt-get download {package}={version} ({self.suite})",
                ["apt-get", *self.options(), "download", f"{package}={version}"],
                env=_APT_ENV,
                cwd=Path(tmp),
            )
            got = list(Path(tmp).glob(f"{package}_*.deb"))
            if len(got) != 1:
                raise ApptainerError(f"apt-get download {package}={version} left {got} in {tmp}")
            target = self.debs / got[0].name
            shutil.move(str(got[0]), target)
        for old in self.debs.glob(f"{package}_*.deb"):  # keep only the newest download per package
            if old != target:
                old.unlink(missing_ok=True)
        return target


def _deb_version(version: str) -> str:
    """A version as it appears in a .deb file name (no epoch)."""
    return version.split(":", 1)[1] if ":" in version else version


def deb_field(deb: Path, field: str) -> str:
    return _run(f"dpkg-deb -f {deb.name} {field}", ["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def depends_of(deb: Path) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, version) of each ``Depends:`` entry of a .deb (first alternative)."""
    result: list[tuple[str, str | None, str | None]] = []
    for entry in deb_field(deb, "Depends").split(","):
        first = entry.split("|", 1)[0].strip()
        match = re.match(r"^([a-z0-9][a-z0-9+.-]*)(?::\S+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?", first)
        if match:
            result.append((match.group(1), match.group(2), match.group(3)))
    return result


def libc_minimum(deb: Path) -> str | None:
    for name, op, version in depends_of(deb):
        if name == "libc6" and op in (">=", ">>", "=") and version:
            return version
    return None


# --------------------------------------------------------------------------- host apt


def host_apt_install(packages: Sequence[str], log: Log) -> list[str]:
    """Install the machine's own Debian packages that are missing; returns those installed.

    Waits for the dpkg lock (another apt may be running, e.g. a CI provisioning run).
    """
    missing = [p for p in packages if dpkg_version(p.split("=", 1)[0]) is None or p.startswith(("./", "/"))]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise ApptainerError(f"missing Debian packages {' '.join(missing)}: run this script as root")
    lock_wait = ["-o", "DPkg::Lock::Timeout=900"]
    argv = ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", *missing]
    proc = _run("apt-get install", argv, env=_APT_ENV, check=False)
    if proc.returncode != 0:  # stale or missing package lists: refresh once, retry
        for _ in range(30):
            update = _run("apt-get update", ["apt-get", *lock_wait, "update"], env=_APT_ENV, check=False)
            if update.returncode == 0 or "Could not get lock" not in update.stdout:
                break
            time.sleep(10)
        _run("apt-get install", argv, env=_APT_ENV)
    t = ", ".join(f"{p} {dpkg_version(p) or '?'}" for p in missing if not p.startswith(("./", "/")))
    if t:
        log(f"[provision] apptainer: installed from {host_codename()}: {t}")
    return missing


# --------------------------------------------------------------------------- apptainer


def apptainer_version(binary: str = "apptainer") -> str | None:
    proc = _run("apptainer version", [binary, "version"], check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _read_state() -> dict[str, str]:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _libc_version_of(libdir: Path) -> str:
    """'Debian GLIBC 2.41-12+deb13u5 (<libdir>)': libc.so.6 run through the dynamic loader beside it."""
    loaders = sorted(libdir.glob("ld-linux*.so.*"))
    argv = [str(loaders[0]), "--library-path", str(libdir)] if loaders else []
    proc = _run("libc version", [*argv, str(libdir / "libc.so.6")], check=False, timeout=30)
    match = re.search(r"\(([^()]*GLIBC[^()]*)\)", proc.stdout)
    return f"{match.group(1) if match else _last_line(proc.stdout) or 'unknown'} ({libdir})"


def _triplet() -> str:
    triplets = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "ppc64el": "powerpc64le-linux-gnu"}
    arch = debian_arch()
    if arch not in triplets:
        raise ApptainerError(f"unsupported architecture {arch!r} (known: {', '.join(triplets)})")
    return triplets[arch]


def ensure_apptainer(log: Log = _print, refresh: bool = False) -> dict[str, str]:
    """Make ``apptainer`` and ``singularity`` work on this machine; returns what was installed.

    Keys: ``route`` (``apt`` or ``private-libc``), ``version`` (``apptainer version``),
    ``package`` (the Debian version), ``libc`` (the C library apptainer runs with),
    ``debian`` (the machine's codename), ``singularity`` (path of the command), ``state``
    (``present`` or ``installed``).
    """
    with _lock(PREFIX / ".lock"):
        state = _read_state()
        version = apptainer_version() if state else None
        if state and version and not refresh and SINGULARITY_LINK.exists():
            t0 = time.monotonic()
            _ensure_runtime_dirs(log)
            host_apt_install(HOST_PACKAGES, log)
            info = {**state, "version": version, "state": "present"}
            _done(log, t0, f"apptainer {version} present (route {state.get('route')}, libc {state.get('libc')})")
            return info
        if os.geteuid() != 0:
            raise ApptainerError("apptainer is not installed: run this script as root once")
        return _install(log)


def _install(log: Log) -> dict[str, str]:
    codename = host_codename()
    mirror, security = host_mirrors()
    log(f"[provision] apptainer: Debian {codename} (libc6 {dpkg_version('libc6')}), mirror {mirror}")

    sid = PrivateApt(SOURCE_SUITE, mirror)
    sid.update(log)
    t0 = time.monotonic()
    candidate = sid.candidate("apptainer")
    if candidate is None:
        raise ApptainerError(f"Debian {SOURCE_SUITE} has no apptainer package ({mirror})")
    deb = sid.download("apptainer", candidate)
    _done(log, t0, f"downloaded {deb.name} from {SOURCE_SUITE}")

    need_libc = libc_minimum(deb)
    host_libc = dpkg_version("libc6") or "0"
    if need_libc is None or version_ge(host_libc, need_libc):
        info = _install_with_apt(deb, log)
    else:
        log(f"[provision] apptainer: {deb.name} needs libc6 >= {need_libc}, this machine has {host_libc}")
        info = _install_with_private_libc(deb, need_libc, mirror, security, log)

    t0 = time.monotonic()
    _ensure_runtime_dirs(log)
    _link_singularity()
    version = apptainer_version()
    if version is None:
        proc = _run("apptainer version", ["apptainer", "version"], check=False)
        raise ApptainerError(f"installed apptainer does not run: {_last_line(proc.stdout)}")
    singularity = apptainer_version(str(SINGULARITY_LINK))
    info.update(
        version=version,
        package=candidate,
        debian=codename,
        singularity=f"{SINGULARITY_LINK} -> {os.readlink(SINGULARITY_LINK)} (version {singularity})",
        installed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    PREFIX.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    info["state"] = "installed"
    _done(log, t0, f"apptainer {version} works (route {info['route']}, libc {info['libc']})")
    return info


def _install_with_apt(deb: Path, log: Log) -> dict[str, str]:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:  # apt's _apt user must be able to read the .deb
        local = Path(tmp) / deb.name
        shutil.copy2(deb, local)
        Path(tmp).chmod(0o755)
        local.chmod(0o644)
        host_apt_install([str(local), *HOST_PACKAGES], log)
    _done(log, t0, f"route apt: installed {deb.name} with the machine's apt")
    return {"route": "apt", "libc": _libc_version_of(Path("/lib") / _triplet())}


def _libc_deb(need: str, mirror: str, security: str, log: Log) -> tuple[Path, str]:
    """A libc6 .deb with version >= ``need`` from the first suite of LIBC_SUITES that has one."""
    codename = host_codename()
    seen: list[str] = []
    for suite in LIBC_SUITES:
        if suite == codename:
            continue
        apt = PrivateApt(suite, mirror, security)
        apt.update(log)
        version = apt.candidate("libc6")
        seen.append(f"{suite}: {version}")
        if version and version_ge(version, need):
            return apt.download("libc6", version), suite
    raise ApptainerError(f"no libc6 >= {need} found in {', '.join(seen)}")


def _elf_interpreter(path: Path) -> str | None:
    with open(path, "rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return None
    proc = _run("patchelf --print-interpreter", ["patchelf", "--print-interpreter", str(path)], check=False)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _install_with_private_libc(deb: Path, need: str, mirror: str, security: str, log: Log) -> dict[str, str]:
    t0 = time.monotonic()
    host_apt_install([*HOST_PACKAGES, "patchelf"], log)
    others = [name for name, _, _ in depends_of(deb) if name != "libc6" and name not in HOST_PACKAGES]
    host_apt_install(others, log)  # libseccomp2, libsqlite3-0, ... from the machine's suite
    _done(log, t0, f"host packages ({', '.join([*HOST_PACKAGES, 'patchelf', *others])})")

    t0 = time.monotonic()
    libc_deb, suite = _libc_deb(need, mirror, security, log)
    libc_version = deb_field(libc_deb, "Version")
    triplet = _triplet()
    libc_root = PREFIX / f"libc-{_deb_version(libc_version)}"
    libdir = libc_root / "usr/lib" / triplet
    if not (libdir / "libc.so.6").exists():
        staging = Path(tempfile.mkdtemp(prefix=".libc-", dir=PREFIX))
        _run("dpkg -x libc6", ["dpkg-deb", "-x", str(libc_deb), str(staging)])
        shutil.rmtree(libc_root, ignore_errors=True)
        staging.rename(libc_root)
    libc_root.chmod(0o755)
    _done(log, t0, f"private libc6 {libc_version} (from {suite}) in {libc_root}")

    t0 = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=".pkg-", dir=PREFIX))
    try:
        _run("dpkg -x apptainer", ["dpkg-deb", "-x", str(deb), str(staging)])
        patched: list[str] = []
        for path in sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()):
            interp = _elf_interpreter(path)
            if interp is None:  # not an executable with a dynamic loader (shared objects, scripts, data)
                continue
            loader = libdir / Path(interp).name
            if not loader.exists():
                raise ApptainerError(f"{path.relative_to(staging)} wants {interp}; {loader} is not in libc6")
            _run(
                "patchelf",
                ["patchelf", "--set-interpreter", str(loader), "--force-rpath", "--set-rpath", str(libdir), str(path)],
            )
            patched.append("/" + str(path.relative_to(staging)))
        lib = Path("usr/lib") / triplet / "apptainer"
        _copy_tree(staging / "etc/apptainer", Path("/etc/apptainer"))
        _copy_tree(staging / lib, Path("/") / lib)
        _install_file(staging / "usr/bin/apptainer", Path("/usr/bin/apptainer"))
        for name in ("singularity.apptainer", "run-singularity.apptainer"):
            src = staging / "usr/bin" / name
            if src.is_symlink():
                _replace_symlink(Path("/usr/bin") / name, os.readlink(src))
            elif src.is_file():
                _install_file(src, Path("/usr/bin") / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in PREFIX.glob("libc-*"):  # libcs of earlier installs: no installed binary points at them now
        if old != libc_root:
            shutil.rmtree(old, ignore_errors=True)
    _done(log, t0, f"route private-libc: patched {', '.join(patched)} -> {libdir} and installed")
    return {"route": "private-libc", "libc": _libc_version_of(libdir), "libc_prefix": str(libc_root)}


def _install_file(src: Path, dst: Path) -> None:
    """Copy atomically (a running binary is replaced, not overwritten: no 'text file busy')."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.containercheck-tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _replace_symlink(dst: Path, target: str) -> None:
    tmp = dst.with_name(f".{dst.name}.containercheck-tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_symlink():
            _replace_symlink(target, os.readlink(path))
        elif path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            _install_file(path, target)


def _ensure_runtime_dirs(log: Log) -> None:
    """Apptainer's session dirs, and /dev/fuse usable by non-root users (squashfuse mounts the SIF).

    A machine without udev (this kind of VM) keeps the kernel's 0600 for /dev/fuse; udev's
    50-udev-default.rules makes it 0666 on a regular Debian.  Without that, a non-root
    ``apptainer exec`` fails with ``squashfuse_ll exited: fuse: failed to open /dev/fuse:
    Permission denied``.
    """
    if os.geteuid() != 0:
        return
    for sub in ("mnt/session", "mnt/source"):
        (Path("/var/lib/apptainer") / sub).mkdir(parents=True, exist_ok=True)
    fuse = Path("/dev/fuse")
    with contextlib.suppress(OSError):
        mode = fuse.stat().st_mode & 0o777
        if mode & 0o666 != 0o666:
            fuse.chmod(0o666)
            log(f"[provision] apptainer: /dev/fuse mode {mode:o} -> 666 (as udev sets it), for non-root squashfuse")


def _link_singularity() -> None:
    """``singularity`` on PATH: the older command name, served by the same apptainer binary."""
    SINGULARITY_LINK.parent.mkdir(parents=True, exist_ok=True)
    if not (SINGULARITY_LINK.is_symlink() and os.readlink(SINGULARITY_LINK) == "/usr/bin/apptainer"):
        _replace_symlink(SINGULARITY_LINK, "/usr/bin/apptainer")


# --------------------------------------------------------------------------- test user


def _subid_next(lines: list[str]) -> int:
    end = 100000
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            end = max(end, int(parts[1]) + int(parts[2]))
    return end


def _ensure_subid(path: Path, user: str) -> str:
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        if line.split(":", 1)[0] == user:
            return line.strip()
    entry = f"{user}:{_subid_next(lines)}:{SUBID_COUNT}"
    with open(path, "a") as handle:
        handle.write(entry + "\n")
    return entry


def ensure_test_user(log: Log = _print, user: str = TEST_USER) -> str:
    """A non-root user with a home and /etc/subuid + /etc/subgid ranges: the on-cluster case."""
    t0 = time.monotonic()
    try:
        pwd.getpwnam(user)
        created = False
    except KeyError:
        if os.geteuid() != 0:
            raise ApptainerError(f"test user {user!r} does not exist: run this script as root once") from None
        _run(f"useradd {user}", ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", user])
        created = True
    ranges = []
    if os.geteuid() == 0:
        ranges = [_ensure_subid(Path("/etc/subuid"), user), _ensure_subid(Path("/etc/subgid"), user)]
    userns = Path("/proc/sys/user/max_user_namespaces")
    limit = userns.read_text().strip() if userns.exists() else "?"
    _done(
        log,
        t0,
        f"test user {user} {'created' if created else 'present'} (subuid/subgid {'; '.join(ranges) or '?'}, "
        f"user.max_user_namespaces={limit})",
    )
    return user


# --------------------------------------------------------------------------- SIF images


def docker_image_id(image_ref: str) -> str:
    proc = _run(
        f"docker image inspect {image_ref}",
        ["docker", "image", "inspect", "--format", "{{.Id}}", image_ref],
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise ApptainerError(f"docker image {image_ref} not found: {_last_line(proc.stdout)}")
    return proc.stdout.strip()


#: mksquashfs compression of the test SIFs.  Apptainer's default is gzip; lz4 builds the 3 GB full
#: image's SIF in about half the time (measured 172 s vs 358 s here, 1.6 GB vs 1.2 GB), which keeps
#: a fresh-machine CI run well under its budget.  Same build path (docker-archive://), same image.
SIF_COMPRESSION = "lz4"


def sif_path_for(image_ref: str, image_id: str | None = None) -> Path:
    """``<cache>/sif/<repo-name>-<id12>.sif``: keyed by the docker image ID, so a rebuilt image gets a new SIF."""
    image_id = image_id or docker_image_id(image_ref)
    name = image_ref.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    digest = image_id.split(":", 1)[-1][:12]
    return SIF_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}-{SIF_COMPRESSION}.sif"


def ensure_sif(image_ref: str, sif_path: Path | str | None = None, log: Log = _print) -> Path:
    """A SIF of docker image ``image_ref``, built the user's way, cached; returns its path.

    ``docker save -o x.tar REF`` then ``apptainer build x.sif docker-archive://x.tar`` (as
    root; plain ``apptainer build`` works for a docker-archive source).  The SIF is world
    readable (the non-root test user runs it) and only built when missing.
    """
    t0 = time.monotonic()
    image_id = docker_image_id(image_ref)
    target = Path(sif_path) if sif_path is not None else sif_path_for(image_ref, image_id)
    if target.exists():
        _done(log, t0, f"SIF {target} of {image_ref} ({image_id[:19]}) present")
        return target
    with _lock(target.with_name(target.name + ".lock")):
        if target.exists():
            _done(log, t0, f"SIF {target} of {image_ref} present (built meanwhile)")
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        for directory in (target.parent, *([SIF_DIR.parent] if target.parent == SIF_DIR else [])):
            with contextlib.suppress(OSError):
                directory.chmod(directory.stat().st_mode | 0o755)
        work = Path(tempfile.mkdtemp(prefix="containercheck-sif-", dir="/var/tmp"))
        try:
            tar = work / "image.tar"
            _run(f"docker save {image_ref}", ["docker", "save", "-o", str(tar), image_ref])
            saved = time.monotonic()
            _done(log, t0, f"docker save {image_ref} ({tar.stat().st_size / 1e6:.0f} MB)")
            tmp_sif = work / "image.sif"
            env = {**os.environ, "APPTAINER_TMPDIR": str(work), "APPTAINER_CACHEDIR": str(work / "cache")}
            _run(
                f"apptainer build {target.name}",
                ["apptainer", "build", "--disable-cache", "--mksquashfs-args", f"-comp {SIF_COMPRESSION}", str(tmp_sif),
                 f"docker-archive://{tar}"],
                env=env,
                cwd=work,
            )
            tmp_sif.chmod(0o644)
            tar.unlink()
            shutil.move(str(tmp_sif), target.with_name(target.name + ".tmp"))
            os.replace(target.with_name(target.name + ".tmp"), target)
            _done(log, saved, f"apptainer build {target} ({target.stat().st_size / 1e6:.0f} MB)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- main


def _default_images() -> list[str]:
    proc = _run("docker images", ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], check=False)
    refs = [r for r in proc.stdout.split() if r.startswith("containercheck-test/") and r.endswith(":latest")]
    return [r for r in refs if r.split("/", 1)[1].split(":", 1)[0] == "base"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install a real Apptainer, a non-root user and SIF test images.")
    parser.add_argument(
        "--image",
        action="append",
        metavar="REF",
        help="docker image to turn into a SIF (repeatable; default: containercheck-test/base:latest if present)",
    )
    parser.add_argument("--no-sif", action="store_true", help="build no SIF")
    parser.add_argument("--refresh", action="store_true", help="reinstall apptainer from today's sid")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        info = ensure_apptainer(_print, refresh=args.refresh)
        user = ensure_test_user(_print)
        sifs: list[Path] = []
        if not args.no_sif:
            for ref in args.image or _default_images():
                sifs.append(ensure_sif(ref, None, _print))
    except ApptainerError as exc:
        print(f"[provision] apptainer: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("[provision] apptainer: interrupted", file=sys.stderr)
        return 130
    _print("[provision] apptainer: summary")
    for key in ("route", "debian", "package", "version", "libc", "libc_prefix", "singularity", "state"):
        if key in info:
            _print(f"  {key:12} {info[key]}")
    _print(f"  {'test user':12} {user}")
    for sif in sifs:
        _print(f"  {'sif':12} {sif}")
    _done(_print, started, "total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
