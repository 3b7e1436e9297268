"""Every name an image goes by (``engine/names.py``): a ``match`` glob finds the image however
the user, the runtime or the archive wrote its name.  The forms come from docker/distribution's
``reference/normalize.go`` (``ParseNormalizedNamed``: ``docker.io`` and ``library/`` implied,
``:latest`` implied without a tag or digest), Podman's ``localhost/`` for images it built or
loaded, and ``docker image inspect``'s ``Id``/``RepoTags``/``RepoDigests``; the real runtimes'
forms are exercised in ``tests/test_gate_names.py``."""

from __future__ import annotations

import pytest

from pytest_containercheck.engine.names import id_names, image_names, matches, reference_names, split_reference

HEX = "0123456789abcdef" * 4
DIGEST = "sha256:" + "f" * 64


@pytest.mark.parametrize(("ref", "parts"), [
    ("team/render", ("docker.io", "team/render", "latest", "")),
    ("ubuntu:22.04", ("docker.io", "library/ubuntu", "22.04", "")),
    ("docker.io/library/ubuntu", ("docker.io", "library/ubuntu", "latest", "")),
    ("index.docker.io/team/render:1", ("docker.io", "team/render", "1", "")),
    ("localhost/team/render:1.4", ("localhost", "team/render", "1.4", "")),
    ("reg.example.com:5000/team/render", ("reg.example.com:5000", "team/render", "latest", "")),
    ("reg:5000/x", ("reg:5000", "x", "latest", "")),  # a port makes it a registry
    (f"team/render@{DIGEST}", ("docker.io", "team/render", "", DIGEST)),
    (f"team/render:1@{DIGEST}", ("docker.io", "team/render", "1", DIGEST)),
])
def test_references_normalise_as_docker_does(ref: str, parts: tuple[str, str, str, str]) -> None:
    assert split_reference(ref) == parts


@pytest.mark.parametrize("written", [
    "team/render", "team/render:latest", "docker.io/team/render", "docker.io/team/render:latest",
    "index.docker.io/team/render:latest", "localhost/team/render:latest",
])
def test_every_form_of_one_reference_has_every_other_form(written: str) -> None:
    names = reference_names(written)
    assert matches("team/render:*", names) and matches("team/render", names)
    if not written.startswith("localhost/"):
        assert matches("docker.io/team/render:latest", names)


def test_an_explicit_tag_is_not_latest() -> None:
    names = reference_names("team/render:1.4")
    assert "team/render:1.4" in names and "docker.io/team/render:1.4" in names
    assert not matches("team/render", names) and not matches("team/render:latest", names)


def test_official_images_with_and_without_library() -> None:
    names = reference_names("ubuntu")
    for form in ("ubuntu", "ubuntu:latest", "library/ubuntu:latest", "docker.io/library/ubuntu:latest"):
        assert form in names, (form, names)
    assert not matches("docker.io/ubuntu:*", names)  # not a form Docker writes


def test_another_registry_keeps_its_name() -> None:
    names = reference_names("reg.example.com:5000/team/render:2")
    assert names == ["reg.example.com:5000/team/render:2"]
    assert not matches("team/render:*", names)  # another registry's image is another image


def test_digests_and_ids() -> None:
    names = reference_names(f"team/render@{DIGEST}")
    assert f"docker.io/team/render@{DIGEST}" in names and DIGEST in names and f"team/render@{DIGEST}" in names
    assert id_names(f"sha256:{HEX}") == [f"sha256:{HEX}", HEX, HEX[:12]]
    assert id_names(HEX) == id_names(f"sha256:{HEX}")  # Podman's Id has no prefix
    assert id_names("not-an-id") == ["not-an-id"]


def test_image_names_gather_every_source() -> None:
    docker = image_names("team/render:1.4", "team/render:1.4", "oci",
                         {"image": {"id": f"sha256:{HEX}", "tags": ["team/render:1.4", "team/render:stable"],
                                    "digests": [f"team/render@{DIGEST}"]}}, "docker://team/render:1.4")
    for form in ("docker://team/render:1.4", "docker.io/team/render:1.4", "team/render:stable", HEX[:12],
                 f"sha256:{HEX}", DIGEST):
        assert form in docker, form
    # by its id: the tags the engine reports name it
    by_id = image_names(HEX[:12], HEX[:12], "oci", {"image": {"id": HEX, "tags": ["localhost/team/render:1"]}})
    assert matches("team/render:*", by_id) and matches("localhost/team/*", by_id)
    archive = image_names("render.tar", "/srv/render.tar", "oci",
                          {"archive": "/srv/render.tar", "archive_format": "docker-archive",
                           "repo_tags": ["team/render:1.4"], "config_digest": f"sha256:{HEX}"})
    assert matches("team/render:*", archive) and "render.tar" in archive and HEX[:12] in archive
    assert not matches("render.tar:*", archive)  # a path is not a reference
    sif = image_names("render.sif", "/srv/render.sif", "sif",
                      {"labels": {"org.label-schema.usage.singularity.deffile.bootstrap": "docker-daemon",
                                  "org.label-schema.usage.singularity.deffile.from": "team/render:1.4"}})
    assert matches("team/render:*", sif) and matches("*.sif", sif)
    from_tar = image_names("r.sif", "r.sif", "sif",
                           {"labels": {"org.label-schema.usage.singularity.deffile.bootstrap": "docker-archive",
                                       "org.label-schema.usage.singularity.deffile.from": "/tmp/x/render.tar"}})
    assert "render.tar" in from_tar and not matches("render.tar:*", from_tar)


def test_an_image_cannot_name_itself_with_a_label() -> None:
    """The ``deffile.from`` label names a SIF's source because Apptainer writes it when it builds the
    SIF; the same label set by a Docker image (or inside an archive) is the image's own word, and
    would let it choose the table that judges it: it names nothing there."""
    forged = {"org.label-schema.usage.singularity.deffile.bootstrap": "docker-daemon",
              "org.label-schema.usage.singularity.deffile.from": "team/prod:1"}
    docker = image_names("cc/forge:1", "cc/forge:1", "oci", {"image": {"labels": forged}})
    archive = image_names("f.tar", "/x/f.tar", "oci", {"archive": "/x/f.tar", "archive_format": "docker-archive",
                                                       "labels": forged})
    converted = image_names("f.tar", "/x/f.tar", "sif", {"archive": "/x/f.tar", "archive_format": "docker-archive",
                                                         "labels": forged})
    for names in (docker, archive, converted):
        assert not matches("team/prod:*", names), names
    assert matches("team/prod:*", image_names("p.sif", "p.sif", "sif", {"labels": forged}))
