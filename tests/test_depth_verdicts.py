"""The verdicts at depth two (``engine/verdicts/native.py``, ``failure.explain_import``) on the facts
recorded from the depth-two images (``tests/data/depth``), and on those facts changed one rule at a
time: where the wrong file came from decides the fix, the loader's own message decides which problem
is named, and a library that is installed is never what the fix installs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.verdicts import gpu, transformers, xgboost
from pytest_containercheck.engine.verdicts.failure import explain_import
from pytest_containercheck.engine.verdicts.native import explain_native
from pytest_containercheck.engine.verdicts.render import render_verdict

DATA = Path(__file__).resolve().parent / "data" / "depth"
GLIBC_OLD = "/opt/oldlibs/lib/libstdc++.so.6"


def facts(case: str) -> dict[str, Any]:
    return copy.deepcopy(dict(json.loads((DATA / f"{case}.json").read_text())["facts"]))


def _osmesa_resolution(f: dict[str, Any]) -> dict[str, Any]:
    resolution: dict[str, Any] = f["libraries"]["libOSMesa.so.8"]["resolution"]
    return resolution


# -- the recorded cases ------------------------------------------------------------------------------

RECORDED = {
    "glibcxx-osmesa": (
        lambda f: render_verdict(f, "osmesa"),
        "osmesa cannot render: libOSMesa.so.8 is installed but does not load: it needs GLIBCXX_3.4.29 of "
        "libstdc++.so.6; the loader took /opt/oldlibs/lib/libstdc++.so.6 (LD_LIBRARY_PATH), which has up to "
        "GLIBCXX_3.4.28; /lib/x86_64-linux-gnu/libstdc++.so.6 has it (render ",
        "remove /opt/oldlibs/lib from the image's LD_LIBRARY_PATH (Dockerfile: ENV LD_LIBRARY_PATH=), so that the "
        "loader takes /lib/x86_64-linux-gnu/libstdc++.so.6"),
    "glibcxx-egl": (
        lambda f: render_verdict(f, "egl"),
        "VTK fell back to vtkOSOpenGLRenderWindow: swrast_dri.so is installed but does not load: it needs "
        "GLIBCXX_3.4.29 of libstdc++.so.6; the loader took /opt/oldlibs/lib/libstdc++.so.6 (LD_LIBRARY_PATH), which "
        "has up to GLIBCXX_3.4.28; /lib/x86_64-linux-gnu/libstdc++.so.6 has it",
        "remove /opt/oldlibs/lib from the image's LD_LIBRARY_PATH (Dockerfile: ENV LD_LIBRARY_PATH=), so that the "
        "loader takes /lib/x86_64-linux-gnu/libstdc++.so.6"),
    "symbol-egl": (
        lambda f: render_verdict(f, "egl"),
        "VTK fell back to vtkOSOpenGLRenderWindow: libEGL_mesa.so.0 is installed but does not load: it needs "
        "drmGetDeviceFromDevId from libdrm.so.2; the loader took /opt/oldlibs/lib/libdrm.so.2 (loader cache: "
        "/etc/ld.so.conf.d/00-oldlibs.conf), which lacks it; /lib/x86_64-linux-gnu/libdrm.so.2 has it",
        "take /opt/oldlibs/lib out of the loader's configuration (/etc/ld.so.conf.d/00-oldlibs.conf) and rebuild its "
        "cache (Dockerfile: RUN rm /etc/ld.so.conf.d/00-oldlibs.conf && ldconfig), so that the loader takes "
        "/lib/x86_64-linux-gnu/libdrm.so.2"),
    "slimmed-osmesa": (
        lambda f: render_verdict(f, "osmesa"),
        "osmesa cannot render: libOSMesa.so.8 (package libosmesa6) is installed but its dependency libLLVM-15.so.1 "
        "(needed by libOSMesa.so.8) is nowhere the loader looks; package libllvm15 lists it: deleted after the "
        "install (an image slimmer, or a cleanup of libraries) (render ",
        "reinstall the package that owns it: apt-get update && apt-get install --reinstall -y libllvm15"),
    "slimmed-egl": (
        lambda f: render_verdict(f, "egl"),
        "VTK fell back to vtkOSOpenGLRenderWindow: swrast_dri.so (package libgl1-mesa-dri) is installed but its "
        "dependency libLLVM-15.so.1 (needed by swrast_dri.so) is nowhere the loader looks; package libllvm15 lists "
        "it: deleted after the install (an image slimmer, or a cleanup of libraries)",
        "reinstall the package that owns it: apt-get update && apt-get install --reinstall -y libllvm15"),
    "nonumpy-xgboost": (
        xgboost.xgboost_cpu,
        "xgboost does not import: xgboost-cpu 3.2.0 is installed but its requirement numpy is not (No module named "
        "'numpy'); it also requires scipy, not installed either",
        "pip install numpy scipy"),
    "pin-transformers": (
        transformers.transformers_cpu,
        "transformers does not import: transformers 5.23.0 requires tokenizers<0.24.0,>=0.23.1 and the image has "
        "tokenizers 0.22.1 (ImportError: tokenizers>=0.23.1,<0.24.0 is required",
        "install a version it accepts: pip install 'tokenizers<0.24.0,>=0.23.1' (or a transformers release that "
        "accepts tokenizers 0.22.1)"),
    "abi-xgboost": (
        xgboost.xgboost_cpu,
        "xgboost does not import: scipy 1.11.4 (imported by xgboost-cpu 3.2.0, in scipy.sparse._csr) was built for "
        "NumPy 1.x and the image has NumPy 2.4.6; scipy 1.11.4 requires numpy<1.28.0,>=1.21.6",
        "upgrade scipy to a release built for NumPy 2: pip install --upgrade scipy; or install a NumPy it accepts: "
        "pip install 'numpy<1.28.0,>=1.21.6'"),
}


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_the_recorded_case_names_the_breaking_dependency(case: str) -> None:
    verdict, detail, fix = RECORDED[case]
    v = verdict(facts(case))
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith(detail), v.detail
    assert v.fix == fix


# -- where the wrong file came from decides the fix ----------------------------------------------------


def test_ld_library_path_keeps_its_other_directories() -> None:
    f = facts("glibcxx-osmesa")
    _osmesa_resolution(f)["search"]["LD_LIBRARY_PATH"] = ["/opt/app/lib", "/opt/oldlibs/lib", "/opt/cuda/lib64"]
    assert "(Dockerfile: ENV LD_LIBRARY_PATH=/opt/app/lib:/opt/cuda/lib64)" in str(render_verdict(f, "osmesa").fix)


def test_no_copy_that_has_the_version_asks_for_a_newer_library() -> None:
    f = facts("glibcxx-osmesa")
    for problem in _osmesa_resolution(f)["problems"]:
        for alternative in problem.get("alternatives") or []:
            alternative["satisfies"] = False
    v = render_verdict(f, "osmesa")
    assert "no other copy in the image has them" in v.detail
    assert v.fix == ("install a newer libstdc++.so.6 (one that provides GLIBCXX_3.4.29: Debian's libstdc++6 from a "
                     "newer release), or a build of libOSMesa.so.8 made for this OS")


def test_a_configuration_file_with_other_directories_is_edited_not_removed() -> None:
    f = facts("symbol-egl")
    vendor = next(e for e in f["egl_vendor_files"]["files"] if e.get("resolution"))
    vendor["resolution"]["search"]["ld_so_conf"]["/opt/other/lib"] = "/etc/ld.so.conf.d/00-oldlibs.conf"
    assert ("(Dockerfile: delete the line /opt/oldlibs/lib from /etc/ld.so.conf.d/00-oldlibs.conf, then RUN "
            "ldconfig)") in str(render_verdict(f, "egl").fix)


def test_a_runpath_that_points_at_the_wrong_copy() -> None:
    f = facts("glibcxx-osmesa")
    taken = _osmesa_resolution(f)["problems"][0]["taken"]
    runpath = "RUNPATH of /opt/app/lib/libapp.so ($ORIGIN)"
    taken.update(via=runpath, origin=runpath)
    v = render_verdict(f, "osmesa")
    assert "(RUNPATH of libapp.so)" in v.detail
    assert str(v.fix).startswith("replace /opt/oldlibs/lib/libstdc++.so.6 with a build that has what is needed")


def test_a_missing_dependency_no_package_lists_is_installed_with_its_package() -> None:
    f = facts("slimmed-osmesa")
    for problem in _osmesa_resolution(f)["problems"]:
        problem["owners"] = []
    assert render_verdict(f, "osmesa").fix == ("install what provides libLLVM-15.so.1: apt-get update && apt-get "
                                               "install -y libllvm15")
    for problem in _osmesa_resolution(f)["problems"]:
        problem["name"] = "libvendored.so.3"
    assert str(render_verdict(f, "osmesa").fix).startswith(
        "install the package that provides libvendored.so.3 (Debian: apt-file search libvendored.so.3")


def test_the_problem_the_loader_names_comes_first() -> None:
    """glibc reports the first problem it meets; the facts may hold more (here a missing file too)."""
    f = facts("glibcxx-osmesa")
    resolution = _osmesa_resolution(f)
    resolution["problems"].insert(0, {"kind": "missing", "name": "libextra.so.1", "needed_by": "/x/libOSMesa.so.8",
                                      "owners": []})
    cause = explain_native(resolution)
    assert cause is not None and "GLIBCXX_3.4.29 of libstdc++.so.6" in cause.what
    cause = explain_native(resolution, "libextra.so.1: cannot open shared object file: No such file or directory")
    assert cause is not None and "its dependency libextra.so.1" in cause.what


def test_a_library_that_is_not_there_has_no_cause_below_it() -> None:
    f = facts("glibcxx-osmesa")
    f["libraries"]["libOSMesa.so.8"] = {"loaded": False, "error": "libOSMesa.so.8: cannot open shared object file: "
                                                                   "No such file or directory"}
    v = render_verdict(f, "osmesa")
    assert v.fix is not None and "apt-get install -y libosmesa6" in v.fix  # depth one: it is not installed


def test_libcuda_that_is_there_but_breaks_names_its_dependency() -> None:
    system = {"libcuda": {"loaded": False, "error": "/opt/oldlibs/lib/libstdc++.so.6: version `GLIBCXX_3.4.29' not "
                                                    "found (required by /usr/lib/x86_64-linux-gnu/libcuda.so.1)",
                          "resolution": dict(_osmesa_resolution(facts("glibcxx-osmesa")),
                                             target_path="/usr/lib/x86_64-linux-gnu/libcuda.so.1")}}
    v = gpu.libcuda(system, {"has_gpu": True, "gpu_vendor": "nvidia"})
    assert v.status == "fail" and v.detail.startswith("libcuda.so.1 does not load in the image: libcuda.so.1 is "
                                                      "installed but does not load")
    assert "ENV LD_LIBRARY_PATH=" in str(v.fix)


# -- Python requirements ----------------------------------------------------------------------------


def test_a_module_no_requirement_names() -> None:
    f = facts("nonumpy-xgboost")
    f.update(missing_module="yaml", error="ModuleNotFoundError: No module named 'yaml'")
    f["requirements"]["unmet"] = []
    cause = explain_import("xgboost", f)
    assert cause is not None
    assert cause.what == "xgboost-cpu 3.2.0 imports yaml, which is not installed (No module named 'yaml')"
    assert cause.fix == "install the distribution that provides the module yaml in the image"


def test_the_library_s_own_module_missing_is_not_a_requirement() -> None:
    f = facts("nonumpy-xgboost")
    f.update(missing_module="xgboost.compat", error="ModuleNotFoundError: No module named 'xgboost.compat'")
    v = xgboost.xgboost_cpu(f)
    assert v.status == "fail" and "requirement" not in v.detail and "pip install" not in str(v.fix)


def test_the_wrong_version_the_error_names_is_the_one_blamed() -> None:
    f = facts("pin-transformers")
    unmet = f["requirements"]["unmet"]
    unmet.insert(0, {"distribution": "huggingface-hub", "version": "2.4.0", "requires": "tqdm>=4.99",
                     "name": "tqdm", "installed": "4.70.1"})
    v = transformers.transformers_cpu(f)
    assert "requires tokenizers<0.24.0,>=0.23.1" in v.detail and "tqdm" not in str(v.fix)


def test_an_extension_of_the_library_itself_built_for_numpy_1() -> None:
    f = facts("abi-xgboost")
    f["raised_in"].update(module="xgboost.core", distribution="xgboost-cpu", version="3.2.0")
    f["requirements"]["unmet"] = []
    v = xgboost.xgboost_cpu(f)
    assert v.detail == ("xgboost does not import: xgboost-cpu 3.2.0 was built for NumPy 1.x and the image has NumPy "
                        "2.4.6")
    assert v.fix == ("upgrade xgboost-cpu to a release built for NumPy 2: pip install --upgrade xgboost-cpu; or "
                     "install a NumPy it accepts: pip install 'numpy<2'")


def test_pyvista_whose_requirement_is_missing_fails_it_does_not_skip() -> None:
    """pyvista installed, matplotlib (which it imports) not: "not installed" would be pyvista's absence."""
    f = facts("glibcxx-osmesa")
    f["pyvista_import_error"] = "ModuleNotFoundError: No module named 'matplotlib'"
    f["pyvista_import"] = {"installed": False, "found": True, "failed_module": "pyvista",
                           "missing_module": "matplotlib", "error": f["pyvista_import_error"],
                           "distribution": {"name": "pyvista", "version": "0.49.1"},
                           "requirements": {"checked": 5, "unmet": [
                               {"distribution": "pyvista", "version": "0.49.1", "requires": "matplotlib>=3.0.1",
                                "name": "matplotlib", "installed": None}]}}
    v = render_verdict(f, "osmesa")
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail == ("import pyvista failed: pyvista 0.49.1 is installed but its requirement matplotlib>=3.0.1 is "
                        "not (No module named 'matplotlib')")
    assert v.fix == "pip install 'matplotlib>=3.0.1'"
    f["pyvista_import"] = {"installed": False, "found": False, "missing_module": "pyvista"}
    f["pyvista_import_error"] = "ModuleNotFoundError: No module named 'pyvista'"
    assert render_verdict(f, "osmesa").status == "skip"


def test_a_library_that_is_there_and_fails_for_no_reason_found_is_never_installed_again() -> None:
    f = facts("glibcxx-osmesa")
    _osmesa_resolution(f)["problems"] = []
    v = render_verdict(f, "osmesa")
    assert v.detail.startswith("osmesa cannot render: libOSMesa.so.8 is installed "
                               "(/lib/x86_64-linux-gnu/libOSMesa.so.8) but does not load: ")
    assert "apt-get" not in str(v.fix) and "libosmesa6" not in str(v.fix)
