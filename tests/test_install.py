"""Installing where no package index is reachable, on an old cluster Python.

A wheelhouse is made the way the README says (``pip wheel`` of the plugin and its dependencies,
on a connected machine, with the cluster's Python version: this machine's CPython 3.9), then
installed with ``pip install --no-index --find-links`` and ``pytest --image host`` runs from
the result: (1) in a fresh venv of that CPython 3.9 while pip's index points at a dead address;
(2) in a Debian 11 container (its own ``python3``, 3.9.2, and pip 20.3) with no network at all.
Python 3.9 is the oldest host Python the plugin supports (RHEL 9's and Debian 11's ``python3``).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python39() -> str | None:
    """A CPython 3.9 on this machine (PATH, then pyenv), or None."""
    found = shutil.which("python3.9")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"))
    for c in candidates:
        res = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"], capture_output=True,
                             text=True, timeout=60)
        if res.stdout.strip() == "True":
            return c
    return None


@pytest.fixture(scope="module")
def py39() -> str:
    found = python39()
    if found is None:
        pytest.skip("no CPython 3.9 on this machine (python3.9 on PATH or pyenv)")
    return found


@pytest.fixture(scope="module")
def wheelhouse(py39: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin and every dependency as wheels, made on the connected side with CPython 3.9."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".tox", "__pycache__", "*.egg-info", "build"))
    wheels = base / "wheelhouse"
    venv = base / "builder"
    subprocess.run([py39, "-m", "venv", str(venv)], check=True, timeout=300)
    made = subprocess.run([str(venv / "bin" / "pip"), "wheel", "-q", "--wheel-dir", str(wheels), str(src)],
                          capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    assert glob.glob(str(wheels / "pytest_containercheck-*.whl"))
    return wheels


def test_air_gapped_install_on_python_3_9(py39: str, wheelhouse: Path, tmp_path: Path) -> None:
    wheels = wheelhouse
    # On the cluster: no index (and a dead one configured, in case anything tries).
    target = tmp_path / "cluster-venv"
    subprocess.run([py39, "-m", "venv", str(target)], check=True, timeout=300)
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}
    installed = subprocess.run([str(target / "bin" / "pip"), "install", "--no-index", "--find-links", str(wheels),
                                "pytest-containercheck"], capture_output=True, text=True, timeout=900, env=env)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    res = subprocess.run([str(target / "bin" / "pytest"), "-p", "no:cacheprovider", "--image", "host",
                          "--matrix-json", "m.json"], cwd=run_dir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    data = json.loads((run_dir / "m.json").read_text())
    cells = {c["row"]: c for c in data["cells"]}
    assert cells["system.python"]["status"] == "pass"
    assert cells["system.python"]["detail"].startswith("CPython 3.9.")
    assert data["columns"][0]["facts"]["runtime_version"].startswith("Python 3.9")
    # The CLI too, on 3.9: merge and diff of the run.
    merged = subprocess.run([str(target / "bin" / "containercheck"), "diff", "m.json", "m.json"], cwd=run_dir,
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0 and "regression" not in merged.stdout, merged.stdout + merged.stderr


@pytest.mark.docker
def test_air_gapped_install_on_debian_11s_python(wheelhouse: Path, image_factory: Callable[[str], str],
                                                 tmp_path: Path) -> None:
    # Debian 11's own python3 and pip, in a container with no network: only the wheelhouse.
    image = image_factory("bullseye")
    out = tmp_path / "out"
    out.mkdir()
    script = ("python3 -m venv /v && /v/bin/pip install -q --no-index --find-links /wh pytest-containercheck && "
              "cd /tmp && /v/bin/pytest -p no:cacheprovider --image host --matrix-json /out/m.json && "
              "/v/bin/containercheck show /out/m.json > /out/show.txt")
    res = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{wheelhouse}:/wh:ro", "-v",
                          f"{out}:/out", image, "sh", "-c", script], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    data = json.loads((out / "m.json").read_text())
    cells = {c["row"]: c for c in data["cells"]}
    assert cells["system.python"]["detail"].startswith("CPython 3.9.2 (")
    assert cells["system.os"]["detail"].startswith("Debian GNU/Linux 11 (bullseye)")
    assert {c["status"] for c in data["cells"]} <= {"pass", "skip"}
    assert "system.python" in (out / "show.txt").read_text()
