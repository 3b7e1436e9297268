"""Every name form applies its table, with real runtimes; a name that matches nothing, a misspelt
table, and options the runtime would refuse stop the run before any container or instance is
created (issue 28, items 1, 2 and 7).

Each form's run has one table, ``match`` written one way and the image given another, requiring
``system.libcuda`` (it skips on this GPU-less host): exit 1 with that row failed "required by
pyproject.toml" proves the table applied -- a table that did not would be exit 4 (no table covers
the image).  The "nothing started" proofs read Docker's and Podman's event logs, and for Apptainer
the command lines of the real ``apptainer`` (a wrapper first on PATH records each, then runs it).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import NO_GPU_HOST, SYSTEM, build_labelled, missing

REQUIRE = "require = ['system.libcuda']\n"


@pytest.fixture(scope="module")
def names(base_image: str) -> Iterator[dict[str, Any]]:
    """The base image under a repository of this module's own (``cc-names-<token>/render``), at
    ``:latest`` and ``:1.4``, with its id; removed at the end."""
    repo = f"cc-names-{secrets.token_hex(3)}/render"
    for tag in ("latest", "1.4"):
        subprocess.run(["docker", "tag", base_image, f"{repo}:{tag}"], check=True, timeout=60)
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", base_image], check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()
    yield {"repo": repo, "id": image_id}
    subprocess.run(["docker", "rmi", f"{repo}:latest", f"{repo}:1.4"], capture_output=True, timeout=120)
    subprocess.run(["podman", "rmi", f"localhost/{repo}:1.4"], capture_output=True, timeout=120)


def _gate(pytester: pytest.Pytester, match: str, image: str, *extra: str) -> pytest.RunResult:
    pytester.makepyprojecttoml(f"[[tool.containercheck.image]]\nmatch = {json.dumps(match)}\n{REQUIRE}")
    return pytester.runpytest_subprocess("--image", image, *extra, "--no-builtin-checks", SYSTEM, "-k", "libcuda",
                                         "--rootdir", str(pytester.path), "--matrix-json", "m.json", timeout=900)


def _applied(pytester: pytest.Pytester, result: pytest.RunResult) -> None:
    out = result.stdout.str()[-3000:] + result.stderr.str()[-2000:]
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    (cell,) = json.loads((pytester.path / "m.json").read_text())["cells"]
    assert cell["row"] == "system.libcuda" and cell["status"] == "fail", cell
    assert cell["gate"]["required_by"] == ["pyproject.toml"], cell["gate"]


DOCKER_FORMS = {
    "implicit latest": ("{repo}:*", "{repo}"),
    "docker.io prefix": ("{repo}:*", "docker.io/{repo}:latest"),
    "image id": ("{repo}:*", "{id}"),
    "short id": ("{repo}:*", "{short}"),
    "glob with the registry": ("docker.io/{repo}:*", "{repo}:1.4"),
    "glob on the id": ("sha256:{short}*", "{repo}:1.4"),
    "glob without tag means latest": ("{repo}", "{repo}:latest"),
}


def _fill(text: str, names: dict[str, Any]) -> str:
    return text.format(repo=names["repo"], id=names["id"], short=names["id"].removeprefix("sha256:")[:12])


@NO_GPU_HOST
@pytest.mark.docker
@pytest.mark.parametrize("form", list(DOCKER_FORMS))
def test_docker_name_forms_apply_their_table(form: str, names: dict[str, Any], pytester: pytest.Pytester) -> None:
    match, image = (_fill(x, names) for x in DOCKER_FORMS[form])
    _applied(pytester, _gate(pytester, match, image))


@NO_GPU_HOST
@pytest.mark.docker
@pytest.mark.parametrize("match", ["{repo}:*", "localhost/{repo}:*"])
def test_podman_name_forms_apply_their_table(match: str, names: dict[str, Any], pytester: pytest.Pytester) -> None:
    """Podman names the image ``localhost/cc-names-…/render:1.4``; either form of the glob finds it."""
    if subprocess.run(["podman", "info"], capture_output=True, timeout=120).returncode != 0:
        missing("podman", "podman cannot run containers here")
    ref = f"{names['repo']}:1.4"
    if subprocess.run(["podman", "image", "exists", f"localhost/{ref}"], timeout=60).returncode != 0:
        subprocess.run(["bash", "-c", 'docker save "$0" | podman load', ref], check=True, capture_output=True,
                       timeout=600)
    result = _gate(pytester, _fill(match, names), f"podman://{ref}")
    _applied(pytester, result)
    column = json.loads((pytester.path / "m.json").read_text())["columns"][0]
    assert f"localhost/{ref}" in column["facts"]["image"]["tags"]


@pytest.fixture(scope="module")
def render_tar(names: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tar = tmp_path_factory.mktemp("names-tar") / "render.tar"
    subprocess.run(["docker", "save", "-o", str(tar), f"{names['repo']}:1.4"], check=True, timeout=600)
    return tar


@NO_GPU_HOST
@pytest.mark.docker
def test_an_archive_is_matched_by_the_tags_inside_it(names: dict[str, Any], render_tar: Path,
                                                     pytester: pytest.Pytester) -> None:
    _applied(pytester, _gate(pytester, f"{names['repo']}:*", str(render_tar)))


@NO_GPU_HOST
@pytest.mark.docker
@pytest.mark.apptainer
def test_apptainer_forms_apply_their_table(names: dict[str, Any], render_tar: Path, pytester: pytest.Pytester,
                                           request: pytest.FixtureRequest) -> None:
    """An archive converted by the run keeps its tags as names; a SIF built from the Docker image
    (``docker-daemon://``) is found by that reference, through the label Apptainer records."""
    request.getfixturevalue("apptainer")  # Apptainer works here (fails under CI=true otherwise)
    _applied(pytester, _gate(pytester, f"{names['repo']}:*", str(render_tar), "--runtime", "apptainer",
                             "--runtime-arg=--userns"))
    sif = pytester.path / "app.sif"
    subprocess.run(["apptainer", "build", "--force", str(sif), f"docker-daemon://{names['repo']}:1.4"], check=True,
                   capture_output=True, timeout=900)
    _applied(pytester, _gate(pytester, f"docker.io/{names['repo']}:*", str(sif), "--runtime-arg=--userns"))


# -- nothing starts before a usage error ------------------------------------------------------------------


def _events(runtime: str, since: float, until: float, repo: str) -> list[str]:
    """Containers *runtime* created from *repo*'s images between *since* and *until* (its event log;
    the repository is this module's own in this process: other runs create containers too)."""
    fmt = "{{.Actor.Attributes.image}}" if runtime == "docker" else "{{.Image}}"
    res = subprocess.run([runtime, "events", "--since", f"{since:.0f}" if runtime == "podman" else f"{since:.3f}",
                          "--until", f"{until:.0f}" if runtime == "podman" else f"{until:.3f}", "--filter",
                          *(["type=container"] if runtime == "docker" else []),
                          *(["--filter"] if runtime == "docker" else []), "event=create", "--format", fmt],
                         capture_output=True, text=True, timeout=120, check=True)
    return [ln for ln in res.stdout.split() if repo in ln]


@pytest.fixture
def apptainer_log(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A wrapper first on PATH that records every command line given to the real apptainer."""
    request.getfixturevalue("apptainer")
    real = subprocess.run(["bash", "-c", "command -v apptainer"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apptainer.log"
    wrapper = bindir / "apptainer"
    wrapper.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    log.touch()
    os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"
    request.addfinalizer(lambda: os.environ.__setitem__("PATH", os.environ["PATH"].removeprefix(f"{bindir}:")))
    return log


STOPS = {
    "glob typo": ("[[tool.containercheck.image]]\nmatch = '{typo}:*'\n" + REQUIRE, [],
                  "no table of pyproject.toml [[tool.containercheck.image]] matches it"),
    "table-name typo": ("[[tool.containerchek.image]]\nmatch = '{repo}:*'\n" + REQUIRE, [],
                        "[tool.containerchek] is not a table containercheck reads: did you mean [tool.containercheck]"),
    "no table for the image": ("[[tool.containercheck.image]]\nmatch = 'team/train:*'\n" + REQUIRE, [],
                               "closest: team/train:*"),
    "network typo": ("", ["--network", "bridgee"], "has no network 'bridgee'"),
    "unknown runtime flag": ("", ["--runtime-arg=--cap-ad=SYS_PTRACE"], "has no flag --cap-ad"),
}


def _stop(pytester: pytest.Pytester, names: dict[str, Any], case: str, image: str, *extra: str) -> str:
    toml, args, message = STOPS[case]
    if toml:  # {typo}: the repository's name with a letter missing (cc-names-…/rendr)
        pytester.makepyprojecttoml(_fill(toml.replace("{typo}", names["repo"][:-2] + "r"), names))
    result = pytester.runpytest_subprocess("--image", image, *args, *extra, "--rootdir", str(pytester.path),
                                           timeout=600)
    errors = [ln for ln in result.stderr.lines + result.stdout.lines if ln.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-3000:] + result.stderr.str()
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    return errors[0]


@pytest.mark.docker
@pytest.mark.parametrize("case", list(STOPS))
def test_docker_and_podman_stop_before_any_container(case: str, names: dict[str, Any],
                                                     pytester: pytest.Pytester) -> None:
    ref = f"{names['repo']}:1.4"
    podman = subprocess.run(["podman", "image", "exists", f"localhost/{ref}"], timeout=60).returncode == 0 or \
        subprocess.run(["bash", "-c", 'docker save "$0" | podman load', ref], capture_output=True,
                       timeout=600).returncode == 0
    for runtime in ("docker", "podman") if podman else ("docker",):
        since = time.time() - 1
        line = _stop(pytester, names, case, f"{runtime}://{ref}")
        until = time.time() + 1
        assert _events(runtime, since, until, names["repo"]) == [], f"{runtime} created a container before: {line}"
        if case == "network typo":
            assert f"{runtime} has no network 'bridgee'" in line
        if case == "unknown runtime flag":
            assert f"'{runtime} run' has no flag --cap-ad; did you mean --cap-add?" in line


@pytest.mark.docker
def test_the_no_container_proof_sees_a_container(names: dict[str, Any], pytester: pytest.Pytester) -> None:
    """The control: the same kind of run without the mistake creates its container, and the event
    log shows it."""
    since = time.time() - 1
    result = pytester.runpytest_subprocess("--image", f"{names['repo']}:1.4", "--no-builtin-checks", SYSTEM, "-k",
                                           "python", "--rootdir", str(pytester.path), timeout=600)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    assert len(_events("docker", since, time.time() + 1, names["repo"])) == 1


@pytest.mark.docker
@pytest.mark.apptainer
@pytest.mark.parametrize("case", ["glob typo", "table-name typo", "no table for the image", "unknown runtime flag"])
def test_apptainer_starts_no_instance_before_a_usage_error(case: str, names: dict[str, Any], render_tar: Path,
                                                           pytester: pytest.Pytester, apptainer_log: Path) -> None:
    line = _stop(pytester, names, case, str(render_tar), "--runtime", "apptainer")
    calls = apptainer_log.read_text().splitlines()
    started = [c for c in calls if c.startswith(("instance start", "build", "exec")) and "--help" not in c.split()]
    assert not started, (line, calls)
    if case == "unknown runtime flag":
        assert "'apptainer instance start' has no flag --cap-ad" in line
        assert "instance start --help" in calls  # the proof reads the real apptainer's calls


def test_an_image_form_the_runtime_cannot_run_is_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    sif = tmp_path / "app.sif"
    sif.write_bytes(b"")
    for args, message in (
            (["--image", "team/img:1.4", "--runtime", "apptainer"],
             "names a Docker/OCI image, which apptainer runs from a SIF or an image archive: convert it once "
             "('apptainer build img.sif docker-daemon://team/img:1.4')"),
            (["--image", str(sif), "--runtime", "docker"], "is a SIF file, which docker cannot run")):
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        (line,) = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
        assert message in line, line
    assert sys.executable  # the in-process runs above loaded this tree's plugin


@pytest.mark.docker
def test_an_image_cannot_choose_its_table_with_a_label(base_image: str, pytester: pytest.Pytester) -> None:
    """An image labelled as if Apptainer had built it from another reference (``deffile.from``) gets
    no such name: the table for that reference -- here one that trusts its images' allowances -- does
    not cover it, so the run stops (exit 4) instead of letting the image excuse its failing row."""
    forged = build_labelled(base_image, "gate-forged", [
        'LABEL org.label-schema.usage.singularity.deffile.bootstrap=docker-daemon '
        'org.label-schema.usage.singularity.deffile.from=team/prod:1 '
        'org.containercheck.allow-fail="system.libcuda: the image says so"'])
    pytester.makepyprojecttoml("[[tool.containercheck.image]]\nmatch = 'team/prod:*'\ntrust-image-allowances = true\n"
                               "require = ['system.os']\n")
    result = pytester.runpytest_subprocess("--image", forged, "--no-builtin-checks", SYSTEM, "--rootdir",
                                           str(pytester.path), timeout=600)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    (line,) = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
    assert "no table of pyproject.toml [[tool.containercheck.image]] matches it" in line
    assert "team/prod:1" not in line.split("(its names: ")[1].split(";")[0]
