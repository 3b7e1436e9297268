"""``--image`` strings -> Target: runtime detection, overrides, validation and column ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.targets import Target, is_oci_reference, parse_target, parse_targets

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_host() -> None:
    t = parse_target("host")
    assert t == Target(runtime="host", ref="host", spec="host")
    assert t.id == "host"


def test_host_prefix_with_interpreter_path() -> None:
    t = parse_target("host:///usr/bin/python3")
    assert (t.runtime, t.ref, t.id) == ("host", "/usr/bin/python3", "host:///usr/bin/python3")


def test_sif_path_is_apptainer_even_when_missing() -> None:
    # Existence is checked later (preflight) with a better message than "bad reference".
    t = parse_target("images/app.sif")
    assert (t.runtime, t.ref, t.spec) == ("apptainer", "images/app.sif", "images/app.sif")


def test_existing_file_without_sif_suffix_is_apptainer(tmp_path: Path) -> None:
    image = tmp_path / "app.img"
    image.write_bytes(b"x")
    t = parse_target(str(image))
    assert (t.runtime, t.ref) == ("apptainer", str(image))
    assert t.id == "apptainer://app.img"


@pytest.mark.parametrize(
    ("spec", "runtime", "ref"),
    [
        ("docker://alpine:3.20", "docker", "alpine:3.20"),
        ("podman://alpine:3.20", "podman", "alpine:3.20"),
        ("apptainer://img/app.sif", "apptainer", "img/app.sif"),
        ("singularity://img/app.sif", "singularity", "img/app.sif"),
        ("host://", "host", "host"),
    ],
)
def test_prefix_picks_runtime(spec: str, runtime: str, ref: str) -> None:
    t = parse_target(spec, oci_default="podman")
    assert (t.runtime, t.ref, t.spec) == (runtime, ref, spec)


@pytest.mark.parametrize(
    "ref",
    ["alpine", "alpine:3.20", "registry:5000/team/name:1.4", f"name@{DIGEST}", f"ghcr.io/org/name:v1@{DIGEST}"],
)
@pytest.mark.parametrize("oci_default", ["docker", "podman"])
def test_plain_reference_uses_oci_default(ref: str, oci_default: str) -> None:
    t = parse_target(ref, oci_default=oci_default)
    assert (t.runtime, t.ref) == (oci_default, ref)
    assert t.id == f"{oci_default}://{ref}"
    assert is_oci_reference(ref)


def test_runtime_option_overrides_detection() -> None:
    assert parse_target("app.sif", runtime="singularity").runtime == "singularity"
    assert parse_target("alpine:3.20", runtime="podman").runtime == "podman"
    # An explicit prefix of the same family: --runtime only picks the binary.
    assert parse_target("docker://alpine", runtime="podman") == Target("podman", "alpine", "docker://alpine")
    assert parse_target("apptainer://app.sif", runtime="singularity").runtime == "singularity"
    assert parse_target("singularity://app.sif", runtime="apptainer").runtime == "apptainer"


@pytest.mark.parametrize(
    ("spec", "runtime"),
    [("docker://alpine", "apptainer"), ("apptainer://app.sif", "docker"), ("podman://alpine", "host")],
)
def test_prefix_conflicting_with_runtime_is_a_usage_error(spec: str, runtime: str) -> None:
    with pytest.raises(UsageProblem, match="drop one of them") as info:
        parse_target(spec, runtime=runtime)
    assert f"--runtime={runtime}" in str(info.value)


def test_unknown_prefix_lists_the_known_ones() -> None:
    with pytest.raises(UsageProblem, match=r"unknown prefix 'oci://'; use one of docker://, podman://"):
        parse_target("oci://alpine")


@pytest.mark.parametrize(
    "spec",
    ["Alpine", "team/Name:1", "my image", "img;rm -rf /", "$(x)", "img`id`", "img|cat", "img&&x", "docker://a b"],
)
def test_invalid_reference_is_a_usage_error_naming_the_fix(spec: str) -> None:
    with pytest.raises(UsageProblem) as info:
        parse_target(spec)
    message = str(info.value)
    assert "not a valid image reference" in message
    assert "expected name[:tag][@sha256:...], lower-case" in message
    assert "for a .sif file give its path" in message
    assert "\n" not in message


def test_reference_longer_than_255_is_rejected() -> None:
    assert not is_oci_reference("a" * 256)
    with pytest.raises(UsageProblem, match="not a valid image reference"):
        parse_target("a" * 256)


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match=r"is a directory; give a \.sif file"):
        parse_target(str(tmp_path))


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageProblem, match=r"empty value; give an image reference, a \.sif path or 'host'"):
        parse_target(spec)


def test_sif_prefix_without_path_is_a_usage_error() -> None:
    with pytest.raises(UsageProblem, match=r"missing \.sif path after the prefix"):
        parse_target("apptainer://")


def test_duplicates_collapse_to_one_target_in_order() -> None:
    targets = parse_targets(["alpine:3.20", "host", "docker://alpine:3.20", "alpine:3.20", "host://", "b.sif"])
    assert [t.id for t in targets] == ["docker://alpine:3.20", "host", "apptainer://b.sif"]
    # The first spelling wins.
    assert targets[0].spec == "alpine:3.20"


def test_same_sif_name_in_two_directories_is_refused() -> None:
    # Both would be the column "apptainer://app.sif"; silently checking only one is wrong.
    with pytest.raises(UsageProblem, match=r"old/app\.sif.*new/app\.sif.*same column id"):
        parse_targets(["old/app.sif", "new/app.sif"])


def test_same_sif_spelled_twice_collapses() -> None:
    assert [t.ref for t in parse_targets(["app.sif", "./app.sif", "apptainer://app.sif"])] == ["app.sif"]


def test_parse_targets_passes_runtime_and_default() -> None:
    targets = parse_targets(["alpine", "ubuntu:24.04"], oci_default="podman")
    assert [t.id for t in targets] == ["podman://alpine", "podman://ubuntu:24.04"]
    targets = parse_targets(["a.sif"], runtime="singularity")
    assert [t.id for t in targets] == ["singularity://a.sif"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("alpine:3.20", "docker://alpine:3.20"),
        ("podman://alpine", "podman://alpine"),
        ("/scratch/images/app.sif", "apptainer://app.sif"),
        ("singularity://../app.sif", "singularity://app.sif"),
        ("host", "host"),
    ],
)
def test_target_id(spec: str, expected: str) -> None:
    assert parse_target(spec).id == expected


def test_spec_is_kept_as_written() -> None:
    t = parse_target("  alpine:3.20 ")
    assert (t.ref, t.spec) == ("alpine:3.20", "  alpine:3.20 ")


# -- a path that is not there: "no such file", never an image for Docker -----------------------


@pytest.mark.parametrize("spec", ["img.tar", "img.tar.gz", "img.tgz", "mytorchvista.sfi", "./app", "../app.img",
                                  "/nonexistent/app", "~/img.tar", "nodir/app.tar"])
def test_missing_path_is_no_such_file(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageProblem) as info:
        parse_target(spec)
    message = str(info.value)
    assert message.startswith(f"--image {spec!r}: no such file {spec!r}")
    assert "docker" not in message.lower() and "\n" not in message


def test_missing_path_names_the_nearest_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    for name in ("mytorchvista.sif", "other.sif", "notes.txt"):
        (tmp_path / "images" / name).write_bytes(b"x")
    (tmp_path / "images" / "mytorchvista.sfx").mkdir()  # a directory is no candidate
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageProblem) as info:
        parse_target("images/mytorchvista.sfi")
    assert str(info.value) == ("--image 'images/mytorchvista.sfi': no such file 'images/mytorchvista.sfi'; "
                               "did you mean 'images/mytorchvista.sif'?")
    # Nothing near: where it was looked for.
    with pytest.raises(UsageProblem, match=r"no such file 'zzz\.tar' \(looked in .*\); check the path to the image"):
        parse_target("zzz.tar")
    with pytest.raises(UsageProblem, match=r"no such file 'gone/app\.tar' \(there is no directory 'gone'\)"):
        parse_target("gone/app.tar")


def test_path_under_an_existing_directory_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "app.sqsh").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageProblem, match=r"no such file 'images/app'; did you mean 'images/app\.sqsh'\?"):
        parse_target("images/app")


def test_missing_archive_names_the_nearest_file(tmp_path: Path) -> None:
    (tmp_path / "img.tar.gz").write_bytes(b"x")
    with pytest.raises(UsageProblem) as info:
        parse_target(f"docker-archive://{tmp_path}/img.tar")
    assert f"no such file '{tmp_path}/img.tar'; did you mean '{tmp_path}/img.tar.gz'?" in str(info.value)


def test_missing_sif_names_the_nearest_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_containercheck.engine.runtimes.apptainer import check_sif

    (tmp_path / "mytorchvista.sif").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    target = parse_target("mytorchvsta.sif")  # a .sif is checked by the SIF check, before any runtime
    with pytest.raises(UsageProblem, match=r"no such file 'mytorchvsta\.sif'; did you mean 'mytorchvista\.sif'\?"):
        check_sif(target.ref, target.spec)


def test_runtime_option_does_not_make_a_missing_file_an_image(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for runtime in ("docker", "apptainer"):
        with pytest.raises(UsageProblem, match=r"no such file 'img\.tar'"):
            parse_target("img.tar", runtime=runtime)


@pytest.mark.parametrize("spec", ["python3.11", "python:3.11", "team/app", "registry:5000/team/app",
                                  "nvcr.io/nvidia/pytorch", "nvcr.io/nvidia/pytorch:24.01-py3", "my.image:latest",
                                  "images/app:1.0", f"app.tar@{DIGEST}"])
def test_references_stay_references(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_target(spec).runtime == "docker"


def test_no_such_file_on_a_node_without_runtimes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a cluster node without Docker (nor Podman, nor Apptainer) answers a mistyped SIF or
    archive name: no such file, the nearest name, and not a word of Docker."""
    (pytester.path / "mytorchvista.sif").write_bytes(b"x")
    bare = pytester.path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    for spec, expected in (("mytorchvista.sfi", "did you mean 'mytorchvista.sif'?"),
                           ("mytorchvist.sif", "did you mean 'mytorchvista.sif'?"),
                           ("img.tar", "no such file 'img.tar'")):
        result = pytester.runpytest_subprocess("--image", spec)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        err = result.stderr.str()
        assert f"--image {spec!r}: no such file" in err or f"--image {spec}: no such file" in err, err
        assert expected in err
        assert "docker" not in (err + result.stdout.str()).lower()
        assert "not installed" not in err and "Traceback" not in err
