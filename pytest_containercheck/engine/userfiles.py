"""One guarded reader for every file a user names: expectations, matrix files, baselines, probes.

A name on a command line may be a FIFO (which blocks whoever opens it), a device (``/dev/zero``
never ends), a directory, a file far larger than any such file can be, or bytes that are not
text.  :func:`read_user_file` checks each before and while it reads: a regular file (checked on
the open descriptor too, so a file swapped for a FIFO after the check cannot block), at most
*limit* bytes, and UTF-8 where text is asked for.  Each problem is one
:class:`~.errors.UsageProblem` line that names the file and what it should be.
"""

from __future__ import annotations

import os
import stat

from .errors import UsageProblem
from .outputs import file_kind

#: Largest matrix file read (a merge of many nodes is a few MiB; anything bigger is not ours).
MAX_MATRIX_BYTES = 256 * 2**20
#: Largest expectations file read (a table per image of a large repository is a few KiB).
MAX_EXPECTATIONS_BYTES = 4 * 2**20


def read_user_file(path: str, what: str, *, limit: int, shown: str | None = None) -> bytes:
    """The bytes of *path*, a regular file of at most *limit* bytes; *what* names the kind of file
    in messages (``a matrix JSON file``), *shown* the file (default: *path*)."""
    name = shown or path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageProblem(f"{name}: no such file; give {what}") from None
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"{name}: cannot read it ({getattr(exc, 'strerror', None) or exc}); give {what}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageProblem(f"{name}: is a directory; give {what}")
    if not stat.S_ISREG(st.st_mode):
        raise UsageProblem(f"{name}: {file_kind(st.st_mode)}, not {what}")
    if st.st_size > limit:
        raise UsageProblem(f"{name}: {st.st_size} bytes, more than {what} can be ({limit} bytes)")
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat cannot block the open.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise UsageProblem(f"{name}: {file_kind(mode)}, not {what}")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UsageProblem(f"{name}: cannot read it ({exc.strerror}); give {what}") from None
    if len(data) > limit:  # it grew after the stat
        raise UsageProblem(f"{name}: more than {limit} bytes, more than {what} can be")
    return data


def read_user_text(path: str, what: str, *, limit: int, shown: str | None = None) -> str:
    """:func:`read_user_file` as UTF-8 text; bytes that are not UTF-8 are one line naming the offset."""
    data = read_user_file(path, what, limit=limit, shown=shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageProblem(f"{shown or path}: not UTF-8 text (byte {exc.start}), not {what}") from None
