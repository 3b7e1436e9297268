"""Image archives checked before anything starts: real `docker save` and `podman save` tars, and
archives cut or damaged the way transfers damage them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine.archives import ArchiveError, inspect_archive, is_tar, run_config, write_untagged

from helpers import ONLY_SYSTEM, cut_copy, docker_save_tar


def _oci_tar(path: Path, *, drop: str | None = None, corrupt: str | None = None) -> str:
    """A minimal OCI image-layout tar (one layer); returns the config digest."""
    layer = b"layer bytes"
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}})
    blobs = {"layer": layer, "config": config.encode()}
    d = {k: "sha256:" + hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": d["config"]},
                           "layers": [{"digest": d["layer"]}]}).encode()
    blobs["manifest"] = manifest
    d["manifest"] = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": d["manifest"], "annotations": {
        "org.opencontainers.image.ref.name": "team/img:1.4"}}]}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{d[k].split(':')[1]}", v) for k, v in blobs.items())]:
            if drop and drop in name:
                continue
            if corrupt and corrupt in name:
                data = b"X" + data[1:]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return d["config"]


def test_docker_save_layers_are_hashed_against_the_configs_diff_ids(tmp_path: Path) -> None:
    """--verify-archive hashes each layer tar of a docker save against its ``rootfs.diff_ids`` entry."""
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    digest = docker_save_tar(good)
    docker_save_tar(bad, layer_bytes=b"layer 0 bytez")  # the same length: only hashing sees it
    info = inspect_archive(str(good), "good.tar", verify=True)
    assert (info.kind, info.config_digest, info.layers, info.verified) == ("docker-archive", digest, 1, True)
    assert inspect_archive(str(bad), "bad.tar").verified is False  # without verify: not hashed
    with pytest.raises(ArchiveError, match=r"'[0-9a-f]{64}/layer.tar' in .* does not match its digest sha256:"):
        inspect_archive(str(bad), "bad.tar", verify=True)


def test_verify_archive_option_refuses_a_layer_that_does_not_match(pytester: pytest.Pytester) -> None:
    docker_save_tar(pytester.path / "bad.tar", layer_bytes=b"layer 0 bytez")
    result = pytester.runpytest_subprocess("--image", "bad.tar", "--verify-archive")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "/layer.tar' in 'bad.tar' does not match its digest" in result.stderr.str()


def test_a_tar_without_its_end_of_archive_marker_is_truncated(tmp_path: Path) -> None:
    """Cut right after the last member's data: every member is whole, only the two zero blocks that end
    a tar are missing (a transfer that stopped there)."""
    whole, cut = tmp_path / "whole.tar", tmp_path / "cut.tar"
    docker_save_tar(whole)
    with tarfile.open(whole) as tar:
        last = tar.getmembers()[-1]
    data_end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    cut.write_bytes(whole.read_bytes()[:data_end])
    assert inspect_archive(str(whole), "whole.tar").layers == 1
    with pytest.raises(ArchiveError, match=r"is truncated after 'manifest.json' .*no end-of-archive marker"):
        inspect_archive(str(cut), "cut.tar")


def test_a_tar_holding_two_images_is_refused(tmp_path: Path) -> None:
    """``docker save -o x.tar a b`` writes one manifest entry per image: which one to check is not known."""
    docker_save_tar(tmp_path / "two.tar", images=2)
    with pytest.raises(ArchiveError, match=r"holds 2 images; save one image per archive"):
        inspect_archive(str(tmp_path / "two.tar"), "two.tar")


def test_oci_layout_archive_gives_its_config_digest(tmp_path: Path) -> None:
    digest = _oci_tar(tmp_path / "img.tar")
    info = inspect_archive(str(tmp_path / "img.tar"), "img.tar", verify=True)
    assert (info.kind, info.config_digest, info.repo_tags, info.layers, info.verified) == (
        "oci-archive", digest, ("team/img:1.4",), 1, True)


def test_untagged_copy_names_no_image(tmp_path: Path, saved: Path) -> None:
    # docker/podman load tag the loaded image with the archive's names, taking the name from an
    # image the user has under it; the stream the plugin loads names nothing, layers unchanged.
    _oci_tar(tmp_path / "oci.tar")
    for src in (tmp_path / "oci.tar", saved):
        out = tmp_path / f"untagged-{src.name}"
        with open(out, "wb") as fh:
            write_untagged(str(src), fh)
        before, after = inspect_archive(str(src), "src", verify=True), inspect_archive(str(out), "out", verify=True)
        assert before.repo_tags and after.repo_tags == ()
        assert (after.kind, after.config_digest, after.diff_ids, after.layers) == (
            before.kind, before.config_digest, before.diff_ids, before.layers)
        with tarfile.open(src) as a, tarfile.open(out) as b:
            names = {m.name for m in a} - {"repositories"}
            assert {m.name for m in b} == names
            for name in names - {"manifest.json", "index.json"}:
                fa, fb = a.extractfile(name), b.extractfile(name)
                assert (fa.read() if fa else None) == (fb.read() if fb else None), name
            if "index.json" in names:
                index = json.load(b.extractfile("index.json"))  # type: ignore[arg-type]
                assert all(not {"org.opencontainers.image.ref.name", "io.containerd.image.name"}
                           & set(m.get("annotations") or {}) for m in index["manifests"])


def test_run_config_compares_like_with_like() -> None:
    archive = {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []},
               "config": {"Env": ["PATH=/bin"], "Cmd": ["bash"], "Labels": None, "WorkingDir": ""}}
    inspect = {"Id": "sha256:x", "Architecture": "amd64", "Os": "linux",
               "Config": {"Env": ["PATH=/bin"], "Cmd": ["bash"], "Labels": {}, "User": "", "Image": "sha256:y"}}
    assert run_config(archive) == run_config(inspect) != {}
    inspect["Config"]["Env"] = ["PATH=/bin", "A=1"]  # type: ignore[index]
    assert run_config(archive) != run_config(inspect)


def test_missing_layer_is_named(tmp_path: Path) -> None:
    _oci_tar(tmp_path / "img.tar", drop="blobs/sha256/" + hashlib.sha256(b"layer bytes").hexdigest())
    with pytest.raises(ArchiveError, match=r"lacks layer 'blobs/sha256/.*' that its manifest names"):
        inspect_archive(str(tmp_path / "img.tar"), "img.tar")


def test_the_content_key_is_what_the_image_is_made_of(tmp_path: Path) -> None:
    """A verified archive's content key covers its config and every layer: an OCI layout with the same
    (genuine) config whose manifest names another layer, every blob named by its own digest, has
    another key; the same archive read again, or renamed, the same one."""
    _oci_tar(tmp_path / "genuine.tar")
    genuine = inspect_archive(str(tmp_path / "genuine.tar"), "genuine.tar", verify=True)
    other_layer = b"other bytes"
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": genuine.diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": genuine.config_digest},
                           "layers": [{"digest": "sha256:" + hashlib.sha256(other_layer).hexdigest()}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}]}).encode()
    with tarfile.open(tmp_path / "swapped.tar", "w") as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b)
                             for b in (config, manifest, other_layer))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    swapped = inspect_archive(str(tmp_path / "swapped.tar"), "swapped.tar", verify=True)
    assert swapped.config_digest == genuine.config_digest and swapped.verified
    assert swapped.content_key != genuine.content_key
    (tmp_path / "genuine.tar").rename(tmp_path / "moved.tar")
    assert inspect_archive(str(tmp_path / "moved.tar"), "moved.tar", verify=True).content_key == genuine.content_key


def test_a_docker_archive_whose_layers_do_not_pair_with_its_diff_ids_cannot_be_verified(tmp_path: Path) -> None:
    path = tmp_path / "img.tar"
    docker_save_tar(path)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = manifest[0]["Layers"] * 2  # two layers, one diff_id
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert inspect_archive(str(path), "img.tar").layers == 2
    with pytest.raises(ArchiveError, match=r"names 2 layer\(s\) while its config lists 1 diff_id\(s\): its layers "
                                           r"cannot be verified"):
        inspect_archive(str(path), "img.tar", verify=True)


def test_a_compressed_docker_archive_layer_is_verified_decompressed(tmp_path: Path) -> None:
    """A docker archive whose tool stored a layer gzipped: its diff_id is the uncompressed layer's."""
    import gzip

    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    docker_save_tar(good, layer_bytes=gzip.compress(b"layer 0 bytes"))
    docker_save_tar(bad, layer_bytes=gzip.compress(b"layer 0 bytez"))
    assert inspect_archive(str(good), "good.tar", verify=True).verified
    with pytest.raises(ArchiveError, match=r"/layer.tar' in .* does not match its digest sha256:.*altered or damaged"):
        inspect_archive(str(bad), "bad.tar", verify=True)


def test_corrupt_blob_fails_only_with_verify(tmp_path: Path) -> None:
    _oci_tar(tmp_path / "img.tar", corrupt=hashlib.sha256(b"layer bytes").hexdigest())
    assert inspect_archive(str(tmp_path / "img.tar"), "img.tar").verified is False
    with pytest.raises(ArchiveError, match="does not match its digest"):
        inspect_archive(str(tmp_path / "img.tar"), "img.tar", verify=True)


@pytest.fixture(scope="module")
def saved(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base test image as users move it: docker save."""
    path = tmp_path_factory.mktemp("saved") / "base.tar"
    subprocess.run(["docker", "save", "-o", str(path), base_image], check=True, timeout=300)
    return path


def test_docker_save_archive_is_the_same_image(saved: Path, base_image: str) -> None:
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", base_image], capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()
    info = inspect_archive(str(saved), "base.tar", verify=True)
    assert is_tar(str(saved))
    assert (info.kind, info.config_digest, info.verified) == ("docker-archive", image_id, True)
    assert any(t.startswith("containercheck-test/base:") for t in info.repo_tags)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_transfer_names_the_member_it_broke_in(saved: Path, tmp_path: Path, keep: float) -> None:
    cut = cut_copy(saved, tmp_path / "cut.tar", keep)
    assert is_tar(str(cut))
    with pytest.raises(ArchiveError, match=r"is truncated.*copy it again"):
        inspect_archive(str(cut), "cut.tar")


def test_not_an_archive(tmp_path: Path) -> None:
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(__file__, arcname="x.py")
    with pytest.raises(ArchiveError, match="is a tar file but not an image archive"):
        inspect_archive(str(other), "other.tar")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    assert not is_tar(str(text))


@pytest.fixture(scope="module")
def own_archive(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An archive of an image the engine does not have: a one-label child of base, saved, then removed.

    Returns (archive path, image id).
    """
    tag = "containercheck-test/archive-only:latest"
    built = subprocess.run(["docker", "build", "--quiet", "--tag", tag, "-"], input=f"FROM {base_image}\n"
                           "LABEL org.containercheck.archive-test=yes\n", capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    image_id = built.stdout.strip()
    path = tmp_path_factory.mktemp("own") / "archive-only.tar"
    subprocess.run(["docker", "save", "-o", str(path), tag], check=True, timeout=300)
    subprocess.run(["docker", "rmi", "--force", tag], check=True, capture_output=True, timeout=120)
    return path, image_id


def _engine_has(image_id: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image_id], capture_output=True, timeout=60).returncode == 0


def test_archive_is_loaded_run_and_removed(pytester: pytest.Pytester, own_archive: tuple[Path, str]) -> None:
    path, image_id = own_archive
    assert not _engine_has(image_id)
    result = pytester.runpytest_subprocess("--image", str(path), "--matrix-json", "m.json", *ONLY_SYSTEM)
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*docker-archive://archive-only.tar ready after * (container *; docker load * s)*"])
    data = json.loads((pytester.path / "m.json").read_text())
    column = data["columns"][0]
    assert column["id"] == "docker-archive://archive-only.tar"
    assert column["facts"]["config_digest"] == image_id and column["facts"]["launch"]["archive"]["loaded"] is True
    assert {c["row"]: c["status"] for c in data["cells"]}["system.python"] == "pass"
    assert not _engine_has(image_id), "the image this run loaded must be removed at the end"


def test_loaded_image_is_kept_on_request(pytester: pytest.Pytester, own_archive: tuple[Path, str]) -> None:
    path, image_id = own_archive
    try:
        result = pytester.runpytest_subprocess("--image", f"docker-archive://{path}", "--keep-loaded-images",
                                               *ONLY_SYSTEM)
        assert result.ret == 0, result.stdout.str()[-3000:]
        assert _engine_has(image_id)
        # Loaded already: the next run does not load it again, and does not remove what it did not load.
        again = pytester.runpytest_subprocess("--image", str(path), "--matrix-json", "m.json", *ONLY_SYSTEM)
        launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
        assert again.ret == 0 and launch["archive"]["loaded"] is False and _engine_has(image_id)
    finally:
        subprocess.run(["docker", "rmi", "--force", image_id], capture_output=True, timeout=120)


def _build(base_image: str, tag: str, label: str) -> str:
    built = subprocess.run(["docker", "build", "--quiet", "--tag", tag, "-"],
                           input=f"FROM {base_image}\nLABEL org.containercheck.archive-test={label}\n",
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip()


def _docker_id(ref: str) -> str | None:
    res = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True,
                         timeout=60)
    return res.stdout.strip() if res.returncode == 0 else None


def test_loading_an_archive_leaves_the_users_tag_alone(pytester: pytest.Pytester, base_image: str,
                                                       tmp_path: Path) -> None:
    """The user saved build A as team/app:dev, then rebuilt: team/app:dev is build B now.  Checking
    a.tar loads A without a name and removes only that; team/app:dev still names B.  Checking b.tar
    (the build the tag names) loads nothing and removes nothing."""
    tag = f"containercheck-test/usertag:{os.getpid()}"
    old = _build(base_image, tag, "a")
    subprocess.run(["docker", "save", "-o", str(tmp_path / "a.tar"), tag], check=True, timeout=300)
    new = _build(base_image, tag, "b")
    subprocess.run(["docker", "rmi", old], check=True, capture_output=True, timeout=120)
    subprocess.run(["docker", "save", "-o", str(tmp_path / "b.tar"), tag], check=True, timeout=300)
    try:
        result = pytester.runpytest_subprocess("--image", str(tmp_path / "a.tar"), "--matrix-json", "a.json",
                                               *ONLY_SYSTEM)
        assert result.ret == 0, result.stdout.str()[-3000:]
        launch = json.loads((pytester.path / "a.json").read_text())["columns"][0]["facts"]["launch"]
        assert launch["archive"]["loaded"] is True and launch["archive"]["image_id"] == old
        assert _docker_id(tag) == new, "the user's tag must still name their own build"
        assert _docker_id(old) is None, "the image this run loaded must be removed at the end"
        result = pytester.runpytest_subprocess("--image", str(tmp_path / "b.tar"), "--matrix-json", "b.json",
                                               *ONLY_SYSTEM)
        assert result.ret == 0, result.stdout.str()[-3000:]
        launch = json.loads((pytester.path / "b.json").read_text())["columns"][0]["facts"]["launch"]
        assert launch["archive"]["loaded"] is False
        assert _docker_id(tag) == new
    finally:
        subprocess.run(["docker", "rmi", "--force", tag, old], capture_output=True, timeout=120)


def test_bad_archive_is_a_usage_error_before_anything_starts(pytester: pytest.Pytester, saved: Path) -> None:
    cut = cut_copy(saved, pytester.path / "cut.tar")
    result = pytester.runpytest_subprocess("--image", str(cut))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is truncated: it ends inside" in result.stderr.str() and "Traceback" not in result.stderr.str()


@pytest.mark.apptainer
def test_archive_under_apptainer_is_converted_once(pytester: pytest.Pytester, saved: Path, apptainer: Any,
                                                   base_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(pytester.path / "cache"))
    args = ("--runtime", "apptainer", "--image", str(saved), "--runtime-arg=--userns", "--matrix-json", "m.json",
            *ONLY_SYSTEM)
    first = pytester.runpytest_subprocess(*args)
    assert first.ret == 0, first.stdout.str()[-3000:]
    launch = json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"]
    assert launch["archive"]["converted"] is True and Path(launch["archive"]["sif"]).is_file()
    second = pytester.runpytest_subprocess(*args)
    data = json.loads((pytester.path / "m.json").read_text())
    assert second.ret == 0 and data["columns"][0]["facts"]["launch"]["archive"]["converted"] is False
    assert data["columns"][0]["id"] == "apptainer+docker-archive://base.tar"
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", base_image], capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()
    assert data["columns"][0]["facts"]["config_digest"] == image_id


def _tamper(src: Path, dst: Path) -> str:
    """*src* (a ``docker save`` tar) with its config as it is -- the same config digest, the same image id --
    and its layer altered: ``/usr/lib/os-release`` says TAMPERED.  Returns the altered layer's member name."""
    altered_layer = dst.with_suffix(".layer")
    with tarfile.open(src) as tin:
        manifest = json.loads(tin.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (name,) = manifest[0]["Layers"]  # the test images are one layer (debootstrap, docker import)
        with tarfile.open(fileobj=tin.extractfile(name)) as lin, tarfile.open(altered_layer, "w") as lout:
            for m in lin:
                if m.name.removeprefix("./") == "usr/lib/os-release":
                    data = lin.extractfile(m).read().replace(b'PRETTY_NAME="', b'PRETTY_NAME="TAMPERED ')  # type: ignore[union-attr]
                    m.size = len(data)
                    lout.addfile(m, io.BytesIO(data))
                else:
                    lout.addfile(m, lin.extractfile(m) if m.isfile() else None)
        with tarfile.open(dst, "w") as tout:
            for member in tin:
                if member.name == name:
                    member.size = altered_layer.stat().st_size
                    with open(altered_layer, "rb") as fh:
                        tout.addfile(member, fh)
                else:
                    tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    altered_layer.unlink()
    return str(name)


@pytest.mark.apptainer
def test_a_verified_archive_never_runs_another_images_sif(pytester: pytest.Pytester, saved: Path, apptainer: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The converted SIF is cached by what the image is made of, and the archive is hashed before it is
    converted and before a cached SIF is used: an archive with the genuine config and an altered layer
    stops with that layer named, before or after the genuine archive was converted; the genuine
    archive runs the genuine image.  Cached by the config digest alone, the genuine archive ran the
    altered SIF (system.os: TAMPERED ...)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(pytester.path / "cache"))
    sifs = pytester.path / "cache" / "containercheck" / "sif"
    tampered = pytester.path / "tampered.tar"
    layer = _tamper(saved, tampered)
    assert inspect_archive(str(tampered), "t").config_digest == inspect_archive(str(saved), "s").config_digest

    def run(archive: Path) -> pytest.RunResult:
        return pytester.runpytest_subprocess("--runtime", "apptainer", "--image", str(archive),
                                             "--runtime-arg=--userns", "--matrix-json", "m.json", *ONLY_SYSTEM)

    def refused(result: pytest.RunResult) -> None:
        errors = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-3000:]
        assert len(errors) == 1 and f"the layer {layer!r} in " in errors[0], errors
        assert "does not match its digest sha256:" in errors[0] and "altered or damaged" in errors[0], errors
        assert "Traceback" not in result.stdout.str() + result.stderr.str()

    refused(run(tampered))  # first: nothing converted, nothing cached
    assert not sifs.exists() or not list(sifs.iterdir())
    genuine = run(saved)
    assert genuine.ret == 0, genuine.stdout.str()[-3000:]
    data = json.loads((pytester.path / "m.json").read_text())
    os_cell = next(c for c in data["cells"] if c["row"] == "system.os")
    assert os_cell["status"] == "pass" and "TAMPERED" not in os_cell["detail"], os_cell
    launch = data["columns"][0]["facts"]["launch"]["archive"]
    assert launch["converted"] is True and Path(launch["sif"]).name == launch["content_key"].replace(":", "-") + ".sif"
    refused(run(tampered))  # then: the genuine image's cached SIF is never its
    again = run(saved)
    assert again.ret == 0 and json.loads((pytester.path / "m.json").read_text())["columns"][0]["facts"]["launch"][
        "archive"]["converted"] is False


def test_merge_knows_the_archive_and_the_image_are_one(pytester: pytest.Pytester, saved: Path,
                                                        base_image: str) -> None:
    # The build host checks the image; the far end checks the tar it received, in conditions of its
    # own (here a CA bundle variable pointing nowhere, so system.tls fails there only).
    first = pytester.runpytest_subprocess("--image", base_image, "--matrix-json", "built.json", *ONLY_SYSTEM,
                                          str(Path(ONLY_SYSTEM[1]).with_name("test_tls.py")))
    second = pytester.runpytest_subprocess("--image", str(saved), "--matrix-json", "arrived.json",
                                           "--container-env", "SSL_CERT_FILE=/nonexistent.pem", *ONLY_SYSTEM,
                                           str(Path(ONLY_SYSTEM[1]).with_name("test_tls.py")))
    assert first.ret == 0 and second.ret == 1, second.stdout.str()[-2000:]
    merged = subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", "merge", "built.json", "arrived.json",
                             "--json", "all.json", "--md", "all.md", "--html", "all.html"],
                            cwd=pytester.path, capture_output=True, text=True, timeout=120)
    assert "SAME IMAGE sha256:" in merged.stdout, merged.stdout + merged.stderr
    assert "same image, different verdict: system.tls: pass on docker://" in merged.stdout
    (group,) = json.loads((pytester.path / "all.json").read_text())["meta"]["same_image"]
    assert {c["column"] for c in group["columns"]} == {f"docker://{base_image}", "docker-archive://base.tar"}
    assert [d["row"] for d in group["different_verdicts"]] == ["system.tls"]
    md = (pytester.path / "all.md").read_text()
    assert "**Same image** `sha256:" in md and "same image, different verdict on **system.tls**" in md
    assert md.count("group A (by digest)") == 0 and "group A (by digest)" in (pytester.path / "all.html").read_text()
