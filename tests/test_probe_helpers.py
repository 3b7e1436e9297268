"""The helpers the probes share through ``ctx`` (``ProbeContext`` in probes/_envelope.py).

Each probe travels into the image alone with the harness (the envelope and probes/_depth.py), so
what two probes need is a method of the context every ``run(params, ctx)`` gets.  The harness is
loaded here the way the image runs it: as plain source (its ``main`` ends the process, so it is
never called).
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.probing import HARNESS, harness

from helpers import missing

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "probes"


@pytest.fixture(scope="module")
def envelope() -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "probe"}
    exec(compile(harness(), "<harness>", "exec"), ns)
    return ns


@pytest.fixture
def ctx(envelope: dict[str, Any]) -> Any:
    return envelope["ProbeContext"]({})


# -- exc_text ---------------------------------------------------------------------------------


class GLFailure(RuntimeError):
    pass


def test_exc_text_is_type_name_and_message(ctx: Any) -> None:
    assert ctx.exc_text(ValueError("bad value")) == "ValueError: bad value"
    # the class's own name, never its module path
    assert ctx.exc_text(GLFailure("no display")) == "GLFailure: no display"
    assert ctx.exc_text(KeyError("x")) == "KeyError: 'x'"
    try:
        open("/nonexistent-containercheck/file")
    except OSError as exc:
        assert ctx.exc_text(exc) == ("FileNotFoundError: [Errno 2] No such file or directory: "
                                     "'/nonexistent-containercheck/file'")


def test_exc_text_is_capped_at_2000_characters(ctx: Any) -> None:
    text = ctx.exc_text(RuntimeError("x" * 5000))
    assert len(text) == 2000 and text.startswith("RuntimeError: xxx")


# -- module_found -----------------------------------------------------------------------------


def test_module_found_without_importing(ctx: Any) -> None:
    assert "tabnanny" not in sys.modules  # a stdlib module nothing here imports
    assert ctx.module_found("tabnanny") is True
    assert "tabnanny" not in sys.modules
    assert ctx.module_found("containercheck_no_such_module") is False
    # find_spec raises ModuleNotFoundError for a submodule of a missing package: still False
    assert ctx.module_found("containercheck_no_such_package.sub") is False


# -- writable ---------------------------------------------------------------------------------


def test_writable_existing_directory_leaves_nothing_behind(ctx: Any, tmp_path: Path) -> None:
    assert ctx.writable(str(tmp_path)) == {"path": str(tmp_path), "exists": True, "tested": str(tmp_path),
                                           "writable": True}
    assert list(tmp_path.iterdir()) == []


def test_writable_missing_directory_tests_the_nearest_ancestor_and_creates_nothing(
        ctx: Any, tmp_path: Path) -> None:
    path = tmp_path / "home" / ".cache"
    assert ctx.writable(str(path)) == {"path": str(path), "exists": False, "tested": str(tmp_path),
                                       "writable": True}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("below", [False, True], ids=["file", "below-a-file"])
def test_writable_is_false_at_or_below_a_regular_file(ctx: Any, tmp_path: Path, below: bool) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    path = blocker / "cache" if below else blocker
    out = ctx.writable(str(path))
    assert (out["writable"], out["exists"], out["tested"]) == (False, False, str(blocker))
    assert out["error"].startswith("NotADirectoryError: ")


def test_writable_is_false_at_a_dangling_symlink(ctx: Any, tmp_path: Path) -> None:
    link = tmp_path / "cache"
    link.symlink_to(tmp_path / "gone")
    out = ctx.writable(str(link / "hub"))
    assert (out["writable"], out["tested"]) == (False, str(link))
    assert out["error"].startswith("FileNotFoundError: ")
    assert not (tmp_path / "gone").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a mode-555 directory anyway")
def test_writable_read_only_directory(ctx: Any, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for path in (ro, ro / "missing" / "cache"):
            out = ctx.writable(str(path))
            assert (out["writable"], out["tested"]) == (False, str(ro))
            assert out["error"].startswith("PermissionError: ")
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_writable_unwritable_for_root_too(ctx: Any) -> None:
    # procfs takes no new files, whoever asks: the read-only case that also holds as root.
    out = ctx.writable("/proc/containercheck-missing/cache")
    assert (out["writable"], out["exists"], out["tested"]) == (False, False, "/proc")
    assert out["error"] and ": " in out["error"]


@pytest.mark.parametrize("path", ["", None])
def test_writable_unset_path(ctx: Any, path: str | None) -> None:
    assert ctx.writable(path) == {"path": path, "writable": False, "error": "not set"}


# -- load_library / cuda_driver_version -------------------------------------------------------


def _libcuda_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_libcuda_loads(), reason="libcuda.so.1 loads here (a CUDA host)")
def test_load_libcuda_without_cuda(ctx: Any) -> None:
    lib, facts = ctx.load_library("libcuda.so.1")
    assert lib is None
    assert set(facts) == {"loaded", "error"} and facts["loaded"] is False
    assert isinstance(facts["error"], str) and "libcuda.so.1" in facts["error"]


def test_load_library_error_is_the_loaders_text_capped(ctx: Any) -> None:
    lib, facts = ctx.load_library("libcontainercheck-missing.so.0")
    assert lib is None and facts["loaded"] is False and "libcontainercheck-missing.so.0" in facts["error"]
    _, facts = ctx.load_library("lib" + "x" * 600 + ".so")
    assert facts["loaded"] is False and len(facts["error"]) == 500


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="needs glibc on Linux")
def test_load_library_reports_the_mapped_file(ctx: Any) -> None:
    lib, facts = ctx.load_library("libc.so.6")
    assert lib is not None and facts["loaded"] is True
    assert os.path.basename(facts["path"]).startswith("libc.so") and os.path.isfile(facts["path"])


def _fake_libcuda(encoded: int, rc: int = 0) -> Any:
    def cuDriverGetVersion(ref: Any) -> int:  # ctypes.byref(c_int): ._obj is the c_int
        ref._obj.value = encoded
        return rc

    return types.SimpleNamespace(cuDriverGetVersion=cuDriverGetVersion)


@pytest.mark.parametrize(("encoded", "version"), [(12040, "12.4"), (11080, "11.8"), (13000, "13.0"),
                                                  (10020, "10.2")])
def test_cuda_driver_version_decodes(ctx: Any, encoded: int, version: str) -> None:
    assert ctx.cuda_driver_version(_fake_libcuda(encoded)) == (0, version)


def test_cuda_driver_version_failure_and_missing_symbol(ctx: Any) -> None:
    assert ctx.cuda_driver_version(_fake_libcuda(12040, rc=3)) == (3, None)
    with pytest.raises(AttributeError):  # a stub libcuda without the symbol
        ctx.cuda_driver_version(types.SimpleNamespace())


# -- select_torch_device ----------------------------------------------------------------------


def test_select_torch_device_with_the_installed_torch(ctx: Any) -> None:
    torch = pytest.importorskip("torch")
    info, dev = ctx.select_torch_device(torch)
    assert set(info) == {"compiled_accelerator", "api", "selected"}
    runtime = torch.accelerator.current_accelerator(check_available=True)
    if runtime is None:
        assert dev is None and info["selected"] == "cpu"
    else:
        assert dev == torch.device(runtime.type, torch.accelerator.current_device_index())
        assert info["selected"] == str(dev)
    assert info["api"] == "torch.accelerator.current_accelerator(check_available=True)"


# Older torch releases take other branches; the installed torch reaches only its own, so a
# minimal stand-in plays torch 2.6/2.7 and torch < 2.6.


class _Dev:
    def __init__(self, type: str, index: int | None = None) -> None:
        self.type, self.index = type, index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def _torch_2_6(compiled: str | None, available: bool, index: int = 0) -> Any:
    def current_accelerator(**kwargs: Any) -> _Dev | None:
        if kwargs:
            raise TypeError("current_accelerator() got an unexpected keyword argument 'check_available'")
        return _Dev(compiled) if compiled else None

    acc = types.SimpleNamespace(current_accelerator=current_accelerator, is_available=lambda: available,
                                current_device_index=lambda: index)
    return types.SimpleNamespace(accelerator=acc, device=_Dev)


def _torch_2_5(cuda: bool, mps: bool, index: int = 0) -> Any:
    return types.SimpleNamespace(
        device=_Dev,
        cuda=types.SimpleNamespace(is_available=lambda: cuda, current_device=lambda: index),
        backends=types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: mps)),
    )


def test_select_torch_device_torch_2_6(ctx: Any) -> None:
    api = "torch.accelerator.current_accelerator() + is_available()"
    info, dev = ctx.select_torch_device(_torch_2_6("cuda", True, index=1))
    assert info == {"compiled_accelerator": "cuda", "api": api, "selected": "cuda:1"} and str(dev) == "cuda:1"
    # a CUDA build on a host without a GPU: compiled for cuda, selects the CPU
    info, dev = ctx.select_torch_device(_torch_2_6("cuda", False))
    assert info == {"compiled_accelerator": "cuda", "api": api, "selected": "cpu"} and dev is None


@pytest.mark.parametrize(("cuda", "mps", "selected"), [(True, True, "cuda:2"), (False, True, "mps"),
                                                       (False, False, "cpu")])
def test_select_torch_device_before_torch_2_6(ctx: Any, cuda: bool, mps: bool, selected: str) -> None:
    info, dev = ctx.select_torch_device(_torch_2_5(cuda, mps, index=2))
    assert info == {"compiled_accelerator": None, "api": "torch.cuda.is_available()", "selected": selected}
    assert (str(dev) if dev is not None else "cpu") == selected


# -- the probes use them ----------------------------------------------------------------------


def test_render_isolation_reports_exceptions_through_ctx(envelope: dict[str, Any]) -> None:
    # envelope + probe in one namespace, as the image runs them
    program = harness() + "\n\n" + (PROBES / "render.py").read_text()
    ns: dict[str, Any] = {"__name__": "probe"}
    exec(compile(program, "<probe>", "exec"), ns)
    ctx = ns["ProbeContext"]({})

    def boom(params: dict[str, Any], send: Any) -> None:
        raise GLFailure("no display " + "x" * 3000)

    messages, exit_text, _ = ns["_render_isolated"](boom, {}, ctx)
    assert exit_text == "ok"
    assert messages[0]["error"] == ctx.exc_text(GLFailure("no display " + "x" * 3000))
    assert len(messages[0]["error"]) == 2000


def test_probes_parse_as_python_3_7_without_name_clashes() -> None:
    def top_level(tree: ast.Module) -> set[str]:
        names = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        return names

    shared: set[str] = set()
    for part in HARNESS:
        shared |= top_level(ast.parse((PROBES / f"{part}.py").read_text(), feature_version=(3, 7)))
    seen: dict[str, str] = {}
    for path in sorted(PROBES.glob("[!_]*.py")):
        # run, SHARED_IMPORTS, CUDA_CONTEXT and LIBRARIES are each probe's own declarations (a bundle runs
        # every probe in a namespace of its own); everything else must stay unique across probes.
        names = top_level(ast.parse(path.read_text(), filename=str(path), feature_version=(3, 7))) - {
            "run", "SHARED_IMPORTS", "CUDA_CONTEXT", "LIBRARIES"}
        assert not names & shared, f"{path.name} redefines envelope names {names & shared}"
        for name in names:
            assert name not in seen, f"{name} defined in both {seen[name]} and {path.name}"
            seen[name] = path.name


def test_os_release_with_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    # One bad byte in /etc/os-release ended the system probe (four rows ERROR, no file named).
    system = runpy.run_path(str(PROBES / "system.py"))
    path = tmp_path / "os-release"
    path.write_bytes(b'NAME="Debian GNU/Linux"\nPRETTY_NAME="Deb\xffian 12"\nID=debian\n')
    facts = system["_os_release"]((str(path),))
    assert facts["ID"] == "debian" and facts["PRETTY_NAME"] == "Deb\ufffdian 12"
    assert facts["_invalid_utf8"] == f"{path}: byte 40 is not UTF-8 (0xff)"


# -- libcuda: the one helper for the driver library ---------------------------------------------


def _driver(tmp_path: Path, init_rc: int, with_init: bool = True) -> Path:
    """A libcuda.so.1 built here with the driver API's C signatures, answering as a driver would."""
    if shutil.which("gcc") is None:
        missing("gcc", "gcc is not installed (run: python3 tests/images/provision.py)")
    src = tmp_path / "cuda.c"
    body = ("int cuDriverGetVersion(int *v) { *v = 13000; return 0; }\n"
            "int cuDeviceGetCount(int *n) { *n = 2; return 0; }\n")
    if with_init:
        body += f"int cuInit(unsigned int flags) {{ return {init_rc}; }}\n"
    src.write_text(body)
    lib = tmp_path / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True,
                   timeout=120)
    return tmp_path


def _libcuda_facts(where: Path, init: bool = True) -> dict[str, Any]:
    program = ("import json\nns = {'__name__': 'probe'}\n"
               f"exec(compile({harness()!r}, '<harness>', 'exec'), ns)\n"
               f"print(json.dumps(ns['ProbeContext']({{}}).libcuda(init={init})))\n")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"} | {"LD_LIBRARY_PATH": str(where)}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_libcuda_initialises_and_counts(tmp_path: Path) -> None:
    facts = _libcuda_facts(_driver(tmp_path, 0))
    assert facts == {"loaded": True, "path": str(tmp_path / "libcuda.so.1"), "cuInit": 0,
                     "driver_cuda_version": "13.0", "device_count": 2}


def test_libcuda_with_cuinit_failing_counts_nothing(tmp_path: Path) -> None:
    facts = _libcuda_facts(_driver(tmp_path, 100))
    assert facts["cuInit"] == 100 and facts["driver_cuda_version"] == "13.0" and "device_count" not in facts


def test_libcuda_without_init_reads_the_version_only(tmp_path: Path) -> None:
    facts = _libcuda_facts(_driver(tmp_path, 0), init=False)
    assert facts == {"loaded": True, "path": str(tmp_path / "libcuda.so.1"), "driver_cuda_version": "13.0"}


def test_a_stub_libcuda_without_cuinit_is_an_error_not_a_crash(tmp_path: Path) -> None:
    facts = _libcuda_facts(_driver(tmp_path, 0, with_init=False))
    assert facts["loaded"] is True and facts["error"].startswith("AttributeError: ")


def test_no_probe_touches_libcuda_but_through_the_helper() -> None:
    """The three copies of the CUDA initialisation (system, torch_device, xgboost_train) became ctx.libcuda."""
    driver_api = {"cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuda_driver_version"}
    for path in sorted(PROBES.glob("[!_]*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr not in driver_api, f"{path.name} calls {node.attr} itself"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "libcuda.so" not in node.value, f"{path.name} loads libcuda itself"
    assert {"system.py", "torch_device.py", "xgboost_train.py"} <= {
        p.name for p in PROBES.glob("[!_]*.py") if "ctx.libcuda(" in p.read_text()}


# -- library probes: the standard facts, the declared libraries ---------------------------------------


def test_every_library_probe_imports_through_the_helper_and_declares_its_library() -> None:
    from pytest_containercheck.engine.probing import available_probes, library_modules

    declared: list[str] = []
    for name in available_probes():
        source = (PROBES / f"{name}.py").read_text()
        libraries = re.search(r"^LIBRARIES = \(([^)]*)\)", source, re.M)
        imports = "ctx.import_library(" in source
        assert bool(libraries) == imports, f"{name}: a library probe declares LIBRARIES and imports with the helper"
        if libraries:
            declared += [m for m in re.findall(r'"([\w.]+)"', libraries.group(1)) if m not in declared]
    assert set(library_modules()) == set(declared) >= {"torch", "xgboost", "transformers", "pyvista", "vtk"}
