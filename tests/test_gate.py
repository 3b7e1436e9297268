"""The CI gate (issue 22): per-image expectations from the repository (``[tool.containercheck]``,
``--expectations``) and from the image's own labels, checked before anything starts and applied
to every outcome; wrong names stop the run before any container starts; ``diff`` fails on rows
that are gone; a job summary is appended to; one table of exit codes for pytest and containercheck.

The real runs gate two images with different expectations in one run, under Docker (with xdist),
Podman, Apptainer (SIFs built from the Docker images: the labels survive ``apptainer build``) and
from ``docker save`` tars, and assert the same expectations each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_containercheck import require
from pytest_containercheck.engine.diff import classify, diff_columns, failing
from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.expectations import Expectation, combine, from_labels, read_file, unknown_rows
from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.outputs import Output, write_outputs
from pytest_containercheck.engine.report import render_html, render_json, render_markdown, render_terminal

from helpers import NO_GPU_HOST, ROOT, SYSTEM

# -- the sources, one by one ----------------------------------------------------------------------


def _toml(tmp_path: Path, text: str, name: str = "pyproject.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_entries_match_by_glob_and_combine_with_labels_and_require(tmp_path: Path) -> None:
    path = _toml(tmp_path, """
[tool.containercheck]
[[tool.containercheck.image]]
match = ["team/render:*", "render*.sif"]
require = ["render.egl"]
allow-fail = {"render.osmesa" = "EGL only"}
intent = "cpu"

[[tool.containercheck.image]]
match = "team/train:*"
require = "torch.cuda, torch.cpu"
""")
    entries = read_file(str(path), "pyproject.toml", pyproject=True)
    labels = from_labels({"org.containercheck.require": "system.python,render.egl",
                          "org.containercheck.allow-fail": "xgboost.cuda: CPU build; transformers.cuda: none",
                          "org.containercheck.intent": "CPU", "org.containercheck.recipe": "x"}, "team/render:1")
    exp = combine("docker://team/render:1", ["team/render:1", "docker://team/render:1"], ["system.os"], entries, labels)
    assert exp.to_dict() == {
        "required": {"system.os": ["--require"], "render.egl": ["pyproject.toml", "image label"],
                     "system.python": ["image label"]},
        "allowed": {"render.osmesa": [{"source": "pyproject.toml", "reason": "EGL only"}],
                    "xgboost.cuda": [{"source": "image label", "reason": "CPU build"}],
                    "transformers.cuda": [{"source": "image label", "reason": "none"}]},
        "intent": {"value": "cpu", "sources": ["pyproject.toml", "image label"]}}
    assert Expectation.from_dict(exp.to_dict()) == exp
    train = combine("docker://team/train:2", ["team/train:2"], [], entries, None)
    assert list(train.required) == ["torch.cuda", "torch.cpu"] and train.intent is None
    assert combine("host", ["host"], [], entries, None).empty


@pytest.mark.parametrize(("labels", "message"), [
    ({"org.containercheck.requires": "system.os"},
     "--image img: label org.containercheck.requires is not one containercheck reads: did you mean "
     "org.containercheck.require?"),
    ({"org.containercheck.allow-fail": "render.osmesa"},
     "--image img: label org.containercheck.allow-fail: 'render.osmesa' is not 'ROW: REASON'"),
    ({"org.containercheck.allow-fail": "render.osmesa: ok; torch.cuda:  "}, "'torch.cuda:' is not 'ROW: REASON'"),
    ({"org.containercheck.intent": "gpus"}, "--image img: label org.containercheck.intent 'gpus': did you mean gpu?"),
])
def test_a_malformed_label_is_one_line(labels: dict[str, str], message: str) -> None:
    with pytest.raises(UsageProblem, match=re.escape(message)) as info:
        from_labels(labels, "img")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[tool.containercheck]\nimages = []\n", "unknown key tool.containercheck.images: did you mean image?"),
    ("[[tool.containercheck.image]]\nmatch = 'x'\nrequires = ['a']\n",
     "#1: unknown key 'requires': did you mean require?"),
    ("[[tool.containercheck.image]]\nrequire = ['a']\n", "'match' must be an image reference or glob"),
    ("[[tool.containercheck.image]]\nmatch = 'x'\nallow-fail = {a = ''}\n", "allow-fail 'a' needs a reason"),
    ("[[tool.containercheck.image]]\nmatch = 'x'\nintent = 'tpu'\n", "intent 'tpu'"),
    ("[tool.containercheck\n", "pyproject.toml: not valid TOML"),
])
def test_a_malformed_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(UsageProblem, match=re.escape(message)) as info:
        read_file(str(path), "pyproject.toml", pyproject=True)
    assert "\n" not in str(info.value)


def test_a_file_named_by_the_option_is_read_at_its_top_level(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[[image]]\nmatch = '*'\nrequire = ['system.os']\n", "gate.toml")
    (entry,) = read_file(str(path), "gate.toml", pyproject=False)
    assert (entry.source, entry.require) == ("gate.toml", ("system.os",))
    assert read_file(str(_toml(tmp_path, "[tool.black]\n")), "pyproject.toml", pyproject=True) == []


@pytest.mark.parametrize(("label_intent", "file", "message"), [
    (None, 'require = ["render.egl"]\nallow-fail = {"render.egl" = "flaky"}',
     "row 'render.egl' is required by pyproject.toml and allowed to fail by pyproject.toml; keep one of them"),
    ("gpu", 'intent = "cpu"', "intent 'cpu' (pyproject.toml) and 'gpu' (image label) disagree"),
])
def test_a_conflict_is_one_line(tmp_path: Path, label_intent: str | None, file: str, message: str) -> None:
    entries = read_file(str(_toml(tmp_path, f"[[tool.containercheck.image]]\nmatch = '*'\n{file}\n")),
                        "pyproject.toml", pyproject=True)
    labels = from_labels({"org.containercheck.intent": label_intent} if label_intent else {}, "img")
    with pytest.raises(UsageProblem, match=re.escape(message)):
        combine("docker://img", ["img"], [], entries, labels)


def test_the_option_and_a_label_conflict_too() -> None:
    labels = from_labels({"org.containercheck.allow-fail": "torch.cuda: CPU image"}, "img")
    with pytest.raises(UsageProblem, match="required by --require and allowed to fail by image label"):
        combine("docker://img", ["img"], ["torch.cuda"], [], labels)


def test_unknown_rows_name_the_closest_row() -> None:
    labels = from_labels({"org.containercheck.require": "torch.cdua"}, "img")
    exp = combine("docker://img", ["img"], ["system.pyton"], [], labels)
    assert unknown_rows([exp], {"torch.cuda", "system.python"}) == [
        "--require: no such row 'system.pyton'; did you mean system.python? "
        "(pytest --containercheck-rows lists every row)",
        "--image img: label org.containercheck.require: no such row 'torch.cdua'; did you mean torch.cuda? "
        "(pytest --containercheck-rows lists every row)"]
    assert unknown_rows([exp], {"torch.cdua", "system.pyton"}) == []


# -- in the reports -------------------------------------------------------------------------------


def _gated_matrix() -> Matrix:
    m = Matrix()
    exp = Expectation(required={"system.python": ["image label"]},
                      allowed={"render.osmesa": [{"source": "pyproject.toml", "reason": "EGL <only>"}]})
    m.add_column(Column("docker://a:1", "h", expectations=exp.to_dict()))
    m.add_column(Column("docker://b:1", "h", expectations=Expectation().to_dict()))
    m.put(Cell("system.python", "docker://a:1", "h", "pass", "CPython 3.11"))
    m.put(Cell("render.osmesa", "docker://a:1", "h", "xfail", "no libOSMesa"))
    for row, status in (("system.python", "pass"), ("render.osmesa", "skip"), ("render.egl", "skip")):
        m.put(Cell(row, "docker://b:1", "h", status, "x"))
    return m


def test_every_report_shows_required_rows_and_expected_failures_with_their_reasons() -> None:
    m = _gated_matrix()
    assert m.counts() == {"pass": 2, "fail": 0, "error": 0, "skip": 2, "xfail": 1} and m.problems() == []
    again = Matrix.from_dict(json.loads(render_json(m)))
    assert again.columns[("docker://a:1", "h")].expectations == m.columns[("docker://a:1", "h")].expectations
    assert again.get("render.osmesa", ("docker://a:1", "h")).status == "xfail"  # type: ignore[union-attr]
    text = "\n".join(render_terminal(m, width=200))
    assert "system.python  PASS*   PASS" in text and "* required by the image's expectations" in text
    assert "expectations for [1]" not in text
    assert "expectations for docker://a:1: requires system.python (image label); may fail: render.osmesa " \
           "(by pyproject.toml: EGL <only>)" in text
    assert "no expectations for docker://b:1: 2 of 3 rows skipped; see --require" in text
    assert re.search(r"XFAIL render.osmesa on docker://a:1: no libOSMesa\n +allowed to fail by pyproject.toml: "
                     r"EGL <only>", text), text
    md = render_markdown(m)
    assert "| system.python | ✅ *required* CPython 3.11 |" in md
    assert "❎ expected failure of **render.osmesa** on docker://a:1: no libOSMesa; allowed to fail by " \
           "pyproject.toml: EGL &lt;only&gt;" in md
    assert "- no expectations for docker://b:1: 2 of 3 rows skipped" in md
    page = render_html(m)
    assert 'class="req" title="required by image label">required</span>' in page
    assert "expected failure, allowed to fail by</b> pyproject.toml: EGL &lt;only&gt;" in page
    assert "EGL <only>" not in page


def test_a_matrix_without_expectations_says_nothing_about_them() -> None:
    m = Matrix()
    m.put(Cell("system.python", "docker://a:1", "h", "pass", "ok"))
    assert "expectations" not in "\n".join(render_terminal(m)) + render_markdown(m) + render_html(m)


# -- diff: gone rows ------------------------------------------------------------------------------


def _one_column(path: Path, column: str, cells: dict[str, str]) -> Path:
    m = Matrix()
    m.add_column(Column(column, "h"))
    for row, status in cells.items():
        m.put(Cell(row, column, "h", status, f"{row} {status}"))
    path.write_text(render_json(m))
    return path


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_row_that_passed_and_is_gone_fails_the_diff_unless_accepted(tmp_path: Path) -> None:
    _one_column(tmp_path / "old.json", "docker://img:1", {"system.python": "pass", "torch.cuda": "pass",
                                                          "render.egl": "skip"})
    _one_column(tmp_path / "new.json", "docker://img:2", {"system.python": "pass"})
    assert (classify("pass", None), classify("skip", None), classify("xfail", None)) == ("gone", "dropped", "dropped")
    res = _cli("diff", "old.json", "new.json", "--md", "d.md", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "GONE               torch.cuda: pass -> -" in res.stdout
    assert "DROPPED            render.egl: skip -> -" in res.stdout
    md = (tmp_path / "d.md").read_text()
    assert "**1 row(s) gone** that passed before: they fail the diff" in md
    assert "| `torch.cuda` | gone | pass | — |" in md
    accepted = _cli("diff", "old.json", "new.json", "--accept-gone", "--md", "d.md", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "(accepted: --accept-gone)" in (tmp_path / "d.md").read_text()


def test_an_expected_failure_is_no_pass_for_diff() -> None:
    old, new = Matrix(), Matrix()
    old.put(Cell("render.egl", "a", "h", "pass"))
    new.put(Cell("render.egl", "b", "h", "xfail"))
    (change,) = diff_columns(old, Column("a", "h"), new, Column("b", "h"))
    assert change.kind == "regression" and failing([change])


# -- the job summary --------------------------------------------------------------------------------


def test_the_step_summary_is_appended_to_and_keeps_what_was_there(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    summary = pytester.path / "summary.md"
    summary.write_text("## Build\n\nimage built in 3 min")  # an earlier step's, no final newline
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "-k", "system.python",
                                "--matrix-md", str(summary))
    assert result.ret == 0
    text = summary.read_text()
    assert text.startswith("## Build\n\nimage built in 3 min\n\n## containercheck matrix\n"), text[:200]
    # containercheck diff --md to the same file appends too
    _one_column(pytester.path / "old.json", "docker://img:1", {"system.python": "pass"})
    _one_column(pytester.path / "new.json", "docker://img:2", {"system.python": "fail"})
    res = _cli("diff", "old.json", "new.json", "--md", str(summary), cwd=pytester.path,
               env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.returncode == 1
    after = summary.read_text()
    assert after.startswith(text) and after[len(text):].startswith("\n### containercheck diff"), after[len(text):][:80]


def test_append_is_an_option_too_and_replaces_nothing_when_not_asked(tmp_path: Path, pytester: pytest.Pytester) -> None:
    (pytester.path / "report.md").write_text("kept\n")
    pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "-k", "system.python",
                       "--matrix-md", "report.md", "--matrix-md-append")
    assert (pytester.path / "report.md").read_text().startswith("kept\n\n## containercheck matrix\n")
    pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "-k", "system.python",
                       "--matrix-md", "report.md")
    assert (pytester.path / "report.md").read_text().startswith("## containercheck matrix\n")
    done = write_outputs([(Output("--md", str(tmp_path / "new.md"), append=True), "first\n")])
    assert done.written and (tmp_path / "new.md").read_text() == "first\n"  # a missing file is created


# -- the plugin on this machine's Python ------------------------------------------------------------

OWN_CHECK = '''
import pytest

@pytest.mark.containercheck_row("mine.feature")
def test_feature(container):
    """The image ships /opt/feature."""
    if not container.run(["test", "-e", "/opt/feature"]).ok:
        container.fail("no /opt/feature in the image", fault="image")
    container.note("/opt/feature present")
'''


@NO_GPU_HOST
def test_allowed_failure_and_required_skip_on_the_host(pytester: pytest.Pytester) -> None:
    """pytest's own outcomes agree with the matrix: an expected failure is xfailed, a required row
    that skipped failed; under -n 2 too (the workers get the controller's expectations)."""
    pytester.makepyfile(test_own=OWN_CHECK)
    pytester.makepyprojecttoml("""
[[tool.containercheck.image]]
match = "host"
require = ["system.libcuda"]
allow-fail = {"mine.feature" = "no /opt/feature on a workstation"}
""")
    for xdist in ([], ["-n", "2"]):
        # --rootdir: SYSTEM lies in this checkout, whose own pyproject.toml pytest would pick
        result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "test_own.py",
                                    "--rootdir", str(pytester.path), "--matrix-json", "m.json", "-rxf", *xdist)
        result.assert_outcomes(passed=3, skipped=3, failed=1, xfailed=1)
        result.stdout.fnmatch_lines_random([
            "*XFAIL*test_feature*allowed to fail by pyproject.toml: no /opt/feature on a workstation*",
            "*required row 'system.libcuda' was skipped (required by pyproject.toml): host has no*"])
        cells = {c["row"]: c for c in json.loads((pytester.path / "m.json").read_text())["cells"]}
        assert cells["mine.feature"]["status"] == "xfail"
        assert cells["system.libcuda"]["status"] == "fail"


def test_a_users_own_xfail_mark_is_an_expected_failure_in_the_matrix_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_own="""
        import pytest

        @pytest.mark.xfail(reason="upstream bug 12")
        def test_known(container):
            container.fail("still broken")
    """)
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", "test_own.py", "--matrix-json", "m.json")
    result.assert_outcomes(xfailed=1)
    (cell,) = json.loads((pytester.path / "m.json").read_text())["cells"]
    assert (cell["status"], cell["detail"], cell["evidence"]["xfail"]) == ("xfail", "still broken", "upstream bug 12")
    result.stdout.fnmatch_lines(["XFAIL known on host: still broken",
                                 "*allowed to fail by an xfail mark (upstream bug 12)"])


def test_nothing_expected_says_so_in_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM)
    lines = [ln for ln in result.stdout.lines if "no expectations for host" in ln]
    assert len(lines) == 1 and re.search(r"\d+ of 7 rows skipped; see --require", lines[0] + " see --require"), lines


def test_k_selecting_nothing_names_the_rows(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # whole lines: as in a CI log
    pytester.makepyfile(test_own=OWN_CHECK)
    result = pytester.runpytest("--image", "host", "test_own.py", "-k", "rendr")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    (line,) = [ln for ln in result.stdout.lines if "selected no check" in ln]
    assert line.startswith("containercheck: -k 'rendr' selected no check; did you mean render.egl? Rows: system.python")
    assert "mine.feature" in line and "torch.cuda" in line


def test_containercheck_rows_lists_built_in_rows_and_the_users_own(pytester: pytest.Pytester) -> None:
    from pytest_containercheck.checks import builtin_rows

    pytester.makepyfile(test_own=OWN_CHECK)
    result = pytester.runpytest("--containercheck-rows", "test_own.py")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    for row in builtin_rows():
        assert re.search(rf"^  {re.escape(row.name)} +{re.escape(row.doc)}$", out, re.M), row.name
    assert re.search(r"^  mine\.feature +The image ships /opt/feature\. \(test_own\.py\)$", out, re.M), out
    assert "passed" not in out and "PASS" not in out  # nothing ran
    assert pytester.runpytest("--containercheck-rows").ret == pytest.ExitCode.OK  # nothing of the user's: still a list


# -- exit codes: one table -----------------------------------------------------------------------------


def test_the_exit_code_table_is_true(pytester: pytest.Pytester) -> None:
    """docs/reference/exit-codes.md: one row per code, for pytest and containercheck; each claim
    that can be produced here is produced and checked."""
    table = (ROOT / "docs" / "reference" / "exit-codes.md").read_text()
    codes = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d) \|.*$", table, re.M)}
    assert sorted(codes) == [0, 1, 2, 3, 4, 5, 6]
    assert {c.value for c in pytest.ExitCode} <= set(codes)  # every code this pytest has (6: pytest 9.2+)
    pytester.makepyfile(test_own=OWN_CHECK)
    run = pytester.runpytest
    base = ["--image", "host", "--no-builtin-checks", SYSTEM]
    assert run(*base, "-k", "system.python").ret == 0
    assert run(*base, "-k", "system.python", "--require", "system.libcuda").ret == 1
    assert run(*base, "--require", "system.pyton").ret == 4
    assert run(*base, "-k", "rendr").ret == 5
    _one_column(pytester.path / "a.json", "docker://img:1", {"system.python": "pass"})
    _one_column(pytester.path / "b.json", "docker://img:2", {"system.python": "fail"})
    cli = {"show a.json": 0, "show b.json": 1, "diff a.json b.json": 1, "diff b.json a.json": 0,
           "show missing.json": 4, "merge": 4, "diff a.json b.json --nope": 4}
    for args, code in cli.items():
        assert _cli(*args.split(), cwd=pytester.path).returncode == code, args
    assert "| 4 | usage error" in codes[4] and "containercheck: error:" in codes[4]


# -- real runtimes: two images with different expectations in one run ----------------------------------

FEATURE_REASON = "no feature in a render image (ticket 7)"
IMAGES = {
    "gate-render": ['LABEL org.containercheck.require="system.os" '
                    f'org.containercheck.allow-fail="mine.feature: {FEATURE_REASON}" org.containercheck.intent=cpu'],
    "gate-train": ['LABEL org.containercheck.require="system.libcuda" org.containercheck.intent=gpu',
                   "RUN mkdir -p /opt && touch /opt/feature"],
}
PYPROJECT = """
[[tool.containercheck.image]]
match = ["*gate-render*"]
require = ["system.python"]

[[tool.containercheck.image]]
match = ["*gate-train*"]
require = ["system.os"]
"""
EXPECTED = {
    "gate-render": {"required": {"system.python": ["pyproject.toml"], "system.os": ["image label"]},
                    "allowed": {"mine.feature": [{"source": "image label", "reason": FEATURE_REASON}]},
                    "intent": {"value": "cpu", "sources": ["image label"]}},
    "gate-train": {"required": {"system.os": ["pyproject.toml"], "system.libcuda": ["image label"]},
                   "allowed": {}, "intent": {"value": "gpu", "sources": ["image label"]}},
}


def build_labelled(base: str, name: str, lines: list[str]) -> str:
    """*base* plus *lines* (LABEL, RUN) as ``containercheck-test/NAME:<hash>``, built once (``docker build``
    with the Dockerfile on stdin: no context, nothing pulled)."""
    dockerfile = "\n".join([f"FROM {base}", *lines]) + "\n"
    tag = f"containercheck-test/{name}:{hashlib.sha256(dockerfile.encode()).hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True,
                       check=True, timeout=600)
    return tag


@pytest.fixture(scope="module")
def gate_images(base_image: str) -> dict[str, str]:
    return {name: build_labelled(base_image, name, lines) for name, lines in IMAGES.items()}


def _podman_load(ref: str) -> str:
    if subprocess.run(["podman", "image", "exists", ref], timeout=60).returncode != 0:
        subprocess.run(["bash", "-c", 'docker save "$0" | podman load', ref], check=True, capture_output=True,
                       timeout=600)
    return ref


def _targets(kind: str, images: dict[str, str], where: Path, request: pytest.FixtureRequest) -> list[str]:
    """The ``--image`` arguments (and runtime flags) that run both images under *kind*."""
    if kind == "docker":
        return [a for ref in images.values() for a in ("--image", ref)] + ["-n", "2"]
    if kind == "podman":
        if subprocess.run(["podman", "info"], capture_output=True, timeout=120).returncode != 0:
            pytest.skip("podman cannot run containers here")
        return [a for ref in images.values() for a in ("--image", f"podman://{_podman_load(ref)}")]
    if kind == "apptainer":
        apptainer = request.getfixturevalue("apptainer")
        sifs = [apptainer.ensure_sif(ref, log=lambda m: sys.stderr.write(f"[sif] {m}\n")) for ref in images.values()]
        return [a for sif in sifs for a in ("--image", str(sif))] + ["--runtime-arg=--userns"]
    tars = []
    for name, ref in images.items():  # docker save tars, named like the images
        subprocess.run(["docker", "save", "-o", str(where / f"{name}.tar"), ref], check=True, timeout=600)
        tars += ["--image", f"{name}.tar"]
    return tars


@NO_GPU_HOST
@pytest.mark.docker
@pytest.mark.parametrize("kind", ["docker", "podman", pytest.param("apptainer", marks=pytest.mark.apptainer),
                                  "docker-archive"])
def test_two_images_gated_by_file_and_labels(kind: str, gate_images: dict[str, str], pytester: pytest.Pytester,
                                             request: pytest.FixtureRequest) -> None:
    """gate-render may fail mine.feature (its label says why) and passes; gate-train requires
    system.libcuda (its label), which skips on this GPU-less host: it fails, with the reason.
    Each image's required rows come from pyproject.toml and from its labels, the same under
    every runtime and input (a SIF keeps the labels the Docker build set)."""
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(test_own=OWN_CHECK)
    targets = _targets(kind, gate_images, pytester.path, request)
    result = pytester.runpytest_subprocess(*targets, "--no-builtin-checks", SYSTEM, "test_own.py",
                                           "--rootdir", str(pytester.path), "--matrix-json", "m.json",
                                           "--matrix-md", "m.md", "--matrix-html", "m.html", timeout=900)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-4000:]
    data = json.loads((pytester.path / "m.json").read_text())
    column = {name: next(c for c in data["columns"] if name in c["id"]) for name in IMAGES}
    for name, col in column.items():
        assert col["expectations"] == EXPECTED[name], (name, col["expectations"])
    cells = {(name, c["row"]): c for c in data["cells"] for name, col in column.items() if c["column"] == col["id"]}
    render = {row: c for (name, row), c in cells.items() if name == "gate-render"}
    train = {row: c for (name, row), c in cells.items() if name == "gate-train"}
    assert render["mine.feature"]["status"] == "xfail" and render["mine.feature"]["detail"] == \
        "no /opt/feature in the image"
    assert not [c for c in render.values() if c["status"] in ("fail", "error")], render  # the image passes
    assert render["system.os"]["status"] == render["system.python"]["status"] == "pass"
    assert train["system.libcuda"]["status"] == "fail"
    assert train["system.libcuda"]["detail"].startswith(
        "required row 'system.libcuda' was skipped (required by image label): host has no NVIDIA GPU")
    assert train["mine.feature"]["status"] == "pass"
    assert [c["row"] for c in data["cells"] if c["status"] in ("fail", "error")] == ["system.libcuda"]
    md = (pytester.path / "m.md").read_text()
    assert f"allowed to fail by image label: {FEATURE_REASON}" in md and "❎" in md
    assert "requires system.python (pyproject.toml), system.os (image label)" in md
    assert f"expected failure, allowed to fail by</b> image label: {FEATURE_REASON}" in \
        (pytester.path / "m.html").read_text()
    assert re.search(rf"XFAIL mine.feature on [^\n]*gate-render[^\n]*\n\s+[^\n]*allowed to fail by image label: "
                     rf"{re.escape(FEATURE_REASON)}", re.sub(r"\n +(?=\S)(?!allowed)", " ", out)), out[-3000:]


# -- wrong names: one line, before any container starts -------------------------------------------------


def _created(image: str, since: float, until: float) -> list[str]:
    """Containers Docker created from *image* between *since* and *until* (its event log)."""
    res = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter",
                          "type=container", "--filter", "event=create", "--format", "{{.Actor.Attributes.image}}"],
                         capture_output=True, text=True, timeout=120, check=True)
    return [ln for ln in res.stdout.split() if ln == image]


@pytest.fixture(scope="module")
def names_images(base_image: str) -> Iterator[dict[str, str]]:
    """Images for the wrong-name cases, under tags of this session only (no other run creates
    containers from them, so Docker's events are this test's alone)."""
    token = secrets.token_hex(4)
    labels = {"good": ['LABEL org.containercheck.require="system.os" org.containercheck.intent=gpu'],
              "row-typo": ['LABEL org.containercheck.require="system.pythn"'],
              "key-typo": ['LABEL org.containercheck.requires="system.os"'],
              "no-reason": ['LABEL org.containercheck.allow-fail="system.os"']}
    tags = {}
    for name, lines in labels.items():
        built = build_labelled(base_image, f"gate-names-{name}", lines)
        tags[name] = f"containercheck-test/gate-names-{name}:{token}"
        subprocess.run(["docker", "tag", built, tags[name]], check=True, timeout=60)
    yield tags
    subprocess.run(["docker", "rmi", *tags.values()], capture_output=True, timeout=120)


NAME_CASES = {
    "require-typo": ("good", ["--require", "system.pyton"], "",
                     "ERROR: --require: no such row 'system.pyton'; did you mean system.python?"),
    "file-typo": ("good", [], "[[tool.containercheck.image]]\nmatch = '*gate-names*'\nrequire = ['system.oss']\n",
                  "ERROR: pyproject.toml [[tool.containercheck.image]] #1 require: no such row 'system.oss'; "
                  "did you mean system.os?"),
    "label-typo": ("row-typo", [], "", "label org.containercheck.require: no such row 'system.pythn'; did you mean "
                   "system.python?"),
    "label-key-typo": ("key-typo", [], "", "label org.containercheck.requires is not one containercheck reads: "
                       "did you mean org.containercheck.require?"),
    "label-without-reason": ("no-reason", [], "", "label org.containercheck.allow-fail: 'system.os' is not "
                             "'ROW: REASON'"),
    "own-check-typo": ("good", ["test_own.py", "--require", "mine.featur"], "",
                       "ERROR: --require: no such row 'mine.featur'; did you mean mine.feature?"),
    "own-check-typo-xdist": ("good", ["test_own.py", "--require", "mine.featur", "-n", "2"], "",
                             "ERROR: --require: no such row 'mine.featur'; did you mean mine.feature?"),
    "conflict": ("good", [], "[[tool.containercheck.image]]\nmatch = '*'\nallow-fail = {'system.os' = 'flaky'}\n",
                 "row 'system.os' is required by image label and allowed to fail by pyproject.toml"),
    "intent-conflict": ("good", [], "[[tool.containercheck.image]]\nmatch = '*'\nintent = 'cpu'\n",
                        "intent 'cpu' (pyproject.toml) and 'gpu' (image label) disagree"),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", list(NAME_CASES))
def test_a_wrong_name_is_one_line_before_any_container_starts(case: str, names_images: dict[str, str],
                                                              pytester: pytest.Pytester) -> None:
    image_key, args, pyproject, message = NAME_CASES[case]
    image = names_images[image_key]
    pytester.makepyfile(test_own=OWN_CHECK)
    if pyproject:
        pytester.makepyprojecttoml(pyproject)
    since = time.time()
    result = pytester.runpytest_subprocess("--image", image, *args, timeout=600)
    until = time.time() + 1
    errors = [ln for ln in result.stderr.lines + result.stdout.lines if ln.startswith("ERROR:")]
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-3000:] + result.stderr.str()
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert _created(image, since, until) == [], "a container was created before the usage error"


@pytest.mark.docker
def test_the_no_container_proof_sees_containers(names_images: dict[str, str], pytester: pytest.Pytester) -> None:
    """The control for the test above: the same run with the right name creates the image's
    container, and Docker's events show it (the check collected the user's row first)."""
    image = names_images["good"]
    pytester.makepyfile(test_own=OWN_CHECK)
    since = time.time()
    result = pytester.runpytest_subprocess("--image", image, "test_own.py", "--require", "mine.feature",
                                           "--no-builtin-checks", SYSTEM, "-k", "feature or python", timeout=600)
    until = time.time() + 1
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]  # mine.feature fails: required
    assert len(_created(image, since, until)) == 1


def test_every_command_option_is_in_the_reference() -> None:
    from pytest_containercheck.options import COMMANDS

    page = (ROOT / "docs" / "reference" / "options.md").read_text()
    assert all(f"`{opt.flag}`" in page for opt in COMMANDS)
    assert require.parse(["a,b", "c"]) == ("a", "b", "c")
