"""Hostile and unusual image archives (issue 25, items 4 and 5): each is one line before anything
starts, under every runtime, never a traceback; compressed archives and multi-platform OCI
indexes are handled the way ``docker load`` / ``podman load`` / ``apptainer build`` handle them.

The archives are built here, member by member, as a crafted upload would be.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.archives import ArchiveError, inspect_archive, is_tar
from pytest_containercheck.engine.platforms import host_architecture

LAYER = b"layer bytes"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(path: Path, members: list[tuple[str, Any]]) -> Path:
    """A tar of *members*: (name, bytes) for files, (name, ("sym"|"lnk", target)) for links."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "sym" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _docker(path: Path, *, manifest: Any = None, config: Any = None, link: tuple[str, str] | None = None) -> Path:
    """A docker-save tar; *manifest*/*config* replace the real ones; *link* makes that member a link."""
    cfg = json.dumps(config if config is not None else
                     {"architecture": host_architecture(), "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [_sha(LAYER)]}}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    man = json.dumps(manifest if manifest is not None else
                     [{"Config": cfg_name, "RepoTags": ["x/y:1"], "Layers": ["l1/layer.tar"]}]).encode()
    members: list[tuple[str, Any]] = [("l1/layer.tar", LAYER), (cfg_name, cfg), ("manifest.json", man)]
    if link is not None:
        members = [(n, (link[0], link[1]) if n == ("manifest.json" if link[1] != "config" else cfg_name) else d)
                   for n, d in members]
    return _write(path, members)


def _oci(path: Path, platforms: list[str | None], *, index: Any = None) -> tuple[Path, dict[str, str]]:
    """An OCI layout tar with one image per platform (``os/arch``; None: no platform field)."""
    blobs: dict[str, bytes] = {"layer": LAYER}
    descs = []
    configs = {}
    for p in platforms:
        os_, _, arch = (p or "linux/amd64").partition("/")
        cfg = json.dumps({"architecture": arch, "os": os_, "rootfs": {"diff_ids": [_sha(LAYER)]},
                          "config": {"Labels": {"p": str(p)}}}).encode()
        man = json.dumps({"schemaVersion": 2, "config": {"digest": _sha(cfg)},
                          "layers": [{"digest": _sha(LAYER)}]}).encode()
        blobs[_sha(cfg)] = cfg
        blobs[_sha(man)] = man
        configs[str(p)] = _sha(cfg)
        desc: dict[str, Any] = {"digest": _sha(man), "mediaType": "application/vnd.oci.image.manifest.v1+json"}
        if p is not None:
            desc["platform"] = {"os": os_, "architecture": arch}
        descs.append(desc)
    idx = json.dumps(index if index is not None else {"schemaVersion": 2, "manifests": descs}).encode()
    members = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", idx)]
    members += [(f"blobs/sha256/{(_sha(v) if k == 'layer' else k).split(':')[1]}", v) for k, v in blobs.items()]
    return _write(path, members), configs


def _deep(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


# The ten kinds the sweep found (and a few more of the same families): each is refused with
# one line naming what is wrong, never a traceback.
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "manifest-is-an-object": (lambda p: _docker(p, manifest={"Config": "x"}), "is not a docker save manifest"),
    "manifest-entry-a-string": (lambda p: _docker(p, manifest=["x"]), "is not a docker save manifest"),
    "layers-a-number": (lambda p: _docker(p, manifest=[{"Config": "c.json", "Layers": 5}]),
                        "'Layers' of manifest.json in"),
    "config-name-a-list": (lambda p: _docker(p, manifest=[{"Config": ["c.json"], "Layers": []}]),
                           "'Config' of manifest.json in"),
    "config-is-a-list": (lambda p: _docker(p, config=[1, 2]), "is list, not an object"),
    "rootfs-a-string": (lambda p: _docker(p, config={"rootfs": "layers"}), "'rootfs' of the image config"),
    "manifest-deeply-nested": (lambda p: _write(p, [("manifest.json", _deep())]), "is nested too deeply"),
    "manifest-a-symlink-outside": (lambda p: _docker(p, link=("sym", "../../../etc/passwd")),
                                   "'manifest.json' in '{path}' is a symbolic link to '../../../etc/passwd'"),
    "manifest-a-hard-link-outside": (lambda p: _docker(p, link=("lnk", "/etc/passwd")),
                                     "'manifest.json' in '{path}' is a hard link to '/etc/passwd'"),
    "config-a-symlink": (lambda p: _docker(p, link=("sym", "config")), "is a symbolic link to 'config'"),
    "index-a-list": (lambda p: _oci(p, ["linux/amd64"], index=[1])[0], "index.json in"),
    "index-manifests-strings": (lambda p: _oci(p, ["linux/amd64"], index={"manifests": ["a", "b"]})[0],
                                "a manifest descriptor of index.json"),
    "index-deeply-nested": (lambda p: _write(p, [("oci-layout", b"{}"), ("index.json", _deep())]),
                            "is nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_one_line(tmp_path: Path, case: str) -> None:
    make, expected = HOSTILE[case]
    path = make(tmp_path / "img.tar")
    with pytest.raises(ArchiveError) as info:
        inspect_archive(str(path), "img.tar")
    message = str(info.value)
    assert "\n" not in message and expected.format(path=path) in message, message
    assert message.startswith("--image img.tar: ")


@pytest.mark.docker
@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer"])
def test_hostile_archives_stop_every_runtime_before_anything_starts(pytester: pytest.Pytester, docker: str,
                                                                    runtime: str) -> None:
    # One run per runtime, with every hostile archive as an --image: the first is the usage
    # error (exit 4, one ERROR: line, no traceback), and nothing was started.
    for case in ("config-is-a-list", "manifest-a-symlink-outside", "manifest-deeply-nested", "index-a-list"):
        path = HOSTILE[case][0](pytester.path / f"{case}.tar")
        result = pytester.runpytest_subprocess("--runtime", runtime, "--image", str(path), "-p", "no:cacheprovider")
        errors = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (case, result.stderr.str()[-2000:])
        assert len(errors) == 1 and "Traceback" not in result.stderr.str() + result.stdout.str(), errors
        # Refused while the options are read, before any runtime is asked for anything.
        assert "collected" not in result.stdout.str() and "containercheck:" not in result.stdout.str()


# -- compressed archives -------------------------------------------------------------------------


def test_gzip_xz_archives_are_read_and_a_cut_one_is_named(tmp_path: Path) -> None:
    plain = _docker(tmp_path / "img.tar")
    want = inspect_archive(str(plain), "img.tar", verify=True)
    for suffix, pack in (("gz", gzip.compress), ("xz", lzma.compress)):
        packed = tmp_path / f"img.tar.{suffix}"
        packed.write_bytes(pack(plain.read_bytes()))
        assert is_tar(str(packed))
        got = inspect_archive(str(packed), packed.name, verify=True)
        assert (got.config_digest, got.diff_ids, got.verified) == (want.config_digest, want.diff_ids, True)
        assert got.compression == {"gz": "gzip", "xz": "xz"}[suffix]
        cut = tmp_path / f"cut.tar.{suffix}"
        cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
        with pytest.raises(ArchiveError, match=r"compressed archive that is truncated or corrupt"):
            inspect_archive(str(cut), cut.name)


@pytest.mark.docker
def test_docker_save_gzip_runs_under_docker_podman_and_apptainer(pytester: pytest.Pytester, base_image: str,
                                                                 tmp_path_factory: pytest.TempPathFactory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker save | gzip`` is how tars travel; every runtime checks it like the plain tar
    (Apptainer 1.4.5 cannot read it itself -- "gzip: invalid header" -- so it is decompressed
    beside the cached SIF first)."""
    path = tmp_path_factory.mktemp("gz") / "base.tar.gz"
    with open(path, "wb") as fh:
        saved = subprocess.run(["docker", "save", base_image], capture_output=True, check=True, timeout=600)
        fh.write(gzip.compress(saved.stdout, compresslevel=1))
    only = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_system.py")
    for runtime in ("docker", "podman", "apptainer"):
        extra = ["--runtime-arg=--userns"] if runtime == "apptainer" else []
        monkeypatch.setenv("XDG_CACHE_HOME", str(pytester.path / "cache"))
        result = pytester.runpytest_subprocess("--runtime", runtime, "--image", str(path), *extra,
                                               "--no-builtin-checks", only, "-k", "python",
                                               "--matrix-json", "m.json", timeout=900)
        assert result.ret == 0, (runtime, result.stdout.str()[-3000:], result.stderr.str()[-2000:])
        data = json.loads((pytester.path / "m.json").read_text())
        assert data["columns"][0]["facts"]["archive_compression"] == "gzip"
        assert {c["row"]: c["status"] for c in data["cells"]} == {"system.python": "pass"}
    assert not list((pytester.path / "cache").rglob("*.tar")), "the decompressed copy is removed"


def test_zstd_is_refused_with_the_way_out(tmp_path: Path) -> None:
    from pytest_containercheck.engine.errors import UsageProblem
    from pytest_containercheck.engine.targets import parse_target

    path = tmp_path / "img.tar.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 600)
    with pytest.raises(UsageProblem, match=r"zstd-compressed.*zstd -d"):
        parse_target(str(path))


# -- multi-platform OCI indexes -------------------------------------------------------------------


def test_multi_platform_index_picks_this_hosts_image(tmp_path: Path) -> None:
    here = f"linux/{host_architecture()}"
    other = "linux/s390x" if host_architecture() != "s390x" else "linux/arm64"
    path, configs = _oci(tmp_path / "multi.tar", [other, here])
    info = inspect_archive(str(path), "multi.tar", verify=True)
    assert info.config_digest == configs[here] and info.platform == here
    assert info.platforms == (other, here)
    assert info.facts()["platforms"] == [other, here]


def test_multi_platform_index_without_this_host_says_what_it_holds(tmp_path: Path) -> None:
    others = [p for p in ("linux/arm64", "linux/s390x", "linux/ppc64le") if p != f"linux/{host_architecture()}"]
    path, _ = _oci(tmp_path / "multi.tar", others[:2])
    with pytest.raises(ArchiveError) as info:
        inspect_archive(str(path), "multi.tar")
    message = str(info.value)
    assert f"holds 2 images for {others[0]}, {others[1]}, none for this host (linux/{host_architecture()})" in message
    assert f"--platform linux/{host_architecture()}" in message


def test_one_image_index_without_platform_is_that_image(tmp_path: Path) -> None:
    path, configs = _oci(tmp_path / "one.tar", [None])
    assert inspect_archive(str(path), "one.tar").config_digest == configs["None"]


def test_attestation_entries_are_not_platforms(tmp_path: Path) -> None:
    """BuildKit adds one attestation manifest per image (``unknown/unknown``): not an image, never
    listed or counted as a platform, never picked."""
    here = f"linux/{host_architecture()}"
    other = "linux/s390x" if host_architecture() != "s390x" else "linux/arm64"
    path, configs = _oci(tmp_path / "multi.tar", [other, "unknown/unknown", here, "unknown/unknown"])
    info = inspect_archive(str(path), "multi.tar", verify=True)
    assert (info.config_digest, info.platform, info.platforms) == (configs[here], here, (other, here))
    one, configs = _oci(tmp_path / "one.tar", ["unknown/unknown", here])
    info = inspect_archive(str(one), "one.tar")
    assert (info.config_digest, info.platforms) == (configs[here], (here,))
    foreign, _ = _oci(tmp_path / "foreign.tar", [other, "unknown/unknown"])
    with pytest.raises(ArchiveError) as refused:
        inspect_archive(str(foreign), "foreign.tar")
    assert f"holds 1 images for {other}, none for this host" in str(refused.value)
    assert "unknown" not in str(refused.value)


def test_an_oci_layout_needs_its_oci_layout_file(tmp_path: Path) -> None:
    """``index.json`` and blobs without the ``oci-layout`` marker file are not an OCI image layout (the
    OCI image-layout spec requires it in every layout)."""
    path, _ = _oci(tmp_path / "whole.tar", [f"linux/{host_architecture()}"])
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.name != "oci-layout"]  # type: ignore[union-attr]
    cut = _write(tmp_path / "no-layout.tar", members)
    assert inspect_archive(str(path), "whole.tar").kind == "oci-archive"
    with pytest.raises(ArchiveError, match=r"is a tar file but not an image archive \(no manifest.json, no "
                                           r"oci-layout \+ index.json\)"):
        inspect_archive(str(cut), "no-layout.tar")
