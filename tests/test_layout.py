"""The package's shape, as rules that fail when broken.

* The engine (``pytest_containercheck/engine``) imports nothing of pytest (``pytest``,
  ``_pytest``, ``pluggy``, ``xdist``) and nothing of the plugin layer (any module of the package
  outside ``engine/``): read from each module's source, and seen in ``sys.modules`` after
  importing each engine module alone in a fresh interpreter.
* No import cycle anywhere in the package (the graph read from the source).
* Every pytest a test starts loads the plugin from this tree, never an installed copy.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_containercheck"
PYTEST_WORLD = ("pytest", "_pytest", "pluggy", "xdist")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(under: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package below *under*: dotted name -> file."""
    return {module_name(p): p for p in sorted(under.rglob("*.py")) if "__pycache__" not in p.parts}


ALL = modules()
ENGINE = modules(PACKAGE / "engine")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
            for other in child.orelse:
                yield from _walk(other, type_checking)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _walk(child, type_checking)


def imports_of(name: str, *, type_checking: bool = True) -> set[str]:
    """The modules *name* imports anywhere in its source (functions too), as absolute names;
    ``from X import y`` is X.y when that is a module of the package.  Without *type_checking*,
    imports under ``if TYPE_CHECKING:`` are left out (they never run)."""
    path = ALL[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path)), type_checking):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in ALL else target)
    return found


def _forbidden(imported: str) -> bool:
    """Whether the engine may not import *imported*."""
    top = imported.split(".")[0]
    if top in PYTEST_WORLD:
        return True
    return top == "pytest_containercheck" and imported != "pytest_containercheck" \
        and not (imported == "pytest_containercheck.engine" or imported.startswith("pytest_containercheck.engine."))


def test_the_engine_source_imports_no_pytest_and_no_plugin_module() -> None:
    assert len(ENGINE) > 10, sorted(ENGINE)
    bad = {name: sorted(i for i in imports_of(name) if _forbidden(i)) for name in ENGINE}
    assert {n: b for n, b in bad.items() if b} == {}, "the engine reaches into pytest or the plugin layer"


def _loaded_by(name: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter that imported *name* alone."""
    code = f"import importlib, json, sys; importlib.import_module({name!r}); print(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, f"import {name}: {res.stderr[-2000:]}"
    loaded: list[str] = json.loads(res.stdout.splitlines()[-1])
    return loaded


def test_importing_each_engine_module_loads_no_pytest_and_no_plugin_module() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = dict(zip(ENGINE, pool.map(_loaded_by, ENGINE)))
    bad = {name: sorted(m for m in mods if _forbidden(m)) for name, mods in loaded.items()}
    assert {n: b for n, b in bad.items() if b} == {}, "importing the engine loads pytest or the plugin layer"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (type-checking-only imports left out)."""
    return {name: {i for i in imports_of(name, type_checking=False) if i in ALL and i != name} for name in ALL}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of *graph* (``[a, b, a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert graph["pytest_containercheck.plugin"], "the graph is empty: the import reader is broken"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# -- subprocess runs test the tree ---------------------------------------------------------------

REPORT_WHERE = """
import json, sys

def test_where():
    import pytest_containercheck.plugin
    with open("where.json", "w") as fh:
        json.dump({"plugin": sys.modules["pytest_containercheck.plugin"].__file__,
                   "package": sys.modules["pytest_containercheck"].__file__, "path": sys.path}, fh)
"""


def _assert_from_the_tree(where: dict[str, object]) -> None:
    for key in ("plugin", "package"):
        loaded = Path(str(where[key])).resolve()
        assert loaded.is_relative_to(PACKAGE), f"the subprocess loaded {key} from {loaded}, not from {PACKAGE}"
    # Whatever is installed, the tree wins: it precedes every site directory on sys.path
    # (an editable install appends the tree after them; a non-editable one sits in them).
    path = [str(p) for p in where["path"]]  # type: ignore[attr-defined]
    assert str(ROOT) in path, path
    sites = [i for i, p in enumerate(path) if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    assert all(path.index(str(ROOT)) < i for i in sites), f"an installed copy would win over the tree: {path}"


def test_pytester_subprocess_runs_load_the_plugin_from_the_tree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_where=REPORT_WHERE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_where.py")
    result.assert_outcomes(passed=1)
    _assert_from_the_tree(json.loads((pytester.path / "where.json").read_text()))


def test_python_m_pytest_runs_load_the_plugin_from_the_tree(tmp_path: Path) -> None:
    """As tests/test_sweep.py starts pytest: ``python -m pytest`` in a directory outside the tree."""
    (tmp_path / "test_where.py").write_text(REPORT_WHERE)
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_where.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    _assert_from_the_tree(json.loads((tmp_path / "where.json").read_text()))


def test_this_process_tests_the_tree() -> None:
    import pytest_containercheck.plugin

    loaded = Path(pytest_containercheck.plugin.__file__).resolve()
    assert loaded.is_relative_to(PACKAGE), (
        f"these tests run against {loaded}, not the tree: install it editable (pip install -e .) "
        "or run python -m pytest from the checkout")


def test_no_test_module_imports_another() -> None:
    """Shared test code is in tests/helpers.py (and the Slurm recipe in tests/slurm_recipe.py),
    fixtures in conftest.py: importing a sibling test module (``from test_plugin import ...``)
    works only in pytest's default import mode, and runs that module's tests' set-up twice."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                name = node.module.split(".")[0]
                if name == "conftest" or name.startswith("test_"):
                    offenders.append(f"{path.name}: from {node.module} import ...")
    assert offenders == []


# -- the tests themselves: no wait without a bound --------------------------------------------------

#: Methods that block until something happens: a thread's end, a process's, an event, a future, a lock.
_BLOCKING = ("wait", "join", "communicate", "result", "acquire", "get")
_SUBPROCESS_WAITS = ("run", "call", "check_call", "check_output")


def unbounded_waits(source: str) -> list[tuple[int, str]]:
    """(line, call) of every wait in *source* that names no bound: a blocking method called without
    a timeout (``t.join()``, ``event.wait()``, ``proc.communicate()``), or ``subprocess.run`` and
    friends without ``timeout=``.  ``str.join`` and ``dict.get`` always have an argument."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, keywords = node.func.attr, {k.arg for k in node.keywords}
        if "timeout" in keywords:
            continue
        if name in _BLOCKING and not node.args and not (name == "get" and keywords):
            found.append((node.lineno, f".{name}()"))
        elif (name in _SUBPROCESS_WAITS and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "subprocess"):
            found.append((node.lineno, f"subprocess.{name}(...) without timeout="))
    return found


def test_every_wait_in_the_tests_has_a_bound() -> None:
    """A test that waits for an event without a bound hangs the whole suite when the event never comes
    (a broken ``stop()`` that never returns): each wait names its timeout, and fails the test when it
    passes (tests/helpers.py ``WAIT_LIMIT``, ``RUN_LIMIT``).  pytester's ``runpytest_subprocess`` gets
    one from the root conftest.py.  The image tools in tests/images/ build for as long as a build takes."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {call}"
                 for path in [ROOT / "conftest.py", *sorted((ROOT / "tests").glob("*.py"))]
                 for line, call in unbounded_waits(path.read_text(encoding="utf-8"))]
    assert offenders == [], "\n".join(offenders)


def test_the_wait_finder_finds_them() -> None:
    source = ("import subprocess, threading\nt = threading.Thread(target=print)\nt.join()\nt.join(5)\n"
              "threading.Event().wait()\nsubprocess.run(['true'])\nsubprocess.run(['true'], timeout=9)\n"
              "','.join(['a'])\n{}.get('k')\n")
    assert unbounded_waits(source) == [(3, ".join()"), (5, ".wait()"), (6, "subprocess.run(...) without timeout=")]


def test_pytester_subprocess_runs_are_bounded(pytester: pytest.Pytester) -> None:
    """The root conftest.py's pytester gives each ``runpytest_subprocess`` a timeout unless it names one."""
    seen: list[float | None] = []
    pytester.run = lambda *args, timeout=None, **kw: seen.append(timeout)  # type: ignore[method-assign]
    pytester.runpytest_subprocess("--version")
    pytester.runpytest_subprocess("--version", timeout=7)
    assert seen == [1800.0, 7]
