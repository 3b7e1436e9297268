"""The render rows as users run them: real Mesa rendering on the host and in Docker images.

Host tests use this machine's Python (vtk + pyvista + Mesa llvmpipe).  Docker tests use the
images from tests/images/build.py through the fixtures in tests/conftest.py.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine.imagecompare import SHIPPED_DIR, fingerprint

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: These tests pin the outcomes of a host without a GPU (rows that skip, --require-gpu failing
#: them).  On a GPU runner they do not apply: tests/gpu/run_kit.sh checks the GPU outcomes.
NO_GPU_HOST = pytest.mark.skipif(bool(hostinfo.nvidia_facts()["has_gpu"]),
                                 reason="asserts a host without a GPU; on a GPU host run tests/gpu/run_kit.sh")


RENDER = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_render.py")
ONLY_RENDER = ("--no-builtin-checks", RENDER)

#: A user's own scene: the built-in one plus a small yellow sphere.
CHANGED_SCENE = ("builtin_scene()\n"
                 "plotter.add_mesh(pv.Sphere(radius=0.25, center=(0.6, -0.8, 0.1)), color='yellow')\n")

USER_TESTS = """
from pytest_containercheck.imagecompare import check_image

SCENE = {scene!r}

@pytest.mark.containercheck_row("render.mine")
def test_mine(container):
    res = container.probe("render", backend="egl", scene=SCENE, width={width}, height={height})
    verdict = check_image(container, res, name={name!r})
    container.note(verdict.summary)
"""


def _user_test(pytester: pytest.Pytester, scene: str, *, name: str = "mine", width: int = 400,
               height: int = 300) -> None:
    body = USER_TESTS.format(scene=scene, name=name, width=width, height=height)
    pytester.makepyfile(test_user="import pytest\n" + textwrap.dedent(body))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:benchmark", "--matrix-json", "m.json",
                                         "--artifacts-dir", "art", *args, timeout=600)


def _cells(pytester: pytest.Pytester) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads((pytester.path / "m.json").read_text())
    return {(c["row"], c["column"]): c for c in data["cells"]}


@pytest.fixture(scope="module")
def host_key() -> str:
    """This machine's renderer fingerprint, from its own GL strings (skips without pyvista)."""
    _needs_pyvista()
    from pytest_containercheck.engine.dev import try_probe

    facts = try_probe("render", quiet=True, backend="egl").facts
    return fingerprint(facts.get("gl_renderer"), facts.get("gl_version"), facts.get("vtk_version"), "none").key


def _needs_pyvista() -> None:
    # find_spec, not importorskip: pytester restores sys.modules after each test, and VTK
    # cannot be imported twice into one process.
    if importlib.util.find_spec("pyvista") is None:
        pytest.skip("pyvista/vtk not installed in this Python (--image host renders with it)")


@pytest.fixture(autouse=True)
def _not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # The baseline policy differs under CI; each test sets CI itself where it matters.
    monkeypatch.delenv("CI", raising=False)


# -- host ----------------------------------------------------------------------------------------


@NO_GPU_HOST
def test_host_render_rows_pass_naming_llvmpipe(pytester: pytest.Pytester) -> None:
    _needs_pyvista()
    result = _run(pytester, "--image", "host", *ONLY_RENDER)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["render.osmesa*PASS llvmpipe (software)*", "render.egl*PASS llvmpipe (software)*"])
    cells = _cells(pytester)
    for backend in ("osmesa", "egl"):
        cell = cells[(f"render.{backend}", "host")]
        assert cell["evidence"]["render"]["window_class"] == {"osmesa": "vtkOSOpenGLRenderWindow",
                                                              "egl": "vtkEGLRenderWindow"}[backend]
        assert cell["evidence"]["render"]["frames_identical"] is True
        image = cell["evidence"]["image"]
        assert image["comparison"]["passed"] is True
        if (SHIPPED_DIR / f"builtin.{backend}.{image['fingerprint']}.png").exists():
            assert cell["detail"].endswith("= baseline (exact)")  # this machine made the shipped ones


@NO_GPU_HOST
def test_require_hw_render_fails_egl_on_llvmpipe(pytester: pytest.Pytester) -> None:
    _needs_pyvista()
    result = _run(pytester, "--image", "host", "--require-hw-render", *ONLY_RENDER)
    result.assert_outcomes(passed=1, failed=1)
    cell = _cells(pytester)[("render.egl", "host")]
    assert cell["detail"].startswith("--require-hw-render: EGL rendered with llvmpipe (software)")
    assert cell["fault"] == "host"


def test_changed_scene_fails_the_comparison_with_artifacts(pytester: pytest.Pytester, host_key: str) -> None:
    key = host_key
    _user_test(pytester, CHANGED_SCENE, name="builtin")
    result = _run(pytester, "--image", "host", "--no-builtin-checks", "test_user.py")
    result.assert_outcomes(failed=1)
    cell = _cells(pytester)[("render.mine", "host")]
    assert cell["detail"].startswith("render differs from the shipped baseline builtin.egl.")
    comparison = cell["evidence"]["image"]["comparison"]
    assert comparison["passed"] is False and comparison["differing_pixels"] > 1000
    assert comparison["mode"] == ("exact" if (SHIPPED_DIR / f"builtin.egl.{key}.png").exists() else "tolerant")
    assert sorted(cell["artifacts"]) == ["builtin-baseline", "builtin-diff", "builtin-result"]
    for path in cell["artifacts"].values():
        assert Path(path).read_bytes().startswith(b"\x89PNG")
    assert Path(cell["artifacts"]["builtin-baseline"]).read_bytes() == \
        (SHIPPED_DIR / Path(cell["evidence"]["image"]["baseline"]).name).read_bytes()


def test_size_mismatch_fails(pytester: pytest.Pytester) -> None:
    _needs_pyvista()
    _user_test(pytester, "builtin_scene()", name="builtin", width=320, height=240)
    result = _run(pytester, "--image", "host", "--no-builtin-checks", "test_user.py")
    result.assert_outcomes(failed=1)
    detail = _cells(pytester)[("render.mine", "host")]["detail"]
    assert detail.endswith("size mismatch: result 320x240, baseline 400x300")


def test_nondeterministic_scene_fails(pytester: pytest.Pytester) -> None:
    _needs_pyvista()
    _user_test(pytester, "plotter.add_mesh(pv.Sphere(center=np.random.rand(3)), color='red')\n"
                         "plotter.camera_position = [(0, -5, 2), (0.5, 0.5, 0.5), (0, 0, 1)]")
    result = _run(pytester, "--image", "host", "--no-builtin-checks", "test_user.py")
    result.assert_outcomes(failed=1)
    assert _cells(pytester)[("render.mine", "host")]["detail"] == \
        "nondeterministic render: two renders of the same scene differ"


def test_update_baselines_round_trip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                    host_key: str) -> None:
    key = host_key
    baseline = pytester.path / "bl" / f"mine.egl.{key}.png"
    _user_test(pytester, "builtin_scene()")
    args = ("--image", "host", "--no-builtin-checks", "test_user.py")

    # No baseline anywhere: fails, outside CI as well, and saves the result for review.
    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(failed=1)
    cell = _cells(pytester)[("render.mine", "host")]
    assert cell["detail"].startswith("no mine/egl baseline at all")
    assert "--update-baselines=missing" in cell["fix"] and "mine-result" in cell["artifacts"]
    assert not baseline.exists()

    _run(pytester, *args, "--baseline-dir", "bl", "--update-baselines=missing").assert_outcomes(passed=1)
    assert baseline.read_bytes().startswith(b"\x89PNG")
    assert _cells(pytester)[("render.mine", "host")]["detail"] == f"baseline written ({baseline.name})"

    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(passed=1)
    assert _cells(pytester)[("render.mine", "host")]["detail"] == "= baseline (exact)"

    # The scene changes: an exact failure, until --update-baselines=failed rewrites it.
    _user_test(pytester, CHANGED_SCENE)
    before = baseline.read_bytes()
    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(failed=1)
    _run(pytester, *args, "--baseline-dir", "bl", "--update-baselines=failed").assert_outcomes(passed=1)
    assert baseline.read_bytes() != before
    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(passed=1)
    assert sorted(p.name for p in baseline.parent.iterdir()) == [baseline.name]

    # Under CI a baseline of another fingerprint is never used instead: missing is a failure.
    other = baseline.with_name("mine.egl.nvidia-a100_nvidia-550.54.15_vtk9.7_aa-none.png")
    baseline.rename(other)
    monkeypatch.setenv("CI", "true")
    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(failed=1)
    cell = _cells(pytester)[("render.mine", "host")]
    assert f"no mine/egl baseline for renderer fingerprint {key} (CI=true" in cell["detail"]
    assert list(cell["artifacts"]) == ["mine-result"]
    monkeypatch.delenv("CI")
    _run(pytester, *args, "--baseline-dir", "bl").assert_outcomes(passed=1)  # tolerant, outside CI
    detail = _cells(pytester)[("render.mine", "host")]["detail"]
    assert detail.endswith("(vs nvidia-a100_nvidia-550.54.15_vtk9.7_aa-none)")


def test_update_baselines_needs_a_baseline_dir(pytester: pytest.Pytester) -> None:
    shipped = sorted(p.name for p in SHIPPED_DIR.iterdir())
    result = pytester.runpytest_subprocess("--image", "host", "--update-baselines=all", *ONLY_RENDER)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --update-baselines needs --baseline-dir DIR" in result.stderr.str()
    assert sorted(p.name for p in SHIPPED_DIR.iterdir()) == shipped


# -- Docker images ---------------------------------------------------------------------------------


@pytest.mark.docker
@NO_GPU_HOST
def test_full_image_renders_both_backends(pytester: pytest.Pytester, full_image: str) -> None:
    result = _run(pytester, "--image", full_image, "--probe-jobs", "2", *ONLY_RENDER)
    result.assert_outcomes(passed=2)
    cells = _cells(pytester)
    for backend in ("osmesa", "egl"):
        cell = cells[(f"render.{backend}", f"docker://{full_image}")]
        assert cell["detail"].startswith("llvmpipe (software), Mesa 22.3.6, ")
        assert cell["detail"].endswith("= baseline (exact)")  # bookworm's Mesa + vtk 9.7: the shipped fingerprint
        # Both backends ran in one bundle with pyvista/VTK imported once, before either was
        # forked; each still got the window class it asked for (the detail above).
        run = cell["probes"]["render"]
        assert run["bundle"] == {"with": ["render", "render"], "shared_imports": ["numpy", "pyvista",
                                                                                  "pyvista.plotting"], "shared": True}
        assert run["timings"]["import"] < 0.05, run


@pytest.mark.docker
@NO_GPU_HOST
def test_read_only_root_still_renders(pytester: pytest.Pytester, full_image: str) -> None:
    """``--read-only`` (a common hardening flag, no writable /tmp): rendering needs no file, so
    both render rows still pass; the render probe captures VTK's output in memory (memfd) when
    it cannot create a temporary file ("No usable temporary directory found" was an ERROR)."""
    # pyvista imports matplotlib, which itself needs a writable config directory: the same
    # import fails for anyone running this image read-only. That is the image's and the
    # launch's (a pair fault), named with its fix, never the probe's own temporary file.
    result = _run(pytester, "--image", full_image, "--runtime-arg=--read-only", *ONLY_RENDER)
    result.assert_outcomes(failed=2)
    cells = _cells(pytester)
    for backend in ("osmesa", "egl"):
        cell = cells[(f"render.{backend}", f"docker://{full_image}")]
        assert cell["status"] == "fail" and cell["fault"] == "pair", cell
        assert cell["detail"].startswith("import pyvista failed: matplotlib (imported by pyvista) found no writable")
        assert "MPLCONFIGDIR" in cell["fix"] and "temporary directory found" not in json.dumps(cell)
    # Given a writable config directory (/dev/shm is a tmpfs even under --read-only), both
    # rows render with /tmp still read-only.
    result = _run(pytester, "--image", full_image, "--runtime-arg=--read-only",
                  "--container-env", "MPLCONFIGDIR=/dev/shm", *ONLY_RENDER)
    result.assert_outcomes(passed=2)
    cells = _cells(pytester)
    for backend in ("osmesa", "egl"):
        assert cells[(f"render.{backend}", f"docker://{full_image}")]["detail"].startswith("llvmpipe (software)")


@pytest.mark.docker
@NO_GPU_HOST
def test_missing_gl_libraries_fail_naming_the_packages(pytester: pytest.Pytester, image_factory: Any) -> None:
    noosmesa, nogl = image_factory("render-noosmesa"), image_factory("render-nogl")
    result = _run(pytester, "--image", noosmesa, "--image", nogl, *ONLY_RENDER)
    result.assert_outcomes(passed=1, failed=3)
    cells = _cells(pytester)
    no_osmesa = (f"docker://{noosmesa}", f"docker://{nogl}")
    for column in no_osmesa:
        cell = cells[("render.osmesa", column)]
        assert cell["status"] == "fail" and cell["fault"] == "image"
        assert cell["detail"].startswith("osmesa cannot render: libOSMesa.so.8 does not load "
                                         "(libOSMesa.so.8: cannot open shared object file")
        assert "apt-get install -y libosmesa6" in cell["fix"] and "mesa-libOSMesa" in cell["fix"]
        assert cell["evidence"]["render"]["render_exit"] == "killed by signal 11 (SIGSEGV)"
    egl_ok = cells[("render.egl", f"docker://{noosmesa}")]
    assert egl_ok["status"] == "pass" and egl_ok["detail"].startswith("llvmpipe (software)")
    egl_bad = cells[("render.egl", f"docker://{nogl}")]
    assert egl_bad["status"] == "fail" and egl_bad["fault"] == "image"
    assert egl_bad["detail"].startswith("VTK fell back from vtkEGLRenderWindow to vtkOSOpenGLRenderWindow: "
                                        "libEGL.so.1 does not load")
    assert "libegl1 libegl-mesa0" in egl_bad["fix"] and "mesa-libEGL" in egl_bad["fix"]
