"""Collection as users drive it: -k/-m select rows by name, and only selected checks start probes."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

# Loaded once here: pytester's in-process runs unload what they imported, and numpy (which the
# render checks import when they compare a render) cannot be loaded twice in one process.
import numpy  # noqa: F401
import pytest

import pytest_containercheck.engine.imagecompare  # noqa: F401
from pytest_containercheck.checks import builtin_rows
from pytest_containercheck.engine.lifecycle import CLOSED, SessionPool
from pytest_containercheck.engine.probing import available_probes, probe_source
from pytest_containercheck.engine.runtimes import RuntimeFault, Target
from pytest_containercheck.engine.runtimes.base import LaunchOptions
from pytest_containercheck.state import CheckOptions

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: Every built-in probe, from the probes directory: a new probe is seen without editing this test.
BUILTIN_PROBES = tuple(available_probes())


def _recording_python(pytester: pytest.Pytester) -> tuple[Path, Path]:
    """A --host-python that saves every program it is sent on stdin, then runs the real one."""
    log = pytester.mkdir("programs")
    wrapper = pytester.path / "python-recorder"
    wrapper.write_text(f'#!/bin/sh\nf=$(mktemp -p "{log}" prog.XXXXXX)\ncat > "$f"\n'
                       f'exec "{sys.executable}" "$@" < "$f"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, log


def _probes_run(log: Path) -> list[str]:
    """Which built-in probes the recorded programs were (an empty program: interpreter discovery)."""
    names = []
    for program in sorted(p.read_text() for p in log.iterdir()):
        if program:
            names += [n for n in BUILTIN_PROBES if probe_source(n) in program]
    return sorted(names)


def test_k_torch_runs_only_the_torch_probe(pytester: pytest.Pytester) -> None:
    wrapper, log = _recording_python(pytester)
    result = pytester.runpytest("--image", "host", "--host-python", str(wrapper), "-k", "torch",
                                "--probe-jobs", "4", "--matrix-json", "m.json")
    assert result.ret == 0, result.stdout.str()[-3000:]
    data: dict[str, Any] = json.loads((pytester.path / "m.json").read_text())
    assert data["rows"] == ["torch.cpu", "torch.cuda"]
    assert _probes_run(log) == ["torch_device"]


def test_deselected_checks_start_no_planned_probe(pytester: pytest.Pytester) -> None:
    probes = pytester.mkdir("p")
    for name in ("mark_a", "mark_b"):
        (probes / f"{name}.py").write_text(
            "def run(params, ctx):\n"
            f"    open(params['out'], 'a').write('{name}\\n')\n"
            "    return {}\n")
    out = pytester.path / "ran.txt"
    pytester.makepyfile(test_marks=f"""
        import pytest

        @pytest.mark.containercheck_probe("mark_a", params={{"out": {str(out)!r}}})
        def test_a(container):
            container.facts("mark_a", out={str(out)!r})

        @pytest.mark.slowrow
        @pytest.mark.containercheck_probe("mark_b", params={{"out": {str(out)!r}}}, weight=9)
        def test_b(container):
            container.facts("mark_b", out={str(out)!r})
    """)
    pytester.makeini("[pytest]\nmarkers =\n    slowrow: a marker to deselect by\n")
    common = ("--image", "host", "test_marks.py", "--no-builtin-checks", "--probe-dir", "p", "--probe-jobs", "2")
    pytester.runpytest(*common, "-k", "test_a").assert_outcomes(passed=1, deselected=1)
    assert out.read_text() == "mark_a\n"
    out.unlink()
    pytester.runpytest(*common, "-m", "not slowrow").assert_outcomes(passed=1, deselected=1)
    assert out.read_text() == "mark_a\n"
    out.unlink()
    pytester.runpytest(*common).assert_outcomes(passed=2)
    assert sorted(out.read_text().split()) == ["mark_a", "mark_b"]


def test_probes_beside_the_heaviest_run_at_a_lower_priority(pytester: pytest.Pytester) -> None:
    """While the heaviest planned probe runs, the others get nice +10 (they take the CPU it
    leaves over); the heaviest keeps the run's own priority.  Seen by the probes themselves."""
    probes = pytester.mkdir("p")
    (probes / "heavy.py").write_text(
        "def run(params, ctx):\n"
        "    import os, time\n"
        "    nice = os.nice(0)\n"
        "    time.sleep(1.5)  # still running when the light one starts\n"
        "    return {'nice': nice}\n")
    (probes / "light.py").write_text(
        "def run(params, ctx):\n"
        "    import os\n"
        "    return {'nice': os.nice(0)}\n")
    (probes / "asked.py").write_text(
        "def run(params, ctx):\n"
        "    import os\n"
        "    return {'nice': os.nice(0)}\n")
    pytester.makepyfile(test_prio="""
        import pytest

        def test_asked(container):  # no plan: run on demand, while the heavy one runs
            container.note(str(container.facts("asked")["nice"]))

        @pytest.mark.containercheck_probe("heavy", weight=10)
        def test_heavy(container):
            container.note(str(container.facts("heavy")["nice"]))

        @pytest.mark.containercheck_probe("light", weight=1)
        def test_light(container):
            container.note(str(container.facts("light")["nice"]))
    """)
    result = pytester.runpytest("--image", "host", "test_prio.py", "--no-builtin-checks", "--probe-dir", "p",
                                "--probe-jobs", "2", "--matrix-json", "m.json")
    result.assert_outcomes(passed=3)
    cells = {c["row"]: c for c in json.loads((pytester.path / "m.json").read_text())["cells"]}
    own = os.nice(0)  # this test's own priority (a CI runner may already run niced)
    assert cells["heavy"]["detail"] == str(own)
    assert "nice" not in cells["heavy"]["probes"]["heavy"]
    assert cells["light"]["detail"] == str(min(own + 10, 19))
    assert cells["light"]["probes"]["light"]["nice"] == 10
    assert cells["asked"]["detail"] == str(min(own + 10, 19))
    assert cells["asked"]["probes"]["asked"]["nice"] == 10


@pytest.mark.parametrize(("expr", "selected"), [
    ("torch.cuda", ["test_torch_cuda[host]"]),
    ("render and not egl", ["test_render_osmesa[host]"]),
    ("system.python", ["test_python[host]"]),
    ("xgboost or transformers.cache", ["test_xgboost_cpu[host]", "test_xgboost_cuda[host]",
                                        "test_transformers_cache[host]"]),
])
def test_row_names_are_keywords(pytester: pytest.Pytester, expr: str, selected: list[str]) -> None:
    result = pytester.runpytest("--image", "host", "-k", expr, "--collect-only", "-q")
    got = [line.rpartition("::")[2] for line in result.stdout.lines if "::" in line]
    assert got == selected


def test_rows_come_in_the_order_their_modules_declare(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_mine(container):\n    container.note('x')\n")
    result = pytester.runpytest("--image", "host", "test_mine.py", "--collect-only", "-q")
    modules = [line.split("::")[0].rsplit("/", 1)[-1] for line in result.stdout.lines if "::" in line]
    firsts = list(dict.fromkeys(modules))
    # Each module's containercheck_order decides (the registry reads them), users' own rows last.
    by_order = sorted(dict.fromkeys(r.module for r in builtin_rows()),
                      key=lambda m: min(r.order for r in builtin_rows() if r.module == m))
    assert firsts == [f"{m}.py" for m in by_order] + ["test_mine.py"]
    assert firsts[:2] == ["test_system.py", "test_tls.py"] and firsts.index("test_render.py") < firsts.index(
        "test_ml.py")


def test_a_closed_pool_starts_nothing() -> None:
    pool = SessionPool(LaunchOptions(run_id="t"), CheckOptions())
    target = Target("host", "host", "host")
    pool.stop_all()
    with pytest.raises(RuntimeFault, match=re.escape(CLOSED)):
        pool.get(target).ensure_started()


def test_a_stopped_session_is_not_restarted() -> None:
    pool = SessionPool(LaunchOptions(run_id="t"), CheckOptions())
    image = pool.get(Target("host", "host", "host"))
    assert image.ensure_started() is not None
    pool.stop_all()
    with pytest.raises(RuntimeFault, match=re.escape(CLOSED)):
        image.ensure_started()


def test_a_run_without_render_rows_imports_no_image_library(pytester: pytest.Pytester) -> None:
    """numpy, Pillow and scikit-image are for comparing renders: the render checks import the
    comparison at collection, but it imports them only when a render is compared."""
    pytester.makepyfile(modules="""
        import sys

        def pytest_unconfigure(config):
            with open("modules", "w") as f:
                f.write(" ".join(m for m in ("numpy", "PIL", "skimage") if m in sys.modules))
    """)
    result = pytester.runpytest_subprocess("-p", "modules", "--image", "host", "-k", "system", "-v")
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert "deselected" in result.stdout.str()  # the render checks were collected, then deselected
    assert (pytester.path / "modules").read_text() == ""
