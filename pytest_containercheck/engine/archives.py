"""Image archives: a ``docker save`` tar or an OCI image layout tar, checked before anything starts.

Our users move images to clusters as ``docker save`` tars, over transfers that take hours and
sometimes stop half-way.  :func:`inspect_archive` reads an archive's tar headers to the end
(seeking over the data, so a multi-GB tar costs a few milliseconds), names the member a
truncated transfer broke in, checks that every config and layer its manifest names is present,
and returns the image's identity: the config digest, which ``docker images`` shows as the
image ID and which stays the same after ``docker load`` and ``apptainer build``.  With
*verify* it also hashes every blob whose name is a digest (the layer digests of an OCI layout,
the config of a docker archive).

Formats, recognised from the content (``docker-archive`` and ``oci-archive`` are Apptainer's
names for them):

* docker-archive: ``manifest.json`` = ``[{"Config": "<hex>.json", "RepoTags": [...],
  "Layers": ["<id>/layer.tar", ...]}]`` (Docker's image/docker/save spec; Docker 25+ writes
  ``blobs/sha256/<hex>`` paths and an ``oci-layout`` too);
* oci-archive: ``oci-layout`` + ``index.json`` -> manifest blob -> ``config`` and ``layers``
  descriptors, every blob at ``blobs/<alg>/<hex>`` (OCI image-layout spec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat
import tarfile
from typing import IO, Any, Final

from .errors import UsageProblem

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

    def facts(self) -> dict[str, Any]:
        """Builtins for the column's facts."""
        return {"archive": self.path, "archive_format": self.kind, "config_digest": self.config_digest,
                "repo_tags": list(self.repo_tags), "layers": self.layers, "archive_size": self.size,
                "archive_verified": self.verified, "labels": dict(self.labels)}


def is_tar(path: str) -> bool:
    """Whether *path* is a regular file that starts with a POSIX tar header ("ustar" at byte 257).

    Decides from one 512-byte read: a truncated ``docker save`` still starts like one, so it is
    taken as an archive and :func:`inspect_archive` says where it broke.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < BLOCK:
            return False
        with open(path, "rb") as fh:
            return fh.read(BLOCK)[257:262] == b"ustar"
    except OSError:
        return False


def inspect_archive(path: str, spec: str, *, verify: bool = False, kind: str | None = None) -> ArchiveInfo:
    """Check the archive at *path* (given as ``--image`` *spec*) and return what it holds.

    Raises :class:`ArchiveError` with one line naming the fix: not a tar, truncated (and in
    which member), a manifest naming a missing config or layer, a digest that does not match.
    """
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ArchiveError(f"--image {spec}: cannot read {path!r} ({exc.strerror})") from None
    members: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                end = member.offset_data + member.size
                if member.isfile() and end > size:
                    raise ArchiveError(
                        f"--image {spec}: {path!r} is truncated: it ends inside {member.name!r} ({size} bytes on "
                        f"disk, that member needs {end}); the transfer did not finish, copy it again "
                        "(rsync --partial --append-verify resumes it)")
                members[member.name.removeprefix("./")] = member
            if members:
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
            if verify:
                _verify(tar, members, digests, spec, path)
                info = dataclasses.replace(info, verified=True)
            return info
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        where = f" after {list(members)[-1]!r}" if members else ""
        raise ArchiveError(f"--image {spec}: {path!r} is not a readable tar archive{where} ({exc}); "
                           "copy it again, or make it with 'docker save -o img.tar IMAGE'") from None


def _read_json(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, spec: str, path: str,
               *, required: bool = True) -> Any:
    member = members.get(name)
    if member is None:
        if required:
            raise ArchiveError(f"--image {spec}: {path!r} names {name!r}, which is not in the archive; "
                               "the archive is incomplete: save it again")
        return None
    fh = tar.extractfile(member)
    if fh is None:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is not a file; save the archive again")
    if member.size > 64 << 20:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is {member.size} bytes, too big for metadata")
    try:
        return json.loads(fh.read())
    except ValueError as exc:
        raise ArchiveError(f"--image {spec}: {name!r} in {path!r} is not valid JSON ({exc}); "
                           "save the archive again") from None


def _need(members: dict[str, tarfile.TarInfo], name: str, what: str, spec: str, path: str) -> None:
    if name not in members:
        raise ArchiveError(f"--image {spec}: {path!r} lacks {what} {name!r} that its manifest names; "
                           "the archive is incomplete: save it again with 'docker save'")


Digests = list[tuple[str, str]]
"""(member, ``alg:hex`` its content must hash to)."""


def _docker_archive(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], manifest: Any, spec: str,
                    path: str, size: int) -> tuple[ArchiveInfo, Digests]:
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise ArchiveError(f"--image {spec}: manifest.json in {path!r} is not a docker save manifest")
    if len(manifest) > 1:
        raise ArchiveError(f"--image {spec}: {path!r} holds {len(manifest)} images; save one image per archive "
                           "('docker save -o img.tar IMAGE')")
    entry = manifest[0]
    config = str(entry.get("Config") or "")
    layers = [str(x) for x in entry.get("Layers") or []]
    _need(members, config, "the image config", spec, path)
    for layer in layers:
        _need(members, layer, "layer", spec, path)
    # The config's name is its digest: <hex>.json, or blobs/sha256/<hex> from Docker 25 on.
    digest = "sha256:" + os.path.basename(config).removesuffix(".json")
    # Each layer tar hashes to its diff_id in the config (image spec: rootfs.diff_ids).
    config_json = _read_json(tar, members, config, spec, path)
    diff_ids = (config_json.get("rootfs") or {}).get("diff_ids") or []
    digests = [(config, digest)]
    if len(diff_ids) == len(layers):
        digests += list(zip(layers, (str(d) for d in diff_ids)))
    info = ArchiveInfo(path=path, kind="docker-archive", config_digest=digest,
                       repo_tags=tuple(str(t) for t in entry.get("RepoTags") or []), layers=len(layers), size=size,
                       labels=_labels(config_json), diff_ids=tuple(str(d) for d in diff_ids),
                       run_config=run_config(config_json))
    return info, digests


def _blob(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _oci_archive(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], index: Any, spec: str, path: str,
                 size: int) -> tuple[ArchiveInfo, Digests]:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not manifests:
        raise ArchiveError(f"--image {spec}: index.json in {path!r} lists no manifest; save the archive again")
    desc = manifests[0]
    name = _blob(str(desc.get("digest") or ""))
    _need(members, name, "the manifest", spec, path)
    manifest = _read_json(tar, members, name, spec, path)
    if isinstance(manifest, dict) and manifest.get("manifests"):  # an index: take its first image
        name = _blob(str(manifest["manifests"][0].get("digest") or ""))
        _need(members, name, "the manifest", spec, path)
        manifest = _read_json(tar, members, name, spec, path)
    config = str((manifest.get("config") or {}).get("digest") or "")
    _need(members, _blob(config), "the image config", spec, path)
    config_json = _read_json(tar, members, _blob(config), spec, path)
    labels = _labels(config_json)
    layers = [str(x.get("digest") or "") for x in manifest.get("layers") or []]
    for layer in layers:
        _need(members, _blob(layer), "layer", spec, path)
    tag = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
    diff_ids = ((config_json.get("rootfs") or {}).get("diff_ids") or []) if isinstance(config_json, dict) else []
    info = ArchiveInfo(path=path, kind="oci-archive", config_digest=config, repo_tags=(str(tag),) if tag else (),
                       layers=len(layers), size=size, labels=labels, diff_ids=tuple(str(d) for d in diff_ids),
                       run_config=run_config(config_json))
    # Every blob is named by its digest (OCI image layout).
    return info, [(_blob(d), d) for d in (config, *layers)]


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
            path: str) -> None:
    """Hash each member against the digest the archive's own metadata gives it."""
    for name, digest in digests:
        alg, _, expected = digest.partition(":")
        fh = tar.extractfile(members[name])
        if fh is None or alg not in hashlib.algorithms_available:
            continue
        h = hashlib.new(alg)
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
        if h.hexdigest() != expected:
            raise ArchiveError(f"--image {spec}: {name!r} in {path!r} does not match its digest {alg}:"
                               f"{expected[:16]}... (got {h.hexdigest()[:16]}...); the archive is corrupt: copy it "
                               "again")
