"""An image built for another CPU architecture is named as such before anything starts (issue
25, item 12): from a SIF header, an archive's config, or the engine's own image inspect."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_containercheck.engine.archives import ArchiveError, inspect_archive
from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.platforms import SIF_ARCH, emulated, foreign_problem, host_architecture
from pytest_containercheck.engine.runtimes.apptainer import check_sif

from helpers import FULL_SIZE, SIF_HEADER_LEN, rewrite_docker_save, sif_header

OTHER = "arm64" if host_architecture() != "arm64" else "amd64"


def test_same_or_unknown_architecture_is_fine(tmp_path: Path) -> None:
    assert foreign_problem(host_architecture(), "img", binfmt_dir=str(tmp_path)) is None
    assert foreign_problem(None, "img", binfmt_dir=str(tmp_path)) is None
    assert foreign_problem("unknown", "img", binfmt_dir=str(tmp_path)) is None


def test_foreign_architecture_names_the_fix(tmp_path: Path) -> None:
    problem = foreign_problem(OTHER, "img:1", binfmt_dir=str(tmp_path))
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"--image img:1: the image is built for linux/{OTHER}, and this host is "
                              f"linux/{host_architecture()}")
    assert f"--platform linux/{host_architecture()}" in problem


def test_a_registered_emulator_lets_it_run(tmp_path: Path) -> None:
    # binfmt_misc entries as qemu-user-static registers them (first line "enabled").
    qemu = {"arm64": "aarch64", "amd64": "x86_64"}[OTHER]
    (tmp_path / f"qemu-{qemu}").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    assert emulated(OTHER, str(tmp_path)) and foreign_problem(OTHER, "img", binfmt_dir=str(tmp_path)) is None
    (tmp_path / f"qemu-{qemu}").write_text("disabled\n")
    assert not emulated(OTHER, str(tmp_path))


def test_sif_header_arch_is_read(tmp_path: Path) -> None:
    code = next(k for k, v in SIF_ARCH.items() if v == OTHER)
    head = bytearray(sif_header())
    head[45:48] = code.encode() + b"\0"
    path = tmp_path / "arm.sif"
    path.write_bytes(bytes(head) + b"\xab" * (FULL_SIZE - SIF_HEADER_LEN))
    with pytest.raises(UsageProblem, match=rf"built for linux/{OTHER}"):
        check_sif(str(path), "arm.sif")


@pytest.mark.docker
def test_foreign_image_and_archive_are_refused_before_start(pytester: pytest.Pytester, base_image: str,
                                                            tmp_path: Path) -> None:
    saved = tmp_path / "base.tar"
    subprocess.run(["docker", "save", "-o", str(saved), base_image], check=True, timeout=300)
    foreign = tmp_path / "foreign.tar"
    digest = rewrite_docker_save(saved, foreign, lambda config: config.update(architecture=OTHER),
                                 [f"containercheck-test/foreign:{OTHER}"])
    with pytest.raises(ArchiveError, match=rf"built for linux/{OTHER}"):
        inspect_archive(str(foreign), "foreign.tar")
    tag = f"containercheck-test/foreign:{OTHER}"
    subprocess.run(["docker", "load", "--input", str(foreign)], check=True, capture_output=True, timeout=300)
    try:
        for image in (str(foreign), tag):
            result = pytester.runpytest_subprocess("--image", image, "-p", "no:cacheprovider")
            errors = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
            assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
            assert len(errors) == 1 and f"the image is built for linux/{OTHER}" in errors[0], errors
            assert "no Python interpreter" not in result.stdout.str() + result.stderr.str()
    finally:
        subprocess.run(["docker", "rmi", "--force", tag, digest], capture_output=True, timeout=120)


# -- an aarch64 host (Grace Hopper, GB200): issue 29 --------------------------------------------------
# platform.machine() on Linux is the kernel's uname machine: "aarch64" on 64-bit Arm.  The host's
# architecture is then OCI's "arm64" (image-spec config.md, Go's GOARCH); an arm64 image is no foreign
# image there, an amd64 one is, and a SIF's header arch "04" is arm64 (apptainer/sif pkg/sif).


@pytest.fixture
def aarch64_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")


@pytest.mark.usefixtures("aarch64_host")
def test_an_arm64_image_is_native_on_an_aarch64_host(tmp_path: Path) -> None:
    assert host_architecture() == "arm64"
    assert foreign_problem("arm64", "img:arm", binfmt_dir=str(tmp_path)) is None
    problem = foreign_problem("amd64", "img:x86", binfmt_dir=str(tmp_path))
    assert problem is not None and "this host is linux/arm64 (aarch64)" in problem
    assert "--platform linux/arm64" in problem


@pytest.mark.usefixtures("aarch64_host")
def test_an_arm64_sif_runs_on_an_aarch64_host(tmp_path: Path) -> None:
    head = bytearray(sif_header())
    head[45:48] = b"04\0"
    path = tmp_path / "arm.sif"
    path.write_bytes(bytes(head) + b"\xab" * (FULL_SIZE - SIF_HEADER_LEN))
    assert check_sif(str(path), "arm.sif")["sif_arch"] == "arm64"
    head[45:48] = b"02\0"
    path.write_bytes(bytes(head) + b"\xab" * (FULL_SIZE - SIF_HEADER_LEN))
    with pytest.raises(UsageProblem, match=r"built for linux/amd64, and this host is linux/arm64"):
        check_sif(str(path), "x86.sif")


@pytest.mark.usefixtures("aarch64_host")
def test_a_multi_platform_index_gives_the_arm64_image_on_an_aarch64_host() -> None:
    from pytest_containercheck.engine.archives import _pick_manifest

    descs = [{"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
             {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
             {"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"}}]
    picked, names = _pick_manifest(descs, "idx.tar", "/x/idx.tar")
    assert picked["digest"] == "sha256:b" and names == ("linux/amd64", "linux/arm64/v8")
