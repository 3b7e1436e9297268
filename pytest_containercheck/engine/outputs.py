"""The files a run writes: checked before anything starts, then written atomically.

One set of rules for the pytest plugin's reports (``--matrix-json/-md/-html``, ``--junitxml``),
the ``containercheck`` command's outputs, render baselines and artifacts:

* :func:`check_outputs` -- each path can be written as a regular file (it is one, writable, in
  a directory we may replace it in; or it can be created), and no two outputs, nor an output
  and an input, are the same file.  :class:`~.errors.UsageProblem` otherwise, one line.
* :func:`write_file` -- a temporary file beside the target, fsync'd, then renamed over it: a
  full disk or a kill mid-write leaves the old file as it was, never a truncated one.  Files
  are 0644 and the directories it creates 0755, whatever the umask (CI runners may use 000).
* :func:`write_outputs` -- several outputs; one failure costs no other, and
  :meth:`Written.problems` says exactly which were written and which not.
* :func:`append_file` -- the same, keeping what the file held before (a CI job summary:
  :func:`is_step_summary`).

:func:`file_kind` names what a path is ("a named pipe (FIFO)"), for inputs too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from typing import NamedTuple

from .errors import UsageProblem

FILE_MODE = 0o644
DIR_MODE = 0o755

_KINDS = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, as a message names it: ``a file``, ``a directory``,
    ``a named pipe (FIFO)``, ``a socket``, ``a character device``, ``a block device``."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def special_kind(path: str) -> str | None:
    """What *path* is when it exists but is neither a regular file nor a directory (a FIFO would
    block whoever opens it), else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else file_kind(mode)


class Output(NamedTuple):
    """One file to write, as the user named it."""

    flag: str
    """The option that names it (``--matrix-json``, ``--md``): messages start with it."""
    path: str
    suffix: str = ""
    """The file's usual suffix (``.json``), for the hint when a directory is given."""
    append: bool = False
    """Add to what the file holds instead of replacing it (:func:`append_file`)."""


def check_outputs(outputs: Sequence[Output], inputs: Sequence[str] = ()) -> dict[str, str]:
    """Every output can be written, and none is another output or an input: flag -> real path.

    :class:`UsageProblem` naming the first that cannot.
    """
    seen = {os.path.realpath(f): f"the same file as input {f}" for f in inputs}
    checked: dict[str, str] = {}
    for out in outputs:
        full = os.path.realpath(os.path.abspath(out.path))
        if full in seen:
            raise UsageProblem(f"{out.flag} {out.path}: {seen[full]}; give each report its own path")
        seen[full] = f"{out.flag} writes the same file"
        check_file(out)
        checked[out.flag] = full
    return checked


def check_named(flag: str, path: str) -> None:
    """*path* names something: an empty value (``--matrix-md "$UNSET"``) would write nothing, or
    write into the current directory, without a word.  :class:`UsageProblem` otherwise."""
    if not path.strip():
        raise UsageProblem(f'{flag} "": an empty path (an unset variable?); give a path, or leave {flag} out')


def check_file(out: Output) -> None:
    """*out* can be written as a regular file: it is one (writable, in a writable directory, as
    the atomic replace needs), or it can be created."""
    flag, path = out.flag, out.path
    check_named(flag, path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):  # dangling: the file is created where it points, only in a directory that is there
            target = os.path.realpath(path)
            if not os.path.isdir(os.path.dirname(target)):
                raise UsageProblem(f"{flag} {path}: is a symbolic link to {target}, whose directory does not "
                                   "exist; create it, or give another path") from None
            _check_creatable(flag, target)
            return
        _check_creatable(flag, path)
        return
    except OSError as exc:
        raise UsageProblem(f"{flag} {path}: cannot be used ({exc.strerror}); give another path") from None
    if not stat.S_ISREG(st.st_mode):
        hint = f", e.g. {os.path.join(path, 'matrix' + out.suffix)}" if stat.S_ISDIR(st.st_mode) and out.suffix else ""
        raise UsageProblem(f"{flag} {path}: is {file_kind(st.st_mode)}; give the path of a file to write{hint}")
    if not os.access(path, os.W_OK):
        raise UsageProblem(f"{flag} {path}: the file is not writable; give another path or fix its permissions")
    parent = os.path.dirname(os.path.realpath(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageProblem(f"{flag} {path}: cannot replace it, {parent} is not writable; give another path")


def check_directory(flag: str, path: str, *, create: bool) -> None:
    """*path* is a directory (or, with *create*, can be created as one); with *create* a
    writable one.  :class:`UsageProblem` otherwise."""
    check_named(flag, path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if create and os.path.islink(path):
            raise UsageProblem(f"{flag} {path}: is a symbolic link to {os.path.realpath(path)}, which does not "
                               "exist; create it, or give another directory") from None
        if create:
            _check_creatable(flag, path)
        return
    except OSError as exc:
        raise UsageProblem(f"{flag} {path}: cannot be used ({exc.strerror}); give another directory") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageProblem(f"{flag} {path}: is {file_kind(st.st_mode)}, not a directory; give a directory")
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise UsageProblem(f"{flag} {path}: the directory is not writable; give another one")


def _check_creatable(flag: str, path: str) -> None:
    """The nearest existing ancestor of *path* is a directory we may create entries in, and no
    directory on the way is a symbolic link that points nowhere (directories are created only
    where the user named them, never at a link's target)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        if os.path.islink(parent):
            raise UsageProblem(f"{flag} {path}: {parent} is a symbolic link to {os.path.realpath(parent)}, which "
                               "does not exist; create it, or give another path")
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageProblem(f"{flag} {path}: {parent} is a file, not a directory; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageProblem(f"{flag} {path}: cannot create it, {parent} is not writable; give another path")


def make_dirs(path: str | os.PathLike[str]) -> None:
    """Create *path* and its missing parents, each 0755 whatever the umask; directories that
    already exist are left as they are."""
    path = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)  # never follows a symbolic link at d: one pointing nowhere is an error
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue  # made by someone else meanwhile: theirs, left alone
        os.chmod(d, DIR_MODE)  # mkdir's mode is cut by the umask only; never widened by it either


def write_file(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write *data* (text as UTF-8) to *path* atomically, mode 0644; OSError when it cannot.

    A temporary file beside the target is written, fsync'd and renamed over it, so the target
    is either the old file or the whole new one.  A symlink at *path* is kept: the file it
    points to is replaced, or created, but only in a directory that exists.  Missing directories
    are created along *path* as given, never at a link's target (a symbolic link that points
    nowhere, on the way, is an error).
    """
    make_dirs(os.path.dirname(os.path.abspath(path)))
    target = os.path.realpath(path)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, f"{path} is a symbolic link to {target}, whose directory does not "
                                              "exist", str(path))
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash once its directory is synced
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@dataclasses.dataclass
class Written:
    """What :func:`write_outputs` did: each output written, and each that was not, with why."""

    written: list[Output] = dataclasses.field(default_factory=list)
    failed: list[tuple[Output, str, bool]] = dataclasses.field(default_factory=list)
    """(output, the reason, whether the file that was there before is kept)."""

    def problems(self) -> list[str]:
        """One line per output not written, each naming exactly what was written."""
        done = ", ".join(f"{o.flag} {o.path}" for o in self.written)
        lines = []
        for out, why, kept in self.failed:
            line = f"{out.flag} {out.path}: could not write it ({why})"
            if kept:
                line += "; the old file is kept"
            if done:
                line += f"; written: {done}"
            elif len(self.failed) > 1:
                line += "; no other output was written"
            lines.append(line)
        return lines


def is_step_summary(path: str | os.PathLike[str]) -> bool:
    """Whether *path* is the file ``$GITHUB_STEP_SUMMARY`` names: the job's summary, which the
    job's other steps (and this one, before) have written to, so it is appended to."""
    named = os.environ.get("GITHUB_STEP_SUMMARY")
    return bool(named) and os.path.realpath(os.path.abspath(str(named))) == os.path.realpath(os.path.abspath(path))


def append_file(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Append *data* to *path* atomically: what the file held, byte for byte, then *data* (after
    a blank line) go to a temporary file renamed over it (:func:`write_file`), so a reader sees
    the old file or the whole new one, never half of the addition.  A missing file is created."""
    try:
        with open(os.path.realpath(path), "rb") as fh:
            old = fh.read()
    except FileNotFoundError:
        old = b""
    new = data.encode("utf-8") if isinstance(data, str) else data
    glue = b"" if not old else b"\n" if old.endswith(b"\n") else b"\n\n"
    write_file(path, old + glue + new)


def write_outputs(items: Sequence[tuple[Output, str | bytes]]) -> Written:
    """Write every output (:func:`write_file`, or :func:`append_file` for one that appends); one
    that fails costs no other."""
    result = Written()
    for out, data in items:
        try:
            (append_file if out.append else write_file)(out.path, data)
        except OSError as exc:
            kept = os.path.isfile(out.path)
            result.failed.append((out, str(exc.strerror or exc), kept))
        else:
            result.written.append(out)
    return result
