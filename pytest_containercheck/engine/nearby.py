"""What a user meant by an ``--image`` path that is not there.

A mistyped SIF or archive name (``mytorchvista.sfi``, ``img.tar`` copied elsewhere) must be
answered as a missing file, with the name nearest to it in that directory, and never as an
image reference that Docker could not find: on a cluster node without Docker, "'docker' is not
installed" or "docker pull" sends the user the wrong way.
"""

from __future__ import annotations

import difflib
import os
import re

__all__ = ["looks_like_path", "nearest_file", "no_such_file"]

#: A file-name suffix: ``.sif``, ``.sfi``, ``.tar``, ``.tgz``, ``.tar.gz``, ``.squashfs``.
#: It starts with a letter, so the version in a name such as ``python3.11`` is none.
_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,8}$")
#: Files looked at for the nearest name: enough for any image directory, bounded for huge ones.
MAX_LISTED = 10_000


def looks_like_path(text: str) -> bool:
    """Whether ``--image`` *text* reads as a file path rather than an image reference.

    A path: it starts with ``/``, ``./``, ``../`` or ``~``; or the part before its last ``/`` is
    a directory here (``images/app``); or its last part has a file suffix (``app.sif``,
    ``img.tar.gz``, ``mytorchvista.sfi``).  A tag or a digest (``name:1.0``, ``name@sha256:...``)
    makes it a reference whatever else it looks like.
    """
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return True
    if "@" in text:
        return False
    head, _, name = text.rpartition("/")
    if ":" in name:
        return False
    if head and os.path.isdir(head):
        return True
    return _SUFFIX.search(name) is not None


def nearest_file(path: str) -> str | None:
    """The regular file in *path*'s directory whose name is nearest to *path*'s (``difflib``), as
    *path* would be written with it; None when none is near enough or the directory is not there."""
    directory, name = os.path.split(path)
    names: list[str] = []
    try:
        with os.scandir(directory or ".") as entries:
            for entry in entries:
                if len(names) >= MAX_LISTED:
                    break
                try:
                    if entry.is_file() and entry.name != name:
                        names.append(entry.name)
                except OSError:
                    continue
    except OSError:
        return None
    names.sort()
    # The name without its suffix (images/app for images/app.sif) is nearest of all.
    close = [n for n in names if n.startswith(name + ".")] or difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return os.path.join(directory, close[0]) if close else None


def no_such_file(spec: str, path: str, what: str) -> str:
    """The one-line usage error for ``--image`` *spec* (as the message shows it) naming the missing
    *path* (*what*: "the .sif image", "the image archive"): the nearest existing name when there
    is one, else where it was looked for."""
    head = f"--image {spec}: no such file {path!r}"
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        return f"{head} (there is no directory {directory!r}); check the path to {what}"
    near = nearest_file(path)
    if near is not None:
        return f"{head}; did you mean {near!r}?"
    where = "" if os.path.isabs(path) else f" (looked in {os.path.abspath(directory or '.')})"
    return f"{head}{where}; check the path to {what}"
