"""SIF files are validated from their header before anything is launched.

Header layout (sylabs/sif, ``pkg/sif/sif.go``): a 32-byte launch script, ``SIF_MAGIC\\0``,
a 3-byte version, a 3-byte architecture, a 16-byte UUID, then eight little-endian int64s
(created, modified, descriptors free/total/offset/size, data offset/size): 128 bytes.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.runtimes.sif import SIF_HEADER_LEN, check_sif

from helpers import DESCR_OFFSET, DESCR_SIZE, FULL_SIZE, sif_header, write_sif


def tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("rootfs/etc/os-release")
        data = b"ID=debian\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 64


# -- check_sif ------------------------------------------------------------------------------


def test_valid_sif_returns_facts(tmp_path: Path) -> None:
    path = write_sif(tmp_path / "ok.sif")
    assert check_sif(str(path), "ok.sif") == {"sif_size": FULL_SIZE, "sif_version": "01", "sif_arch": "amd64"}


def test_trailing_bytes_after_data_are_fine(tmp_path: Path) -> None:
    path = write_sif(tmp_path / "ok.sif")
    with path.open("ab") as fh:
        fh.write(b"\0" * 1000)
    assert check_sif(str(path), "ok.sif")["sif_size"] == FULL_SIZE + 1000


def test_truncated_data_is_reported(tmp_path: Path) -> None:
    path = write_sif(tmp_path / "cut.sif", size=FULL_SIZE - 1)
    with pytest.raises(UsageProblem) as info:
        check_sif(str(path), "cut.sif")
    message = str(info.value)
    assert "truncated" in message
    assert f"{FULL_SIZE - 1} bytes on disk, its header says {FULL_SIZE}" in message
    assert "copy it again" in message


def test_truncated_descriptors_are_reported(tmp_path: Path) -> None:
    # No data, but the descriptor table runs past the end of the file.
    path = tmp_path / "cut.sif"
    path.write_bytes(sif_header(data_offset=SIF_HEADER_LEN, data_size=0) + b"\0" * 10)
    needed = DESCR_OFFSET + DESCR_SIZE
    with pytest.raises(UsageProblem, match=rf"truncated \(138 bytes on disk, its header says {needed}\)"):
        check_sif(str(path), "cut.sif")


def test_truncated_inside_the_header(tmp_path: Path) -> None:
    path = write_sif(tmp_path / "cut.sif", size=100)
    with pytest.raises(UsageProblem, match=r"truncated \(100 bytes, header alone needs 128\)"):
        check_sif(str(path), "cut.sif")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.sif"
    path.touch()
    with pytest.raises(UsageProblem, match=r"is empty; copy the \.sif again"):
        check_sif(str(path), "empty.sif")


@pytest.mark.parametrize(("kind", "data"), [("png", PNG), ("tar", tar_bytes())])
def test_foreign_file_names_the_expected_magic(tmp_path: Path, kind: str, data: bytes) -> None:
    path = tmp_path / f"image.{kind}"
    path.write_bytes(data)
    with pytest.raises(UsageProblem) as info:
        check_sif(str(path), path.name)
    message = str(info.value)
    assert "is not a SIF image (expected magic 'SIF_MAGIC' at byte 32; found " in message
    assert f"{data[32:42]!r} at offset 32" in message
    assert "build one with 'apptainer build'" in message


def test_file_too_short_for_the_magic(tmp_path: Path) -> None:
    path = tmp_path / "tiny.sif"
    path.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(UsageProblem, match=r"only 10 bytes, too short for a SIF header"):
        check_sif(str(path), "tiny.sif")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match=r"no such file .*nope\.sif'; check the path to the \.sif image"):
        check_sif(str(tmp_path / "nope.sif"), "nope.sif")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match="is a directory; sandbox directories are not supported"):
        check_sif(str(tmp_path), "sandbox")


# -- as users see it: pytest --image bad.sif --------------------------------------------------


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = [ln for ln in result.errlines if ln.strip()]
    assert len(err) == 1 and err[0].startswith("ERROR: --image "), result.errlines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    return result


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (sif_header() + b"\0" * 10, "is truncated"),
        (b"", "is empty"),
        (PNG, "is not a SIF image (expected magic 'SIF_MAGIC' at byte 32"),
    ],
    ids=["truncated", "empty", "not-a-sif"],
)
def test_bad_sif_is_a_one_line_usage_error(pytester: pytest.Pytester, content: bytes, expected: str) -> None:
    (pytester.path / "bad.sif").write_bytes(content)
    result = _run(pytester, "--image", "bad.sif")
    assert expected in result.errlines[0]


def test_missing_sif_is_a_one_line_usage_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--image", "apptainer://missing.sif")
    assert "no such file 'missing.sif'" in result.errlines[0]


def test_valid_sif_without_apptainer_names_the_fix(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the interpreter on PATH, through a directory of its own: no apptainer or singularity,
    # whatever the host has (Debian's /usr/bin holds python3 and apptainer alike).
    bindir = pytester.path / "only-python"
    bindir.mkdir()
    (bindir / "python3").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("PATH", str(bindir))
    write_sif(pytester.path / "good.sif")
    result = _run(pytester, "--image", "good.sif")
    assert "neither 'apptainer' nor 'singularity' is on PATH" in result.errlines[0]
    assert "'module load apptainer'" in result.errlines[0]
