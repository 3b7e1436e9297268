"""No fix tells to install what the facts show installed.

Every recorded probe result in ``tests/data`` (real runs: the ML, render, GPU and depth-two images,
this host, the H200) goes through every verdict of its rows, on a host without a GPU and on the
recorded GPU host, with and without the GPU flags; each fix is read for what it installs (``pip
install``, ``apt-get install``, and "reinstall X" in prose) and checked against what the same facts
show installed (distributions and their versions, the Debian packages of libraries that are there).
Installing again what is there is allowed only when the fix changes it: another version (a
specifier the installed one does not meet, ``--upgrade``), another build (``--index-url``), after
removing it, in another image, or ``apt-get install --reinstall`` of the package a missing file
belongs to.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_containercheck.engine.verdict import Verdict
from pytest_containercheck.engine.verdicts import gpu, render, system, torch, transformers, xgboost
from pytest_containercheck.engine.verdicts.native import DEBIAN_PACKAGES

DATA = Path(__file__).resolve().parent / "data"
NO_GPU: dict[str, Any] = json.loads((DATA / "ml" / "host_facts.json").read_text())["facts"]
GPU: dict[str, Any] = json.loads((DATA / "ml" / "host_facts_h200.json").read_text())["facts"]
HOSTS = {"no GPU": NO_GPU, "H200": GPU}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _render(facts: Mapping[str, Any], host: Mapping[str, Any]) -> Iterator[Verdict]:
    for hw in (False, True):
        for runtime in ("docker", "apptainer"):
            yield render.render_verdict(facts, str(facts.get("backend") or "egl"), require_hw_render=hw,
                                        host_has_gpu=bool(host.get("has_gpu")), runtime=runtime,
                                        gpu_vendor=host.get("gpu_vendor"), gpu={"attached": True})


#: Every verdict of a probe's rows, given its facts and a host.
VERDICTS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Iterator[Verdict | None]]] = {
    "torch_device": lambda f, h: iter([torch.torch_cpu(f), torch.torch_cuda_build(f, None, h),
                                       torch.torch_cuda_build(f, "an intent", h), torch.torch_cuda(f, h)]),
    "xgboost_train": lambda f, h: iter([xgboost.xgboost_cpu(f), xgboost.xgboost_cuda_build(f, None, h),
                                        xgboost.xgboost_cuda_build(f, "an intent", h), xgboost.xgboost_cuda(f, h)]),
    "transformers_infer": lambda f, h: iter([
        transformers.transformers_cpu(f), transformers.transformers_cuda_build(f, None, h),
        transformers.transformers_cuda_build(f, "an intent", h), transformers.transformers_cuda(f, h),
        transformers.transformers_cache(f)]),
    "render": _render,
    "system": lambda f, h: iter([system.os_and_glibc(f), system.writable_cache(f), gpu.gpu_devices(f, h),
                                 gpu.nvidia_smi(f, h), gpu.libcuda(f, h)]),
}


def _probe_of(doc: Mapping[str, Any]) -> str | None:
    source = doc.get("source") if isinstance(doc.get("source"), Mapping) else {}
    facts = doc.get("facts") or {}
    if source.get("probe"):
        return str(source["probe"])
    if "backend" in facts and "requested_window_class" in facts:
        return "render"
    return None


def recorded() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in sorted(DATA.rglob("*.json")):
        doc = json.loads(path.read_text())
        probe = _probe_of(doc) if isinstance(doc, dict) else None
        if probe in VERDICTS and doc.get("status") == "ok":
            out.append((str(path.relative_to(DATA)), probe, doc["facts"]))
    return out


# -- what the facts show installed ---------------------------------------------------------------


def installed(facts: Any, probe: str = "") -> tuple[dict[str, str], set[str]]:
    """(distributions: canonical name -> version, Debian packages whose files are there)."""
    dists: dict[str, str] = {}
    packages: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key == "dist_versions" and isinstance(item, Mapping):
                    dists.update({_canon(k): str(v) for k, v in item.items() if v})
                elif key == "distribution" and isinstance(item, Mapping) and item.get("name"):
                    dists[_canon(str(item["name"]))] = str(item.get("version"))
                elif key == "distributions" and isinstance(item, list):
                    dists.update({_canon(str(d["name"])): str(d.get("version")) for d in item
                                  if isinstance(d, Mapping) and d.get("name")})
                elif key == "unmet" and isinstance(item, list):
                    dists.update({_canon(str(u["name"])): str(u["installed"]) for u in item
                                  if isinstance(u, Mapping) and u.get("installed")})
                elif key == "target_owners" and isinstance(item, list):
                    packages.update(map(str, item))
                elif key == "target_path" and item:
                    name = Path(str(item)).name
                    for soname, package in DEBIAN_PACKAGES.items():
                        if name == soname:
                            packages.add(package)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(facts)
    if isinstance(facts, Mapping) and facts.get("installed") and facts.get("version"):
        if probe == "torch_device":
            dists["torch"] = str(facts["version"])
        if probe == "transformers_infer":
            dists["transformers"] = str(facts["version"])
            dists["torch"] = str(facts.get("torch_version"))
    if isinstance(facts, Mapping):
        for key, name in (("vtk_version", "vtk"), ("pyvista_version", "pyvista")):
            if facts.get(key) and name not in dists and not (name == "vtk" and facts.get("vtk_dist")):
                dists[name] = str(facts[key])
        libs = facts.get("libraries") or {}
        for soname, info in libs.items() if isinstance(libs, Mapping) else ():
            if isinstance(info, Mapping) and (info.get("loaded") or (info.get("resolution") or {}).get("target_path")):
                for lib, (debian, _rhel) in render.PACKAGES.items():
                    if lib == soname:
                        packages.update(debian.split())
    return dists, packages


def _missing_owners(facts: Any) -> set[str]:
    """Packages that list a file the facts show missing (what ``--reinstall`` restores)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if value.get("kind") == "missing":
                found.update(map(str, value.get("owners") or []))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(facts)
    return found


# -- what a fix installs ---------------------------------------------------------------------------

_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._+-]*)(\[[^\]]*\])?((?:===|==|!=|~=|<=|>=|<|>)[^\s;]*)?$")
_PROSE = {"in", "into", "within", "from", "there", "then", "and", "or", "the", "a", "an", "to", "for", "with", "on",
          "it", "its", "that", "which", "instead"}
_VALUED = ("--index-url", "--extra-index-url", "-i", "-c", "-r", "--constraint", "--requirement", "--target")


def _commands(fix: str, tool: str) -> Iterator[tuple[list[str], list[str]]]:
    """``(options, arguments)`` of each ``<tool> install`` in *fix*, up to where the sentence goes on."""
    for m in re.finditer(rf"\b{tool} install\b([^;()]*)", fix):
        text = re.split(r",? or |, and |\.\s", m.group(1))[0]
        try:
            tokens = shlex.split(text)
        except ValueError:
            tokens = text.split()
        options: list[str] = []
        args: list[str] = []
        skip = False
        for tok in tokens:
            if skip:
                options.append(tok)
                skip = False
            elif tok.startswith("-"):
                options.append(tok)
                skip = tok in _VALUED
            elif _REQ.match(tok.rstrip(",")) and tok.lower() not in _PROSE:
                args.append(tok.rstrip(","))
                if tok.endswith(","):  # the sentence goes on after the command
                    break
            else:
                break
        yield options, args


def violations(fix: str | None, facts: Any, probe: str = "") -> list[str]:
    """What *fix* would install although *facts* show it installed, unchanged."""
    if not fix:
        return []
    dists, packages = installed(facts, probe)
    found = []
    changes = re.search(r"\buninstall\b|\bremove it\b|\brebuild the image\b|\bon a base with\b", fix)
    for options, args in _commands(fix, "pip"):
        varied = any(o in ("--upgrade", "-U", "--force-reinstall", "--index-url", "-i") for o in options)
        for arg in args:
            m = _REQ.match(arg)
            assert m is not None
            name, spec = _canon(m.group(1)), m.group(3) or ""
            have = dists.get(name)
            if have is None or varied or changes:
                continue
            try:
                excluded = bool(spec) and not SpecifierSet(spec).contains(Version(have), prereleases=True)
            except (InvalidSpecifier, InvalidVersion):
                excluded = bool(spec)
            if not excluded:
                found.append(f"pip install {arg}: {name} {have} is installed")
    for options, args in _commands(fix, "apt-get"):
        for pkg in args:
            if "--reinstall" in options:
                if pkg not in _missing_owners(facts):
                    found.append(f"apt-get install --reinstall {pkg}: no file of it is missing")
            elif pkg in packages:
                found.append(f"apt-get install {pkg}: its library is in the image")
    for m in re.finditer(r"\breinstall (?:the )?`?([A-Za-z0-9][A-Za-z0-9._-]*)", fix):
        if _canon(m.group(1)) in dists:
            found.append(f"reinstall {m.group(1)}: it is installed")
    return found


# -- the walk --------------------------------------------------------------------------------------

RECORDED = recorded()


def test_the_walk_covers_every_probe_with_recorded_facts_and_the_depth_two_cases() -> None:
    assert {probe for _, probe, _ in RECORDED} == set(VERDICTS)
    assert {name for name, _, _ in RECORDED if name.startswith("depth/")} == {
        f"depth/{case}.json" for case in ("glibcxx-osmesa", "glibcxx-egl", "symbol-egl", "slimmed-osmesa",
                                          "slimmed-egl", "nonumpy-xgboost", "pin-transformers", "abi-xgboost")}


@pytest.mark.parametrize(("name", "probe", "facts"), RECORDED, ids=[r[0] for r in RECORDED])
def test_no_fix_installs_what_its_facts_show_installed(name: str, probe: str, facts: dict[str, Any]) -> None:
    fixes = 0
    for host_name, host in HOSTS.items():
        for verdict in VERDICTS[probe](facts, host):
            if verdict is None or not verdict.fix:
                continue
            fixes += 1
            assert violations(verdict.fix, facts, probe) == [], (host_name, verdict.detail, verdict.fix)
    if name.startswith("depth/"):
        assert fixes, "a depth-two case has a failing row with a fix"


def _depth(case: str) -> dict[str, Any]:
    return dict(json.loads((DATA / "depth" / f"{case}.json").read_text())["facts"])


def test_the_walk_flags_what_the_verdicts_said_before() -> None:
    """The fixes of the verdicts before depth two, on the same facts: each is caught."""
    glibcxx = _depth("glibcxx-osmesa")
    assert violations("install in the image: apt-get install -y libosmesa6 (Debian/Ubuntu) or dnf install -y "
                      "mesa-libOSMesa (RHEL/Fedora)", glibcxx, "render") == [
        "apt-get install libosmesa6: its library is in the image"]
    assert violations("install in the image: apt-get install -y libegl-mesa0 (Debian/Ubuntu)",
                      _depth("symbol-egl"), "render") == ["apt-get install libegl-mesa0: its library is in the image"]
    assert violations("see the evidence; reinstall transformers and torch with matching versions",
                      _depth("pin-transformers"), "transformers_infer") == ["reinstall transformers: it is installed"]
    abi = _depth("abi-xgboost")
    assert violations("pip install xgboost-cpu", abi, "xgboost_train") == [
        "pip install xgboost-cpu: xgboost-cpu 3.2.0 is installed"]
    assert violations("pip install 'numpy>=2'", abi, "xgboost_train") == [
        "pip install numpy>=2: numpy 2.4.6 is installed"]
    # what changes what is there is not flagged
    assert violations("pip install --upgrade scipy; or pip install 'numpy<1.28.0,>=1.21.6'", abi, "xgboost_train") == []
    assert violations("apt-get update && apt-get install --reinstall -y libllvm15", _depth("slimmed-osmesa"),
                      "render") == []
    assert violations("apt-get install --reinstall -y libosmesa6", glibcxx, "render") == [
        "apt-get install --reinstall libosmesa6: no file of it is missing"]
