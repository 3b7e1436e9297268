"""Build the project's test images locally: no registry, cached by recipe hash.

A test image is a Debian root filesystem made with ``debootstrap --variant=minbase``,
plus Debian packages installed with ``chroot ... apt-get``, plus PyPI wheels installed by
the *host's* pip with ``--target`` (cross-installed for CPython 3.11 / manylinux, which is
what Debian bookworm's ``python3`` is), then ``docker import``-ed.

Importable (tests/images is not a package: load this file with importlib, or put the
directory on sys.path)::

    ref = build.ensure_image("full")        # "containercheck-test/full:<hash12>"

CLI::

    python tests/images/build.py [NAME ...] [--list] [--ref] [--force]

Each image is named ``containercheck-test/<name>:<hash12>`` (and tagged ``:latest``), where
``hash12`` is the first 12 hex digits of a sha256 over the recipe (name, parent chain, apt
packages, pip requirements and constraints, Debian suite, :data:`BUILD_VERSION`). An image
whose reference already exists is never rebuilt; older tags of the same name are removed
after a build. Caches under ``/var/cache/containercheck/`` (``CONTAINERCHECK_CACHE_DIR``):

* ``rootfs/<name>-<hash12>.tar``: root filesystems of recipes others start from
  (``nopython`` = debootstrap minbase, ``base`` = minbase + python3), keyed by their hash;
* ``pip/<hash12>.tar``: the installed PyPI tree (dist-packages + scripts) per pip set, so
  recipes sharing a pip set, and rebuilds, skip pip (pip itself uses the host's pip cache);
* ``apt-archives/``: downloaded .deb files, reused by later apt-get runs.

Building needs root (debootstrap, chroot, mount); using a built image needs only docker.
Builds run in a temp dir under ``/var/tmp`` (removed on success and failure) and hold
``build.lock`` so concurrent callers (xdist workers) build each image once.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_VERSION",
    "RECIPES",
    "REPOSITORY",
    "BuildError",
    "Recipe",
    "ensure_image",
    "ensure_podman_image",
    "image_exists",
    "image_ref",
    "recipe_hash",
]

#: Bump to force every image (and cached rootfs) to be rebuilt after changing this file's logic.
BUILD_VERSION = "1"
REPOSITORY = os.environ.get("CONTAINERCHECK_TEST_REPOSITORY", "containercheck-test")
SUITE = "bookworm"
MIRROR = os.environ.get("CONTAINERCHECK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("CONTAINERCHECK_CACHE_DIR", "/var/cache/containercheck"))
WORK_PARENT = Path(os.environ.get("CONTAINERCHECK_WORK_DIR", "/var/tmp"))
#: Debian bookworm's python3 is 3.11; wheels are cross-installed for this interpreter.
TARGET_PYTHON = "3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
LABEL_RECIPE = "org.containercheck.recipe"
LABEL_NAME = "org.containercheck.recipe-name"
_CHROOT_ENV = {
    "PATH": IMAGE_ENV["PATH"],
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
}
_TAIL_LINES = 25

#: Exact versions the host environment resolves (pip 2026 index + /opt/wheels torch CPU build).
#: Applied as constraints to every pip install, so transitive dependencies are stable too.
PIP_CONSTRAINTS: tuple[str, ...] = (
    "annotated-doc==0.0.7",
    "annotated-types==0.7.0",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "certifi==2026.5.20",
    "charset-normalizer==3.4.7",
    "click==8.5.1",
    "contourpy==1.3.3",
    "cycler==0.12.1",
    "cyclopts==5.4.0",
    "docstring-parser==0.18.0",
    "filelock==4.2.11",
    "fonttools==4.68.0",
    "fsspec==2026.9.0",
    "h11==0.16.0",
    "hf-xet==1.8.0",
    "httpcore2==2.16.2",
    "httpx2==2.16.2",
    "huggingface-hub==2.4.0",
    "idna==3.20",
    "jinja2==3.1.6",
    "kiwisolver==1.5.1",
    "markdown-it-py==4.3.0",
    "markupsafe==3.0.3",
    "matplotlib==3.11.2",
    "mdurl==0.1.2",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "numpy==2.4.6",
    "nvidia-nccl-cu12==2.32.3",
    "packaging==26.3",
    "pillow==13.0.0",
    "platformdirs==4.14.7",
    "pooch==1.9.0",
    "pydantic==2.13.4",
    "pydantic-core==2.46.4",
    "pygments==2.20.0",
    "pyparsing==3.3.2",
    "python-dateutil==2.9.0.post0",
    "pyvista==0.49.1",
    "pyvista-validation==0.2.2",
    "pyyaml==6.0.3",
    "regex==2026.5.9",
    "requests==2.34.2",
    "rich==15.0.0",
    "rich-rst==2.2.0",
    "safetensors==0.8.0",
    "scipy==1.17.1",
    "scooby==0.12.1",
    "setuptools==84.2.1",
    "shellingham==1.5.4",
    "sympy==1.14.0",
    "tokenizers==0.23.3",
    "torch==2.13.0",
    "tqdm==4.70.1",
    "transformers==5.23.0",
    "truststore==0.10.5",
    "typer==0.29.2",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.2",
    "urllib3==2.7.0",
    "vtk==9.7.2",
    "xgboost==3.2.0",
    "xgboost-cpu==3.2.0",
)

#: The Debian release whose packages ``Recipe.extract`` unpacks (the last one with python2.7).
EXTRACT_SUITE = "bullseye"

MESA = ("libosmesa6", "libegl1", "libegl-mesa0", "libgl1")
RENDER_PIP = ("vtk==9.7.2", "pyvista==0.49.1", "numpy==2.4.6", "pillow==13.0.0")


@dataclass(frozen=True)
class Recipe:
    """One test image: a parent recipe (or none: debootstrap minbase) plus packages."""

    name: str
    parent: str | None
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    description: str = ""
    extract: tuple[str, ...] = ()
    """Packages of :data:`EXTRACT_SUITE` unpacked with ``dpkg-deb -x`` (files only, no
    maintainer scripts): for what bookworm no longer ships, like a real Python 2.7."""
    files: tuple[tuple[str, str, int], ...] = ()
    """``(path in the image, content, mode)`` written after the packages."""
    links: tuple[tuple[str, str], ...] = ()
    """``(path in the image, target)`` symbolic links."""
    remove: tuple[str, ...] = ()
    """Paths deleted from the image (e.g. ``usr/bin/sleep``: a distroless-style image)."""
    changes: tuple[str, ...] = ()
    """Extra ``docker import --change`` instructions (``ENTRYPOINT [...]``, ``USER 1000``)."""
    suite: str = ""
    """For a root recipe: the Debian suite to debootstrap (default :data:`SUITE`)."""
    extract_into: str = ""
    """With *extract*: put only the shared libraries of those packages into this directory of the
    image (an older library beside the system's, as a conda or vendored directory holds it)."""
    pip_nodeps: tuple[str, ...] = ()
    """PyPI wheels installed after *pip* with ``--no-deps`` and no constraints, replacing what *pip*
    installed of the same distributions: a later ``pip install`` that broke what was there."""

    def definition(self) -> dict[str, object]:
        """What the hash covers (besides the parent's hash and the global constants)."""
        doc: dict[str, object] = {
            "name": self.name,
            "parent": self.parent,
            "apt": sorted(self.apt),
            "pip": sorted(self.pip),
            "pip_constraints": sorted(PIP_CONSTRAINTS) if self.pip else [],
        }
        # Only when used, so the hashes (and cached images) of the plain recipes stay as they were.
        overlay = {"extract": list(self.extract), "extract_suite": EXTRACT_SUITE if self.extract else None,
                   "files": [list(f) for f in self.files], "links": [list(ln) for ln in self.links],
                   "remove": list(self.remove), "changes": list(self.changes), "suite": self.suite,
                   "extract_into": self.extract_into, "pip_nodeps": sorted(self.pip_nodeps)}
        doc.update((k, v) for k, v in overlay.items() if v)
        return doc


#: Hostile images (tests/test_faults.py): small changes to ``base`` or ``nopython``.
NEEDS_ARGS = """#!/bin/sh
# An entrypoint that prints a banner and refuses to run without a command.
echo "== noisy image: entrypoint banner =="
if [ "$#" -eq 0 ]; then
    echo "usage: needs-args COMMAND [ARG...]" >&2
    exit 64
fi
exec "$@"
"""
NOISY_PROFILE = 'echo "== noisy image: /etc/profile.d banner =="\n'
#: Runs at every interpreter start (Debian's python3 imports /etc/python3.11/sitecustomize.py),
#: so every probe and every interpreter discovery sees it.
NOISY_SITECUSTOMIZE = """import sys
sys.stdout.write("== noisy image: sitecustomize banner on stdout ==\\n")
sys.stdout.flush()
sys.stdout.buffer.write(b"\\xff\\xfe not UTF-8 on stdout \\xc3\\x28\\n")
sys.stdout.buffer.flush()
sys.stderr.buffer.write(b"\\x80\\x81 not UTF-8 on stderr\\n")
sys.stderr.buffer.flush()
import noisy_lib
"""
#: A "library under test" (imported at every start, see above) that prints lines shaped like
#: containercheck's protocol: result, interpreter and pid markers with a wrong nonce.
NOISY_LIB = """import sys
print('@@containercheck-result 0000000000000000 {"status": "ok", "facts": {"forged": true}}')
print('@@containercheck-result')
print('@@containercheck-python 0000000000000000 3.99.0|/forged/python')
sys.stderr.write('@@containercheck-pid 0000000000000000 1\\n')
"""

#: The test images. These names are an API: tests refer to them.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("nopython", None, description="debootstrap minbase only: no Python at all"),
        Recipe("bullseye", None, apt=("python3", "python3-venv"), suite="bullseye",
               description="Debian 11 minbase + its own python3 (3.9): the oldest host Python the plugin supports"),
        Recipe(
            "base",
            "nopython",
            apt=("python3", "ca-certificates"),
            description="minbase + Debian python3 + ca-certificates",
        ),
        Recipe(
            "full",
            "base",
            apt=MESA,
            pip=(
                "torch==2.13.0",
                "xgboost==3.2.0",
                "transformers==5.23.0",
                *RENDER_PIP,
            ),
            description="the shared full stack: Mesa (OSMesa+EGL), torch CPU, vtk, pyvista, xgboost, transformers",
        ),
        Recipe(
            "render-noosmesa",
            "base",
            apt=("libegl1", "libegl-mesa0", "libgl1"),
            pip=RENDER_PIP,
            description="vtk + pyvista with EGL/GL but no libOSMesa",
        ),
        Recipe("render-nogl", "base", pip=RENDER_PIP, description="vtk + pyvista without any GL library"),
        Recipe(
            "xgboost-cpu",
            "base",
            pip=("xgboost-cpu==3.2.0", "numpy==2.4.6", "scipy==1.17.1"),
            description="the CPU-only xgboost wheel",
        ),
        Recipe(
            "noisy",
            "base",
            files=(
                ("usr/local/bin/needs-args", NEEDS_ARGS, 0o755),
                ("etc/profile.d/zz-noisy-banner.sh", NOISY_PROFILE, 0o644),
                ("etc/python3.11/sitecustomize.py", NOISY_SITECUSTOMIZE, 0o644),
                ("usr/local/lib/python3.11/dist-packages/noisy_lib.py", NOISY_LIB, 0o644),
            ),
            changes=('ENTRYPOINT ["/usr/local/bin/needs-args"]', "CMD []"),
            description="banners from its entrypoint (which demands arguments), profile and every python "
            "start; invalid UTF-8; a library printing fake protocol lines",
        ),
        Recipe("nonroot", "base", changes=("USER 1000",),
               description="base whose default user is uid 1000 (HOME=/root not writable)"),
        Recipe("nosleep", "base", remove=("usr/bin/sleep",),
               description="base without /usr/bin/sleep (distroless-style)"),
        Recipe("python-named", "base", remove=("usr/bin/python3",), links=(("usr/bin/python", "python3.11"),),
               description="base whose Python 3 is named only 'python' (no python3 on PATH)"),
        Recipe(
            "python2",
            "nopython",
            extract=("python2.7-minimal", "libpython2.7-minimal"),
            links=(("usr/bin/python", "python2.7"),),
            description="only a real CPython 2.7.18 (Debian bullseye's python2.7-minimal) as 'python'",
        ),
        # The own-check how-to's image (docs/how-to/own-checks.md): what its example checks is there.
        Recipe("owncheck", "base", pip=("numpy==2.4.6",),
               files=(("opt/app/app.conf", "renderer = egl\nsamples = 4\n", 0o644),
                      ("opt/app/run.sh", '#!/bin/sh\nexec python3 -c "import numpy" "$@"\n', 0o755)),
               changes=("ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics",),
               description="base + numpy (pip), /opt/app (a 0644 config, a 0755 script) and an ENV line"),
        # What a stock Debian server has (python3, ca-certificates; no python3-venv, no Mesa): the
        # README's first command is run on these as written (tests/test_install.py).
        Recipe("stock-bookworm", "nopython", apt=("python3", "ca-certificates"),
               description="Debian 12 as a stock server: minbase + python3 (3.11, PEP 668) + ca-certificates"),
        Recipe("stock-trixie", None, apt=("python3", "ca-certificates"), suite="trixie",
               description="Debian 13 as a stock server: minbase + python3 (3.13, PEP 668) + ca-certificates"),
        # Depth two (tests/test_depth_two.py): each library is installed and something it depends on
        # breaks it, as users meet it; each test applies the fix the verdict names in an image built
        # FROM the broken one, and the row passes.
        Recipe("render", "base", apt=MESA, pip=RENDER_PIP,
               description="vtk + pyvista with Mesa's OSMesa and EGL: renders on the CPU (the depth-two render "
               "images start from it)"),
        Recipe("depth-glibcxx", "render", extract=("libstdc++6",), extract_into="opt/oldlibs/lib",
               changes=("ENV LD_LIBRARY_PATH=/opt/oldlibs/lib",),
               description="render + Debian 11's libstdc++ (GLIBCXX up to 3.4.28) first on LD_LIBRARY_PATH, as "
               "a conda or vendored lib directory puts it: libOSMesa and Mesa's LLVM need 3.4.29 and 3.4.30"),
        Recipe("depth-symbol", "render", extract=("libdrm2",), extract_into="opt/oldlibs/lib",
               files=(("etc/ld.so.conf.d/00-oldlibs.conf", "/opt/oldlibs/lib\n", 0o644),),
               description="render + Debian 11's libdrm first in the loader cache (/etc/ld.so.conf.d): "
               "libEGL_mesa needs drmGetDeviceFromDevId, which it lacks (undefined symbol)"),
        Recipe("depth-slimmed", "render", remove=("usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",),
               description="render with libLLVM-15 deleted after apt installed it (an image slimmer): libOSMesa "
               "and Mesa's swrast are there, their dependency is not"),
        Recipe("pip", "base", apt=("python3-pip",),
               description="base + Debian's pip: the depth-two Python images start from it (their fixes are "
               "pip commands)"),
        Recipe("depth-nonumpy", "pip", pip_nodeps=("xgboost-cpu==3.2.0",),
               description="xgboost-cpu installed with --no-deps: its requirements numpy and scipy are missing"),
        Recipe("depth-pin", "pip", pip=("torch==2.13.0", "transformers==5.23.0"), pip_nodeps=("tokenizers==0.22.1",),
               description="torch + transformers 5.23.0 with tokenizers 0.22.1 installed over it (transformers "
               "requires tokenizers>=0.23.1,<0.24.0)"),
        Recipe("depth-abi", "pip", pip=("xgboost-cpu==3.2.0", "numpy==2.4.6", "scipy==1.17.1"),
               pip_nodeps=("scipy==1.11.4",),
               description="xgboost-cpu + NumPy 2.4.6 with SciPy 1.11.4 installed over it: an extension module "
               "built for NumPy 1.x"),
    )
}


class BuildError(RuntimeError):
    """A build step failed; the message names the step and ends with its last output lines."""


Log = Callable[[str], None]


# --------------------------------------------------------------------------- hashing / refs


def recipe_hash(name: str) -> str:
    """Full sha256 hex digest of a recipe, including its parent chain."""
    recipe = _recipe(name)
    doc: dict[str, object] = {
        "build_version": BUILD_VERSION,
        "suite": SUITE,
        "target_python": TARGET_PYTHON,
        "env": IMAGE_ENV,
        "recipe": recipe.definition(),
        "parent": recipe_hash(recipe.parent) if recipe.parent else None,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def image_ref(name: str) -> str:
    """``containercheck-test/<name>:<hash12>`` for a recipe; builds nothing."""
    return f"{REPOSITORY}/{name}:{recipe_hash(name)[:12]}"


def latest_ref(name: str) -> str:
    _recipe(name)
    return f"{REPOSITORY}/{name}:latest"


def image_exists(ref: str) -> bool:
    """Whether docker has an image with this reference (``docker image inspect``)."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return proc.returncode == 0


def _recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(RECIPES)
        raise KeyError(f"unknown test image recipe {name!r} (known: {known})") from None


# --------------------------------------------------------------------------- public entry point


def ensure_image(name: str, log: Log = print) -> str:
    """Return a local docker reference for recipe ``name``, building it only if missing."""
    ref = image_ref(name)
    if image_exists(ref):
        _tag(ref, latest_ref(name))
        return ref
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _lock(CACHE_DIR / "build.lock"):
        if image_exists(ref):  # another process built it while we waited
            _tag(ref, latest_ref(name))
            return ref
        _check_can_build()
        started = time.monotonic()
        log(f"[build] {ref}: building ({RECIPES[name].description})")
        _build_image(name, ref, log)
        log(f"[build] {ref}: done in {time.monotonic() - started:.1f}s")
    return ref


def ensure_podman_image(name: str, log: Log = print) -> str:
    """Make recipe ``name`` available to podman (``docker save | podman load``); return its ref.

    Podman lists it as ``localhost/containercheck-test/<name>:<hash12>``; the returned short
    reference (the docker one) resolves to it in ``podman run``.
    """
    ref = ensure_image(name, log=log)
    if subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0:
        return ref
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, stderr=err)
        assert save.stdout is not None
        load = subprocess.run(
            ["podman", "load"],
            stdin=save.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
        save.stdout.close()
        save_rc = save.wait()
        if save_rc != 0 or load.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace") + load.stdout
            raise BuildError(
                _failure("docker save | podman load", ["podman", "load"], load.returncode or save_rc, text)
            )
    log(f"[build] {name}: docker save | podman load {ref}: {time.monotonic() - t0:.1f}s")
    return ref


# --------------------------------------------------------------------------- build steps


def _build_image(name: str, ref: str, log: Log) -> None:
    WORK_PARENT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"containercheck-{name}-", dir=WORK_PARENT))
    rootfs = workdir / "rootfs"
    try:
        _make_rootfs(name, rootfs, log)
        _clean_for_image(rootfs)
        _import(name, rootfs, ref, log)
    finally:
        t0 = time.monotonic()
        _remove_tree(workdir)
        log(f"[build] {name}: cleanup: {time.monotonic() - t0:.1f}s")
    _prune_old_tags(name, ref, log)


def _make_rootfs(name: str, rootfs: Path, log: Log) -> None:
    """Populate ``rootfs`` with the recipe's filesystem (from cache where possible)."""
    recipe = RECIPES[name]
    cached = _rootfs_cache(name)
    if cached.exists():
        t0 = time.monotonic()
        rootfs.mkdir(parents=True)
        _run("extract cached rootfs", ["tar", "--numeric-owner", "-xpf", str(cached), "-C", str(rootfs)])
        log(f"[build] {name}: rootfs from cache {cached.name}: {time.monotonic() - t0:.1f}s")
        return
    if recipe.parent is None:
        _debootstrap(name, rootfs, log, recipe.suite or SUITE)
    else:
        _make_rootfs(recipe.parent, rootfs, log)
    if recipe.apt:
        _apt_install(name, rootfs, recipe.apt, log)
    if recipe.pip:
        _pip_install(name, rootfs, recipe.pip, log)
    if recipe.pip_nodeps:
        _pip_install(name, rootfs, recipe.pip_nodeps, log, nodeps=True)
    if recipe.extract or recipe.files or recipe.links or recipe.remove:
        _overlay(name, rootfs, recipe, log)
    if _is_parent(name):
        _clean_for_image(rootfs)
        _save_rootfs_cache(name, rootfs, log)


def _is_parent(name: str) -> bool:
    return any(r.parent == name for r in RECIPES.values())


def _rootfs_cache(name: str) -> Path:
    return CACHE_DIR / "rootfs" / f"{name}-{recipe_hash(name)[:12]}.tar"


def _save_rootfs_cache(name: str, rootfs: Path, log: Log) -> None:
    t0 = time.monotonic()
    target = _rootfs_cache(name)
    for old in target.parent.glob(f"{name}-*.tar"):
        if old != target:
            old.unlink(missing_ok=True)
    _save_tarball("cache rootfs", rootfs, target)
    log(f"[build] {name}: cached rootfs {target}: {time.monotonic() - t0:.1f}s")


def _debootstrap(name: str, rootfs: Path, log: Log, suite: str = SUITE) -> None:
    t0 = time.monotonic()
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed (apt-get install debootstrap, or run python tests/images/provision.py)"
        )
    _run(
        "debootstrap",
        ["debootstrap", "--variant=minbase", suite, str(rootfs), MIRROR],
        env={**_CHROOT_ENV},
    )
    sources = f"deb {MIRROR} {suite} main\ndeb {MIRROR} {suite}-updates main\n"
    (rootfs / "etc/apt/sources.list").write_text(sources)
    log(f"[build] {name}: debootstrap minbase {suite}: {time.monotonic() - t0:.1f}s")


def _apt_install(name: str, rootfs: Path, packages: Sequence[str], log: Log) -> None:
    t0 = time.monotonic()
    archives = CACHE_DIR / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    chroot_archives = rootfs / "var/cache/apt/archives"
    chroot_archives.mkdir(parents=True, exist_ok=True)
    for deb in archives.glob("*.deb"):  # reuse previously downloaded packages
        dest = chroot_archives / deb.name
        if not dest.exists():
            shutil.copy2(deb, dest)
    resolv = rootfs / "etc/resolv.conf"
    policy = rootfs / "usr/sbin/policy-rc.d"
    with _chroot_mounts(rootfs):
        if resolv.is_symlink():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        try:
            chroot = ["chroot", str(rootfs)]
            _run(f"apt-get update ({name})", [*chroot, "apt-get", "update"], env=_CHROOT_ENV)
            _run(
                f"apt-get install ({name}: {' '.join(packages)})",
                [*chroot, "apt-get", "install", "-y", "--no-install-recommends", *packages],
                env=_CHROOT_ENV,
            )
        finally:
            policy.unlink(missing_ok=True)
            resolv.write_text("")
    for deb in chroot_archives.glob("*.deb"):
        dest = archives / deb.name
        if not dest.exists():
            shutil.copy2(deb, dest)
    _run(f"apt-get clean ({name})", ["chroot", str(rootfs), "apt-get", "clean"], env=_CHROOT_ENV)
    _remove_children(rootfs / "var/lib/apt/lists", keep={"partial", "lock"})
    log(f"[build] {name}: apt {' '.join(packages)}: {time.monotonic() - t0:.1f}s")


@contextlib.contextmanager
def _chroot_mounts(rootfs: Path) -> Iterator[None]:
    """Mount /proc in the chroot for maintainer scripts that need it; always unmount."""
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    _run("mount /proc in chroot", ["mount", "-t", "proc", "proc", str(proc)])
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pip_platforms() -> list[str]:
    plats = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)]  # glibc 2.36 = bookworm
    return [*plats, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def _host_pip() -> list[str]:
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for exe in ("pip3", "pip"):
        found = shutil.which(exe)
        if found:
            return [found]
    raise BuildError("no pip on the host (needed to install wheels into the image)")


def _pip_hash(requirements: Sequence[str], nodeps: bool = False) -> str:
    doc: dict[str, object] = {
        "build_version": BUILD_VERSION,
        "pip": sorted(requirements),
        "constraints": [] if nodeps else sorted(PIP_CONSTRAINTS),
        "python": TARGET_PYTHON,
        "platforms": _pip_platforms(),
        "site": SITE_PACKAGES,
    }
    if nodeps:
        doc["nodeps"] = True
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _pip_cache(requirements: Sequence[str], nodeps: bool = False) -> Path:
    return CACHE_DIR / "pip" / f"{_pip_hash(requirements, nodeps)[:12]}.tar"


def _uninstall(rootfs: Path, stage: Path) -> None:
    """Remove from *rootfs* the distributions *stage* installs again (what pip's own uninstall does
    before an upgrade: the files its RECORD lists), so one version of each is left."""
    site = rootfs / SITE_PACKAGES

    def project(info: Path) -> str:  # "scipy-1.17.1.dist-info" -> "scipy"
        return info.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("-", "_")

    for info in (stage / SITE_PACKAGES).glob("*.dist-info"):
        for old in site.glob("*.dist-info"):
            if project(old) != project(info):
                continue
            record = old / "RECORD"
            for line in record.read_text().splitlines() if record.is_file() else []:
                rel = line.split(",", 1)[0]
                target = (site / rel).resolve()
                if target.is_file() and str(target).startswith(str(rootfs.resolve())):
                    target.unlink()
            shutil.rmtree(old, ignore_errors=True)


def _pip_install(name: str, rootfs: Path, requirements: Sequence[str], log: Log, nodeps: bool = False) -> None:
    """Add the PyPI packages: from the cached installed tree, else with the host's pip.

    The installed tree (dist-packages + console scripts) is cached as a tarball keyed by the
    requirements, so recipes with the same pip set (and rebuilds) skip pip entirely.  *nodeps*:
    installed with ``--no-deps`` and no constraints, over what the image has of the same
    distributions (the earlier version removed first).
    """
    t0 = time.monotonic()
    cached = _pip_cache(requirements, nodeps)
    if nodeps:
        stage = rootfs.parent / "pip-nodeps-stage"
        if cached.exists():
            stage.mkdir()
            _run("extract cached pip tree", ["tar", "--numeric-owner", "-xpf", str(cached), "-C", str(stage)])
        else:
            _pip_into(name, stage, requirements, nodeps=True)
            _save_tarball("cache pip tree", stage, cached)
        _uninstall(rootfs, stage)
        _merge_tree(stage, rootfs)
        log(f"[build] {name}: pip --no-deps {' '.join(requirements)}: {time.monotonic() - t0:.1f}s")
        return
    if cached.exists():
        _run("extract cached pip tree", ["tar", "--numeric-owner", "-xpf", str(cached), "-C", str(rootfs)])
        log(f"[build] {name}: pip tree from cache {cached.name}: {time.monotonic() - t0:.1f}s")
        return
    stage = rootfs.parent / "pip-stage"
    _pip_into(name, stage, requirements)
    log(f"[build] {name}: pip {' '.join(requirements)}: {time.monotonic() - t0:.1f}s")
    t1 = time.monotonic()
    _save_tarball("cache pip tree", stage, cached)
    keep = {_pip_cache(r.pip).name for r in RECIPES.values() if r.pip}
    keep |= {_pip_cache(r.pip_nodeps, True).name for r in RECIPES.values() if r.pip_nodeps}
    for old in cached.parent.glob("*.tar"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    _merge_tree(stage, rootfs)
    log(f"[build] {name}: cached pip tree {cached}: {time.monotonic() - t1:.1f}s")


def _pip_into(name: str, stage: Path, requirements: Sequence[str], nodeps: bool = False) -> None:
    """Install *requirements* with the host's pip into *stage* (its dist-packages and bin)."""
    target = stage / SITE_PACKAGES
    target.mkdir(parents=True, exist_ok=True)
    constraints = stage.parent / "constraints.txt"
    constraints.write_text("\n".join(PIP_CONSTRAINTS) + "\n")
    argv = [
        *_host_pip(),
        "install",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
        str(target),
        "--only-binary",
        ":all:",
        "--python-version",
        TARGET_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ]
    for plat in _pip_platforms():
        argv += ["--platform", plat]
    # --no-deps: what a later "pip install --no-deps X==old" (or one resolver run over another) leaves;
    # the constraints would refuse it, so they are left out (the host's own too: PIP_CONSTRAINT).
    argv += ["--no-deps", *requirements] if nodeps else ["-c", str(constraints), *requirements]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_TARGET")}
    if nodeps:
        env = {k: v for k, v in env.items() if k != "PIP_CONSTRAINT"} | {"PIP_CONSTRAINT": ""}
    _run(f"pip install ({name}: {' '.join(requirements)})", argv, env=env)
    _relocate_scripts(target / "bin", stage / "usr/local/bin")


def _overlay(name: str, rootfs: Path, recipe: Recipe, log: Log) -> None:
    """Apply a recipe's file-level changes: extracted packages, files, links, removals."""
    t0 = time.monotonic()
    for deb in _download_debs(recipe.extract):
        if not recipe.extract_into:
            _run(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", str(deb), str(rootfs)])
            continue
        unpacked = rootfs.parent / f"unpacked-{deb.stem}"
        _run(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", str(deb), str(unpacked)])
        into = rootfs / recipe.extract_into.strip("/")
        into.mkdir(parents=True, exist_ok=True)
        for lib in sorted(unpacked.glob("usr/lib/*/*.so*")) + sorted(unpacked.glob("lib/*/*.so*")):
            dest = into / lib.name
            if lib.is_symlink():
                dest.unlink(missing_ok=True)
                dest.symlink_to(os.readlink(lib))
            elif lib.is_file():
                shutil.copy2(lib, dest)
        _remove_tree(unpacked)
    for rel, content, mode in recipe.files:
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(content)
        path.chmod(mode)
    for rel, target in recipe.links:
        path = rootfs / rel
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    for rel in recipe.remove:
        path = rootfs / rel
        if not (path.exists() or path.is_symlink()):
            raise BuildError(f"recipe {name}: cannot remove {rel}: not in the image")
        path.unlink()
    if any(rel.startswith("etc/ld.so.conf") for rel, _content, _mode in recipe.files):
        # The loader cache follows the loader's configuration, as ldconfig after editing it makes it
        # (a file deleted later, by an image slimmer, leaves its cache entry behind).
        _run(f"ldconfig ({name})", ["chroot", str(rootfs), "ldconfig"], env=_CHROOT_ENV)
    log(f"[build] {name}: overlay: {time.monotonic() - t0:.1f}s")


def _download_debs(packages: Sequence[str]) -> list[Path]:
    """``apt-get download`` *packages* from :data:`EXTRACT_SUITE` with a private apt state."""
    if not packages:
        return []
    state = CACHE_DIR / f"apt-{EXTRACT_SUITE}"
    debs = state / "debs"
    for sub in ("lists/partial", "cache", "debs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    sources.write_text(f"deb {MIRROR} {EXTRACT_SUITE} main\n")
    opts = [f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache={state / 'cache'}",
            "-oAPT::Architecture=amd64", "-oAPT::Sandbox::User=root",
            # The host's installed versions are not candidates: libstdc++6 of bookworm would be "newer".
            "-oDir::State::status=/dev/null"]
    _run(f"apt-get update ({EXTRACT_SUITE})", ["apt-get", *opts, "update"])
    for old in debs.glob("*.deb"):
        old.unlink()
    argv = ["apt-get", *opts, "download", *packages]
    proc = subprocess.run(argv, cwd=debs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", check=False)
    if proc.returncode != 0:
        raise BuildError(_failure(f"apt-get download ({EXTRACT_SUITE})", argv, proc.returncode, proc.stdout))
    return sorted(debs.glob("*.deb"))


def _save_tarball(step: str, source: Path, target: Path) -> None:
    """tar ``source`` into ``target`` atomically (temp file + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        _run(step, ["tar", "--numeric-owner", "-cf", str(tmp), "-C", str(source), "."])
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _merge_tree(src: Path, dst: Path) -> None:
    """Move everything under ``src`` into ``dst`` (renames; same file system)."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        dest = dst / child.name
        if child.is_dir() and not child.is_symlink() and dest.is_dir() and not dest.is_symlink():
            _merge_tree(child, dest)
        else:
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.rename(child, dest)


def _relocate_scripts(src: Path, dest: Path) -> None:
    """pip --target puts console scripts in <target>/bin with the host's shebang: fix both."""
    if not src.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for script in sorted(src.iterdir()):
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            data = b"#!/usr/bin/python3" + data[data.index(b"\n") :] if b"\n" in data else data
        out = dest / script.name
        out.write_bytes(data)
        out.chmod(0o755)
    shutil.rmtree(src)


def _clean_for_image(rootfs: Path) -> None:
    _remove_children(rootfs / "var/lib/apt/lists", keep={"partial", "lock"})
    _remove_children(rootfs / "var/cache/apt/archives", keep={"partial", "lock"})
    _remove_children(rootfs / "tmp", keep=set())
    for leftover in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
        (rootfs / leftover).unlink(missing_ok=True)
    resolv = rootfs / "etc/resolv.conf"
    if resolv.exists() and not resolv.is_symlink():
        resolv.write_text("")


def _import(name: str, rootfs: Path, ref: str, log: Log) -> None:
    t0 = time.monotonic()
    digest = recipe_hash(name)
    changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()]
    changes += [
        'CMD ["/bin/bash"]',
        f"LABEL {LABEL_RECIPE}={digest}",
        f"LABEL {LABEL_NAME}={name}",
        *RECIPES[name].changes,
    ]
    argv = ["docker", "import"]
    for change in changes:
        argv += ["--change", change]
    argv += ["-", ref]
    with tempfile.TemporaryFile() as out:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", "-", "."],
            stdout=subprocess.PIPE,
            stderr=out,
        )
        assert tar.stdout is not None
        imp = subprocess.run(argv, stdin=tar.stdout, stdout=out, stderr=subprocess.STDOUT, check=False)
        tar.stdout.close()
        tar_rc = tar.wait()
        if imp.returncode != 0 or tar_rc != 0:
            out.seek(0)
            text = out.read().decode(errors="replace")
            raise BuildError(_failure("docker import", argv, imp.returncode or tar_rc, text))
    _tag(ref, latest_ref(name))
    log(f"[build] {name}: docker import {ref}: {time.monotonic() - t0:.1f}s")


def _tag(ref: str, other: str) -> None:
    subprocess.run(["docker", "tag", ref, other], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _prune_old_tags(name: str, ref: str, log: Log) -> None:
    """Remove superseded ``containercheck-test/<name>:<hash>`` tags."""
    proc = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"{REPOSITORY}/{name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    keep = {ref, latest_ref(name)}
    for old in proc.stdout.split():
        if old in keep or old.endswith(":<none>"):
            continue
        rm = subprocess.run(["docker", "image", "rm", old], capture_output=True, text=True, check=False)
        status = "removed" if rm.returncode == 0 else f"kept ({rm.stderr.strip()})"
        log(f"[build] {name}: superseded {old}: {status}")


# --------------------------------------------------------------------------- helpers


def _check_can_build() -> None:
    if os.geteuid() != 0:
        raise BuildError(
            "building test images needs root (debootstrap, chroot); run: sudo python3 tests/images/provision.py"
        )
    if shutil.which("docker") is None:
        raise BuildError("docker is not installed; run python3 tests/images/provision.py")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(step: str, argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"{step}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise BuildError(_failure(step, argv, proc.returncode, proc.stdout))
    return proc.stdout


def _failure(step: str, argv: Sequence[str], rc: int, output: str) -> str:
    tail = "\n".join(output.rstrip().splitlines()[-_TAIL_LINES:])
    cmd = " ".join(argv)
    if len(cmd) > 300:
        cmd = cmd[:300] + " ..."
    return f"build step '{step}' failed (exit {rc}): {cmd}\n--- last output ---\n{tail}"


def _remove_children(directory: Path, keep: set[str]) -> None:
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _remove_tree(path: Path) -> None:
    proc = path / "rootfs" / "proc"
    if proc.is_dir() and os.path.ismount(proc):
        subprocess.run(["umount", "-l", str(proc)], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # rm is much faster than shutil.rmtree on big trees; --one-file-system never follows a mount.
    rm = subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, capture_output=True)
    if rm.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"recipes to build (default: all of {', '.join(RECIPES)})"
    )
    parser.add_argument("--list", action="store_true", help="list recipes, refs and presence")
    parser.add_argument("--ref", action="store_true", help="print the references; build nothing")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the image exists (the rootfs cache is kept)"
    )
    args = parser.parse_args(argv)
    names: list[str] = args.names or list(RECIPES)
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    if args.list or args.ref:
        for name in names:
            ref = image_ref(name)
            if args.ref:
                print(ref)
            else:
                present = "present" if image_exists(ref) else "missing"
                print(f"{name:16} {ref:48} {present:8} {RECIPES[name].description}")
        return 0
    try:
        for name in names:
            if args.force:
                subprocess.run(
                    ["docker", "image", "rm", image_ref(name)],
                    check=False,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            print(ensure_image(name), flush=True)
    except BuildError as exc:
        print(f"[build] FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
