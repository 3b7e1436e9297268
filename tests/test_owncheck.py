"""Own checks as easy as testinfra's (issue 32, item 4): the ``container`` fixture's helpers
(``file``, ``directory``, ``package``, ``command``, ``env``, ``distribution``).

The pure part (``engine/owncheck.py``) is tested on the answers the real tools give (dpkg-query
and the image's sh through Docker below; rpm's recorded from RPM 4.18 on this Debian host; apk's
installed database as its format is documented).  Each helper has a failing and a passing case
in a real image under Docker, and the how-to's example runs as written under Docker and
Apptainer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_containercheck.engine import owncheck
from pytest_containercheck.engine.owncheck import IMAGE, MARK, FileFacts, PackageFacts, Unanswered

from helpers import ROOT, missing

HOWTO = ROOT / "docs" / "how-to" / "own-checks.md"
USERNS = "--runtime-arg=--userns"


# -- the pure part ------------------------------------------------------------------------------------


def _file(**kw: object) -> FileFacts:
    base: dict[str, object] = {"path": "/opt/app/app.conf", "kind": "file", "mode": 0o644, "owner": "root",
                               "group": "root", "uid": 0, "gid": 0, "size": 30, "text": "renderer = egl\n"}
    return FileFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_a_file_verdict_names_what_differs_with_the_fix() -> None:
    judge = owncheck.file_verdict
    none = {"kind": None, "mode": None, "owner": None, "group": None, "contains": None}
    assert judge("/x", "missing", **none).detail == "/x: no such file or directory in the image"  # type: ignore[arg-type]
    v = judge("/x", "dangling", **none)  # type: ignore[arg-type]
    assert (v.status, v.fault, v.detail) == ("fail", "image", "/x: a symbolic link to nothing in the image")
    v = judge("/opt/app/app.conf", _file(mode=0o600), **{**none, "mode": "0644"})  # type: ignore[arg-type]
    assert v.detail == "/opt/app/app.conf has mode 0600 in the image, not 0644"
    assert v.fix == "chmod 0644 /opt/app/app.conf in the image's build"
    v = judge("/opt/app/app.conf", _file(owner="app", uid=1000), **{**none, "owner": 0})  # type: ignore[arg-type]
    assert v.detail == "/opt/app/app.conf is owned by app (id 1000) in the image, not 0"
    v = judge("/opt/app/app.conf", _file(), **{**none, "kind": "directory"})  # type: ignore[arg-type]
    assert v.detail == "/opt/app/app.conf is a file in the image, not a directory"
    v = judge("/opt/app/app.conf", _file(), **{**none, "contains": re.compile(r"samples = \d")})  # type: ignore[arg-type]
    assert v.detail == "/opt/app/app.conf does not contain /samples = \\d/ in the image"
    v = judge("/opt/app/app.conf", _file(), **{**none, "owner": "root", "group": 0, "contains": "egl"})  # type: ignore[arg-type]
    assert (v.status, v.detail) == ("pass", "/opt/app/app.conf: file, owner root, group root, content as expected")
    with pytest.raises(ValueError, match="give octal digits"):
        judge("/x", _file(), **{**none, "mode": "rw-r--r--"})  # type: ignore[arg-type]


def test_an_answer_from_an_image_without_sh_is_an_error_not_a_failure() -> None:
    with pytest.raises(Unanswered, match=r"the image.s sh did not run \(OCI runtime exec failed: exec: \"sh\": "
                                         r"executable file not found"):
        owncheck.file_facts("/x", "", 'OCI runtime exec failed: exec: "sh": executable file not found in $PATH\n')
    with pytest.raises(Unanswered, match="no 'stat' in the image"):
        owncheck.file_facts("/x", f"{MARK}\nnostat\n", "")


def test_versions_compare_as_pep440_on_the_first_dotted_number() -> None:
    assert str(owncheck.dotted("7:5.1.6-0+deb12u1")) == "5.1.6"
    assert str(owncheck.dotted("2.36-9+deb12u14")) == "2.36"
    assert owncheck.dotted("none") is None
    with pytest.raises(ValueError, match=r"give a comparison, e.g. '==2.4' or '>=2.4'"):
        owncheck.specifier("2.4")
    with pytest.raises(ValueError, match="is not a version specifier"):
        owncheck.specifier(">=two")
    facts = PackageFacts("ffmpeg", "dpkg", "7:5.1.6-0+deb12u1")
    v = owncheck.package_verdict(facts, ">=6")
    assert v.detail == "package ffmpeg 7:5.1.6-0+deb12u1 in the image does not satisfy >=6, compared as 5.1.6 (dpkg)"
    assert v.fix == "install ffmpeg >=6 in the image's build" and v.fault == "image"
    assert owncheck.package_verdict(facts, "~=5.1").detail == "ffmpeg 7:5.1.6-0+deb12u1 (dpkg)"
    v = owncheck.package_verdict(PackageFacts("ffmpeg", "apk", None), None)
    assert (v.detail, v.fix) == ("package ffmpeg is not installed in the image (apk)",
                                 "apk add ffmpeg in the image's build")


# What RPM 4.18.0 (Debian 12's rpm package) answers package_argv's question, asked of a database with
# demo-tool (Epoch 2, 5.1.6-3.el9) and plain-tool (no epoch, 1.2-3.el9) installed, and without "nope".
RPM_INSTALLED = "demo-tool\t2:5.1.6-3.el9\n"
RPM_NO_EPOCH = "plain-tool\t1.2-3.el9\n"
RPM_ABSENT = "package nope is not installed\n"  # exit status 1


def test_rpm_answers() -> None:
    assert owncheck.installed_version("rpm", "demo-tool", 0, RPM_INSTALLED) == "2:5.1.6-3.el9"
    assert owncheck.installed_version("rpm", "plain-tool", 0, RPM_NO_EPOCH) == "1.2-3.el9"
    assert owncheck.installed_version("rpm", "nope", 1, RPM_ABSENT) is None
    v = owncheck.package_verdict(PackageFacts("demo-tool", "rpm", "2:5.1.6-3.el9"), ">=5.2")
    assert v.detail == "package demo-tool 2:5.1.6-3.el9 in the image does not satisfy >=5.2, compared as 5.1.6 (rpm)"
    assert v.fix == "install demo-tool >=5.2 in the image's build"


def test_rpm_answers_are_what_rpm_says(tmp_path: Path) -> None:
    """The recorded answers, asked again of the real rpm with package_argv's own format (rpm and
    rpmbuild come from Debian's rpm package, which provisioning installs: required under CI=true)."""
    if not (shutil.which("rpm") and shutil.which("rpmbuild")):
        missing("rpm", "no rpm/rpmbuild on this host (apt-get install rpm): the recorded answers above "
                "are what it said")
    spec = tmp_path / "SPECS"
    spec.mkdir()
    (spec / "demo.spec").write_text("Name: demo-tool\nVersion: 5.1.6\nRelease: 3.el9\nEpoch: 2\nSummary: d\n"
                                    "License: MIT\nBuildArch: noarch\n%description\nd\n%files\n")
    subprocess.run(["rpmbuild", "--define", f"_topdir {tmp_path}", "-bb", str(spec / "demo.spec")], check=True,
                   capture_output=True, timeout=120)
    db = tmp_path / "db"
    subprocess.run(["rpm", "--dbpath", str(db), "--initdb"], check=True, capture_output=True, timeout=60)
    subprocess.run(["rpm", "--dbpath", str(db), "-i", "--nodeps", "--justdb",
                    *map(str, (tmp_path / "RPMS" / "noarch").glob("*.rpm"))], check=True, capture_output=True,
                   timeout=60)
    for name, expected in (("demo-tool", (0, RPM_INSTALLED)), ("nope", (1, RPM_ABSENT))):
        argv = owncheck.package_argv("rpm", name)
        res = subprocess.run([argv[0], "--dbpath", str(db), *argv[1:]], capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stdout) == expected


def test_apk_installed_database() -> None:
    """/lib/apk/db/installed: one record per package, ``P:`` name, ``V:`` version, a blank line between."""
    db = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nC:Q1def=\nP:ffmpeg\nV:6.1.1-r8\nA:x86_64\n"
    assert owncheck.installed_version("apk", "ffmpeg", 0, db) == "6.1.1-r8"
    assert owncheck.installed_version("apk", "musl", 0, db) == "1.2.5-r0"
    assert owncheck.installed_version("apk", "ffmpeg-libs", 0, db) is None


def test_dpkg_keeps_only_installed_packages() -> None:
    assert owncheck.installed_version("dpkg-query", "x", 0, "install ok installed\t1.2-3\n") == "1.2-3"
    assert owncheck.installed_version("dpkg-query", "x", 0, "deinstall ok config-files\t1.2-3\n") is None
    assert owncheck.installed_version("dpkg-query", "x", 1, "") is None


def test_names_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="give a variable name"):
        owncheck.env_argv("A B")
    with pytest.raises(ValueError, match="give a command name"):
        owncheck.command_argv("--version")


def test_an_env_value_and_a_distribution() -> None:
    assert owncheck.env_value("X", f"{MARK}\nset\na\nb", "") == "a\nb"
    assert owncheck.env_value("X", f"{MARK}\nunset\n", "") is None
    assert owncheck.env_verdict("X", "compute", "all").detail == "X is 'compute' in the image, not 'all'"
    v = owncheck.distribution_verdict("torch", {"version": "2.3.1", "python": "/usr/bin/python3"}, ">=2.4")
    assert (v.detail, v.fix) == ("torch 2.3.1 in the image does not satisfy >=2.4 (/usr/bin/python3)",
                                 "pip install 'torch>=2.4' in the image's build")
    assert owncheck.distribution_verdict("torch", {"version": "2.5.0rc1"}, ">=2.4").status == "pass"
    assert IMAGE.fault == "image"


# -- each helper, failing and passing, in a real image -------------------------------------------------


CASES = '''
import re
import pytest

R = pytest.mark.containercheck_row

@R("file.pass")
def test_file_pass(container):
    container.file("/opt/app/app.conf", kind="file", mode=0o644, owner="root", group=0, contains="renderer = egl")

@R("file.missing")
def test_file_missing(container):
    container.file("/opt/app/missing.conf")

@R("file.mode")
def test_file_mode(container):
    container.file("/opt/app/run.sh", mode="0644")

@R("file.owner")
def test_file_owner(container):
    container.file("/opt/app/app.conf", owner="app")

@R("file.contains")
def test_file_contains(container):
    container.file("/opt/app/app.conf", contains=re.compile(r"samples = 8"))

@R("directory.pass")
def test_directory_pass(container):
    container.directory("/opt/app")

@R("directory.kind")
def test_directory_kind(container):
    container.directory("/opt/app/run.sh")

@R("package.pass")
def test_package_pass(container):
    container.package("ca-certificates", version=">=20200601")

@R("package.missing")
def test_package_missing(container):
    container.package("ffmpeg")

@R("package.version")
def test_package_version(container):
    container.package("libc6", version=">=3")

@R("command.pass")
def test_command_pass(container):
    container.command("python3", version=">=3.9,<4")

@R("command.missing")
def test_command_missing(container):
    container.command("ffmpeg")

@R("command.version")
def test_command_version(container):
    container.command("python3", version="<3.9")

@R("env.pass")
def test_env_pass(container):
    container.env("NVIDIA_DRIVER_CAPABILITIES", re.compile(r"\\bgraphics\\b"))

@R("env.unset")
def test_env_unset(container):
    container.env("APP_MODE")

@R("env.value")
def test_env_value(container):
    container.env("NVIDIA_DRIVER_CAPABILITIES", "all")

@R("distribution.pass")
def test_distribution_pass(container):
    assert container.distribution("numpy", ">=2") == "2.4.6"

@R("distribution.missing")
def test_distribution_missing(container):
    container.distribution("torch")

@R("distribution.version")
def test_distribution_version(container):
    container.distribution("numpy", "<2")
'''

#: Row -> (status, detail), as the matrix JSON has them.
EXPECTED = {
    "file.pass": ("pass", "/opt/app/app.conf: file, mode 0644, owner root, group root, content as expected"),
    "file.missing": ("fail", "/opt/app/missing.conf: no such file or directory in the image"),
    "file.mode": ("fail", "/opt/app/run.sh has mode 0755 in the image, not 0644"),
    "file.owner": ("fail", "/opt/app/app.conf is owned by root (id 0) in the image, not app"),
    "file.contains": ("fail", "/opt/app/app.conf does not contain /samples = 8/ in the image"),
    "directory.pass": ("pass", "/opt/app: directory"),
    "directory.kind": ("fail", "/opt/app/run.sh is a file in the image, not a directory"),
    "package.pass": ("pass", re.compile(r"ca-certificates 2\d{7}\S* \(dpkg\)")),
    "package.missing": ("fail", "package ffmpeg is not installed in the image (dpkg)"),
    "package.version": ("fail", re.compile(r"package libc6 2\.36-\S+ in the image does not satisfy >=3, "
                                           r"compared as 2\.36 \(dpkg\)")),
    "command.pass": ("pass", "python3 3.11.2 (/usr/bin/python3)"),
    "command.missing": ("fail", re.compile(r"ffmpeg is not on PATH in the image \(.*/usr/bin.*\)")),
    "command.version": ("fail", "python3 3.11.2 in the image does not satisfy <3.9 (`python3 --version`: "
                                "'Python 3.11.2')"),
    "env.pass": ("pass", "NVIDIA_DRIVER_CAPABILITIES='compute,utility,graphics'"),
    "env.unset": ("fail", "APP_MODE is not set in the image"),
    "env.value": ("fail", "NVIDIA_DRIVER_CAPABILITIES is 'compute,utility,graphics' in the image, not 'all'"),
    "distribution.pass": ("pass", "numpy 2.4.6"),
    "distribution.missing": ("fail", re.compile(r"torch is not installed in the Python in the image "
                                                r"\(/usr/bin/python3[.\d]*\)")),
    "distribution.version": ("fail", re.compile(r"numpy 2\.4\.6 in the image does not satisfy <2 "
                                                r"\(/usr/bin/python3[.\d]*\)")),
}


def _cells(pytester: pytest.Pytester, image: str, *extra: str) -> tuple[pytest.RunResult, dict[str, dict[str, object]]]:
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_subprocess("--image", image, *extra, "--no-builtin-checks", "test_cases.py",
                                           "--matrix-json", "m.json", "-p", "no:cacheprovider", timeout=900)
    data = json.loads((pytester.path / "m.json").read_text())
    return result, {c["row"]: c for c in data["cells"]}


def _assert_expected(cells: dict[str, dict[str, object]]) -> None:
    assert sorted(cells) == sorted(EXPECTED)
    for row, (status, detail) in EXPECTED.items():
        cell = cells[row]
        assert cell["status"] == status, (row, cell)
        shown = str(cell["detail"])
        assert (detail.fullmatch(shown) if isinstance(detail, re.Pattern) else shown == detail), (row, shown)
        if status == "fail":  # the image's fault, with the fix
            assert cell["fault"] == "image" and cell["fix"] and "in the image's build" in str(cell["fix"]), cell


@pytest.mark.docker
def test_each_helper_fails_and_passes_under_docker(pytester: pytest.Pytester, owncheck_image: str) -> None:
    result, cells = _cells(pytester, owncheck_image)
    result.assert_outcomes(passed=6, failed=13)
    _assert_expected(cells)


@pytest.mark.apptainer
def test_each_helper_fails_and_passes_under_apptainer(pytester: pytest.Pytester, owncheck_sif: Path) -> None:
    result, cells = _cells(pytester, str(owncheck_sif), USERNS)
    result.assert_outcomes(passed=6, failed=13)
    _assert_expected(cells)


# -- the how-to's example, as written ----------------------------------------------------------------------


def howto_example() -> str:
    """The own-check file of the how-to: the Python block after its marker comment."""
    text = HOWTO.read_text()
    block = re.search(r"<!-- own-check example -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "the how-to has no own-check example"
    return block.group(1)


def test_the_example_is_short_and_uses_every_helper() -> None:
    code = howto_example()
    assert len(code.strip().splitlines()) <= 12, code
    for helper in ("file", "package", "command", "env", "distribution"):
        assert f"container.{helper}(" in code, helper


def _run_example(pytester: pytest.Pytester, image: str, *extra: str) -> None:
    pytester.makepyfile(test_my_image=howto_example())
    result = pytester.runpytest_subprocess("--image", image, *extra, "test_my_image.py", "--no-builtin-checks",
                                           "--matrix-json", "m.json", "-p", "no:cacheprovider", timeout=900)
    result.assert_outcomes(passed=1)
    (cell,) = json.loads((pytester.path / "m.json").read_text())["cells"]
    assert (cell["row"], cell["status"]) == ("mine.contents", "pass")
    # The cell's note says what each helper found.
    assert re.fullmatch(r"/opt/app/app.conf: file, owner root, content as expected; /opt/app/run.sh: file, mode 0755; "
                        r"ca-certificates \S+ \(dpkg\); python3 3\.11\.2 \(/usr/bin/python3\); "
                        r"NVIDIA_DRIVER_CAPABILITIES='compute,utility,graphics'; numpy 2\.4\.6", cell["detail"]), cell


@pytest.mark.docker
def test_the_howto_example_runs_as_written_under_docker(pytester: pytest.Pytester, owncheck_image: str) -> None:
    _run_example(pytester, owncheck_image)


@pytest.mark.apptainer
def test_the_howto_example_runs_as_written_under_apptainer(pytester: pytest.Pytester, owncheck_sif: Path) -> None:
    _run_example(pytester, str(owncheck_sif), USERNS)
