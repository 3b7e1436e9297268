"""Causes at depth two, in real images (``tests/images/build.py``, the ``depth-*`` recipes): the
library is installed and something it depends on breaks it.  Each case's row fails naming the
breaking dependency and where it comes from; the fix it names is applied as written in an image
built ``FROM`` the broken one (``docker build``: a Dockerfile line, an ``apt-get`` or a ``pip``
command, run as the fix says), and the row passes there.

What the verdicts said before (and these tests refuse): "install in the image: apt-get install -y
libosmesa6" for a libOSMesa that is installed, "apt-get install -y libegl-mesa0" for a Mesa EGL that
is installed, "xgboost is not installed in the image (No module named 'numpy')", "xgboost was built
against NumPy 1.x ... upgrade xgboost", and "see the evidence; reinstall transformers and torch".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHECKS = Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclasses.dataclass(frozen=True)
class Case:
    recipe: str
    module: str
    rows: tuple[str, ...]
    says: tuple[str, ...]
    """What every failing row's detail names: the breaking dependency and where it came from."""
    fix: str
    """The command (or Dockerfile line) the fix must name, applied as written."""
    not_fix: tuple[str, ...] = ()
    """What today's fix said instead (installing what is installed)."""


CASES = [
    # A shared-library version mismatch: Debian 11's libstdc++ first on LD_LIBRARY_PATH.
    Case("depth-glibcxx", "test_render.py", ("render.osmesa", "render.egl"),
         ("is installed but does not load", "GLIBCXX_3.4.29 of libstdc++.so.6", "/opt/oldlibs/lib/libstdc++.so.6",
          "(LD_LIBRARY_PATH), which has up to GLIBCXX_3.4.28"),
         "ENV LD_LIBRARY_PATH=", ("apt-get install", "libosmesa6")),
    # An undefined symbol: Debian 11's libdrm first in the loader cache, through /etc/ld.so.conf.d.
    Case("depth-symbol", "test_render.py", ("render.egl",),
         ("libEGL_mesa.so.0 is installed but does not load", "drmGetDeviceFromDevId from libdrm.so.2",
          "/opt/oldlibs/lib/libdrm.so.2 (loader cache: /etc/ld.so.conf.d/00-oldlibs.conf)"),
         "RUN rm /etc/ld.so.conf.d/00-oldlibs.conf && ldconfig", ("libegl-mesa0",)),
    # A missing dependency of a present library: libLLVM-15 deleted after apt installed it.
    Case("depth-slimmed", "test_render.py", ("render.osmesa", "render.egl"),
         ("is installed but its dependency libLLVM-15.so.1", "libllvm15"),
         "apt-get update && apt-get install --reinstall -y libllvm15", ("libosmesa6", "libegl-mesa0")),
    # A missing Python requirement: xgboost-cpu installed with --no-deps.
    Case("depth-nonumpy", "test_ml.py", ("xgboost.cpu",),
         ("xgboost-cpu 3.2.0 is installed but its requirement numpy is not", "scipy"),
         "pip install numpy scipy"),
    # A Requires-Dist pin violated: tokenizers 0.22.1 under transformers 5.23.0.
    Case("depth-pin", "test_ml.py", ("transformers.cpu",),
         ("transformers 5.23.0 requires tokenizers<0.24.0,>=0.23.1 and the image has tokenizers 0.22.1",),
         "pip install 'tokenizers<0.24.0,>=0.23.1'", ("reinstall",)),
    # An extension built for another ABI of its dependency: SciPy 1.11.4 (NumPy 1.x) under NumPy 2.4.6.
    Case("depth-abi", "test_ml.py", ("xgboost.cpu",),
         ("scipy 1.11.4 (imported by xgboost-cpu 3.2.0", "built for NumPy 1.x and the image has NumPy 2.4.6",
          "scipy 1.11.4 requires numpy<1.28.0,>=1.21.6"),
         "pip install --upgrade scipy", ("upgrade xgboost",)),
]


def _rows(pytester: pytest.Pytester, image: str, case: Case) -> dict[str, dict[str, Any]]:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--image", f"docker://{image}", "--no-builtin-checks", str(CHECKS / case.module),
        "-k", " or ".join(case.rows), "--matrix-json", "m.json", timeout=900)
    cells = json.loads((pytester.path / "m.json").read_text())["cells"]
    found = {c["row"]: c for c in cells if c["row"] in case.rows}
    assert sorted(found) == sorted(case.rows), result.stdout.str()[-3000:]
    return found


def _dockerfile_line(fix: str, command: str) -> str:
    """The fix's own command, as it says it: a Dockerfile line it names, or the shell command to RUN."""
    m = re.search(r"Dockerfile: ((?:ENV|RUN) [^)]*)\)", fix)
    if m:
        assert command in m.group(1), fix
        return m.group(1)
    assert command in fix, fix
    return f"RUN {command}"


def _derived(broken: str, line: str, case: Case, tmp_path: Path) -> str:
    """An image built FROM *broken* with *line* applied; pip and apt reach their registries as users'
    builds do (pip through this host's CA bundle, which the build network needs)."""
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(HOST_CA, context / "host-ca.crt")
    (context / "Dockerfile").write_text(
        f"FROM {broken}\n"
        "COPY host-ca.crt /tmp/host-ca.crt\n"
        "ENV PIP_CERT=/tmp/host-ca.crt PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "
        "DEBIAN_FRONTEND=noninteractive\n"
        f"{line}\n")
    tag = f"containercheck-test/fixed-{case.recipe}:{hashlib.sha256((broken + line).encode()).hexdigest()[:12]}"
    done = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return tag


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.recipe for c in CASES])
def test_the_breaking_dependency_is_named_and_its_fix_makes_the_row_pass(
        pytester: pytest.Pytester, image_factory: Any, tmp_path: Path, case: Case) -> None:
    broken = image_factory(case.recipe)
    cells = _rows(pytester, broken, case)
    for row, cell in cells.items():
        assert (cell["status"], cell["fault"]) == ("fail", "image"), (row, cell["detail"])
        for said in case.says:
            assert said in cell["detail"], (row, said, cell["detail"])
        assert case.fix in cell["fix"], (row, cell["fix"])
        for wrong in case.not_fix:
            assert wrong not in cell["fix"], (row, wrong, cell["fix"])
    fixes = {cell["fix"] for cell in cells.values()}
    assert len(fixes) == 1, fixes  # one cause, one fix, whichever row met it
    fixed = _derived(broken, _dockerfile_line(fixes.pop(), case.fix), case, tmp_path)
    try:
        after = _rows(pytester, fixed, case)
        assert {row: c["status"] for row, c in after.items()} == dict.fromkeys(case.rows, "pass"), {
            row: c["detail"] for row, c in after.items()}
    finally:
        subprocess.run(["docker", "image", "rm", fixed], capture_output=True, check=False, timeout=120)
