"""What an import that failed says about the image: the shared analysis of "installed but not working".

:func:`explain_import` reads the standard facts of a library probe (``ctx.import_library`` in
``probes/_depth.py``): the module ``ModuleNotFoundError`` names, the innermost installed module of
the traceback and its distribution, each installed distribution's ``Requires-Dist`` against the
installed versions (PEP 508 markers, PEP 440 specifiers: what pip checks), and for a loader message
what :func:`.native.explain_native` finds.  It names the requirement or library that breaks the
import and a fix for that one: never "install" a library the facts show installed.

Version mismatches at import time (:func:`version_mismatch`): NumPy's own text for a module
built against NumPy 1.x ("A module that was compiled using NumPy 1.x cannot be run in NumPy
2.x", then ``_ARRAY_API not found`` / ``numpy.core.multiarray failed to import``), and
transformers' ``PYTORCH_IMPORT_ERROR`` ("{0} requires PyTorch >= 2.6, but PyTorch was not
found or an older version is installed", ``transformers/utils/import_utils.py``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ..verdict import NOT_INSTALLED, Verdict
from .common import _fail, _first_line, _skip
from .native import Cause, explain_native

__all__ = ["explain_import", "not_importable", "version_mismatch"]

_NO_TMP = "No usable temporary directory"
_NO_TMP_FIX = ("give the container a writable /tmp (docker run --tmpfs /tmp; Apptainer binds /tmp unless "
               "--contain is given) or point TMPDIR at a writable directory")


#: NumPy's own messages for an extension module compiled against NumPy 1.x imported under
#: NumPy 2.x (``numpy/core/_multiarray_umath.py``, and the C-API import that follows it).
_NUMPY_ABI = ("compiled using NumPy 1.x", "_ARRAY_API not found", "numpy.core.multiarray failed to import",
              "numpy._core.multiarray failed to import")
#: transformers' ``PYTORCH_IMPORT_ERROR`` (utils/import_utils.py): its torch floor.
_TF_TORCH_FLOOR = re.compile(r"requires PyTorch >= ?([0-9][0-9.]*), but PyTorch was not found or an older version")
#: transformers 4.x's ``PYTORCH_IMPORT_ERROR`` (4.57.6: "{0} requires the PyTorch library but it was not
#: found in your environment. Check out the instructions ..."), raised whenever it disabled torch, and
#: the warning it logs when it does ("Disabling PyTorch because PyTorch >= 2.1 is required but found X";
#: 5.x logs the same words with its own floor).
_TF4_NO_TORCH = "requires the PyTorch library but it was not found in your environment"
_TF_DISABLED = re.compile(r"Disabling PyTorch because PyTorch >= ?([0-9][0-9.]*) is required but found (\S+)")


def version_mismatch(library: str, err: str, versions: Mapping[str, Any] | None = None,
                     log: str = "") -> tuple[str, str] | None:
    """``(what, fix)`` when *library*'s import error is two packages of the image that do
    not fit together (not a missing system library); None otherwise.

    *versions* holds what the probe could read without importing (distribution versions); *log*
    what the library logged (transformers 4.x names its torch floor only there).
    """
    versions = versions or {}
    if any(needle in err for needle in _NUMPY_ABI):
        numpy = versions.get("numpy")
        return (f"{library} was built against NumPy 1.x but the image has NumPy {numpy or '2.x'}",
                f"install numpy<2 in the image, or upgrade {library} to a release built for NumPy 2")
    m = _TF_TORCH_FLOOR.search(err)
    floor = m.group(1) if m else None
    if floor is None and _TF4_NO_TORCH in err:
        # 4.x words it without a version; the floor is in the line it logged when it disabled torch.
        disabled = _TF_DISABLED.search(log)
        floor = disabled.group(1) if disabled else ""
    torch = versions.get("torch")
    if floor is not None and torch:
        tf = f"transformers {versions.get('transformers')}" if versions.get("transformers") else "transformers"
        if floor:
            return (f"{tf} needs torch >= {floor}, the image has torch {torch}",
                    f"upgrade torch to >= {floor} in the image, or install a transformers release that supports "
                    f"torch {torch}")
        return (f"{tf} does not use the image's torch {torch}: it says PyTorch was not found although torch is "
                "installed (it disables a torch below its floor)",
                f"upgrade torch in the image (the floor is in transformers' log: 'Disabling PyTorch because PyTorch "
                f">= X is required'), or install a transformers release that supports torch {torch}")
    return None


def _canon(name: Any) -> str:
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def _pip(requirements: Sequence[str]) -> str:
    return "pip install " + " ".join(shlex.quote(r) for r in requirements)


def _dist_label(library: str, facts: Mapping[str, Any]) -> str:
    dist = facts.get("distribution") or {}
    return f"{dist.get('name')} {dist.get('version')}" if dist.get("name") else library


def _unmet(facts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [u for u in (facts.get("requirements") or {}).get("unmet") or [] if isinstance(u, Mapping)]


def _missing_module(library: str, facts: Mapping[str, Any], label: str) -> Cause | None:
    """ModuleNotFoundError for a module that is not the library's own: a requirement not installed."""
    module = str(facts.get("missing_module") or "")
    top = module.split(".")[0]
    if not module or top == library.split(".")[0]:
        return None
    absent = [u for u in _unmet(facts) if u.get("installed") is None]
    named = [u for u in absent if _canon(u.get("name")) == _canon(top)]
    ours = [u for u in absent if u not in named and _canon(u.get("distribution")) == _canon(label.split()[0])]
    said = f"No module named '{module}'"
    if named:
        also = f"; it also requires {', '.join(str(u['requires']) for u in ours)}, not installed either" if ours else ""
        return Cause(f"{label} is installed but its requirement {named[0]['requires']} is not ({said}){also}",
                     _pip([str(u["requires"]) for u in named + ours]))
    raised = (facts.get("raised_in") or {}).get("distribution")
    who = f"{raised} (imported by {label})" if raised and _canon(raised) != _canon(label.split()[0]) else label
    return Cause(f"{who} imports {module}, which is not installed ({said})",
                 f"install the distribution that provides the module {top} in the image"
                 + (f" (its requirements also lack {', '.join(str(u['requires']) for u in absent)}: "
                    f"{_pip([str(u['requires']) for u in absent])})" if absent else ""))


def _numpy_abi(library: str, facts: Mapping[str, Any], label: str, err: str) -> Cause | None:
    """An extension built against NumPy 1.x imported under NumPy 2: name the distribution that holds it."""
    if not any(needle in err for needle in _NUMPY_ABI):
        return None
    raised = facts.get("raised_in") or {}
    culprit = str(raised.get("distribution") or "")
    if not culprit:
        return None  # facts without the traceback's distributions: version_mismatch words it
    if _canon(culprit) == "numpy":
        culprit, version = label.split()[0], (facts.get("distribution") or {}).get("version")
    else:
        version = raised.get("version")
    numpy = (facts.get("dist_versions") or {}).get("numpy") or next(
        (u.get("installed") for u in _unmet(facts) if _canon(u.get("name")) == "numpy"), None)
    pin = next((str(u["requires"]) for u in _unmet(facts)
                if _canon(u.get("distribution")) == _canon(culprit) and _canon(u.get("name")) == "numpy"), None)
    via = f" (imported by {label}, in {raised.get('module')})" if _canon(culprit) != _canon(label.split()[0]) else ""
    what = (f"{culprit} {version or ''}".strip() + f"{via} was built for NumPy 1.x and the image has NumPy "
            f"{numpy or '2.x'}" + (f"; {culprit} {version} requires {pin}" if pin else ""))
    return Cause(what, f"upgrade {culprit} to a release built for NumPy 2: pip install --upgrade {culprit}; or "
                       f"install a NumPy it accepts: {_pip([pin or 'numpy<2'])}")


def _wrong_version(library: str, facts: Mapping[str, Any], label: str, err: str) -> Cause | None:
    """An installed requirement whose version the distribution that requires it does not accept."""
    wrong = [u for u in _unmet(facts) if u.get("installed") is not None]
    raised = _canon((facts.get("raised_in") or {}).get("distribution") or "")
    named = [u for u in wrong if re.search(rf"(?<![\w-]){re.escape(str(u.get('name')))}(?![\w-])", err, re.I)]
    candidates = named or [u for u in wrong if raised and _canon(u.get("distribution")) == raised]
    if not candidates:
        return None
    chosen = candidates[0]
    requirer = f"{chosen.get('distribution')} {chosen.get('version')}"
    return Cause(f"{requirer} requires {chosen['requires']} and the image has {chosen.get('name')} "
                 f"{chosen.get('installed')}" + (f" ({_first_line(err, 160)})" if err else ""),
                 f"install a version it accepts: {_pip([str(chosen['requires'])])} (or a {chosen.get('distribution')} "
                 f"release that accepts {chosen.get('name')} {chosen.get('installed')})")


def explain_import(library: str, facts: Mapping[str, Any]) -> Cause | None:
    """Why *library*, installed, does not import, one level down; None when its facts name no cause.

    In order: a requirement that is not installed (``ModuleNotFoundError`` names it), a shared library
    that does not load (:func:`.native.explain_native`), an extension built for NumPy 1.x under NumPy 2
    (the distribution holding it, from the traceback), an installed requirement of the wrong version
    (named in the error, or required by the distribution that raised)."""
    err = str(facts.get("error") or "")
    library = str(facts.get("failed_module") or library).split(".")[0]
    label = _dist_label(library, facts)
    return (_missing_module(library, facts, label) or explain_native(facts.get("native"), err)
            or _numpy_abi(library, facts, label, err) or _wrong_version(library, facts, label, err))


def _import_failure(library: str, err: str, fix: str, versions: Mapping[str, Any] | None = None,
                    raw: str | None = None, facts: Mapping[str, Any] | None = None) -> Verdict:
    if _NO_TMP in err:
        # Python's tempfile found no writable directory: the launch made the whole
        # filesystem read-only (docker --read-only without --tmpfs), not the image.
        return _fail(f"{library} does not import: {err}", _NO_TMP_FIX, "host")
    cause = explain_import(library, facts) if facts else None
    if cause is not None:
        return _fail(f"{library} does not import: {cause.what}", cause.fix, cause.fault)
    mismatch = version_mismatch(library, raw or err, versions)
    if mismatch is not None:
        return _fail(f"{library} does not import: {mismatch[0]} ({err})", mismatch[1], "image")
    return _fail(f"{library} is installed but does not import: {err}", fix, "image")


_NO_CAUSE = "see the evidence: the probe found no requirement or library that breaks it; the error names what raised"


def not_importable(facts: Mapping[str, Any], library: str, fix: str = _NO_CAUSE) -> Verdict | None:
    """The verdict on a library probe's standard facts (``ctx.import_library``), or None when it imports.

    A library that is absent skips the row (:attr:`~..verdict.Verdict.missing` set: the plugin then
    looks for it in the image's other interpreters); one that is installed but does not import fails
    as the image's fault, naming what breaks it (:func:`explain_import`), else with *fix*."""
    if facts.get("installed"):
        return None
    err = _first_line(str(facts.get("error")), 200)
    if facts.get("found"):
        return _import_failure(library, err, fix, facts.get("dist_versions"), str(facts.get("error")), facts)
    return _skip(f"{library} is {NOT_INSTALLED} ({err})", missing=library)


_not_importable = not_importable
