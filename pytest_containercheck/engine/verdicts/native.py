"""A shared library that is installed but does not load: which dependency breaks it, where the loader
took that dependency from, and the fix that repairs it (never "install" the library that is there).

Reads what ``ctx.explain_load`` found in the image (``probes/_depth.py``): glibc's own search (the
needing object's DT_RPATH, ``LD_LIBRARY_PATH``, its DT_RUNPATH, ``/etc/ld.so.cache``, the default
directories) replayed from the files, the symbol versions each file defines, the file every
dependency resolved to and the other files of that name, and the Debian packages that list a file.
The loader's messages it matches are glibc's (``elf/dl-version.c``: "version `V' not found (required
by X)"; ``elf/dl-lookup.c``: "X: undefined symbol: S"; ``elf/dl-load.c``: "N: cannot open shared
object file").
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEBIAN_PACKAGES", "Cause", "explain_native"]


@dataclasses.dataclass(frozen=True)
class Cause:
    """What breaks a library, one level down: the sentence for the cell, the fix, whose fault."""

    what: str
    fix: str
    fault: str | None = "image"


#: The Debian package of a shared library the ML and rendering stacks need, for a dependency that no
#: installed package lists (a file copied in without its package): ``dpkg -S`` on Debian 12.
DEBIAN_PACKAGES: dict[str, str] = {
    "libgomp.so.1": "libgomp1", "libstdc++.so.6": "libstdc++6", "libgcc_s.so.1": "libgcc-s1",
    "libgfortran.so.5": "libgfortran5", "libquadmath.so.0": "libquadmath0", "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1", "libffi.so.8": "libffi8", "libexpat.so.1": "libexpat1", "libxml2.so.2": "libxml2",
    "libedit.so.2": "libedit2", "libtinfo.so.6": "libtinfo6", "libz3.so.4": "libz3-4",
    "libLLVM-15.so.1": "libllvm15", "libLLVM-14.so.1": "libllvm14", "libglapi.so.0": "libglapi-mesa",
    "libOSMesa.so.8": "libosmesa6", "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1", "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0", "libGLdispatch.so.0": "libglvnd0", "libEGL_mesa.so.0": "libegl-mesa0",
    "libgbm.so.1": "libgbm1", "libdrm.so.2": "libdrm2", "libX11.so.6": "libx11-6", "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1", "libXext.so.6": "libxext6", "libXrender.so.1": "libxrender1", "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6", "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
    "libwayland-client.so.0": "libwayland-client0", "libwayland-server.so.0": "libwayland-server0",
    "libsensors.so.5": "libsensors5", "libelf.so.1": "libelf1",
}

_VERSION = re.compile(r"version `([^']+)' not found \(required by ([^)]+)\)")
_SYMBOL = re.compile(r"(\S+): undefined symbol: ([^,\s]+)")
_CANNOT_OPEN = re.compile(r"([^\s:]+): cannot open shared object file")


def _said(place: Mapping[str, Any]) -> str:
    """Where the loader found a file, as a person would look for it."""
    via, origin = str(place.get("via") or ""), str(place.get("origin") or "")
    if via == "LD_LIBRARY_PATH":
        return "LD_LIBRARY_PATH"
    if via == "ld.so.cache":
        return f"loader cache: {origin[len('listed in '):]}" if origin.startswith("listed in") else "loader cache"
    m = re.match(r"(RUNPATH|RPATH) of (\S+)", via)
    if m:
        return f"{m.group(1)} of {os.path.basename(m.group(2))}"
    return origin or via or "?"


def _who(needer: str, label: str) -> str:
    return "it" if label.split(" ")[0] == needer else f"its dependency {needer}"


def _good(problem: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((a for a in problem.get("alternatives") or [] if a.get("satisfies")), None)


def _remove_dir_fix(problem: Mapping[str, Any], search: Mapping[str, Any], good: Mapping[str, Any] | None) -> str:
    """The fix when the wrong file came from a directory the image added to the loader's search."""
    taken = problem.get("taken") or {}
    directory = os.path.dirname(str(taken.get("path")))
    then = f", so that the loader takes {good['path']}" if good else ""
    if taken.get("via") == "LD_LIBRARY_PATH":
        rest = [d for d in search.get("LD_LIBRARY_PATH") or [] if d != directory]
        value = ":".join(rest)
        return f"remove {directory} from the image's LD_LIBRARY_PATH (Dockerfile: ENV LD_LIBRARY_PATH={value}){then}"
    if taken.get("via") == "ld.so.cache":
        conf = (search.get("ld_so_conf") or {}).get(directory)
        if conf:
            alone = [d for d, f in (search.get("ld_so_conf") or {}).items() if f == conf] == [directory]
            how = (f"RUN rm {shlex.quote(conf)} && ldconfig" if alone
                   else f"delete the line {directory} from {conf}, then RUN ldconfig")
            return (f"take {directory} out of the loader's configuration ({conf}) and rebuild its cache "
                    f"(Dockerfile: {how}){then}")
    return (f"replace {taken.get('path')} with a build that has what is needed, or take {directory} out of the "
            f"loader's search ({_said(taken)}){then}")


def _took(problem: Mapping[str, Any], label: str, needs: str, lacks: str,
          plural: bool = False) -> tuple[str, Mapping[str, Any] | None]:
    """"X is installed but does not load: it needs N; the loader took F (from), which lacks it; G has it"."""
    taken = problem.get("taken") or {}
    good = _good(problem)
    needer = os.path.basename(str(problem.get("needed_by")))
    what = (f"{label} is installed but does not load: {_who(needer, label)} needs {needs}; the loader took "
            f"{taken.get('path')} ({_said(taken)}), {lacks}")
    return what + (f"; {good['path']} has {'them' if plural else 'it'}" if good else ""), good


def _version_cause(problem: Mapping[str, Any], facts: Mapping[str, Any], label: str) -> Cause:
    versions = list(problem.get("versions") or [])
    newest = {k: v for k, v in (problem.get("newest_provided") or {}).items() if v}
    what, good = _took(problem, label, f"{', '.join(versions)} of {problem.get('name')}",
                       f"which has up to {', '.join(newest.values())}" if newest else "which lacks them",
                       plural=len(versions) > 1)
    if good:
        return Cause(what, _remove_dir_fix(problem, facts.get("search") or {}, good))
    package = DEBIAN_PACKAGES.get(str(problem.get("name")))
    needer = os.path.basename(str(problem.get("needed_by")))
    return Cause(what + "; no other copy in the image has them",
                 f"install a newer {problem.get('name')} (one that provides {', '.join(versions)}"
                 + (f": Debian's {package} from a newer release" if package else "")
                 + f"), or a build of {needer} made for this OS")


def _symbol_cause(problem: Mapping[str, Any], facts: Mapping[str, Any], label: str) -> Cause:
    what, good = _took(problem, label, f"{problem.get('symbol')} from {problem.get('name')}", "which lacks it")
    return Cause(what, _remove_dir_fix(problem, facts.get("search") or {}, good))


def _missing_cause(problems: Sequence[Mapping[str, Any]], facts: Mapping[str, Any], label: str) -> Cause:
    names = [str(p.get("name")) for p in problems]
    needers = sorted({os.path.basename(str(p.get("needed_by"))) for p in problems if p.get("needed_by")})
    search = facts.get("search") or {}
    env = ":".join(search.get("LD_LIBRARY_PATH") or []) or "unset"
    owners = facts.get("target_owners") or ()
    label += f" (package {', '.join(owners)})" if owners else ""
    what = (f"{label} is installed but its {'dependency' if len(names) == 1 else 'dependencies'} "
            f"{', '.join(names)} (needed by {', '.join(needers)}) {'is' if len(names) == 1 else 'are'} nowhere the "
            f"loader looks (LD_LIBRARY_PATH {env}, the loader cache, the default directories)")
    if len(what) > 200:  # the cell's line: the names, not every place looked in
        what = what.split(" (LD_LIBRARY_PATH")[0]
    deleted = sorted({o for p in problems for o in p.get("owners") or []})
    if deleted:
        what += (f"; package {', '.join(deleted)} lists {'it' if len(names) == 1 else 'them'}: deleted after the "
                 "install (an image slimmer, or a cleanup of libraries)")
        return Cause(what, f"reinstall the package that owns it: apt-get update && apt-get install --reinstall -y "
                           f"{' '.join(deleted)}")
    known = [DEBIAN_PACKAGES[n] for n in names if n in DEBIAN_PACKAGES]
    if known and len(known) == len(names) and facts.get("package_manager") in (None, "dpkg"):
        return Cause(what, f"install what provides {' and '.join(names)}: apt-get update && apt-get install -y "
                           f"{' '.join(dict.fromkeys(known))}")
    return Cause(what, f"install the package that provides {', '.join(names)} (Debian: apt-file search "
                       f"{names[0]}; RHEL/Fedora: dnf provides '*/{names[0]}'), or put the file where the loader looks")


def explain_native(explained: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
                   error: str = "") -> Cause | None:
    """The cause of a load failure that ``ctx.explain_load`` resolved, or None when its facts name none
    (the library itself absent, or a failure the loader's search does not explain).

    The problem the loader's own *error* names comes first (it reports the first one it met);
    the file it took for the breaking dependency, where from, and a file that would do are named."""
    items = [explained] if isinstance(explained, Mapping) else list(explained or [])
    for facts in items:
        problems = [p for p in facts.get("problems") or [] if isinstance(p, Mapping)]
        if not problems or not facts.get("target_path"):
            continue
        said = error or str(facts.get("error") or "")
        label = os.path.basename(str(facts.get("target_path")))
        version = _VERSION.search(said)
        symbol = _SYMBOL.search(said)
        opened = _CANNOT_OPEN.search(said)
        ranked = sorted(problems, key=lambda p: (
            not (version and p.get("kind") == "version" and version.group(1) in (p.get("versions") or [])),
            not (symbol and p.get("kind") == "symbol" and p.get("symbol") == symbol.group(2)),
            not (opened and p.get("kind") == "missing" and p.get("name") == opened.group(1)),
            {"version": 0, "symbol": 1, "missing": 2}.get(str(p.get("kind")), 3)))
        first = ranked[0]
        if first.get("kind") == "version" and first.get("taken"):
            return _version_cause(first, facts, label)
        if first.get("kind") == "symbol" and first.get("taken"):
            return _symbol_cause(first, facts, label)
        if first.get("kind") == "missing" and first.get("needed_by"):
            return _missing_cause([p for p in ranked if p.get("kind") == "missing" and p.get("needed_by")],
                                  facts, label)
    return None
