"""The CI gate (issue 22): per-image expectations from the repository (``[tool.containercheck]``,
``--expectations``) and from the image's own labels, checked before anything starts and applied
to every outcome; wrong names stop the run before any container starts; ``diff`` fails on rows
that are gone; a job summary is appended to; one table of exit codes for pytest and containercheck.

The real runs gate two images with different expectations in one run, under Docker (with xdist),
Podman, Apptainer (SIFs built from the Docker images: the labels survive ``apptainer build``) and
from ``docker save`` tars, and assert the same expectations each time.
"""

from __future__ import annotations

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
from pytest_containercheck.engine import gate
from pytest_containercheck.engine.diff import classify, diff_columns, failing
from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.expectations import (
    Expectation,
    combine,
    find_pyproject,
    from_labels,
    read_file,
    uncovered,
    unknown_rows,
    unused,
    unused_line,
)
from pytest_containercheck.engine.matrix import Cell, Column, Matrix
from pytest_containercheck.engine.outputs import Output, write_outputs
from pytest_containercheck.engine.report import render_html, render_json, render_markdown, render_terminal

from helpers import (
    FEATURE_REASON,
    GATE_IMAGES,
    GATE_PYPROJECT,
    NO_GPU_HOST,
    OWN_CHECK,
    ROOT,
    SYSTEM,
    build_labelled,
    missing,
)

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
trust-image-allowances = true

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
    # Without a table that trusts them, the image's own allowances are ignored, and say so.
    untrusted = combine("docker://team/other:1", ["team/other:1"], [], entries, labels)
    assert untrusted.allowed == {} and untrusted.to_dict()["ignored"] == {
        "xgboost.cuda": [{"source": "image label", "reason": "CPU build"}],
        "transformers.cuda": [{"source": "image label", "reason": "none"}]}
    assert Expectation.from_dict(untrusted.to_dict()) == untrusted
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


def test_the_option_and_a_trusted_label_conflict_too(tmp_path: Path) -> None:
    labels = from_labels({"org.containercheck.allow-fail": "torch.cuda: CPU image"}, "img")
    trusting = read_file(str(_toml(tmp_path, "[[tool.containercheck.image]]\nmatch = 'img'\n"
                                             "trust-image-allowances = true\n")), "pyproject.toml", pyproject=True)
    with pytest.raises(UsageProblem, match="required by --require and allowed to fail by image label"):
        combine("docker://img", ["img"], ["torch.cuda"], trusting, labels)
    # an allowance nobody trusts is no conflict: it is ignored, and the row is required
    exp = combine("docker://img", ["img"], ["torch.cuda"], [], labels)
    assert exp.required == {"torch.cuda": ["--require"]} and "torch.cuda" in exp.ignored


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
    assert "| torch.cuda | gone | pass | — |" in md
    accepted = _cli("diff", "old.json", "new.json", "--accept-gone", "--md", "d.md", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "(accepted: --accept-gone)" in (tmp_path / "d.md").read_text()


def test_a_failure_the_expectations_allow_is_shown_but_is_no_regression() -> None:
    """The gate's rule in diff too: an image that passed its gate does not fail the diff; the
    change is listed as an allowed failure, with who allowed it.  On the old side an expected
    failure counts as failing: allowed before and passing now is fixed."""
    old, new = Matrix(), Matrix()
    old.put(Cell("render.egl", "a", "h", "pass"))
    old.put(Cell("render.osmesa", "a", "h", "skip"))
    old.put(Cell("torch.cpu", "a", "h", "xfail"))
    exp = Expectation(allowed={"render.egl": [{"source": "pyproject.toml", "reason": "EGL only"}],
                               "render.osmesa": [{"source": "pyproject.toml", "reason": "EGL only"}]})
    new.add_column(Column("b", "h", expectations=exp.to_dict()))
    for row in ("render.egl", "render.osmesa"):
        new.put(gate.gated_cell(Cell(row, "b", "h", "fail", "no EGL"), gate.decide(row, "fail", "no EGL", exp)))
    new.put(Cell("torch.cpu", "b", "h", "pass"))
    changes = {c.row: c for c in diff_columns(old, Column("a", "h"), new, Column("b", "h"))}
    assert (changes["render.egl"].kind, changes["render.osmesa"].kind) == ("allowed failure", "allowed failure")
    assert changes["render.egl"].detail == "no EGL (allowed to fail by pyproject.toml: EGL only)"
    assert changes["torch.cpu"].kind == "fixed"
    assert not failing(list(changes.values()))
    assert classify("fail", "xfail") == "still failing" and classify("pass", "fail") == "regression"


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
    half = json.loads((pytester.path / "a.json").read_text())
    half["complete"] = False
    (pytester.path / "half.json").write_text(json.dumps(half))
    (pytester.path / "typo.toml").write_text("[[image]]\nmatch = 'docker://img:9'\n")
    cli = {"show a.json": 0, "show b.json": 1, "diff a.json b.json": 1, "diff b.json a.json": 0,
           "show missing.json": 4, "merge": 4, "diff a.json b.json --nope": 4,
           "gate a.json": 0, "gate b.json": 1, "gate a.json b.json": 1, "gate half.json": 2,
           "gate a.json --expectations typo.toml": 4, "gate a.json --require system.pyton": 4}
    for args, code in cli.items():
        assert _cli(*args.split(), cwd=pytester.path).returncode == code, args
    assert "| 4 | usage error" in codes[4] and "containercheck: error:" in codes[4]


# -- real runtimes: two images with different expectations in one run ----------------------------------

EXPECTED = {
    "gate-render": {"required": {"system.python": ["pyproject.toml"], "system.os": ["image label"]},
                    "allowed": {"mine.feature": [{"source": "image label", "reason": FEATURE_REASON}]},
                    "intent": {"value": "cpu", "sources": ["image label"]}},
    "gate-train": {"required": {"system.os": ["pyproject.toml"], "system.libcuda": ["image label"]},
                   "allowed": {}, "intent": {"value": "gpu", "sources": ["image label"]}},
}


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
            missing("podman", "podman cannot run containers here")
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
    pytester.makepyprojecttoml(GATE_PYPROJECT)
    pytester.makepyfile(test_own=OWN_CHECK)
    targets = _targets(kind, gate_images, pytester.path, request)
    result = pytester.runpytest_subprocess(*targets, "--no-builtin-checks", SYSTEM, "test_own.py",
                                           "--rootdir", str(pytester.path), "--matrix-json", "m.json",
                                           "--matrix-md", "m.md", "--matrix-html", "m.html", timeout=900)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-4000:]
    data = json.loads((pytester.path / "m.json").read_text())
    column = {name: next(c for c in data["columns"] if name in c["id"]) for name in GATE_IMAGES}
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


@NO_GPU_HOST
@pytest.mark.docker
def test_an_image_cannot_excuse_itself_unless_the_repository_trusts_it(gate_images: dict[str, str],
                                                                       pytester: pytest.Pytester) -> None:
    """gate-render's label allows its failing mine.feature: without ``trust-image-allowances`` the
    row fails (exit 1) and every report says the allowance was ignored; with it, exit 0."""
    pytester.makepyfile(test_own=OWN_CHECK)
    args = ["--image", gate_images["gate-render"], "--no-builtin-checks", SYSTEM, "test_own.py", "--rootdir",
            str(pytester.path), "-k", "feature or python or test_os", "--matrix-json", "m.json", "--matrix-md", "m.md"]
    for trusted, code in ((False, pytest.ExitCode.TESTS_FAILED), (True, pytest.ExitCode.OK)):
        pytester.makepyprojecttoml("[[tool.containercheck.image]]\nmatch = '*gate-render*'\n"
                                   + ("trust-image-allowances = true\n" if trusted else ""))
        result = pytester.runpytest_subprocess(*args, timeout=600)
        assert result.ret == code, result.stdout.str()[-3000:]
        (cell,) = [c for c in json.loads((pytester.path / "m.json").read_text())["cells"] if c["row"] == "mine.feature"]
        md = (pytester.path / "m.md").read_text()
        if trusted:
            assert cell["status"] == "xfail" and "ignored" not in md
            assert cell["gate"]["allowed_by"] == [{"source": "image label", "reason": FEATURE_REASON}]
        else:
            assert cell["status"] == "fail" and cell["gate"]["allowed_by"] == []
            assert cell["gate"]["ignored"] == [{"source": "image label", "reason": FEATURE_REASON}]
            said = " ".join(result.stdout.str().split())
            assert "gate: the image's own allowance (image label: " + FEATURE_REASON + ") is ignored: the " \
                   "repository does not accept allowances from the image (trust-image-allowances)" in said, said[-2000:]
            assert "may not fail: mine.feature (by image label: " + FEATURE_REASON + "): ignored" in said
            assert "is ignored: the repository does not accept allowances from the image" in md


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


# -- the gate's rules, one engine module (engine/gate.py) -------------------------------------------

RULES = Expectation(required={"need": ["pyproject.toml"]},
                    allowed={"may": [{"source": "pyproject.toml", "reason": "EGL only"}]},
                    ignored={"own": [{"source": "image label", "reason": "the image says so"}]})


@pytest.mark.parametrize(("row", "observed", "status", "reason"), [
    ("need", "pass", "pass", ""),
    ("need", "skip", "fail", "required row 'need' was skipped (required by pyproject.toml): no GPU"),
    ("need", "xfail", "fail", "required row 'need' is expected to fail (required by pyproject.toml): no GPU"),
    ("need", "fail", "fail", ""),
    ("need", "error", "error", ""),
    ("need", "missing", "fail", "required row did not run (deselected, or no such check on this image); "
                                "required by pyproject.toml"),
    ("may", "fail", "xfail", "allowed to fail by pyproject.toml: EGL only"),
    ("may", "pass", "pass", ""),
    ("may", "skip", "skip", ""),
    ("may", "error", "error", "row 'may' is allowed to fail, but it errored: the check was not carried out, and an "
                              "allowance covers a failure only"),
    ("may", "interrupted", "interrupted", "row 'may' is allowed to fail, but it was interrupted"),
    ("may", "missing", "fail", "row allowed to fail did not run (deselected, or no such check on this image); "
                               "allowed to fail by pyproject.toml: EGL only"),
    ("own", "fail", "fail", "the image's own allowance (image label: the image says so) is ignored: the "
                            "repository does not accept allowances from the image (trust-image-allowances)"),
    ("own", "pass", "pass", ""),
    ("other", "fail", "fail", ""),
    ("other", "skip", "skip", ""),
    ("other", "xfail", "xfail", ""),
])
def test_decide_is_the_one_rule(row: str, observed: str, status: str, reason: str) -> None:
    out = gate.decide(row, observed, "no GPU", RULES)
    assert (out.status, out.observed) == (status, observed)
    assert out.reason.startswith(reason) and bool(out.reason) == bool(reason), out.reason
    assert gate.Outcome.from_dict(row, out.to_dict()) == out


def test_without_expectations_the_check_decides() -> None:
    for observed in ("pass", "fail", "error", "skip", "interrupted", "xfail"):
        assert gate.decide("r", observed, "", None).status == observed
    with pytest.raises(ValueError):
        gate.decide("r", "bogus", "", None)


def _observed_matrix(cells: dict[tuple[str, str], str], *, complete: bool = True) -> Matrix:
    m = Matrix()
    m.complete = complete
    for col in ("docker://a:1", "docker://b:1"):
        m.add_column(Column(col, "h"))
    for (row, col), observed in cells.items():
        m.put(Cell(row, col, "h", observed, f"{row} {observed}",
                   gate=gate.decide(row, observed, "", None).to_dict()))
    return m


def test_judge_decides_every_cell_fills_missing_rows_and_gives_pytests_exit_code() -> None:
    m = _observed_matrix({("need", "docker://a:1"): "skip", ("may", "docker://a:1"): "fail",
                          ("may", "docker://b:1"): "fail"})
    by_column = {("docker://a:1", "h"): RULES, ("docker://b:1", "h"): None}
    judged = gate.judge(m, by_column.get)
    a = {c.row: c for c in judged.matrix.cells.values() if c.column == "docker://a:1"}
    assert (a["need"].status, a["may"].status) == ("fail", "xfail")
    assert a["need"].detail.startswith("required row 'need' was skipped")
    assert judged.matrix.get("may", ("docker://b:1", "h")).status == "fail"  # type: ignore[union-attr]
    assert judged.exit_code == gate.EXIT_FAILED
    assert m.get("need", ("docker://a:1", "h")).status == "skip"  # type: ignore[union-attr]  # the input is untouched
    # only "may" failing where it is allowed: green; a required row missing: red again
    ok = gate.judge(_observed_matrix({("need", "docker://a:1"): "pass", ("may", "docker://a:1"): "fail"}),
                    by_column.get)
    assert ok.exit_code == gate.EXIT_OK
    gone = gate.judge(_observed_matrix({("may", "docker://a:1"): "fail"}), by_column.get)
    assert gone.exit_code == gate.EXIT_FAILED
    assert gone.matrix.get("need", ("docker://a:1", "h")).detail.startswith(  # type: ignore[union-attr]
        "required row did not run")
    # an interrupted run cannot pass the gate: pytest's exit code 2
    half = gate.judge(_observed_matrix({("need", "docker://a:1"): "pass"}, complete=False), by_column.get)
    assert half.exit_code == gate.EXIT_INTERRUPTED


def test_judging_again_is_stable_and_reads_old_matrices() -> None:
    """A judged matrix judged again under the same rules is the same (the observed outcome is
    kept on each cell); a matrix written before the gate was recorded reads its allowed failures
    (``xfail`` with "allowed to fail by") as the failures they were."""
    m = _observed_matrix({("need", "docker://a:1"): "skip", ("may", "docker://a:1"): "fail"})
    rules = {("docker://a:1", "h"): RULES}
    once = gate.judge(m, rules.get)
    twice = gate.judge(once.matrix, rules.get)
    assert [(c.row, c.status, c.detail) for c in once.matrix.cells.values()] == \
        [(c.row, c.status, c.detail) for c in twice.matrix.cells.values()]
    old = Matrix()
    old.put(Cell("may", "docker://a:1", "h", "xfail", "no libOSMesa",
                 evidence={"xfail": "allowed to fail by image label: EGL only"}))
    old.put(Cell("mark", "docker://a:1", "h", "xfail", "known bug", evidence={"xfail": "upstream bug 12"}))
    assert gate.observed_of(old.get("may", ("docker://a:1", "h"))) == "fail"  # type: ignore[arg-type]
    assert gate.observed_of(old.get("mark", ("docker://a:1", "h"))) == "xfail"  # type: ignore[arg-type]
    judged = gate.judge(old, {("docker://a:1", "h"): Expectation()}.get)
    assert judged.matrix.get("may", ("docker://a:1", "h")).status == "fail"  # type: ignore[union-attr]
    assert judged.exit_code == gate.EXIT_FAILED


# -- every image covered, every table used, no typo in the table's name ----------------------------

COVER = """
[[tool.containercheck.image]]
match = ["team/render:*"]
require = ["system.python"]

[[tool.containercheck.image]]
match = "team/train:*"
"""


def test_an_image_no_table_matches_stops_the_run_naming_the_closest_glob(tmp_path: Path) -> None:
    entries = read_file(str(_toml(tmp_path, COVER)), "pyproject.toml", pyproject=True)
    rendr = ["team/rendr:1.4", "docker://team/rendr:1.4", "docker.io/team/rendr:1.4"]
    problem = uncovered([("team/render:1.4", ["team/render:1.4"]), ("team/rendr:1.4", rendr)], entries, [])
    assert problem is not None and "\n" not in problem
    assert problem.startswith("--image team/rendr:1.4: no table of pyproject.toml [[tool.containercheck.image]] "
                              "matches it, so nothing would gate it (its names: team/rendr:1.4, docker://team/rendr:1.4,")
    assert "the globs: team/render:*, team/train:*; closest: team/render:*" in problem
    assert 'add a table for it (match = "team/rendr:1.4"' in problem
    assert uncovered([("team/rendr:1.4", rendr)], entries, ["system.os"]) is None  # --require covers every image
    assert uncovered([("team/rendr:1.4", rendr)], [], []) is None  # the repository expects nothing
    assert uncovered([("team/train:2", ["team/train:2"])], entries, []) is None  # a table with only 'match'
    (unused_entry,) = unused(entries, [["team/render:1.4"]])
    assert unused_line(unused_entry) == ("pyproject.toml [[tool.containercheck.image]] #2 (match team/train:*) "
                                         "matched no image of this run")


@pytest.mark.parametrize("name", ["containerchek", "container-check", "ContainerCheck", "container_check",
                                  "containerscheck"])
def test_a_table_name_close_to_containercheck_is_a_usage_error(tmp_path: Path, name: str) -> None:
    path = _toml(tmp_path, f"[[tool.{name}.image]]\nmatch = '*'\nrequire = ['system.os']\n")
    with pytest.raises(UsageProblem, match=re.escape(f"pyproject.toml: [tool.{name}] is not a table containercheck "
                                                     "reads: did you mean [tool.containercheck]")):
        read_file(str(path), "pyproject.toml", pyproject=True)
    # and in an --expectations file too
    with pytest.raises(UsageProblem, match="did you mean"):
        read_file(str(path), "gate.toml", pyproject=False)


def test_other_tools_tables_are_left_alone(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[tool.black]\nline-length = 100\n[tool.container]\nx = 1\n[tool.check-manifest]\n")
    assert read_file(str(path), "pyproject.toml", pyproject=True) == []


def test_trust_is_a_boolean(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[[tool.containercheck.image]]\nmatch = '*'\ntrust-image-allowances = 'yes'\n")
    with pytest.raises(UsageProblem, match="'trust-image-allowances' must be true or false"):
        read_file(str(path), "pyproject.toml", pyproject=True)
    path = _toml(tmp_path, "[[tool.containercheck.image]]\nmatch = '*'\ntrust-image-alowances = true\n")
    with pytest.raises(UsageProblem, match="did you mean trust-image-allowances"):
        read_file(str(path), "pyproject.toml", pyproject=True)


def test_the_report_says_an_allowance_was_ignored() -> None:
    m = Matrix()
    exp = Expectation(ignored={"render.osmesa": [{"source": "image label", "reason": "EGL only"}]})
    m.add_column(Column("docker://a:1", "h", expectations=exp.to_dict()))
    outcome = gate.decide("render.osmesa", "fail", "no libOSMesa", exp)
    m.put(gate.gated_cell(Cell("render.osmesa", "docker://a:1", "h", "fail", "no libOSMesa"), outcome))
    text = "\n".join(render_terminal(m, width=200))
    assert "expectations for docker://a:1: may not fail: render.osmesa (by image label: EGL only): ignored: the " \
           "repository does not accept allowances from the image (trust-image-allowances)" in text
    assert re.search(r"FAIL  render.osmesa on docker://a:1: no libOSMesa\n +gate: the image's own allowance "
                     r"\(image label: EGL only\) is ignored", text), text
    assert "is ignored: the repository does not accept allowances" in render_markdown(m)
    assert "is ignored: the repository does not accept allowances" in render_html(m)


# -- an error is never an expected failure ---------------------------------------------------------

CRASHING = '''
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("the image did not start (as a fixture says)")

@pytest.mark.containercheck_row("mine.crash")
def test_crash(container):
    {}["probe facts"]  # a probe whose facts lack a key: the check crashes, it does not fail

@pytest.mark.containercheck_row("mine.error")
def test_error(container):
    container.error("probe 'x' crashed (exit 139)")

@pytest.mark.containercheck_row("mine.setup")
def test_setup(container, broken_setup):
    pass

@pytest.mark.containercheck_row("mine.fails")
def test_fails(container):
    container.fail("no /opt/feature in the image", fault="image")
'''


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]])
def test_an_allowed_row_that_errors_fails_the_run(pytester: pytest.Pytester, xdist: list[str]) -> None:
    """Only a failure is what allow-fail allows: a crash, an error and a setup error stay errors
    (exit 1) and say why the allowance did not apply; the real failure is an expected one."""
    pytester.makepyfile(test_own=CRASHING)
    rows = ["mine.crash", "mine.error", "mine.setup", "mine.fails"]
    pytester.makepyprojecttoml("[[tool.containercheck.image]]\nmatch = 'host'\nallow-fail = {"
                               + ", ".join(f'"{r}" = "known"' for r in rows) + "}\n")
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", "test_own.py", "--rootdir",
                                str(pytester.path), "--matrix-json", "m.json", *xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.assert_outcomes(failed=2, errors=1, xfailed=1)
    cells = {c["row"]: c for c in json.loads((pytester.path / "m.json").read_text())["cells"]}
    assert {r: cells[r]["status"] for r in rows} == {"mine.crash": "error", "mine.error": "error",
                                                     "mine.setup": "error", "mine.fails": "xfail"}
    for row in ("mine.crash", "mine.error", "mine.setup"):
        assert cells[row]["gate"]["reason"] == (f"row {row!r} is allowed to fail, but it errored: the check was not "
                                                "carried out, and an allowance covers a failure only")
    assert cells["mine.fails"]["gate"]["allowed_by"] == [{"source": "pyproject.toml", "reason": "known"}]
    assert "gate: row 'mine.crash' is allowed to fail, but it errored" in result.stdout.str().replace("\n", " ")


def test_every_image_must_be_covered_and_unused_tables_are_named(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[[tool.containercheck.image]]\nmatch = 'hots'\nrequire = ['system.os']\n")
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "--rootdir", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
    assert line == ("ERROR: --image host: no table of pyproject.toml [[tool.containercheck.image]] matches it, so "
                    "nothing would gate it (its names: host; the globs: hots; closest: hots); fix the glob, or add a "
                    'table for it (match = "host"; one with only \'match\' checks it without gating it)')
    pytester.makepyprojecttoml("[[tool.containercheck.image]]\nmatch = 'host'\n\n"
                               "[[tool.containercheck.image]]\nmatch = 'team/train:*'\nrequire = ['torch.cuda']\n")
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "--rootdir", str(pytester.path),
                                "-k", "python", "--matrix-json", "m.json")
    assert result.ret == pytest.ExitCode.OK
    assert "not applied: pyproject.toml [[tool.containercheck.image]] #2 (match team/train:*) matched no image of " \
           "this run" in " ".join(" ".join(result.stdout.lines).split())
    meta = json.loads((pytester.path / "m.json").read_text())["meta"]
    assert meta["unused_expectations"] == ["pyproject.toml [[tool.containercheck.image]] #2 (match team/train:*) "
                                           "matched no image of this run"]


def test_a_misspelt_table_stops_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[[tool.containerchek.image]]\nmatch = '*'\nrequire = ['system.libcuda']\n")
    result = pytester.runpytest("--image", "host", "--no-builtin-checks", SYSTEM, "--rootdir", str(pytester.path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [ln for ln in result.stderr.lines if ln.startswith("ERROR:")]
    assert line.startswith("ERROR: pyproject.toml: [tool.containerchek] is not a table containercheck reads: "
                           "did you mean [tool.containercheck]"), line


def test_the_repositorys_pyproject_is_found_whatever_pytests_rootdir(pytester: pytest.Pytester) -> None:
    """pytest picks its rootdir before plugins load: ``--matrix-md "$GITHUB_STEP_SUMMARY"`` (a file
    outside the checkout, as on GitHub's runners) moves it up to a common ancestor, where there is no
    pyproject.toml.  The expectations still come from the checkout's: else the gate is off."""
    checkout = pytester.mkdir("checkout")
    outside = pytester.mkdir("runner_file_commands")
    summary = outside / "step_summary_1"
    summary.write_text("")
    (checkout / "pyproject.toml").write_text("[[tool.containercheck.image]]\nmatch = 'host'\n"
                                             "require = ['system.libcuda']\n")
    os.chdir(checkout)
    result = pytester.runpytest_subprocess("--image", "host", "-k", "libcuda", "--matrix-md", str(summary),
                                           "--matrix-json", "m.json", timeout=600)
    assert f"rootdir: {pytester.path}" in result.stdout.str()  # pytest's own choice, above the checkout
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    (cell,) = json.loads((checkout / "m.json").read_text())["cells"]
    assert (cell["status"], cell["gate"]["required_by"]) == ("fail", ["pyproject.toml"])


def test_find_pyproject_takes_the_nearest_that_names_containercheck(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pkg = repo / "packages" / "foo"
    pkg.mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "pyproject.toml").write_text("[[tool.containercheck.image]]\nmatch = '*'\n")
    (pkg / "pyproject.toml").write_text("[project]\nname = 'foo'\n")  # a sub-package's, without the table
    (tmp_path / "pyproject.toml").write_text("[[tool.containercheck.image]]\nmatch = 'outside'\n")
    assert find_pyproject(pkg) == repo / "pyproject.toml"
    assert find_pyproject(repo) == repo / "pyproject.toml"
    (repo / "pyproject.toml").write_text("[tool.containerchek]\n")  # a typo is found, to be named
    assert find_pyproject(pkg) == repo / "pyproject.toml"
    (repo / "pyproject.toml").write_text("[tool.black]\n")
    assert find_pyproject(pkg) is None  # not above the repository's top (.git)
    assert find_pyproject(pkg, pkg / "pyproject.toml") == pkg / "pyproject.toml"  # pytest's own file
    assert find_pyproject(pkg, repo / "pytest.ini") is None
