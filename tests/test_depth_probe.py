"""The facts one level down, gathered in the image (``probes/_depth.py`` behind ``ctx.explain_load``
and ``ctx.import_library``), checked against the real thing on this machine:

* the loader's search, replayed from the files, against glibc's own: small libraries built here with
  gcc (symbol versions from a version script, DT_RUNPATH and DT_RPATH, an older copy first on
  ``LD_LIBRARY_PATH``), loaded for real with ctypes; where the load works, the file we predict is
  the file ``/proc/self/maps`` shows; where it fails, glibc's message names what we found;
* the loader cache read from a cache ``ldconfig`` wrote, against ``ldconfig -p``;
* PEP 440 specifiers and PEP 508 markers against pypa/packaging (what pip uses);
* the standard facts of an import that fails, from distributions installed in a directory here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet

from pytest_containercheck.engine.probing import harness

from helpers import missing

PROBE = f"""
import json, sys
ns = {{"__name__": "probe"}}
exec(compile({harness()!r}, "<harness>", "exec"), ns)
ctx = ns["ProbeContext"]({{}})
what = sys.argv[1]
if what == "load":
    resolved = ns["_DpLoader"]().resolve(sys.argv[2]) if "/" in sys.argv[2] else None  # before: then, as ld.so sees it
    lib, info = ctx.load_library(sys.argv[2])
    maps = [l.split()[-1] for l in open("/proc/self/maps") if ".so" in l.split()[-1]]
    print(json.dumps({{"info": info, "maps": maps, "resolved": resolved}}))
else:
    mod, facts = ctx.import_library(*sys.argv[2:])
    print(json.dumps(facts))
"""


def _ns() -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "probe"}
    exec(compile(harness(), "<harness>", "exec"), ns)
    return ns


def _run(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env={**full, **(env or {})}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- the loader, replayed -----------------------------------------------------------------------


def _cc(out: Path, source: str, *args: str, script: str | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(source)
    argv = ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *args]
    if script is not None:
        ver = out.with_suffix(".map")
        ver.write_text(script)
        argv.append(f"-Wl,--version-script={ver}")
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Libraries built here: libdep.so.1 in two versions (DEP_1.0 only; DEP_1.0 and DEP_2.0), the same
    without symbol versions (libdepu, old: a only; new: a and b), libraries that need them found
    through DT_RUNPATH or DT_RPATH, one that needs a library that is gone, and an RPATH inherited
    down a chain."""
    if shutil.which("gcc") is None:
        missing("gcc", "gcc is not installed (run: python3 tests/images/provision.py)")
    root = tmp_path_factory.mktemp("libs")
    a, ab = "int a(void){return 1;}\n", "int a(void){return 1;}\nint b(void){return 2;}\n"
    _cc(root / "old/libdep.so.1", a, "-Wl,-soname,libdep.so.1", script="DEP_1.0 { global: a; local: *; };")
    _cc(root / "new/libdep.so.1", ab, "-Wl,-soname,libdep.so.1",
        script="DEP_1.0 { global: a; local: *; };\nDEP_2.0 { global: b; } DEP_1.0;")
    calls_b = "int b(void);\nint top(void){return b();}\n"
    for name, dtags in (("runpath", "--enable-new-dtags"), ("rpath", "--disable-new-dtags")):
        _cc(root / f"{name}/libtop.so", calls_b, str(root / "new/libdep.so.1"), f"-Wl,{dtags}",
            "-Wl,-rpath,$ORIGIN/../new")
    _cc(root / "oldu/libdepu.so.1", a, "-Wl,-soname,libdepu.so.1")
    _cc(root / "newu/libdepu.so.1", ab, "-Wl,-soname,libdepu.so.1")
    _cc(root / "topu/libtopu.so", calls_b, str(root / "newu/libdepu.so.1"), "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN/../newu")
    gone = _cc(root / "gone/libgone.so.1", a, "-Wl,-soname,libgone.so.1")
    _cc(root / "topm/libtopm.so", "int a(void);\nint m(void){return a();}\n", str(gone))
    gone.unlink()
    _cc(root / "chain/deps/libleaf.so.1", a, "-Wl,-soname,libleaf.so.1")
    _cc(root / "chain/libmid.so", "int a(void);\nint mid(void){return a();}\n", str(root / "chain/deps/libleaf.so.1"),
        "-Wl,-soname,libmid.so")
    _cc(root / "chain/libouter.so", "int mid(void);\nint outer(void){return mid();}\n", str(root / "chain/libmid.so"),
        "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN:$ORIGIN/deps")
    return root


def test_elf_facts_are_what_the_linker_wrote(libs: Path) -> None:
    ns = _ns()
    new = ns["_dp_elf"](str(libs / "new/libdep.so.1"), True)
    assert new["soname"] == "libdep.so.1" and new["verdef"] == ["DEP_1.0", "DEP_2.0"]
    assert {"a", "b"} <= new["defined"] and new["class"] == 64
    top = ns["_dp_elf"](str(libs / "runpath/libtop.so"))
    assert "libdep.so.1" in top["needed"] and top["runpath"] == "$ORIGIN/../new" and top["rpath"] is None
    assert ["DEP_2.0", False] in top["verneed"]["libdep.so.1"]
    assert ns["_dp_elf"](str(libs / "rpath/libtop.so"))["rpath"] == "$ORIGIN/../new"
    assert ns["_dp_elf"](str(libs / "old/libdep.so.c")) is None  # not an ELF file
    assert "b" not in ns["_dp_elf"](str(libs / "oldu/libdepu.so.1"), True)["defined"]


def test_ld_library_path_before_runpath_gives_the_old_version(libs: Path) -> None:
    """glibc searches LD_LIBRARY_PATH before DT_RUNPATH: the old libdep is taken and the load fails
    with glibc's own words; the facts name it, where it came from, and the file that has DEP_2.0."""
    out = _run(["load", str(libs / "runpath/libtop.so")], {"LD_LIBRARY_PATH": str(libs / "old")})
    info = out["info"]
    assert not info["loaded"]
    assert info["error"] == (f"{libs}/old/libdep.so.1: version `DEP_2.0' not found (required by "
                             f"{libs}/runpath/libtop.so)")
    [problem] = info["resolution"]["problems"]
    assert (problem["kind"], problem["name"], problem["versions"]) == ("version", "libdep.so.1", ["DEP_2.0"])
    assert problem["taken"] == {"path": f"{libs}/old/libdep.so.1", "via": "LD_LIBRARY_PATH",
                                "origin": "LD_LIBRARY_PATH"}
    assert problem["newest_provided"] == {"DEP": "DEP_1.0"}
    good = [a for a in problem["alternatives"] if a["satisfies"]]
    assert [a["path"] for a in good] == [f"{libs}/new/libdep.so.1"]
    assert good[0]["via"].startswith(f"RUNPATH of {libs}/runpath/libtop.so")


@pytest.mark.parametrize(("case", "env", "expected"), [
    ("rpath", "old", "new"),      # DT_RPATH is searched before LD_LIBRARY_PATH: the load works
    ("runpath", None, "new"),     # no LD_LIBRARY_PATH: DT_RUNPATH finds it
])
def test_the_file_we_predict_is_the_file_the_loader_maps(libs: Path, case: str, env: str | None,
                                                          expected: str) -> None:
    out = _run(["load", str(libs / case / "libtop.so")], {"LD_LIBRARY_PATH": str(libs / env)} if env else {})
    assert out["info"]["loaded"]
    mapped = [m for m in out["maps"] if m.endswith("/libdep.so.1")]
    predicted = [d for d in out["resolved"] if d["name"] == "libdep.so.1"]
    assert mapped == [f"{libs}/{expected}/libdep.so.1"] * len(mapped) and mapped
    assert predicted[0]["path"] == mapped[0]
    assert predicted[0]["via"].startswith(("RPATH of", "RUNPATH of"))


def test_an_rpath_is_searched_for_the_dependencies_of_its_dependencies(libs: Path) -> None:
    """libmid has no RPATH; its libleaf is found through the RPATH of libouter, which loaded it."""
    out = _run(["load", str(libs / "chain/libouter.so")])
    assert out["info"]["loaded"]
    leaf = next(d for d in out["resolved"] if d["name"] == "libleaf.so.1")
    assert leaf["path"] in out["maps"] and leaf["needed_by"] == f"{libs}/chain/libmid.so"
    assert leaf["via"].startswith(f"RPATH of {libs}/chain/libouter.so")


def test_an_undefined_symbol_names_the_file_that_lacks_it_and_the_one_that_has_it(libs: Path) -> None:
    out = _run(["load", str(libs / "topu/libtopu.so")], {"LD_LIBRARY_PATH": str(libs / "oldu")})
    info = out["info"]
    assert info["error"] == f"{libs}/topu/libtopu.so: undefined symbol: b"
    problem = next(p for p in info["resolution"]["problems"] if p["kind"] == "symbol")
    assert (problem["symbol"], problem["name"], problem["taken"]["path"]) == ("b", "libdepu.so.1",
                                                                           f"{libs}/oldu/libdepu.so.1")
    assert [a["path"] for a in problem["alternatives"] if a["satisfies"]] == [f"{libs}/newu/libdepu.so.1"]


def test_a_missing_dependency_of_a_present_library(libs: Path) -> None:
    out = _run(["load", str(libs / "topm/libtopm.so")])
    info = out["info"]
    assert info["error"] == "libgone.so.1: cannot open shared object file: No such file or directory"
    [problem] = info["resolution"]["problems"]
    assert (problem["kind"], problem["name"], problem["needed_by"]) == ("missing", "libgone.so.1",
                                                                         f"{libs}/topm/libtopm.so")
    assert problem["owners"] == []


def test_a_library_that_is_not_there_gets_no_resolution() -> None:
    out = _run(["load", "libcontainercheck-none.so.7"])
    assert out["info"] == {"loaded": False, "error": "libcontainercheck-none.so.7: cannot open shared object file: "
                                                     "No such file or directory"}


def test_the_loader_cache_is_read_as_ldconfig_wrote_it(libs: Path, tmp_path: Path) -> None:
    if shutil.which("ldconfig") is None and not Path("/sbin/ldconfig").exists():
        missing("ldconfig", "no ldconfig here")
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    conf = tmp_path / "ld.so.conf"
    conf.write_text(f"{libs}/new\n{libs}/old\n{libs}/newu\n")
    cache = tmp_path / "ld.so.cache"
    subprocess.run([ldconfig, "-X", "-f", str(conf), "-C", str(cache)], check=True, capture_output=True, timeout=120)
    listed = subprocess.run([ldconfig, "-p", "-C", str(cache)], check=True, capture_output=True, text=True,
                            timeout=120).stdout
    ours = [(name, path) for name, path, _flags, _hwcap in _ns()["_dp_ldcache"](str(cache))]
    theirs = [(line.split(" (")[0].strip(), line.rsplit("=> ", 1)[1].strip())
              for line in listed.splitlines()[1:] if "=>" in line]
    assert ours == theirs and ("libdep.so.1", f"{libs}/new/libdep.so.1") in ours


def test_ld_so_conf_includes_are_followed(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("# a comment\n/opt/a/lib\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("/opt/b/lib\n/opt/a/lib\n")
    main = tmp_path / "ld.so.conf"
    main.write_text(f"include {tmp_path}/conf.d/*.conf\n/usr/local/lib\n")
    assert _ns()["_dp_ldconf"](str(main)) == {"/opt/a/lib": f"{tmp_path}/conf.d/10-a.conf",
                                               "/opt/b/lib": f"{tmp_path}/conf.d/20-b.conf",
                                               "/usr/local/lib": str(main)}


# -- PEP 440 and PEP 508, as pip reads them --------------------------------------------------------

VERSIONS = ["0.9", "1.0", "1.0.0", "1.0a1", "1.0b2", "1.0rc1", "1.0.post1", "1.0.dev3", "1.1", "1.4.5", "1.5",
            "2.0", "2.0+local.7", "2.4.6", "10.0", "1!0.5", "0.22.1", "0.23.1", "0.23.3", "0.24.0",
            "1.0+abc", "2.0.dev1", "1.4.5.1", "1.0.0.post1", "1.4", "1.28.0rc1"]
SPECS = ["", ">=1.0", "<2", "<2.0", ">1.0", "<=1.0", "==1.0", "!=1.0", "==1.*", "!=1.*", "~=1.4", "~=1.4.5",
         "<1.28.0,>=1.21.6", "<0.24.0,>=0.23.1", ">=0.22.0,<=0.23.0", "==2.0+local.7", ">1.0.post1", "<1.0rc1",
         "===1.0", ">=1!0.1", ">1.0a1,<1.0"]


@pytest.mark.parametrize("spec", SPECS)
def test_specifiers_agree_with_packaging(spec: str) -> None:
    ok = _ns()["_dp_spec_ok"]
    for version in VERSIONS:
        assert ok(spec, version) == SpecifierSet(spec).contains(version, prereleases=True), (spec, version)


MARKERS = [
    'python_version >= "3.8"', 'python_version < "3"', "platform_system == 'Linux'",
    'platform_system == "Linux" and platform_machine != "aarch64"', "sys_platform == 'win32' or os_name == 'posix'",
    'extra == "dask"', 'extra == "Plotting"', '(python_version >= "3.6" and extra == "x") or sys_platform == "linux"',
    'platform_machine in "x86_64 aarch64"', 'platform_machine not in "ppc64le s390x"',
    'python_full_version >= "3.9.1"', 'implementation_name == "cpython"', "os.name == 'posix'",
    "platform_python_implementation != 'PyPy'",
]


@pytest.mark.parametrize("marker", MARKERS)
def test_markers_agree_with_packaging(marker: str) -> None:
    ns = _ns()
    assert ns["_dp_marker"](marker, ns["_dp_marker_env"]()) == Marker(marker).evaluate({"extra": ""}), marker


def test_requirements_parse_as_metadata_writes_them() -> None:
    parse = _ns()["_dp_requirement"]
    assert parse("tokenizers<0.24.0,>=0.23.1") == ("tokenizers", "<0.24.0,>=0.23.1", "")
    assert parse("nvidia-nccl-cu12; platform_system == 'Linux'") == ("nvidia-nccl-cu12", "",
                                                                    "platform_system == 'Linux'")
    assert parse("pandas>=1.2; extra == 'pandas'") == ("pandas", ">=1.2", "extra == 'pandas'")
    assert parse("requests[socks] (>=2.0)") == ("requests", ">=2.0", "")
    assert parse("pkg @ https://example.invalid/pkg.whl") == ("pkg", "", "")


# -- an import that fails: the standard facts -------------------------------------------------------


def _dist(site: Path, name: str, version: str, requires: list[str], package: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "top_level.txt").write_text("\n".join(sorted({p.split("/")[0] for p in package})) + "\n")
    for rel, code in package.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(code))


def test_a_requirement_that_is_not_installed(tmp_path: Path) -> None:
    _dist(tmp_path, "treelib", "3.2.0", ["numlib", "sparselib>=1.6", "gpulib; platform_system == 'Windows'",
                                         "plotlib; extra == 'plot'"],
          {"treelib/__init__.py": "from . import core\n", "treelib/core.py": "import numlib\n"})
    facts = _run(["import", "treelib"], {"PYTHONPATH": str(tmp_path)})
    assert (facts["installed"], facts["found"], facts["missing_module"]) == (False, True, "numlib")
    assert facts["distribution"] == {"name": "treelib", "version": "3.2.0"}
    assert facts["raised_in"]["module"] == "treelib.core" and facts["raised_in"]["distribution"] == "treelib"
    assert facts["import_chain"] == ["treelib", "treelib.core"]
    unmet = [(u["requires"], u["installed"]) for u in facts["requirements"]["unmet"]]
    assert unmet == [("numlib", None), ("sparselib>=1.6", None)]  # not gpulib (Windows), not plotlib (an extra)


def test_an_installed_requirement_of_the_wrong_version_and_the_module_that_raised(tmp_path: Path) -> None:
    _dist(tmp_path, "toklib", "0.22.1", [], {"toklib/__init__.py": "VERSION = '0.22.1'\n"})
    _dist(tmp_path, "modellib", "5.23.0", ["toklib<0.24.0,>=0.23.1", "hublib"],
          {"modellib/__init__.py": "from .utils import versions\n",
           "modellib/utils/__init__.py": "",
           "modellib/utils/versions.py": """
                import toklib
                raise ImportError("toklib>=0.23.1,<0.24.0 is required for a normal functioning of this module, "
                                  "but found toklib==0.22.1.")
           """})
    _dist(tmp_path, "hublib", "2.4.0", ["toklib>=0.20"], {"hublib/__init__.py": ""})
    facts = _run(["import", "modellib"], {"PYTHONPATH": str(tmp_path)})
    assert facts["error_type"] == "ImportError" and "missing_module" not in facts
    assert facts["raised_in"]["module"] == "modellib.utils.versions"
    assert facts["requirements"]["unmet"] == [{"distribution": "modellib", "version": "5.23.0",
                                              "requires": "toklib<0.24.0,>=0.23.1", "name": "toklib",
                                              "installed": "0.22.1"}]
    assert facts["requirements"]["checked"] == 3  # modellib, toklib and hublib (whose toklib>=0.20 is met)


def test_an_import_that_works_gives_the_distribution(tmp_path: Path) -> None:
    _dist(tmp_path, "fine-lib", "1.0", [], {"fine_lib/__init__.py": ""})
    facts = _run(["import", "fine_lib"], {"PYTHONPATH": str(tmp_path)})
    assert facts == {"installed": True, "distribution": {"name": "fine-lib", "version": "1.0"}}
    absent = _run(["import", "no_such_containercheck_lib"], {"PYTHONPATH": str(tmp_path)})
    assert (absent["installed"], absent["found"], absent["missing_module"]) == (False, False,
                                                                                 "no_such_containercheck_lib")


def test_a_library_loaded_with_ctypes_whose_dependency_is_missing(libs: Path, tmp_path: Path) -> None:
    """As xgboost loads libxgboost.so: the loader names only the missing file, never who needed it; the
    distribution's own shared objects (its RECORD) are resolved to find the one that needs it."""
    _dist(tmp_path, "boostlib", "3.2.0", [], {"boostlib/__init__.py": """
        import ctypes, os
        _LIB = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "lib", "libtopm.so"))
    """})
    (tmp_path / "boostlib/lib").mkdir()
    shutil.copy2(libs / "topm/libtopm.so", tmp_path / "boostlib/lib/libtopm.so")
    (tmp_path / "boostlib-3.2.0.dist-info/RECORD").write_text("boostlib/__init__.py,,\nboostlib/lib/libtopm.so,,\n")
    facts = _run(["import", "boostlib"], {"PYTHONPATH": str(tmp_path)})
    assert facts["error"] == "OSError: libgone.so.1: cannot open shared object file: No such file or directory"
    [native] = facts["native"]
    assert native["target_path"] == str(tmp_path / "boostlib/lib/libtopm.so")
    assert [(p["kind"], p["name"]) for p in native["problems"]] == [("missing", "libgone.so.1")]


def test_an_extension_module_whose_dependency_is_missing(libs: Path, tmp_path: Path) -> None:
    """CPython gives the extension's file as ImportError.path: that is the library resolved."""
    ext = f"fastlib/_core{sysconfig.get_config_var('EXT_SUFFIX')}"
    _dist(tmp_path, "fastlib", "1.0", [], {"fastlib/__init__.py": "from . import _core\n"})
    _cc(tmp_path / ext, "int m(void);\nint PyInit__core(void){return m();}\n", str(libs / "topm/libtopm.so"))
    (tmp_path / "fastlib-1.0.dist-info/RECORD").write_text(f"fastlib/__init__.py,,\n{ext},,\n")
    facts = _run(["import", "fastlib"], {"PYTHONPATH": str(tmp_path), "LD_LIBRARY_PATH": str(libs / "topm")})
    assert facts["error"] == "ImportError: libgone.so.1: cannot open shared object file: No such file or directory"
    [native] = facts["native"]
    assert native["target_path"] == str(tmp_path / ext)
    assert [(p["kind"], p["name"], p["needed_by"]) for p in native["problems"]] == [
        ("missing", "libgone.so.1", str(libs / "topm/libtopm.so"))]
