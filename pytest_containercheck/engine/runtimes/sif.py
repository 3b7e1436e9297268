"""The SIF file format, read without Apptainer: is a file a SIF, for which architecture, whole, and
what its partitions and id are.  Reads only the header and the descriptor table (bounded).

From the SIF specification (sylabs/sif ``pkg/sif``): a 32-byte launch script, the magic, the
header's fields (version, architecture, id, descriptor and data offsets), then the descriptors.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from ..errors import UsageProblem
from ..nearby import no_such_file
from ..outputs import file_kind
from ..platforms import SIF_ARCH, foreign_problem

__all__ = ["SIF_DATA_PARTITION", "SIF_HEADER_LEN", "SIF_LAUNCH_LEN", "SIF_MAGIC", "SIF_PART_PRIMSYS", "check_sif",
           "sif_id", "sif_partitions"]

#: From the SIF specification (sylabs/sif): a 32-byte launch script, then this magic.
SIF_LAUNCH_LEN = 32
SIF_MAGIC = b"SIF_MAGIC\x00"
SIF_HEADER_LEN = 128
_SIF_OFFSETS = struct.Struct("<qqqqqq")  # descriptors free/total/offset/size, data offset/size

#: sylabs/apptainer sif ``pkg/sif``: rawDescriptor is DataType int32, Used bool, ID, GroupID,
#: LinkedID uint32, Offset, Size, SizeWithPadding, CreatedAt, ModifiedAt, UID, GID int64,
#: Name [128]byte, Extra [384]byte (little endian, packed): 585 bytes.
_SIF_DESCRIPTOR = struct.Struct("<i?IIIqqqqqqq128s384s")
SIF_DATA_PARTITION = 0x4004
"""``DataPartition``: a file system (the root file system is one)."""
SIF_PART_PRIMSYS = 2
"""``PartPrimSys``: the partition holding the primary operating system (what ``exec`` runs)."""


def sif_partitions(path: str) -> list[dict[str, int]]:
    """The file-system partitions a SIF's descriptors declare: ``[{"fstype", "parttype", "size"}]``.

    Reads only the descriptor table (bounded: at most the header's descriptor count).
    """
    with open(path, "rb") as fh:
        header = fh.read(SIF_HEADER_LEN)
        _free, total, d_off, _d_size, _data_off, _data_size = _SIF_OFFSETS.unpack_from(header, 80)
        fh.seek(d_off)
        table = fh.read(max(0, min(total, 4096)) * _SIF_DESCRIPTOR.size)
    parts = []
    for (dtype, used, _id, _group, _link, _off, size, *_rest, extra) in _SIF_DESCRIPTOR.iter_unpack(
            table[: len(table) - len(table) % _SIF_DESCRIPTOR.size]):
        if used and dtype == SIF_DATA_PARTITION:
            fstype, parttype = struct.unpack_from("<ii", extra)
            parts.append({"fstype": fstype, "parttype": parttype, "size": size})
    return parts


def sif_id(path: str) -> str:
    """The SIF's own UUID (header bytes 48-64), as Apptainer's ``sif list`` shows it."""
    with open(path, "rb") as fh:
        raw = fh.read(64)[48:64]
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_sif(path: str, spec: str) -> dict[str, Any]:
    """Validate a SIF file from its header before anything is launched.

    Raises :class:`UsageProblem` for a missing, empty, foreign, truncated or non-regular
    file.  Never blocks: a FIFO or a device is refused from its ``stat``, before it is opened.
    """
    import stat  # here, not at the top: this function is the only user in this module

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageProblem(no_such_file(spec, path, "the .sif image")) from None
    except OSError as exc:
        raise UsageProblem(
            f"--image {spec}: cannot read {path!r} ({exc.strerror}); check its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageProblem(
            f"--image {spec}: {path!r} is a directory; sandbox directories are not supported, "
            "build a SIF with 'apptainer build image.sif <dir>'"
        )
    if not stat.S_ISREG(st.st_mode):
        raise UsageProblem(f"--image {spec}: {path!r} is {file_kind(st.st_mode)}, not a .sif file; "
                           "give the path of a SIF image")
    size = st.st_size
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block us.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise UsageProblem(f"--image {spec}: {path!r} is not a regular file, not a .sif file")
            header = fh.read(SIF_HEADER_LEN)
    except OSError as exc:
        raise UsageProblem(
            f"--image {spec}: cannot read {path!r} ({exc.strerror}); check its permissions") from None
    if size == 0:
        raise UsageProblem(f"--image {spec}: {path!r} is empty; copy the .sif again")
    magic = header[SIF_LAUNCH_LEN:SIF_LAUNCH_LEN + len(SIF_MAGIC)]
    if magic != SIF_MAGIC:
        if len(header) < SIF_LAUNCH_LEN + len(SIF_MAGIC):
            why = f"only {size} bytes, too short for a SIF header"
        else:
            why = f"found {magic!r} at offset {SIF_LAUNCH_LEN}"
        raise UsageProblem(
            f"--image {spec}: {path!r} is not a SIF image (expected magic 'SIF_MAGIC' at byte "
            f"{SIF_LAUNCH_LEN}; {why}); build one with 'apptainer build'"
        )
    if len(header) < SIF_HEADER_LEN:
        raise UsageProblem(
            f"--image {spec}: {path!r} is truncated ({size} bytes, header alone needs {SIF_HEADER_LEN}); copy it again"
        )
    _free, _total, d_off, d_size, data_off, data_size = _SIF_OFFSETS.unpack_from(header, 80)
    needed = max(d_off + d_size, data_off + data_size)
    if needed > size:
        raise UsageProblem(
            f"--image {spec}: {path!r} is truncated ({size} bytes on disk, its header says "
            f"{needed}); the copy did not finish, copy it again"
        )
    # The header's arch: "arch the primary partition is built for" (apptainer/sif pkg/sif/sif.go).
    arch = SIF_ARCH.get(header[45:48].rstrip(b"\x00").decode("ascii", "replace"))
    foreign = foreign_problem(arch, spec)
    if foreign:
        raise UsageProblem(foreign)
    return {"sif_size": size, "sif_version": header[42:45].rstrip(b"\x00").decode("ascii", "replace"),
            "sif_arch": arch or "unknown"}
