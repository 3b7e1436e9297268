"""Image archives: a ``docker save`` tar or an OCI image layout tar, checked before anything starts.

Our users move images to clusters as ``docker save`` tars, over transfers that take hours and
sometimes stop half-way.  :func:`inspect_archive` reads an archive's tar headers to the end
(seeking over the data, so a multi-GB tar costs a few milliseconds), names the member a
truncated transfer broke in, checks that every config and layer its manifest names is present,
and returns the image's identity: the config digest, which ``docker images`` shows as the
image ID and which stays the same after ``docker load`` and ``apptainer build``.  With
*verify* it also hashes what the archive's metadata names by digest: every blob of an OCI layout
(manifest, config, layers), the config of a docker archive and each of its layers against the
config's ``rootfs.diff_ids`` (decompressed first when a tool stored it compressed).  A verified
archive's :attr:`ArchiveInfo.content_key` is then the identity of everything an image is made from:
what a file derived from it (a SIF) may be cached under.

Formats, recognised from the content (``docker-archive`` and ``oci-archive`` are Apptainer's
names for them):

* docker-archive: ``manifest.json`` = ``[{"Config": "<hex>.json", "RepoTags": [...],
  "Layers": ["<id>/layer.tar", ...]}]`` (Docker's image/docker/save spec; Docker 25+ writes
  ``blobs/sha256/<hex>`` paths and an ``oci-layout`` too);
* oci-archive: ``oci-layout`` + ``index.json`` -> manifest blob -> ``config`` and ``layers``
  descriptors, every blob at ``blobs/<alg>/<hex>`` (OCI image-layout spec).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import tarfile
import threading
import zlib
from typing import IO, Any, Final

from .errors import UsageProblem
from .platforms import foreign_problem, host_architecture

BLOCK: Final = 512
KINDS: Final = ("docker-archive", "oci-archive")
_READ_CHUNK = 1 << 20


class ArchiveError(UsageProblem):
    """The archive cannot be used; str() is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class ArchiveInfo:
    """What an archive holds: its format, the image identity, and its size."""

    path: str
    kind: str
    """``docker-archive`` or ``oci-archive``."""
    config_digest: str
    """``sha256:<hex>`` of the image config: the image ID."""
    repo_tags: tuple[str, ...]
    layers: int
    size: int
    verified: bool = False
    """Every digest-named blob was hashed and matched its name."""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    """The image config's labels."""
    diff_ids: tuple[str, ...] = ()
    """The config's ``rootfs.diff_ids``: the uncompressed layers, the same however the image is
    stored (a Docker engine, Podman, an OCI layout whose config was rewritten)."""
    run_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the config says about running it (:func:`run_config`), for comparing like with like."""
    compression: str | None = None
    """``gzip``, ``bzip2`` or ``xz`` for a compressed archive (``docker save | gzip``)."""
    platforms: tuple[str, ...] = ()
    """For a multi-platform OCI index: every ``os/architecture[/variant]`` it holds."""
    platform: str = ""
    """``os/architecture[/variant]`` of the image used (from its config, else the index)."""
    layer_digests: tuple[str, ...] = ()
    """What each layer hashes to, in order, as the metadata names it: a docker archive's
    ``diff_ids`` (its layers are hashed against them), an OCI layout's layer descriptors."""

    @property
    def content_key(self) -> str:
        """A digest of everything the image is made from (its format, config digest and layer
        digests), for a *verified* archive: the same image, however it is stored, has the same one,
        and an archive whose config is genuine and one of whose layers is not has another."""
        made_of = json.dumps([self.kind, self.config_digest, list(self.layer_digests)])
        return hashlib.sha256(made_of.encode()).hexdigest()

    def facts(self) -> dict[str, Any]:
        """Builtins for the column's facts."""
        return {"archive": self.path, "archive_format": self.kind, "config_digest": self.config_digest,
                "repo_tags": list(self.repo_tags), "layers": self.layers, "archive_size": self.size,
                "archive_verified": self.verified, "labels": dict(self.labels),
                "archive_compression": self.compression, "platform": self.platform,
                **({"platforms": list(self.platforms)} if self.platforms else {})}


#: Compressed archives, by magic number: ``docker save | gzip`` is common for transfers, and
#: ``docker load``, ``podman load`` and ``apptainer build docker-archive://`` read them.
_COMPRESSED: Final = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def compression(path: str) -> str | None:
    """``gzip``, ``bzip2`` or ``xz`` when *path*, a regular file, starts with that format's magic
    number, else None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((name for magic, name in _COMPRESSED if head.startswith(magic)), None)


def is_tar(path: str) -> bool:
    """Whether *path* is a regular file that starts with a POSIX tar header ("ustar" at byte 257),
    also inside gzip, bzip2 or xz compression.

    Decides from the first 512 bytes: a truncated ``docker save`` still starts like one, so it
    is taken as an archive and :func:`inspect_archive` says where it broke.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 16:
            return False
        packed = compression(path)
        if packed is None:
            with open(path, "rb") as fh:
                return st.st_size >= BLOCK and fh.read(BLOCK)[257:262] == b"ustar"
        with open_decompressed(path, packed) as zh:
            return zh.read(BLOCK)[257:262] == b"ustar"
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return False


def open_decompressed(path: str, packed: str) -> gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
    """*path*'s content, decompressed as it is read (*packed*: :func:`compression`)."""
    if packed == "gzip":
        return gzip.open(path, "rb")
    if packed == "bzip2":
        return bz2.open(path, "rb")
    return lzma.open(path, "rb")


def decompress_to(path: str, packed: str, out: str) -> None:
    """Write *path* decompressed to *out* (for a tool that reads only plain tars: Apptainer 1.4.5's
    ``docker-archive://`` says "gzip: invalid header" for ``docker save | gzip``)."""
    with open_decompressed(path, packed) as src, open(out, "wb") as dst:
        while chunk := src.read(_READ_CHUNK):
            dst.write(chunk)


def is_zstd(path: str) -> bool:
    """Whether *path* is a regular file, zstd-compressed (``docker save | zstd``): refused with the
    way out.  Never opens anything but a regular file (a FIFO would block the reader)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            return fh.read(4) == _ZSTD_MAGIC
    except OSError:
        return False


#: What :func:`inspect_archive` found, per file as it is on disk (device, inode, size, mtime,
#: ctime) and format asked for: a run reads each archive once (when the target is parsed, when the
#: archives are checked, when the image is loaded or converted), not three times; a file that
#: changed since is read again (its ctime changes even when its mtime is set back).  A compressed
#: archive is decompressed whole to be read.
_SEEN: dict[tuple[str, str | None, int, int, int, int, int], ArchiveInfo] = {}
_SEEN_LOCK = threading.Lock()


def inspect_archive(path: str, spec: str, *, verify: bool = False, kind: str | None = None) -> ArchiveInfo:
    """Check the archive at *path* (given as ``--image`` *spec*) and return what it holds.

    Raises :class:`ArchiveError` with one line naming the fix: not a tar, truncated (and in
    which member), a manifest naming a missing config or layer, a digest that does not match.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ArchiveError(f"--image {spec}: cannot read {path!r} ({exc.strerror})") from None
    key = (os.path.abspath(path), kind, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _SEEN_LOCK:
        seen = _SEEN.get(key)
    if seen is not None and (seen.verified or not verify):
        return dataclasses.replace(seen, path=path)
    info = _inspect(path, spec, st.st_size, verify=verify, kind=kind)
    with _SEEN_LOCK:
        _SEEN[key] = info
    return info


def _inspect(path: str, spec: str, size: int, *, verify: bool, kind: str | None) -> ArchiveInfo:
    packed = compression(path)
    members: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, "r:*" if packed else "r:") as tar:
            for member in tar:
                end = member.offset_data + member.size
                if not packed and member.isfile() and end > size:
                    raise ArchiveError(
                        f"--image {spec}: {path!r} is truncated: it ends inside {member.name!r} ({size} bytes on "
                        f"disk, that member needs {end}); the transfer did not finish, copy it again "
                        "(rsync --partial --append-verify resumes it)")
                members[member.name.removeprefix("./")] = member
            if members and not packed:
                last = list(members.values())[-1]
                data_end = last.offset_data + -(-last.size // BLOCK) * BLOCK
                if size < data_end + 2 * BLOCK:  # a tar ends with two zero blocks
                    raise ArchiveError(
                        f"--image {spec}: {path!r} is truncated after {last.name!r} ({size} bytes on disk, no "
                        "end-of-archive marker); the transfer did not finish, copy it again")
            manifest = _read_json(tar, members, "manifest.json", spec, path, required=False)
            index = _read_json(tar, members, "index.json", spec, path, required=False)
            if manifest is not None and kind != "oci-archive":
                info, digests = _docker_archive(tar, members, manifest, spec, path, size)
            elif index is not None and "oci-layout" in members:
                info, digests = _oci_archive(tar, members, index, spec, path, size)
            else:
                raise ArchiveError(
                    f"--image {spec}: {path!r} is a tar file but not an image archive (no manifest.json, no "
                    "oci-layout + index.json); make one with 'docker save -o img.tar IMAGE'")
            arch = info.platform.split("/")[1] if info.platform.count("/") >= 1 else None
            foreign = foreign_problem(arch, spec)
            if foreign:
                raise ArchiveError(foreign)
            if verify:
                _verify(tar, members, digests, spec, path, info.kind)
                info = dataclasses.replace(info, verified=True)
            return dataclasses.replace(info, compression=packed)
    except ArchiveError:
        raise
    except (EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if packed and not isinstance(exc, FileNotFoundError):
            where = f" after {list(members)[-1]!r}" if members else ""
            raise ArchiveError(f"--image {spec}: {path!r} is a {packed}-compressed archive that is truncated or "
                               f"corrupt{where} ({exc}); the transfer did not finish, copy it again") from None
        where = f" after {list(members)[-1]!r}" if members else ""
        raise ArchiveError(f"--image {spec}: {path!r} is not a readable tar archive{where} ({exc}); "
                           "copy it again, or make it with 'docker save -o img.tar IMAGE'") from None
    except tarfile.TarError as exc:
        where = f" after {list(members)[-1]!r}" if members else ""
        raise ArchiveError(f"--image {spec}: {path!r} is not a readable tar archive{where} ({exc}); "
                           "copy it again, or make it with 'docker save -o img.tar IMAGE'") from None
    except (AttributeError, TypeError, KeyError, IndexError, RecursionError, ValueError) as exc:
        # Metadata of a shape no image tool writes (a config that is a list, a layer list that
        # is a number, ...): the checks above name the common ones; this names the rest.
        raise ArchiveError(f"--image {spec}: {path!r} is not a valid image archive: its metadata has a shape no "
                           f"image tool writes ({type(exc).__name__}: {str(exc)[:120]}); save it again with "
                           "'docker save -o img.tar IMAGE'") from None


def _read_json(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, spec: str, path: str,
               *, required: bool = True) -> Any:
    member = members.get(name)
    if member is None:
        if required:
            raise ArchiveError(f"--image {spec}: {path!r} names {name!r}, which is not in the archive; "
                               "the archive is incomplete: save it again")
        return None
    if not member.isfile():
        what = (f"a symbolic link to {member.linkname!r}" if member.issym() else
                f"a hard link to {member.linkname!r}" if member.islnk() else "not a regular file")
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is {what}: image tools write their metadata as "
                           "plain files; save the archive again with 'docker save' (and do not use this one)")
    if member.size > 64 << 20:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is {member.size} bytes, too big for metadata")
    fh = tar.extractfile(member)
    if fh is None:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is not a file; save the archive again")
    try:
        return json.loads(fh.read())
    except RecursionError:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is nested too deeply to be image metadata; "
                           "save the archive again with 'docker save'") from None
    except ValueError as exc:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is not valid JSON ({exc}); "
                           "save the archive again") from None


def _need(members: dict[str, tarfile.TarInfo], name: str, what: str, spec: str, path: str) -> None:
    if name not in members:
        raise ArchiveError(f"--image {spec}: {path!r} lacks {what} {name!r} that its manifest names; "
                           "the archive is incomplete: save it again with 'docker save'")


Digests = list[tuple[str, str, str]]
"""(member, ``alg:hex`` its content must hash to, what it is: ``config``, ``layer``, ``manifest``)."""


def _shape(value: Any, kind: type, what: str, spec: str, path: str) -> Any:
    """*value* when it is a *kind* (dict, list, str), else a one-line error naming *what*."""
    if not isinstance(value, kind):
        names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
        raise ArchiveError(f"--image {spec}: {what} in {path!r} is {type(value).__name__}, not "
                           f"{names.get(kind, kind.__name__)}: not what image tools write; save the archive again")
    return value


def _diff_ids(config: Any, spec: str, path: str, where: str) -> list[str]:
    config = _shape(config, dict, f"the image config {where!r}", spec, path)
    rootfs = _shape(config.get("rootfs") or {}, dict, f"'rootfs' of the image config {where!r}", spec, path)
    ids = _shape(rootfs.get("diff_ids") or [], list, f"'rootfs.diff_ids' of {where!r}", spec, path)
    return [str(_shape(d, str, f"a diff_id of {where!r}", spec, path)) for d in ids]


def _docker_archive(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], manifest: Any, spec: str,
                    path: str, size: int) -> tuple[ArchiveInfo, Digests]:
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise ArchiveError(f"--image {spec}: manifest.json in {path!r} is not a docker save manifest")
    if len(manifest) > 1:
        raise ArchiveError(f"--image {spec}: {path!r} holds {len(manifest)} images; save one image per archive "
                           "('docker save -o img.tar IMAGE')")
    entry = manifest[0]
    config = str(_shape(entry.get("Config") or "", str, "'Config' of manifest.json", spec, path))
    layers = [str(_shape(x, str, "a layer of manifest.json", spec, path))
              for x in _shape(entry.get("Layers") or [], list, "'Layers' of manifest.json", spec, path)]
    tags = [str(_shape(t, str, "a tag of manifest.json", spec, path))
            for t in _shape(entry.get("RepoTags") or [], list, "'RepoTags' of manifest.json", spec, path)]
    _need(members, config, "the image config", spec, path)
    for layer in layers:
        _need(members, layer, "layer", spec, path)
    # The config's name is its digest: <hex>.json, or blobs/sha256/<hex> from Docker 25 on.
    digest = "sha256:" + os.path.basename(config).removesuffix(".json")
    # Each layer tar hashes to its diff_id in the config (image spec: rootfs.diff_ids).
    config_json = _read_json(tar, members, config, spec, path)
    diff_ids = _diff_ids(config_json, spec, path, config)
    digests: Digests = [(config, digest, "config")]
    if len(diff_ids) == len(layers):
        digests += [(layer, diff_id, "layer") for layer, diff_id in zip(layers, diff_ids)]
    else:  # nothing to hash a layer against: no verified archive is made of unknown layers
        digests.append(("manifest.json", "", f"{len(layers)} layer(s) while its config lists {len(diff_ids)} "
                                             "diff_id(s)"))
    info = ArchiveInfo(path=path, kind="docker-archive", config_digest=digest, repo_tags=tuple(tags),
                       layers=len(layers), size=size, labels=_labels(config_json), diff_ids=tuple(diff_ids),
                       run_config=run_config(config_json), platform=_config_platform(config_json),
                       layer_digests=tuple(diff_ids))
    return info, digests


def _blob(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _platform_name(p: Any) -> str:
    if not isinstance(p, dict):
        return "unknown"
    parts = [str(p.get("os") or "?"), str(p.get("architecture") or "?")]
    if p.get("variant"):
        parts.append(str(p["variant"]))
    return "/".join(parts)


def _config_platform(config: Any) -> str:
    return _platform_name(config) if isinstance(config, dict) and config.get("architecture") else ""


def _pick_manifest(descs: list[Any], spec: str, path: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The descriptor of the image for this host among an index's *descs*, and every platform
    the index holds (empty for a one-image index).  Attestation manifests (BuildKit's
    ``unknown/unknown``) are not images."""
    descs = [_shape(d, dict, "a manifest descriptor of index.json", spec, path) for d in descs]
    if len(descs) == 1:
        return descs[0], ()
    images = [d for d in descs if _platform_name(d.get("platform")) != "unknown/unknown"]
    names = tuple(_platform_name(d.get("platform")) for d in images)
    arch = host_architecture()
    for d in images:
        p = d.get("platform")
        if isinstance(p, dict) and p.get("os", "linux") == "linux" and p.get("architecture") == arch:
            return d, names
    if len(images) == 1 and not isinstance(images[0].get("platform"), dict):
        return images[0], ()
    raise ArchiveError(f"--image {spec}: {path!r} holds {len(images)} images for {', '.join(names) or 'no platform'}, "
                       f"none for this host (linux/{arch}); save the image for linux/{arch} "
                       f"('docker save --platform linux/{arch}', or build it with --platform linux/{arch})")


def _oci_archive(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], index: Any, spec: str, path: str,
                 size: int) -> tuple[ArchiveInfo, Digests]:
    manifests = _shape(index, dict, "index.json", spec, path).get("manifests")
    if not manifests:
        raise ArchiveError(f"--image {spec}: index.json in {path!r} lists no manifest; save the archive again")
    desc, platforms = _pick_manifest(_shape(manifests, list, "'manifests' of index.json", spec, path), spec, path)
    top_annotations = desc.get("annotations")
    name = _blob(str(desc.get("digest") or ""))
    _need(members, name, "the manifest", spec, path)
    manifest = _shape(_read_json(tar, members, name, spec, path), dict, f"the manifest {name!r}", spec, path)
    if manifest.get("manifests"):  # a nested index (docker save of a multi-platform image)
        desc, platforms = _pick_manifest(_shape(manifest["manifests"], list, f"'manifests' of {name!r}", spec, path),
                                         spec, path)
        name = _blob(str(desc.get("digest") or ""))
        _need(members, name, "the manifest", spec, path)
        manifest = _shape(_read_json(tar, members, name, spec, path), dict, f"the manifest {name!r}", spec, path)
    config_desc = _shape(manifest.get("config") or {}, dict, f"'config' of {name!r}", spec, path)
    config = str(config_desc.get("digest") or "")
    _need(members, _blob(config), "the image config", spec, path)
    config_json = _read_json(tar, members, _blob(config), spec, path)
    diff_ids = _diff_ids(config_json, spec, path, _blob(config))
    layers = [str(_shape(x, dict, f"a layer of {name!r}", spec, path).get("digest") or "")
              for x in _shape(manifest.get("layers") or [], list, f"'layers' of {name!r}", spec, path)]
    for layer in layers:
        _need(members, _blob(layer), "layer", spec, path)
    annotations = top_annotations if isinstance(top_annotations, dict) else {}
    # Its names: the OCI ref.name (a full name from podman save, or only a tag), and containerd's
    # full name (docker save of Docker 25+): both are names a user may match on.
    tags = tuple(dict.fromkeys(str(v) for k in ("io.containerd.image.name", "org.opencontainers.image.ref.name")
                               if (v := annotations.get(k))))
    info = ArchiveInfo(path=path, kind="oci-archive", config_digest=config, repo_tags=tags,
                       layers=len(layers), size=size, labels=_labels(config_json), diff_ids=tuple(diff_ids),
                       run_config=run_config(config_json), platforms=platforms,
                       platform=_config_platform(config_json) or _platform_name(desc.get("platform")),
                       layer_digests=tuple(layers))
    # Every blob is named by its digest (OCI image layout): the manifest picked too, which names the rest.
    digest_of = str(desc.get("digest") or "")
    return info, [(name, digest_of, "manifest"), (_blob(config), config, "config"),
                  *((_blob(d), d, "layer") for d in layers)]


_RUN_KEYS: Final = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels")


def run_config(config: Any) -> dict[str, Any]:
    """The parts of an image config (an archive's, or ``docker/podman image inspect``'s ``Config``
    with ``Architecture`` and ``Os``) that decide how the image runs, normalised so that the
    same image compares equal however it was stored: empty and missing are alike."""
    if not isinstance(config, dict):
        return {}
    inner = config.get("config") if "config" in config or "rootfs" in config else config.get("Config")
    inner = inner if isinstance(inner, dict) else {}
    out: dict[str, Any] = {key: inner.get(key) or None for key in _RUN_KEYS}
    out["architecture"] = config.get("architecture") or config.get("Architecture") or None
    out["os"] = config.get("os") or config.get("Os") or None
    return out


#: Where an archive names its image: ``docker load`` and ``podman load`` tag the loaded image
#: with these, moving a tag the user already had onto the archive's image.
_OCI_NAME_ANNOTATIONS: Final = ("org.opencontainers.image.ref.name", "io.containerd.image.name")


def _untag(name: str, data: bytes) -> bytes | None:
    """The metadata member *name* without the names that would tag the loaded image; None to
    drop the member; *data* unchanged when it names nothing."""
    if name == "repositories":  # legacy docker save: {"repo": {"tag": "<id>"}}
        return None
    if name not in ("manifest.json", "index.json"):
        return data
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    if name == "manifest.json" and isinstance(doc, list):
        for entry in doc:
            if isinstance(entry, dict):
                entry["RepoTags"] = None
    elif name == "index.json" and isinstance(doc, dict):
        for desc in doc.get("manifests") or []:
            annotations = desc.get("annotations") if isinstance(desc, dict) else None
            if isinstance(annotations, dict):
                for key in _OCI_NAME_ANNOTATIONS:
                    annotations.pop(key, None)
    return json.dumps(doc).encode()


def write_untagged(path: str, out: IO[bytes]) -> None:
    """Write the archive at *path* to *out* as an uncompressed tar that names no image.

    ``docker load`` and ``podman load`` give the loaded image the archive's names (``RepoTags``,
    an OCI ``ref.name``), taking a name away from the image the user had under it; the image
    loaded from this stream has no name, so nothing the user had is retagged, and removing it
    afterwards removes only what the run loaded.  Layers are copied as they are.
    """
    with tarfile.open(path, "r:*") as src, tarfile.open(fileobj=out, mode="w|") as dst:
        dst.copybufsize = _READ_CHUNK  # type: ignore[attr-defined]  # 16 KiB by default (not in the stubs)
        for member in src:
            if member.isfile():
                fh = src.extractfile(member)
                assert fh is not None
                name = member.name.removeprefix("./")
                if name in ("repositories", "manifest.json", "index.json") and member.size <= 64 << 20:
                    data = _untag(name, fh.read())
                    if data is None:
                        continue
                    copy = tarfile.TarInfo(member.name)
                    copy.size, copy.mode, copy.mtime = len(data), member.mode, member.mtime
                    dst.addfile(copy, io.BytesIO(data))
                else:
                    dst.addfile(member, fh)
            else:
                dst.addfile(member)


def _labels(config: Any) -> dict[str, str]:
    labels = ((config or {}).get("config") or {}).get("Labels") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _verify(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], digests: Digests, spec: str,
            path: str, kind: str) -> None:
    """Hash each member against the digest the archive's own metadata gives it; a docker archive's
    layer against its ``diff_id``, the digest of the uncompressed layer: a tool that stored it
    compressed is read through the decompression, as containers/image does for Apptainer and Podman
    (``docker/internal/tarfile/src.go`` ``GetBlob``: "we need to decompress blobs ... everything
    addressable by their DiffID")."""
    for name, digest, what in digests:
        if not digest:
            raise ArchiveError(f"--image {spec}: {name!r} in {path!r} names {what}: its layers cannot be verified; "
                               "save the archive again with 'docker save'")
        alg, _, expected = digest.partition(":")
        if alg not in hashlib.algorithms_available or not expected:
            raise ArchiveError(f"--image {spec}: the {what} {name!r} in {path!r} is named by {digest!r}, a digest "
                               "that cannot be checked; save the archive again")
        fh = tar.extractfile(members[name])
        if fh is None:
            raise ArchiveError(f"--image {spec}: the {what} {name!r} in {path!r} is not a file; save the archive again")
        if what == "layer" and kind == "docker-archive":
            head = fh.read(8)
            fh.seek(0)
            packed = next((n for magic, n in _COMPRESSED if head.startswith(magic)), None)
            if packed is not None:
                fh = {"gzip": gzip.GzipFile, "bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}[packed](fileobj=fh)
        h = hashlib.new(alg)
        try:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise ArchiveError(f"--image {spec}: the {what} {name!r} in {path!r} does not decompress ({exc}); the "
                               "archive was altered or damaged: do not use it, save or copy it again") from None
        if h.hexdigest() != expected:
            raise ArchiveError(f"--image {spec}: the {what} {name!r} in {path!r} does not match its digest "
                               f"{alg}:{expected[:16]}... (it hashes to {alg}:{h.hexdigest()[:16]}...): the archive "
                               "was altered or damaged: do not use it, save or copy it again")
