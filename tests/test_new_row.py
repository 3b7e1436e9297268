"""A row is one declaration: adding one takes its probe, its check and its verdict, and nothing else.

The three files are read from the contributor guide itself (docs/CONTRACT.md, "The example:
numpy.blas"), written into a copy of this tree, and the copy is checked as the repository checks
itself: the reference page regenerated lists the row, the tests that keep the rules about rows,
probes, libraries, pages and the module map pass there unchanged, the row runs and passes on this
machine's Python, and no file of the copy but the three new ones and the generated reference differs
from this tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ("probes/blas.py", "pytest_containercheck/engine/verdicts/blas.py",
           "pytest_containercheck/checks/test_blas.py")
#: The tests that keep the rules a new row must follow (CONTRACT.md, "Adding a built-in row").
RULES = ("tests/test_checks.py", "tests/test_docs.py", "tests/test_collect.py", "tests/test_layout.py",
         "tests/test_probe_helpers.py", "tests/test_fix_walk.py", "tests/test_gpu_kit.py", "tests/test_gpu_recorded.py",
         "tests/test_errors.py")


def _example() -> dict[str, str]:
    """The files of CONTRACT.md's worked example: each code block whose first line names its path."""
    text = (ROOT / "docs" / "CONTRACT.md").read_text()
    section = text[text.index("### The example: `numpy.blas`"):]
    section = section[:section.index("\n## ")]
    return {m.group(1): m.group(1 + 1) for m in re.finditer(r"```python\n# (\S+)\n(.*?)```", section, re.S)}


def _tree_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, timeout=120)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the copy is made from git's list of files")
    return [f for f in listed.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree, copied, with the example row's three files added and the reference regenerated."""
    dest = tmp_path_factory.mktemp("tree")
    for rel in _tree_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    files = _example()
    assert sorted(files) == sorted(EXAMPLE)
    for rel, content in files.items():
        assert not (dest / rel).exists(), f"{rel} is already in the tree"
        (dest / rel).write_text(f"# {rel}\n{content}")
    regen = subprocess.run([sys.executable, "docs/gen_reference.py"], cwd=dest, capture_output=True, text=True,
                           timeout=300)
    assert regen.returncode == 0, regen.stderr
    return dest


def test_the_reference_lists_the_new_row_and_nothing_else_changed(copy: Path) -> None:
    rows = (copy / "docs" / "reference" / "rows.md").read_text()
    assert "| `numpy.blas` | numpy imports and its BLAS computes an 8x8 matrix product exactly. | `blas` |" in rows
    changed = sorted(rel for rel in _tree_files() if (copy / rel).read_bytes() != (ROOT / rel).read_bytes())
    assert changed == ["docs/reference/rows.md"]
    added = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and not (ROOT / p.relative_to(copy)).is_file())
    assert added == sorted(EXAMPLE)


def test_the_rules_hold_with_the_new_row_and_no_other_change(copy: Path) -> None:
    """The repository's own tests of rows, probes, libraries, pages and layout, run in the copy."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *RULES],
                         cwd=copy, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # The registry read in the copy has the row, in its place, with what it reads.
    listed = subprocess.run([sys.executable, "-c", "import json; from pytest_containercheck.checks import "
                             "builtin_rows; from pytest_containercheck.engine.probing import library_modules; "
                             "print(json.dumps([[[r.name, r.order, r.probes, r.module] for r in builtin_rows()], "
                             "list(library_modules())]))"], cwd=copy, capture_output=True, text=True, timeout=300)
    rows, libraries = json.loads(listed.stdout)
    names = [r[0] for r in rows]
    assert ["numpy.blas", 25, [["blas", "{}"]], "test_blas"] in rows
    assert max(i for i, r in enumerate(rows) if r[1] == 20) < names.index("numpy.blas") < min(
        i for i, r in enumerate(rows) if r[1] == 30)
    assert "numpy" in libraries


def test_the_new_row_runs_and_passes(copy: Path) -> None:
    """As users run it: ``pytest --image host -k numpy.blas`` (numpy is one of the plugin's own dependencies)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", "host", "-k",
                          "numpy.blas", "--matrix-json", "m.json"], cwd=copy, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    cells = json.loads((copy / "m.json").read_text())["cells"]
    [cell] = [c for c in cells if c["row"] == "numpy.blas"]
    assert cell["status"] == "pass" and re.match(r"numpy \S+: a matrix product through \S+ is exact$", cell["detail"])


def test_the_verdicts_are_a_package_of_small_modules() -> None:
    """engine/verdicts/: one module per row family and the shared analysis, none over about 400 lines."""
    package = ROOT / "pytest_containercheck" / "engine" / "verdicts"
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert {"system.py", "gpu.py", "render.py", "torch.py", "xgboost.py", "transformers.py", "failure.py",
            "native.py"} <= set(sizes)
    assert {name: n for name, n in sizes.items() if n > 400} == {}
