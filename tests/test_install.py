"""Installing where no package index is reachable, on an old cluster Python.

A wheelhouse is made the way the README says (``pip wheel`` of the plugin and its dependencies,
on a connected machine, with the cluster's Python version: this machine's CPython 3.9), then
installed with ``pip install --no-index --find-links`` and ``pytest --image host`` runs from
the result: (1) in a fresh venv of that CPython 3.9 while pip's index points at a dead address;
(2) in a Debian 11 container (its own ``python3``, 3.9.2, and pip 20.3) with no network at all.
Python 3.9 is the oldest host Python the plugin supports (RHEL 9's and Debian 11's ``python3``).

And the README's first command, as a newcomer runs it on a stock Debian 12 or 13 server as root:
the fenced block after ``<!-- newcomer: main job -->`` in README.md, read from there and run
verbatim in a container of a stock image (``stock-bookworm``, ``stock-trixie``: debootstrap
minbase + python3 + ca-certificates, no python3-venv, no Mesa), in a copy of the working tree
where the clone would be, with network: apt reaches Debian through the image's own sources, pip
its indexes through this machine's pip configuration (``PIP_*`` variables, config files and what
they name, read-only). The premise is proven on the same image: ``python3 -m pip install .``
with Debian's own pip stops at ``externally-managed-environment`` (PEP 668).
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_containercheck.checks import builtin_rows

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


def test_air_gapped_install_on_python_3_9(py39: str, wheelhouse: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the installed copy is under test here, not the tree
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


# -- the README's first command on the distributions' own python3 ----------------------------

NEWCOMER_MARK = "<!-- newcomer: main job -->"
#: Suite -> (test image recipe, its /etc/os-release PRETTY_NAME, its python3's version prefix).
STOCK = {"bookworm": ("stock-bookworm", "Debian GNU/Linux 12 (bookworm)", "3.11."),
         "trixie": ("stock-trixie", "Debian GNU/Linux 13 (trixie)", "3.13.")}
#: Where the clone is (``git clone ... pytest-containercheck && cd pytest-containercheck``, as root).
CLONE = "/root/pytest-containercheck"
#: What a clone would not hold (.gitignore) and the history, which the install does not read.
NOT_CLONED = (".git", ".tox", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
              ".pytest_cache", "containercheck-artifacts", ".whl")
#: pip's configuration files on this machine (site, then user), as pip reads them.
PIP_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.pip/pip.conf", "~/.config/pip/pip.conf")
NO_GPU = "no NVIDIA GPU"


def newcomer_command(readme: str) -> str:
    """The README's main-job command: the fenced block right after ``<!-- newcomer: main job -->``."""
    found = re.search(re.escape(NEWCOMER_MARK) + r"[ \t]*\n```[^\n]*\n(.*?)^```", readme, re.S | re.M)
    assert found, f"README.md has no fenced block right after {NEWCOMER_MARK}"
    return found.group(1)


def pip_configuration() -> tuple[list[str], list[str]]:
    """This machine's pip configuration, to carry into a container run as root: the names of the
    ``PIP_*`` variables (passed by value with ``-e NAME``), and read-only ``-v`` binds of pip's
    config files and of every absolute path they or the variables name (find-links directories,
    ``file://`` indexes with the ``files/`` beside their ``simple/``, constraints, the CA bundle)."""
    names = sorted(k for k in os.environ if k.startswith("PIP_"))
    values = [os.environ[n] for n in names]
    home = str(Path.home())
    binds: dict[str, str] = {}
    files = [os.path.expanduser(f) for f in PIP_FILES] + [os.environ.get("PIP_CONFIG_FILE", "")]
    for f in files:
        if not f or not os.path.isfile(f):
            continue
        binds[f] = "/root" + f[len(home):] if f.startswith(home + os.sep) else f
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(f)
        values += [v for section in parser.sections() for v in parser[section].values()]
    for value in values:
        for token in value.split():
            path = Path(token[len("file://"):] if token.startswith("file://") else token)
            if not path.is_absolute():
                continue
            if path.name == "simple":  # a file:// index's pages link to ../../files/
                path = path.parent
            if path.exists():
                binds.setdefault(str(path), str(path))
    return names, [f"{src}:{dst}:ro" for src, dst in sorted(binds.items())]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as a clone would hold it (what .gitignore leaves out is not there)."""
    dest = tmp_path_factory.mktemp("clone") / "pytest-containercheck"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_CLONED))
    return dest


def _exec(container: str, argv: list[str], timeout: float, workdir: str = CLONE) -> tuple[int, str, float]:
    t0 = time.monotonic()
    res = subprocess.run(["docker", "exec", "--workdir", workdir, container, *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)
    return res.returncode, res.stdout, time.monotonic() - t0


def printed_matrix(output: str) -> dict[str, str]:
    """Row -> its line in the terminal matrix pytest printed (the section titled containercheck matrix)."""
    start = output.index("containercheck matrix")
    section = output[start:].split("\n", 1)[1]
    section = section[: section.index("\n=") if "\n=" in section else len(section)]
    lines: dict[str, str] = {}
    for line in section.splitlines():
        row = line.split(" ", 1)[0]
        if "." in row and row not in lines:
            lines[row] = line
    return lines


@pytest.mark.docker
@pytest.mark.parametrize("suite", sorted(STOCK))
def test_readmes_first_command_on_stock_debian(suite: str, image_factory: Callable[[str], str], clone: Path) -> None:
    recipe, pretty, version = STOCK[suite]
    image = image_factory(recipe)
    command = newcomer_command((ROOT / "README.md").read_text())
    names, binds = pip_configuration()
    container = f"containercheck-install-{suite}-{uuid.uuid4().hex[:8]}"
    argv = ["docker", "run", "--detach", "--rm", "--name", container, "--volume", f"{clone}:/src:ro"]
    for name in names:
        argv += ["--env", name]
    for bind in binds:
        argv += ["--volume", bind]
    subprocess.run([*argv, image, "sleep", "infinity"], check=True, capture_output=True, timeout=120)
    try:
        rc, out, _ = _exec(container, ["cp", "-a", "/src", CLONE], 120, workdir="/")
        assert rc == 0, out
        # The README's block as written, in the clone, as root, with a JSON copy of the matrix on the side.
        rc, out, took = _exec(container, ["env", "PYTEST_ADDOPTS=--matrix-json=/tmp/m.json", "bash", "-e", "-c",
                                          command], 1500)
        print(f"[{suite}] README's first command: exit {rc} in {took:.0f} s")
        assert rc == 0, out[-6000:]
        assert "pip install" in command and "--image host" in command
        rc, raw, _ = _exec(container, ["cat", "/tmp/m.json"], 60)
        assert rc == 0, raw
        cells = {c["row"]: c for c in json.loads(raw)["cells"]}
        assert sorted(cells) == sorted(r.name for r in builtin_rows())
        assert cells["system.python"]["detail"].startswith(f"CPython {version}"), cells["system.python"]
        assert cells["system.os"]["detail"].startswith(pretty), cells["system.os"]
        shown = printed_matrix(out)
        for row, cell in cells.items():
            line = shown.get(row, "")
            if row.startswith("system."):  # everything here passes, except that there is no GPU
                assert cell["status"] == "pass" or (cell["status"] == "skip" and NO_GPU in cell["detail"]), cell
            else:  # the plugin alone: every library row says what is missing
                # said of this Python: --image host has no image
                assert cell["status"] == "skip" and "not installed in this Python" in cell["detail"], cell
            assert re.search(rf"\b{cell['status']}\b", line, re.I), f"{row}: {line!r} in\n{out[-4000:]}"
        assert "not installed" in out[out.index("containercheck matrix"):]

        # The premise: Debian's own pip, outside a venv, refuses (PEP 668).
        rc, out, _ = _exec(container, ["apt-get", "install", "-y", "--no-install-recommends", "python3-pip"], 600)
        assert rc == 0, out[-3000:]
        rc, out, took = _exec(container, ["python3", "-m", "pip", "install", "."], 300)
        print(f"[{suite}] python3 -m pip install . outside a venv: exit {rc} in {took:.1f} s")
        assert rc != 0 and "externally-managed-environment" in out, out[-3000:]
    finally:
        subprocess.run(["docker", "rm", "--force", container], capture_output=True, timeout=120)
