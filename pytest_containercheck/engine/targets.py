"""Turn ``--image`` strings into :class:`Target` objects.

Forms accepted (see README "Choosing images"):

* ``host`` — the interpreter running pytest (or ``--host-python``), no container;
* a path ending in ``.sif`` (or any other existing regular file) — Apptainer/Singularity; a
  path-like value that is not there (``img.tar``, ``mytorchvista.sfi``, ``dir/app``) is "no such
  file" with the nearest name in its directory, never an image for Docker to pull (an image
  whose name ends like a file is written with its tag, ``my.image:latest``, or a prefix);
* an image archive, recognised from its content whatever its name (``docker save`` tar, OCI
  image layout tar), or named with ``docker-archive://`` / ``oci-archive://`` — run by the OCI
  default (``docker load``), or converted once to a cached SIF with ``--runtime apptainer``;
* an OCI reference (``name``, ``name:tag``, ``registry:5000/team/name@sha256:...``) — Docker
  (or Podman when only Podman is installed);
* an explicit ``docker://``, ``podman://``, ``apptainer://``, ``singularity://`` or
  ``host://`` prefix, which wins over auto-detection; ``--runtime`` wins over both.
"""

from __future__ import annotations

import os
import re
import stat
from typing import NamedTuple

from .archives import KINDS as ARCHIVE_PREFIXES
from .archives import ArchiveError, inspect_archive, is_tar, is_zstd
from .errors import UsageProblem
from .nearby import looks_like_path, no_such_file
from .outputs import special_kind
from .runtimes import Target, family_of, runtime_names
from .runtimes.sif import SIF_LAUNCH_LEN, SIF_MAGIC

__all__ = ["Target", "Targets", "is_oci_reference", "parse_target", "parse_targets", "read_targets"]

# The grammar of docker/distribution's reference package, simplified only where it does
# not change what is accepted: [registry[:port]/]path[:tag][@algo:hex].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_OCI_REF = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def is_oci_reference(ref: str) -> bool:
    """True when *ref* is a syntactically valid Docker/OCI image reference."""
    return len(ref) <= 255 and _OCI_REF.match(ref) is not None


def parse_target(spec: str, runtime: str = "auto", oci_default: str = "docker") -> Target:
    """Parse one ``--image`` value.

    *runtime* is ``--runtime`` (``auto`` to detect), *oci_default* the OCI runtime to use
    for plain references when auto-detecting (docker, or podman when only podman exists).
    Raises :class:`UsageProblem` with a one-line fix on bad input.
    """
    text = spec.strip()
    if not text:
        raise UsageProblem("--image: empty value; give an image reference, a .sif path or 'host'")
    prefix, sep, rest = text.partition("://")
    if sep and prefix in ARCHIVE_PREFIXES:
        return _archive_target(spec, rest, prefix, runtime, oci_default)
    if sep:
        if prefix not in runtime_names():
            raise UsageProblem(
                f"--image {spec!r}: unknown prefix {prefix + '://'!r}; "
                f"use one of {', '.join(n + '://' for n in (*runtime_names(), *ARCHIVE_PREFIXES))}"
            )
        chosen, ref = prefix, rest
        if runtime != "auto" and runtime != chosen and not _compatible(runtime, chosen):
            raise UsageProblem(
                f"--image {spec!r} names runtime {chosen!r} but --runtime={runtime}; drop one of them"
            )
        if runtime != "auto":
            chosen = runtime
    elif not text.endswith(".sif") and is_tar(text):
        return _archive_target(spec, text, "archive", runtime, oci_default)
    elif is_zstd(text):
        raise UsageProblem(f"--image {spec!r} is zstd-compressed, which this tool cannot read; decompress it "
                           f"('zstd -d {text}') or compress with gzip ('docker save IMAGE | gzip > img.tar.gz')")
    elif not text.endswith(".sif") and _named_archive(text):
        # Named like an archive, no SIF inside: the archive check says what is wrong with it
        # (empty, truncated), never "copy the .sif again".
        return _archive_target(spec, text, "archive", runtime, oci_default)
    elif not text.endswith(".sif") and text != "host" and not os.path.exists(text) and looks_like_path(text):
        # A mistyped or absent file, not an image for Docker to look for (a missing .sif is
        # answered the same way by the SIF check, before any runtime is looked for).
        raise UsageProblem(no_such_file(repr(spec), text, "the image file"))
    elif runtime != "auto":
        chosen, ref = runtime, text
    elif text == "host":
        chosen, ref = "host", "host"
    elif (kind := _special_file(text)) is not None:
        raise UsageProblem(f"--image {spec!r} is {kind}, not an image file; give a .sif file, an image "
                                "reference or 'host'")
    elif not text.endswith(".sif") and _empty_file(text):
        raise UsageProblem(f"--image {spec!r}: {text!r} is empty (0 bytes): neither a SIF image nor an image "
                           "archive; copy the file again")
    elif text.endswith(".sif") or os.path.isfile(text):
        chosen, ref = "apptainer", text
    elif os.path.isdir(text):
        raise UsageProblem(
            f"--image {spec!r} is a directory; give a .sif file, an image reference or 'host'"
        )
    else:
        chosen, ref = oci_default, text

    family = family_of(chosen)
    if family == "host":
        ref = ref or "host"
    elif family == "oci":
        if ref.endswith(".sif") or _is_sif(ref):
            raise UsageProblem(
                f"--image {spec!r} is a SIF file, which {chosen} cannot run: Apptainer runs it; drop "
                f"--runtime {chosen} (or give --runtime apptainer)")
        if os.path.isfile(ref) and not is_tar(ref):
            what = "empty (0 bytes)" if _empty_file(ref) else "neither a SIF image nor an image archive (no tar header)"
            raise UsageProblem(
                f"--image {spec!r}: {ref!r} is {what}, which {chosen} cannot run; give an image reference, or a "
                f"'docker save' archive ('docker save IMAGE -o img.tar')")
        if not is_oci_reference(ref):
            raise UsageProblem(
                f"--image {spec!r}: not a valid image reference (expected name[:tag][@sha256:...], "
                "lower-case); for a .sif file give its path"
            )
    elif family == "sif":
        if not ref:
            raise UsageProblem(f"--image {spec!r}: missing .sif path after the prefix")
        if not os.path.exists(ref) and not ref.endswith(".sif") and is_oci_reference(ref) \
                and (":" in ref or "@" in ref or "/" not in ref):
            raise UsageProblem(
                f"--image {spec!r} names a Docker/OCI image, which {chosen} runs from a SIF or an image archive: "
                f"convert it once ('{chosen} build img.sif docker-daemon://{ref}') and give --image img.sif, or save "
                f"it ('docker save {ref} -o img.tar') and give --image img.tar")
        if (kind := _special_file(ref)) is not None:
            raise UsageProblem(f"--image {spec!r}: {ref!r} is {kind}, not a .sif file; give a .sif file")
    return Target(runtime=chosen, ref=ref, spec=spec)


def _archive_target(spec: str, path: str, kind: str, runtime: str, oci_default: str) -> Target:
    """An image archive run by *runtime* (auto: the OCI default): loaded, or converted to a SIF."""
    chosen = oci_default if runtime == "auto" else runtime
    if family_of(chosen) == "host":
        raise UsageProblem(f"--image {spec!r} is an image archive: it needs docker, podman or apptainer, "
                                "not --runtime host")
    if not path:
        raise UsageProblem(f"--image {spec!r}: missing archive path after the prefix")
    if (what := _special_file(path)) is not None:
        raise UsageProblem(f"--image {spec!r}: {path!r} is {what}, not an image archive")
    if not os.path.isfile(path):
        raise UsageProblem(no_such_file(repr(spec), path, "the image archive"))
    if kind == "archive":  # its format names the column; a broken one is reported by the archive check
        try:
            kind = inspect_archive(path, spec).kind
        except ArchiveError:
            pass
    return Target(runtime=chosen, ref=path, spec=spec, archive=kind)


#: Names an image archive goes by (``docker save -o img.tar``, ``| gzip > img.tar.gz``, ...).
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


def _named_archive(path: str) -> bool:
    """*path* is a regular file named like an image archive, and not a SIF inside (the content
    decides over the name: a SIF renamed ``.tar`` is still run as a SIF)."""
    return path.lower().endswith(ARCHIVE_SUFFIXES) and os.path.isfile(path) and not _is_sif(path)


def _empty_file(path: str) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return False


def _is_sif(path: str) -> bool:
    """*path* is a regular file with the SIF magic where a SIF has it."""
    try:
        if not os.path.isfile(path):
            return False
        # O_NONBLOCK: a file swapped for a FIFO after the check still cannot block us.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            return stat.S_ISREG(os.fstat(fh.fileno()).st_mode) and \
                fh.read(SIF_LAUNCH_LEN + len(SIF_MAGIC))[SIF_LAUNCH_LEN:] == SIF_MAGIC
    except OSError:
        return False


def _special_file(path: str) -> str | None:
    """What *path* is when it exists but is neither a regular file nor a directory (a FIFO would
    block whoever opens it to read a header), else None."""
    return special_kind(path)


def _compatible(runtime: str, prefix: str) -> bool:
    # apptainer:// vs --runtime=singularity (and docker vs podman) name the same kind of
    # image, so --runtime only picks the binary.
    return family_of(runtime) == family_of(prefix)


def parse_targets(specs: list[str], runtime: str = "auto", oci_default: str = "docker") -> list[Target]:
    """Parse every ``--image`` value; duplicates (same column id) are given once."""
    return read_targets(specs, runtime, oci_default).targets


class Targets(NamedTuple):
    """The ``--image`` values read: one target per column, and what was given more than once."""

    targets: list[Target]
    repeated: list[str]
    """One line per image named more than once (``--image host is given 2 times: checked once``),
    for the plugin to say once: the run checks it once, which the user may not have meant."""


def read_targets(specs: list[str], runtime: str = "auto", oci_default: str = "docker") -> Targets:
    """Parse every ``--image`` value (:func:`parse_target`); duplicates (same column id) are
    checked once, and said (:attr:`Targets.repeated`)."""
    targets: list[Target] = []
    seen: dict[str, Target] = {}
    given: dict[str, list[str]] = {}
    for spec in specs:
        target = parse_target(spec, runtime, oci_default)
        first = seen.get(target.id)
        given.setdefault(target.id, []).append(spec)
        if first is None:
            seen[target.id] = target
            targets.append(target)
        elif os.path.realpath(first.ref) != os.path.realpath(target.ref):
            # Only SIF ids (the basename) can collide: old/app.sif and new/app.sif would share a
            # column and one image would silently go unchecked.
            raise UsageProblem(
                f"--image {first.spec!r} and --image {spec!r} are different images with the same column id "
                f"{target.id!r}; rename one of the files"
            )
    repeated = []
    for column, named in given.items():
        if len(named) < 2:
            continue
        if len(set(named)) == 1:
            repeated.append(f"--image {named[0]} is given {len(named)} times: checked once")
        else:
            ways = " and ".join(f"--image {s}" for s in dict.fromkeys(named))
            repeated.append(f"{ways} name the same image ({column}): checked once")
    return Targets(targets, repeated)
