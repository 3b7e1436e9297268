"""What an import that failed says about the image: the shared analysis of "installed but not working".

Version mismatches at import time (:func:`version_mismatch`): NumPy's own text for a module
built against NumPy 1.x ("A module that was compiled using NumPy 1.x cannot be run in NumPy
2.x", then ``_ARRAY_API not found`` / ``numpy.core.multiarray failed to import``), and
transformers' ``PYTORCH_IMPORT_ERROR`` ("{0} requires PyTorch >= 2.6, but PyTorch was not
found or an older version is installed", ``transformers/utils/import_utils.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..verdict import NOT_INSTALLED, Verdict
from .common import _fail, _first_line, _skip

__all__ = ["version_mismatch"]

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


def _import_failure(library: str, err: str, fix: str, versions: Mapping[str, Any] | None = None,
                    raw: str | None = None) -> Verdict:
    if _NO_TMP in err:
        # Python's tempfile found no writable directory: the launch made the whole
        # filesystem read-only (docker --read-only without --tmpfs), not the image.
        return _fail(f"{library} does not import: {err}", _NO_TMP_FIX, "host")
    mismatch = version_mismatch(library, raw or err, versions)
    if mismatch is not None:
        return _fail(f"{library} does not import: {mismatch[0]} ({err})", mismatch[1], "image")
    return _fail(f"{library} is installed but does not import: {err}", fix, "image")


def _not_importable(facts: Mapping[str, Any], library: str, fix: str) -> Verdict | None:
    """Skip when *library* is absent; fail when it is installed but does not import."""
    if facts.get("installed"):
        return None
    err = _first_line(str(facts.get("error")), 200)
    if facts.get("found"):
        return _import_failure(library, err, fix, facts.get("dist_versions"), str(facts.get("error")))
    return _skip(f"{library} is {NOT_INSTALLED} ({err})", missing=library)
