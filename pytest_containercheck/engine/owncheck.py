"""What an own check asks of an image most often, asked and judged: a file or directory, a system
package, a command on PATH, an environment variable, a Python distribution.

Pure: for each helper of the ``container`` fixture (``container.file(...)``, ``.package``,
``.command``, ``.env``, ``.distribution``) the argv that asks the image (run through the same
launch as every check: ``container.run``), and the :class:`~.verdict.Verdict` on its answer: a
pass, or a one-line reason with the image's fault and the fix.  A question the image cannot be
asked (no ``sh``, no package database) is :class:`Unanswered`: the check errors, it does not fail.

The questions are small POSIX ``sh`` scripts that take the user's values as positional
parameters, never pasted into the script; their first line is :data:`MARK`, so a script that
never ran (an image without ``sh``) is told from one that answered.  Versions are compared with
PEP 440 specifiers (``>=2.4``, ``~=5.1``, ``==12.*``): a Python distribution's own version, and
for a system package or a command the first dotted number of its version (``7:5.1.6-0+deb12u1``
compares as ``5.1.6``; the whole string is what the helper returns).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import Problem
from .verdict import Verdict, failed, passed

MARK = "@containercheck-helper"
"""The first line every question prints."""
MAX_READ = 16 << 20
"""Bytes of a file read for ``contains``: the first 16 MiB."""


class Unanswered(Problem):
    """The image could not be asked (no ``sh``, no ``stat``, no package database): str() is the
    one-line reason, :attr:`fix` what to do; the check's cell is an error, not a failure."""

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason, fix=fix, fault="image")


@dataclasses.dataclass(frozen=True)
class Where:
    """How a message names the place checked: an image, or the host's Python (``--image host``)."""

    in_: str = "in the image"
    fault: str = "image"
    build_in: str = "in the image's build"
    """Where a fix is made."""


IMAGE = Where()
HOST = Where("on this host", "host", "on this host")


def specifier(spec: str | None) -> SpecifierSet | None:
    """*spec* (``>=2.4``) as a :class:`SpecifierSet`; :class:`ValueError` naming the mistake for
    one that is none (a bare ``2.4`` is ``==2.4``: say so)."""
    if spec is None:
        return None
    text = spec.strip()
    if re.fullmatch(r"\d[\w.+!*-]*", text):
        raise ValueError(f"version {spec!r}: give a comparison, e.g. '=={text}' or '>={text}'")
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"version {spec!r} is not a version specifier; e.g. '>=2.4', '~=5.1', '==12.*'") from None


def dotted(version: str) -> Version | None:
    """The first dotted number of *version* (after an epoch ``N:``) as a :class:`Version`, or None."""
    found = re.search(r"\d+(?:\.\d+)*", version.split(":", 1)[1] if re.match(r"\d+:", version) else version)
    if found is None:
        return None
    try:
        return Version(found.group(0))
    except InvalidVersion:
        return None


def _answer(stdout: str, stderr: str, what: str) -> list[str]:
    """The lines a question printed after :data:`MARK`; :class:`Unanswered` when it never ran."""
    lines = stdout.split("\n")
    if MARK not in lines:
        said = next((ln.strip() for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
        raise Unanswered(f"cannot look at {what}: the image's sh did not run ({said})",
                         fix="these helpers need /bin/sh in the image; use container.run([...]) otherwise")
    return lines[lines.index(MARK) + 1:]


def _quote(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# -- a file or a directory -------------------------------------------------------------------------


_FILE_SH = r'''echo "$0"
if [ ! -e "$1" ]; then
  if [ -L "$1" ]; then echo dangling; else echo missing; fi
  exit 0
fi
stat -L -c '%F|%a|%U|%G|%u|%g|%s' -- "$1" || { echo nostat; exit 0; }
[ "$2" = read ] && head -c "$3" -- "$1"
exit 0'''


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """What ``container.file(path)`` found: its kind (``file``, ``directory``, ...), its
    permission bits, owner and group (names, and ids), size, and its text when it was read."""

    path: str
    kind: str
    mode: int
    owner: str
    group: str
    uid: int
    gid: int
    size: int
    text: str | None = None


def file_argv(path: str, read: bool) -> list[str]:
    """The question for ``container.file(path)``; *read*: also print its first :data:`MAX_READ` bytes."""
    return ["sh", "-c", _FILE_SH, MARK, path, "read" if read else "", str(MAX_READ)]


_KIND = {"regular file": "file", "regular empty file": "file", "directory": "directory",
         "symbolic link": "symbolic link", "fifo": "named pipe", "socket": "socket",
         "character special file": "character device", "block special file": "block device"}


def file_facts(path: str, stdout: str, stderr: str, read: bool = False) -> FileFacts | str:
    """The facts of *path* (with its text when *read*), or ``missing``/``dangling`` (a symbolic
    link to nothing)."""
    lines = _answer(stdout, stderr, path)
    head = lines[0] if lines else ""
    if head in ("missing", "dangling"):
        return head
    if head == "nostat" or head.count("|") < 6:
        raise Unanswered(f"cannot look at {path}: no 'stat' in the image ({head or stderr.strip()[:200]})",
                         fix="install coreutils (or busybox) in the image, or check it with container.run([...])")
    kind, mode, owner, group, uid, gid, size = head.split("|")[:7]
    content = "\n".join(lines[1:]) if read else None
    return FileFacts(path, _KIND.get(kind, kind), int(mode, 8), owner, group, int(uid), int(gid), int(size),
                     content)


def file_verdict(path: str, found: FileFacts | str, *, kind: str | None, mode: int | str | None,
                 owner: str | int | None, group: str | int | None, contains: str | re.Pattern[str] | None,
                 where: Where = IMAGE) -> Verdict:
    """Whether *found* is what ``container.file(path, kind=, mode=, owner=, group=, contains=)`` asks."""
    fix_in = where.build_in
    if isinstance(found, str):
        said = "a symbolic link to nothing" if found == "dangling" else "no such file or directory"
        how = " (COPY, or the package that ships it)" if where is IMAGE else ""
        return failed(f"{path}: {said} {where.in_}", f"add it {fix_in}{how}", where.fault)
    if kind is not None and found.kind != kind:
        return failed(f"{path} is a {found.kind} {where.in_}, not a {kind}",
                      f"make {path} a {kind} {fix_in}", where.fault)
    want = _mode(mode)
    if want is not None and found.mode & 0o7777 != want:
        return failed(f"{path} has mode {found.mode:04o} {where.in_}, not {want:04o}",
                      f"chmod {want:04o} {path} {fix_in}", where.fault)
    for who, wanted, name, number in (("owned by", owner, found.owner, found.uid),
                                      ("in group", group, found.group, found.gid)):
        if wanted is not None and wanted not in (name, number, str(number)):
            verb = "chown" if who == "owned by" else "chgrp"
            return failed(f"{path} is {who} {name} (id {number}) {where.in_}, not {wanted}",
                          f"{verb} {wanted} {path} {fix_in}", where.fault)
    if contains is not None:
        text = found.text or ""
        hit = contains.search(text) if isinstance(contains, re.Pattern) else contains in text
        if not hit:
            shown = f"/{contains.pattern}/" if isinstance(contains, re.Pattern) else _quote(contains)
            part = f" (in its first {MAX_READ >> 20} MiB)" if found.size > MAX_READ else ""
            return failed(f"{path} does not contain {shown}{part} {where.in_}",
                          f"write it into {path} {fix_in}", where.fault)
    parts = [found.kind, *([f"mode {found.mode & 0o7777:04o}"] if mode is not None else []),
             *([f"owner {found.owner}"] if owner is not None else []),
             *([f"group {found.group}"] if group is not None else []),
             *(["content as expected"] if contains is not None else [])]
    return passed(f"{path}: {', '.join(parts)}")


def _mode(mode: int | str | None) -> int | None:
    if mode is None or isinstance(mode, int):
        return mode
    try:
        return int(mode, 8)
    except ValueError:
        raise ValueError(f"mode {mode!r}: give octal digits ('0755') or a number (0o755)") from None


# -- a system package ---------------------------------------------------------------------------------


_MANAGER_SH = r'''echo "$0"
for m in dpkg-query rpm apk; do
  if command -v "$m" >/dev/null 2>&1; then echo "$m"; exit 0; fi
done
[ -f /lib/apk/db/installed ] && { echo apk-db; exit 0; }
echo none'''

MANAGERS = {"dpkg-query": "dpkg", "rpm": "rpm", "apk": "apk", "apk-db": "apk"}
_INSTALL = {"dpkg": "apt-get install {name}", "rpm": "dnf install {name} (or yum)", "apk": "apk add {name}"}


def manager_argv() -> list[str]:
    """The question: which package database does the image have (dpkg, rpm, apk)?"""
    return ["sh", "-c", _MANAGER_SH, MARK]


def manager(stdout: str, stderr: str) -> str:
    """``dpkg-query``, ``rpm``, ``apk`` or ``apk-db`` (an apk database without the apk tool)."""
    lines = _answer(stdout, stderr, "the image's package database")
    found = lines[0].strip() if lines else "none"
    if found not in MANAGERS:
        raise Unanswered("cannot tell which packages are installed: the image has no package database "
                         "(no dpkg-query, rpm or apk)",
                         fix="check for the package's files with container.file(...), or its command with "
                             "container.command(...)")
    return found


def package_argv(found: str, name: str) -> list[str]:
    """The question for package *name* to manager *found*."""
    if found == "dpkg-query":
        return ["dpkg-query", "-W", "-f", "${Status}\\t${Version}\\n", "--", name]
    if found == "rpm":
        return ["rpm", "-q", "--qf", "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n", "--", name]
    return ["cat", "/lib/apk/db/installed"]


def installed_version(found: str, name: str, returncode: int | None, stdout: str) -> str | None:
    """The installed version of *name* from the answer of :func:`package_argv`, or None."""
    if found == "dpkg-query":
        for line in stdout.splitlines():
            status, _, version = line.partition("\t")
            if returncode == 0 and status.split()[-1:] == ["installed"] and version:
                return version
        return None
    if found == "rpm":
        if returncode != 0:
            return None
        line = next((ln for ln in stdout.splitlines() if ln.startswith(name + "\t")), "")
        return line.partition("\t")[2] or None
    package = version = ""
    for line in [*stdout.splitlines(), ""]:
        if line.startswith("P:"):
            package = line[2:]
        elif line.startswith("V:"):
            version = line[2:]
        elif not line.strip():
            if package == name and version:
                return version
            package = version = ""
    return None


@dataclasses.dataclass(frozen=True)
class PackageFacts:
    """What ``container.package(name)`` found: the manager (``dpkg``, ``rpm``, ``apk``) and the
    version it has installed (None: not installed)."""

    name: str
    manager: str
    version: str | None


def package_verdict(facts: PackageFacts, version: str | None, where: Where = IMAGE) -> Verdict:
    """Whether *facts* is the installed package ``container.package(name, version=)`` asks for."""
    spec = specifier(version)
    install = _INSTALL[facts.manager].format(name=facts.name)
    if facts.version is None:
        return failed(f"package {facts.name} is not installed {where.in_} ({facts.manager})",
                      f"{install} {where.build_in}", where.fault)
    if spec is not None:
        number = dotted(facts.version)
        if number is None or not spec.contains(number, prereleases=True):
            compared = f", compared as {number}" if number is not None and str(number) != facts.version else ""
            return failed(f"package {facts.name} {facts.version} {where.in_} does not satisfy {spec}{compared} "
                          f"({facts.manager})", f"install {facts.name} {spec} {where.build_in}", where.fault)
    return passed(f"{facts.name} {facts.version} ({facts.manager})")


# -- a command on PATH ---------------------------------------------------------------------------------


_COMMAND_SH = r'''echo "$0"
found=$(command -v "$1" 2>/dev/null)
case "$found" in
  /*) echo "found|$found" ;;
  *) echo "missing|$PATH" ;;
esac'''


@dataclasses.dataclass(frozen=True)
class CommandFacts:
    """What ``container.command(name)`` found: its path, and when a version was asked for, the
    version number read from its output and the line it was read from."""

    name: str
    path: str
    version: str | None = None
    line: str | None = None


def check_command_name(name: str) -> None:
    """*name* is a command name or a path: :class:`ValueError` otherwise."""
    if not name or name.startswith("-") or any(c.isspace() for c in name):
        raise ValueError(f"command {name!r}: give a command name (ffmpeg) or its path (/usr/bin/ffmpeg)")


def command_argv(name: str) -> list[str]:
    """The question: where is *name* on the image's PATH?"""
    check_command_name(name)
    return ["sh", "-c", _COMMAND_SH, MARK, name]


def command_path(name: str, stdout: str, stderr: str) -> tuple[str | None, str]:
    """(its path or None, the PATH it was looked for in)."""
    lines = _answer(stdout, stderr, f"the command {name}")
    state, _, value = (lines[0] if lines else "").partition("|")
    return (value, "") if state == "found" else (None, value)


def command_missing(name: str, path: str, where: Where = IMAGE) -> Verdict:
    """The verdict on a command that is not on PATH."""
    return failed(f"{name} is not on PATH {where.in_} ({path or 'PATH is empty'})",
                  f"install it {where.build_in}, or add its directory to PATH (ENV PATH=...)", where.fault)


def command_version(facts: CommandFacts, argv: Sequence[str], returncode: int | None, output: str,
                    version: str, where: Where = IMAGE) -> tuple[Verdict, CommandFacts]:
    """The verdict on the version *argv* (``ffmpeg --version``) printed, against *version*; the
    facts with the version read from the first line of *output* that has a dotted number."""
    spec = specifier(version)
    assert spec is not None
    shown = " ".join(argv)
    for line in output.splitlines():
        number = dotted(line) if re.search(r"\d+\.\d+", line) else None
        if number is not None:
            facts = dataclasses.replace(facts, version=str(number), line=line.strip()[:200])
            if not spec.contains(number, prereleases=True):
                return failed(f"{facts.name} {number} {where.in_} does not satisfy {spec} (`{shown}`: "
                              f"{_quote(line.strip())})", f"install {facts.name} {spec} {where.build_in}",
                              where.fault), facts
            return passed(f"{facts.name} {number} ({facts.path})"), facts
    said = output.strip().splitlines()[0][:120] if output.strip() else "no output"
    raise Unanswered(f"no version number in the output of `{shown}` (exit {returncode}: {said})",
                     fix="give the arguments that print it: container.command(name, version=..., "
                         "version_args=['-version'])")


# -- an environment variable ---------------------------------------------------------------------------


_ENV_SH = r'''echo "$0"
eval "isset=\${$1+set}"
if [ "$isset" = set ]; then echo set; eval "printf '%s' \"\$$1\""; else echo unset; fi'''


def env_argv(name: str) -> list[str]:
    """The question: is variable *name* set in the image's environment, and to what?"""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"variable {name!r}: give a variable name (letters, digits, _)")
    return ["sh", "-c", _ENV_SH, MARK, name]


def env_value(name: str, stdout: str, stderr: str) -> str | None:
    """The variable's value, or None when it is not set."""
    lines = _answer(stdout, stderr, f"the variable {name}")
    if not lines or lines[0] != "set":
        return None
    return "\n".join(lines[1:])


def env_verdict(name: str, value: str | None, wanted: str | re.Pattern[str] | None,
                where: Where = IMAGE) -> Verdict:
    """Whether variable *name* is set (to *wanted*: a string, or a pattern it must match)."""
    fix = (f"export {name}=... before pytest" if where.fault == "host" else
           f"set it in the image's build (Dockerfile ENV {name}=..., or %environment in an Apptainer definition)")
    if value is None:
        return failed(f"{name} is not set {where.in_}", fix, where.fault)
    if wanted is None:
        return passed(f"{name}={_quote(value, 40)}")
    ok = wanted.search(value) is not None if isinstance(wanted, re.Pattern) else value == wanted
    if not ok:
        shown = f"/{wanted.pattern}/" if isinstance(wanted, re.Pattern) else _quote(wanted)
        return failed(f"{name} is {_quote(value)} {where.in_}, not {shown}", fix, where.fault)
    return passed(f"{name}={_quote(value, 40)}")


# -- a Python distribution -----------------------------------------------------------------------------


#: Run with the image's interpreter (Python 3.7+: importlib.metadata from 3.8, pkg_resources before).
DISTRIBUTION_PY = r'''import json, sys
name = sys.argv[1]
found = None
try:
    from importlib import metadata
    for candidate in (name, name.replace("-", "_"), name.replace("_", "-")):
        try:
            found = metadata.version(candidate)
            break
        except metadata.PackageNotFoundError:
            pass
except ImportError:
    try:
        import pkg_resources
        found = pkg_resources.get_distribution(name).version
    except Exception:
        found = None
print("@containercheck-helper " + json.dumps({"version": found, "python": sys.executable}))
'''


def distribution_facts(stdout: str, stderr: str, name: str) -> dict[str, Any]:
    """``{"version": ..., "python": ...}`` from :data:`DISTRIBUTION_PY`'s answer."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK + " "):
            found = json.loads(line[len(MARK) + 1:])
            if isinstance(found, dict):
                return found
    said = next((ln.strip() for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
    raise Unanswered(f"cannot look for the distribution {name}: the image's Python did not answer ({said})")


def distribution_verdict(name: str, found: dict[str, Any], version: str | None, where: Where = IMAGE) -> Verdict:
    """Whether distribution *name* is installed in the image's Python (at a *version* the
    specifier allows)."""
    spec = specifier(version)
    python = found.get("python") or "python"
    requirement = f"{name}{spec}" if spec is not None else name
    fix = f"pip install '{requirement}' {where.build_in}"
    have = found.get("version")
    if not have:
        return failed(f"{name} is not installed in the Python {where.in_} ({python})", fix, where.fault)
    if spec is not None:
        try:
            ok = spec.contains(Version(str(have)), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            return failed(f"{name} {have} {where.in_} does not satisfy {spec} ({python})", fix, where.fault)
    return passed(f"{name} {have}")
