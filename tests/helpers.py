"""Helpers shared by the project's tests: one module, imported by name (``from helpers import ...``).

The root ``conftest.py`` puts this directory on ``sys.path``, so the tests do not depend on
pytest's import mode, and no test module imports another (fixtures live in ``conftest.py``).
What is here: the checkout's root and tools (``load_tool`` for ``tests/images/*.py``), the
runtimes' availability and leftovers, command-line fragments, and the SIF header builder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, NoReturn

import pytest

from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine.runtimes.apptainer import SIF_HEADER_LEN

ROOT = Path(__file__).resolve().parent.parent
"""The checkout under test."""

WAIT_LIMIT = 60.0
"""The bound on every wait of the tests for an event (a thread's end, a state, a released hold):
the wait returns as soon as the event happens, so the bound costs nothing when all is well, and
it is long enough for a machine loaded with twice its cores' worth of other work
(docs/explanation/testing.md); a wait that reaches it fails the test instead of hanging the suite."""
RUN_LIMIT = 600.0
"""The same bound for a wait on a real run reaching a point (a check started, a file written): an
image starting under a loaded Docker engine can take minutes."""


def tree_pythonpath(current: str | None = None) -> str:
    """*current* ``PYTHONPATH`` with this checkout first: a Python started with it imports
    ``pytest_containercheck`` (and its pytest11 entry point) from the tree under test."""
    rest = [p for p in (current or "").split(os.pathsep) if p and p != str(ROOT)]
    return os.pathsep.join([str(ROOT), *rest])


def load_tool(name: str) -> ModuleType:
    """tests/images/<name>.py as a module: the test images' recipes (build), Apptainer (apptainer),
    Slurm (slurm) provisioning.  Loaded once per process; they import each other by name."""
    module_name = f"containercheck_test_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(ROOT / "tests" / "images") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests" / "images"))
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tests" / "images" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_build() -> ModuleType:
    """tests/images/build.py as a module (the test-image recipes)."""
    return load_tool("build")


def cut_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """*dst*: the first *fraction* of *src*, as a transfer that stopped part-way leaves it."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(int(src.stat().st_size * fraction)))
    return dst


def missing(what: str, problem: str) -> NoReturn:
    """*what* (Docker, Podman, Apptainer, Slurm, ...) cannot be used here: under CI=true the test
    fails, since CI must have it; elsewhere it skips with *problem* as the reason."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true: {problem}", pytrace=False)
    pytest.skip(problem)


def docker_problem() -> str | None:
    """Why Docker cannot be used here, or None when it works."""
    try:
        res = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                             capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "the docker command is not installed (run: python3 tests/images/provision.py)"
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer in 60 s"
    if res.returncode != 0:
        return f"the Docker daemon is not usable: {res.stderr.strip().splitlines()[-1:]}"
    return None


def containers_with_label(label: str = "org.containercheck.run") -> list[str]:
    """Names of every container (running or not) carrying *label* (``key`` or ``key=value``)."""
    res = subprocess.run(["docker", "ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=60, check=True)
    return [n for n in res.stdout.split() if n]


def leftovers(matrix_json: Path) -> list[str]:
    """Containers still present from the run that wrote *matrix_json* (by its run id)."""
    import json

    run_id = json.loads(matrix_json.read_text())["meta"]["run_id"]
    return containers_with_label(f"org.containercheck.run={run_id}")


def owned_by(pid: int) -> list[str]:
    """Containers started by the pytest process *pid* on this host."""
    return containers_with_label(f"org.containercheck.owner={os.uname().nodename}/{pid}")


def podman_containers(run_id: str) -> list[str]:
    """Podman containers still present from run *run_id*."""
    res = subprocess.run(["podman", "ps", "--all", "--filter", f"label=org.containercheck.run={run_id}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60, check=True)
    return [n for n in res.stdout.split() if n]


def apptainer_problem() -> str | None:
    """Why Apptainer cannot be used here, or None when ``apptainer version`` answers."""
    try:
        res = subprocess.run(["apptainer", "version"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return "apptainer is not installed (run: python3 tests/images/provision.py)"
    if res.returncode != 0:
        return f"'apptainer version' failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


class NonRootEnv(NamedTuple):
    """What a non-root run needs: the user, its venv, and the world-readable copy of the plugin and probes."""

    user: str
    venv: Path
    src: Path


def standin_nvidia_smi(bindir: Path) -> Path:
    """An ``nvidia-smi`` in *bindir* answering as the lent H200's did (tests/data/gpu/h200-nvidia-smi-query.csv,
    its driver banner): put *bindir* first on PATH and the host facts say "1 NVIDIA GPU(s)", so the GPU rows
    run their verdicts on what the runtime really set up.  A stand-in: tests/data/gpu-runtimes/README.md."""
    bindir.mkdir(parents=True, exist_ok=True)
    smi = bindir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --query-gpu=*) echo 'NVIDIA H200, 580.159.04, 143771 MiB, 9.0, GPU-8f05ccfd-4c44-c258-0df0-4b8089176541';;\n"
        "  *) echo '| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |';;\n"
        "esac\n")
    smi.chmod(0o755)
    return smi


# -- command-line fragments ----------------------------------------------------------------


#: These tests pin the outcomes of a host without a GPU (rows that skip, --require-gpu failing
#: them).  On a GPU runner they do not apply: tests/gpu/run_kit.sh checks the GPU outcomes.
NO_GPU_HOST = pytest.mark.skipif(bool(hostinfo.nvidia_facts()["has_gpu"]),
                                 reason="asserts a host without a GPU; on a GPU host run tests/gpu/run_kit.sh")


#: The system checks alone: the other built-in modules are tested in their own files, and
#: pinning outcome counts to the whole suite would break whenever a check is added.
SYSTEM = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_system.py")


ONLY_SYSTEM = ("--no-builtin-checks", SYSTEM)


# -- SIF files --------------------------------------------------------------------------------------


DESCR_OFFSET, DESCR_SIZE = 128, 256


DATA_OFFSET, DATA_SIZE = 384, 100


FULL_SIZE = DATA_OFFSET + DATA_SIZE


def sif_header(*, data_offset: int = DATA_OFFSET, data_size: int = DATA_SIZE) -> bytes:
    """A well-formed SIF global header."""
    launch = b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0")
    head = launch + b"SIF_MAGIC\0" + b"01\0" + b"02\0" + bytes(range(16))
    head += struct.pack("<8q", 1_700_000_000, 1_700_000_001, 47, 48, DESCR_OFFSET, DESCR_SIZE, data_offset, data_size)
    assert len(head) == SIF_HEADER_LEN
    return head


def write_sif(path: Path, size: int = FULL_SIZE) -> Path:
    body = sif_header() + b"\xab" * (FULL_SIZE - SIF_HEADER_LEN)
    path.write_bytes(body[:size])
    return path


# -- the GPU kit --------------------------------------------------------------------------------------


def load_kit() -> ModuleType:
    """tests/gpu/kit.py as a module (loaded once per process)."""
    if "containercheck_gpu_kit" in sys.modules:
        return sys.modules["containercheck_gpu_kit"]
    spec = importlib.util.spec_from_file_location("containercheck_gpu_kit", ROOT / "tests" / "gpu" / "kit.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# -- the CI gate's test images (tests/test_gate.py, tests/test_gate_cli.py, tests/test_gate_names.py) ------------

FEATURE_REASON = "no feature in a render image (ticket 7)"
GATE_IMAGES = {
    "gate-render": ['LABEL org.containercheck.require="system.os" '
                    f'org.containercheck.allow-fail="mine.feature: {FEATURE_REASON}" org.containercheck.intent=cpu'],
    "gate-train": ['LABEL org.containercheck.require="system.libcuda" org.containercheck.intent=gpu',
                   "RUN mkdir -p /opt && touch /opt/feature"],
}
"""gate-render may fail mine.feature by its own label (and has no /opt/feature); gate-train requires
system.libcuda by its label (which skips, so fails, on a host without a GPU) and has /opt/feature."""

GATE_PYPROJECT = """
[[tool.containercheck.image]]
match = ["*gate-render*"]
require = ["system.python"]
trust-image-allowances = true

[[tool.containercheck.image]]
match = ["*gate-train*"]
require = ["system.os"]
"""
"""The repository's expectations for the gate images: gate-render's own allowances trusted."""

OWN_CHECK = '''
import pytest

@pytest.mark.containercheck_row("mine.feature")
def test_feature(container):
    """The image ships /opt/feature."""
    if not container.run(["test", "-e", "/opt/feature"]).ok:
        container.fail("no /opt/feature in the image", fault="image")
    container.note("/opt/feature present")
'''
"""A user's own check: the row ``mine.feature``."""


def build_labelled(base: str, name: str, lines: list[str]) -> str:
    """*base* plus *lines* (LABEL, RUN) as ``containercheck-test/NAME:<hash>``, built once (``docker build``
    with the Dockerfile on stdin: no context, nothing pulled)."""
    dockerfile = "\n".join([f"FROM {base}", *lines]) + "\n"
    tag = f"containercheck-test/{name}:{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True,
                       check=True, timeout=600)
    return tag


def docker_save_tar(path: Path, *, images: int = 1, layer_bytes: bytes | None = None) -> str:
    """A minimal ``docker save`` tar (``manifest.json``, ``<hex>.json`` configs, ``<dir>/layer.tar``), one
    layer per image; *layer_bytes* replaces the layer's content after its diff_id was taken from the
    real one.  Returns the first config digest."""
    entries, files = [], []
    for i in range(images):
        layer = f"layer {i} bytes".encode()
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers",
                                        "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
        hexdigest = hashlib.sha256(config).hexdigest()
        layer_dir = hashlib.sha256(layer + b"dir").hexdigest()
        entries.append({"Config": f"{hexdigest}.json", "RepoTags": [f"team/img{i}:1"],
                        "Layers": [f"{layer_dir}/layer.tar"]})
        files += [(f"{hexdigest}.json", config),
                  (f"{layer_dir}/layer.tar", layer if layer_bytes is None else layer_bytes)]
    with tarfile.open(path, "w") as tar:
        for name, data in [*files, ("manifest.json", json.dumps(entries).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + entries[0]["Config"].removesuffix(".json")


def rewrite_docker_save(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None],
                        repo_tags: list[str] | None = None) -> str:
    """*src* (a ``docker save`` tar) written to *dst* with its image config changed by *edit* and
    renamed by its new digest, as ``docker save`` names it (``<hex>.json``, or ``blobs/sha256/<hex>``
    in Docker's OCI layout); the manifest's ``RepoTags`` become *repo_tags*.  Returns the new
    config digest."""
    with tarfile.open(src) as tin:
        manifest = json.loads(tin.extractfile("manifest.json").read())  # type: ignore[union-attr]
        old = manifest[0]["Config"]
        config = json.loads(tin.extractfile(old).read())  # type: ignore[union-attr]
        edit(config)
        data = json.dumps(config).encode()
        hexdigest = hashlib.sha256(data).hexdigest()
        new = f"blobs/sha256/{hexdigest}" if old.startswith("blobs/") else f"{hexdigest}.json"
        manifest[0]["Config"], manifest[0]["RepoTags"] = new, repo_tags
        with tarfile.open(dst, "w") as tout:
            for member in tin:
                if member.name.removeprefix("./") in (old, "manifest.json", "repositories", "index.json"):
                    continue
                tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
            for name, body in ((new, data), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tout.addfile(info, io.BytesIO(body))
    return f"sha256:{hexdigest}"


def signal_when_ready(cwd: Path, args: Sequence[str], ready: str, sig: str, what: str) -> tuple[int, str, int]:
    """``python -m pytest ARGS`` in *cwd* (this tree first on PYTHONPATH), sent signal *sig* once
    it has written the file *ready* (a conftest of the test's says when); then the file
    ``signalled`` is written, for the run to go on.  Returns (exit code, output, pid).  *what*
    names the point waited for, in the failure message when it is not reached within RUN_LIMIT."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        tick, deadline = threading.Event(), time.monotonic() + RUN_LIMIT
        while not (cwd / ready).exists():
            assert proc.poll() is None, proc.communicate(timeout=120)[0][-3000:]
            assert time.monotonic() < deadline, f"{what} did not begin within {RUN_LIMIT:.0f} s"
            tick.wait(0.05)
        proc.send_signal(getattr(signal, sig))
        (cwd / "signalled").write_text("")
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=120)
    return proc.returncode, out, proc.pid

