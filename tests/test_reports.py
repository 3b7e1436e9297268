"""Reports people read: Markdown, HTML, JUnit properties, progress lines, and merged matrices.

The renderers are tested on constructed matrices (hostile text, images, conflicts,
interrupted runs); the plugin and the ``containercheck`` command as users run them.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pytest_containercheck.engine.matrix import Cell, Column, Matrix, merge
from pytest_containercheck.engine.report import render_html, render_markdown

from helpers import ONLY_SYSTEM

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CHECKS = Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks"
HOSTILE = '<script>alert("x")</script> | a*b_c [link](javascript:x) `tick` & "q"'


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, "PNG")
    return buf.getvalue()


def _matrix(host: str = "node-a", *, complete: bool = True) -> Matrix:
    m = Matrix()
    m.complete = complete
    m.hosts[host] = {"hostname": host, "has_gpu": True, "gpu_summary": "2 NVIDIA GPU(s)",
                     "gpus": [{"name": "NVIDIA H100 80GB HBM3"}, {"name": "NVIDIA H100 80GB HBM3"}],
                     "driver_version": "550.54.15", "cuda_version": "12.4",
                     "slurm": {"SLURM_JOB_ID": "4242", "SLURMD_NODENAME": host, "SLURM_JOB_PARTITION": "gpu"}}
    m.add_column(Column("docker://team/img:1.4", host, runtime="docker",
                        facts={"runtime": "docker", "runtime_version": "24.0.7",
                               "launch": {"container": "containercheck-1", "started_in_s": 0.71,
                                          "gpu": {"attached": True}}}))
    m.put(Cell("system.python", "docker://team/img:1.4", host, "pass", "CPython 3.11.2",
               probes={"system": {"status": "ok", "duration": 0.3, "timings": {"total": 0.05}}}))
    m.put(Cell("render.egl", "docker://team/img:1.4", host, "fail", HOSTILE, fix="install <libegl1> & retry",
               fault="image", evidence={"render": {"gl_renderer": "</pre><img src=x onerror=alert(1)>"}}))
    m.put(Cell("torch.cuda", "docker://team/img:1.4", host, "skip", "no GPU allocated"))
    m.put(Cell("xgboost.cpu", "docker://team/img:1.4", host, "error", "probe timed out after 300 s"))
    return m


# -- Markdown ----------------------------------------------------------------------------------


def _table(md: str) -> list[list[str]]:
    """The table's rows split on unescaped pipes."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in md.splitlines()
            if line.startswith("| ")]


def test_markdown_table_symbols_and_failures_with_fix_and_fault() -> None:
    md = render_markdown(_matrix())
    rows = _table(md)
    assert rows[0] == ["check", "docker://team/img:1.4"]
    assert all(len(r) == 2 for r in rows), "a detail broke the table"
    cells = {r[0]: r[1] for r in rows[1:]}
    assert cells["system.python"] == "✅ CPython 3.11.2"
    assert cells["torch.cuda"] == "⏭ no GPU allocated"
    assert cells["xgboost.cpu"].startswith("⚠️ probe timed out")
    assert cells["render.egl"].startswith("❌ &lt;script&gt;")
    failures = md.split("### Failures", 1)[1]
    assert "❌ **render.egl** on docker://team/img:1.4: *[image fault]*" in failures
    assert "  - fix: install &lt;libegl1&gt; &amp; retry" in failures
    assert "⚠️ **xgboost.cpu**" in failures
    assert "torch.cuda" not in failures


def test_markdown_escapes_html_and_markdown_syntax() -> None:
    md = render_markdown(_matrix())
    assert "<script>" not in md and "<libegl1>" not in md
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt; \\| a\\*b\\_c \\[link\\](javascript:x) \\`tick\\` &amp;" in md


def test_markdown_marks_incomplete_runs() -> None:
    assert "INCOMPLETE" not in render_markdown(_matrix())
    assert "**⚠️ INCOMPLETE:** the run was interrupted" in render_markdown(_matrix(complete=False))


def test_markdown_merged_columns_and_conflicts() -> None:
    a, b = _matrix("node-a"), _matrix("node-b")
    again = Matrix()
    again.put(Cell("torch.cuda", "docker://team/img:1.4", "node-b", "fail", "CUDA error: no kernel image"))
    md = render_markdown(merge([a, b, again]))
    assert _table(md)[0] == ["check", "docker://team/img:1.4 @ node-a", "docker://team/img:1.4 @ node-b"]
    row = next(r for r in _table(md) if r[0] == "torch.cuda")
    assert row[1] == "⏭ no GPU allocated"
    assert row[2] == "❌ CUDA error: no kernel image **(conflict)**"
    conflicts = md.split("### Conflicting results", 1)[1]
    assert ("- **torch.cuda** on docker://team/img:1.4 @ node-b: shown ❌ CUDA error: no kernel image; "
            "also ⏭ no GPU allocated") in conflicts


# -- HTML --------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Every tag and attribute of a page, and the text inside <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    return p


def _no_network(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert not re.search(r"https?://", page)


def test_html_escapes_every_value_from_the_run() -> None:
    m = _matrix()
    m.put(Cell('<b onmouseover="x()">row</b>', "docker://team/img:1.4", "node-a", "pass", "ok"))
    page = render_html(m)
    tags = _parse(page)
    assert [t for t, _ in tags.tags].count("script") == 1, "only the page's own script"
    assert {t for t, _ in tags.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span",
                                         "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "div",
                                         "pre", "code", "b", "i", "ul", "li", "a", "script"}
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b onmouseover=&quot;x()&quot;&gt;row&lt;/b&gt;" in page
    assert "install &lt;libegl1&gt; &amp; retry" in page
    _no_network(page)


def test_html_column_facts_cells_and_failures() -> None:
    page = render_html(_matrix())
    text = re.sub(r"<[^>]+>", " ", page)
    for fact in ("docker 24.0.7", "2× NVIDIA H100 80GB HBM3", "550.54.15 / 12.4", "job 4242 on node-a gpu",
                 "0.71 s", "attached"):
        assert fact in text
    tags = _parse(page).tags
    classes = [attrs.get("class") for t, attrs in tags if t == "td"]
    assert classes.count("pass") == 1 and classes.count("fail") == 1 and classes.count("skip") == 1
    assert classes.count("error") == 1
    assert "<h2>Failures</h2>" in page and "<b>fix:</b> install" in page
    assert "INCOMPLETE" not in page


def test_html_embeds_images_as_data_uris(tmp_path: Path) -> None:
    art = tmp_path / "arts" / "img" / "render.egl"
    art.mkdir(parents=True)
    pngs = {"result": _png((255, 0, 0)), "baseline": _png((0, 255, 0)), "diff": _png((0, 0, 255))}
    m = _matrix()
    cell = m.cells[("render.egl", "docker://team/img:1.4", "node-a")]
    for name, data in pngs.items():
        (art / f"builtin-{name}.png").write_bytes(data)
        cell.artifacts[f"builtin-{name}"] = f"arts/img/render.egl/builtin-{name}.png"
    (art / "notes.txt").write_text("<not an image>")
    cell.artifacts["notes"] = "arts/img/render.egl/notes.txt"
    cell.artifacts["gone"] = "arts/nowhere.png"
    page = render_html(m, artifact_dirs=[tmp_path])
    srcs = [attrs["src"] for t, attrs in _parse(page).tags if t == "img"]
    assert len(srcs) == 3
    embedded = [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in srcs]
    assert embedded == list(pngs.values())
    assert "arts/nowhere.png" in page and "arts/img/render.egl/notes.txt" in page  # named, not embedded
    _no_network(page)


def test_html_marks_incomplete_runs_and_conflicts() -> None:
    part = _matrix("node-a", complete=False)
    other = Matrix()
    other.put(Cell("system.python", "docker://team/img:1.4", "node-a", "fail", "no python3"))
    page = render_html(merge([part, other]))
    assert '<div class="banner" id="incomplete">INCOMPLETE' in page
    assert "<title>containercheck matrix (incomplete)</title>" in page
    td = [attrs for t, attrs in _parse(page).tags if t == "td" and "conflict" in (attrs.get("class") or "")]
    assert len(td) == 1 and td[0]["class"] == "fail conflict"
    assert "<h2>Conflicting results</h2>" in page and "also \u2714 CPython 3.11.2" in page


# -- the plugin, as users run it -----------------------------------------------------------------


def _outcomes(result: pytest.RunResult) -> set[str]:
    return {k for k, v in result.parseoutcomes().items() if v and k not in ("seconds", "warnings")}


def _counts(result: pytest.RunResult) -> tuple[int, int, int]:
    """(tests, passed, skipped) of a run that must have only passes and skips: the built-in
    suite grows, so tests do not pin its size."""
    assert _outcomes(result) == {"passed", "skipped"}, result.stdout.str()[-3000:]
    o = result.parseoutcomes()
    return o["passed"] + o["skipped"], o["passed"], o["skipped"]


def _junit(path: Path) -> dict[str, dict[str, str]]:
    """Test case name -> its properties."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[str(case.get("name"))] = props
    return out


def test_host_run_writes_markdown_html_and_junit(pytester: pytest.Pytester) -> None:
    # A subprocess: the render checks import numpy/scipy, which cannot be imported twice in one
    # process, and in-process pytester runs drop the modules they imported when they end.
    result = pytester.runpytest_subprocess("--image", "host", "--no-builtin-checks", str(CHECKS / "test_system.py"),
                                str(CHECKS / "test_render.py"), "--matrix-md", "r/m.md", "--matrix-html", "r/m.html",
                                "--junitxml", "r/j.xml", "--artifacts-dir", "arts")
    assert _outcomes(result) == {"passed", "skipped"}
    result.stdout.fnmatch_lines(["matrix Markdown: r/m.md", "matrix HTML: r/m.html"])

    md = (pytester.path / "r/m.md").read_text()
    rows = {r[0]: r[1] for r in _table(md)}
    assert rows["system.python"].startswith("✅ CPython 3.")
    if rows["system.gpu\\_devices"].startswith("⏭ ["):  # no GPU here: the reason repeats, said once below
        note = rows["system.gpu\\_devices"].removeprefix("⏭ ")
        assert f"{note} skipped: host has no NVIDIA GPU" in md
        assert rows["system.nvidia\\_smi"] == rows["system.libcuda"] == rows["system.gpu\\_devices"]
    else:  # a GPU host
        assert rows["system.gpu\\_devices"].startswith("✅ ")
    assert rows["render.egl"].startswith("✅ ") and "baseline" in rows["render.egl"]
    assert "### Failures" not in md

    page = (pytester.path / "r/m.html").read_text()
    _no_network(page)
    srcs = [attrs["src"] or "" for t, attrs in _parse(page).tags if t == "img"]
    # --matrix-html keeps the passing render results, so the page shows what each backend drew.
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,iVBOR") for s in srcs)
    assert sorted(p.name for p in (pytester.path / "arts").rglob("*.png")) == ["builtin-result.png"] * 2

    cases = _junit(pytester.path / "r/j.xml")
    assert set(cases) >= {"system.python [host]", "system.gpu_devices [host]", "render.egl [host]"}
    py = cases["system.python [host]"]
    assert (py["containercheck.row"], py["containercheck.image"], py["containercheck.status"]) == (
        "system.python", "host", "pass")
    assert py["containercheck.detail"].startswith("CPython 3.")
    gpu = cases["system.gpu_devices [host]"]
    assert gpu["containercheck.status"] == "skip" and gpu["containercheck.detail"].startswith("host has no NVIDIA")
    egl = cases["render.egl [host]"]
    assert egl["containercheck.evidence.render.window_class"] == "vtkEGLRenderWindow"
    assert "llvmpipe" in egl["containercheck.evidence.render.gl_renderer"]
    for props in cases.values():
        assert "containercheck" not in props, "the cell dict must not be written as its repr"


def test_junit_carries_fix_and_fault(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--require-gpu", "--junitxml", "j.xml", *ONLY_SYSTEM)
    assert _outcomes(result) == {"passed", "failed"}
    gpu = _junit(pytester.path / "j.xml")["system.gpu_devices [host]"]
    assert gpu["containercheck.status"] == "fail" and gpu["containercheck.fault"] == "host"
    assert "--gres=gpu" in gpu["containercheck.fix"]
    assert gpu["containercheck.detail"].startswith("--require-gpu: host has no NVIDIA GPU")


def test_progress_lines_by_default_and_none_under_quiet(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", *ONLY_SYSTEM)
    n, passed, skipped = _counts(result)
    result.stdout.fnmatch_lines(["containercheck: host starting", "containercheck: host ready after 0.* s",
                                 f"containercheck: host done: {n} checks ({passed} pass, {skipped} skip) in *.* s"])
    quiet = pytester.runpytest("--image", "host", "-q", *ONLY_SYSTEM)
    assert _counts(quiet) == (n, passed, skipped)
    assert "containercheck: " not in quiet.stdout.str()
    quiet.stdout.fnmatch_lines(["*containercheck matrix*"])


def test_progress_and_junit_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = pytester.runpytest_subprocess("--image", "host", "-n", "2", "--junitxml", "j.xml", *ONLY_SYSTEM)
    n, passed, skipped = _counts(result)
    result.stdout.fnmatch_lines(["containercheck: host starting",
                                 f"containercheck: host done: {n} checks ({passed} pass, {skipped} skip) in *.* s"])
    cases = _junit(pytester.path / "j.xml")
    assert len(cases) == n
    assert {p["containercheck.status"] for p in cases.values()} == {"pass", "skip"}
    # The names come from the properties that reached the controller from the workers.
    assert all(name == f"{p['containercheck.row']} [host]" for name, p in cases.items())
    assert "system.python [host]" in cases


USER_TESTS = """
import pytest

@pytest.mark.containercheck_row("user.thing")
def test_marked(container):
    container.note("ok")

def test_mine(container):
    container.fail("the image lacks what test_mine needs", fault="image", fix="add it")

def test_plain():
    pass
"""


def _case_attrs(path: Path) -> dict[str, dict[str, str]]:
    """Test case name -> its attributes (classname, file, line)."""
    return {str(c.get("name")): dict(c.attrib) for c in ET.parse(path).getroot().iter("testcase")}


def test_junit_case_names_carry_row_and_image_but_node_ids_stay(pytester: pytest.Pytester) -> None:
    """Issue 15: CI pages show a JUnit case's name; it is 'ROW [IMAGE]'.  The node id is untouched:
    the terminal shows it, and --lf reruns the failed test by it."""
    pytester.makepyfile(test_user=USER_TESTS)
    first = pytester.runpytest("--image", "host", "--no-builtin-checks", "--junitxml", "j.xml", "-rA", "test_user.py")
    assert first.ret == 1
    first.stdout.fnmatch_lines(["FAILED test_user.py::test_mine[[]host[]] - *"])
    attrs = _case_attrs(pytester.path / "j.xml")
    assert attrs["mine [host]"]["classname"] == "test_user"
    assert attrs["user.thing [host]"]["classname"] == "test_user"
    assert "test_plain" in attrs  # no container: pytest's own name
    assert not any(name.startswith("test_") and "[" in name for name in attrs), sorted(attrs)

    again = pytester.runpytest("--image", "host", "--no-builtin-checks", "--lf", "--junitxml", "j2.xml",
                               "test_user.py")
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])
    assert set(_case_attrs(pytester.path / "j2.xml")) == {"mine [host]"}


def test_junit_names_pytest_keeps_node_id_names(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", "--junit-names", "pytest", "--junitxml", "j.xml", *ONLY_SYSTEM)
    assert result.ret == 0
    cases = _junit(pytester.path / "j.xml")
    assert "test_python[host]" in cases and cases["test_python[host]"]["containercheck.row"] == "system.python"


@pytest.mark.parametrize("args", [("--junit-names", "rows"), ("-o", "containercheck_junit_names=nodeid")])
def test_junit_names_bad_value_is_a_usage_error(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    result = pytester.runpytest("--image", "host", *args, *ONLY_SYSTEM)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--junit-names" in errors[0] and "choose one of row, pytest" in errors[0], errors
    assert "Traceback" not in result.stderr.str()


@pytest.mark.docker
def test_progress_names_the_container_and_json_names_the_runtime(
        pytester: pytest.Pytester, base_image: str) -> None:
    result = pytester.runpytest("--image", base_image, "--image", "host", "--matrix-json", "m.json",
                                "--junitxml", "j.xml", *ONLY_SYSTEM)
    n, passed, skipped = _counts(result)
    image = f"docker://{base_image}"
    names = set(_junit(pytester.path / "j.xml"))
    assert {f"system.python [{image}]", "system.python [host]"} <= names and len(names) == n
    each = f"{n // 2} checks ({passed // 2} pass, {skipped // 2} skip)"
    result.stdout.fnmatch_lines_random([
        f"containercheck: {image} ready after *.* s (container containercheck-*)",
        f"containercheck: {image} done: {each} in *.* s",
        f"containercheck: host done: {each} in *.* s",
    ])
    data = json.loads((pytester.path / "m.json").read_text())
    docker = next(c for c in data["columns"] if c["id"] == image)
    assert docker["runtime"] == "docker" and re.match(r"\d+\.\d+", docker["facts"]["runtime_version"])
    assert data["hosts"][docker["host"]]["hostname"] == docker["host"]


# -- containercheck merge ----------------------------------------------------------------------


def _rehost(data: dict[str, Any], host: str) -> dict[str, Any]:
    """The same run as if it had come from *host*."""
    old = next(iter(data["hosts"]))
    out = json.loads(json.dumps(data))
    out["hosts"] = {host: {**data["hosts"][old], "hostname": host}}
    for item in (*out["columns"], *out["cells"]):
        item["host"] = host
    return out


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    exe = shutil.which("containercheck")
    argv0 = [exe] if exe else [sys.executable, "-m", "pytest_containercheck.cli"]

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv0, *args], cwd=cwd, capture_output=True, text=True, timeout=120)

    return run


def test_merge_two_hosts_into_markdown_and_html(
        pytester: pytest.Pytester, cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    _, passed, skipped = _counts(pytester.runpytest("--image", "host", "--matrix-json", "run.json", *ONLY_SYSTEM))
    run = json.loads((pytester.path / "run.json").read_text())
    (pytester.path / "a.json").write_text(json.dumps(_rehost(run, "node-a")))
    b = _rehost(run, "node-b")
    b["hosts"]["node-b"]["slurm"] = {"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "node-b"}
    (pytester.path / "b.json").write_text(json.dumps(b))

    res = cli("merge", "a.json", "b.json", "--md", "out/all.md", "--html", "out/all.html", "--json", "all.json",
              cwd=pytester.path)
    assert res.returncode == 0, res.stderr
    md = (pytester.path / "out/all.md").read_text()
    table = _table(md)
    assert table[0] == ["check", "host @ node-a", "host @ node-b"]
    assert all(len(r) == 3 for r in table)
    assert f"{2 * passed} pass, {2 * skipped} skip · 2 image column(s) on 2 host(s): node-a, node-b" in md
    page = (pytester.path / "out/all.html").read_text()
    _no_network(page)
    heads = [a.get("title") for t, a in _parse(page).tags if t == "th" and a.get("title")]
    assert heads == ["host @ node-a", "host @ node-b"]
    assert "job 77 on node-b" in page and "merged from a.json, b.json" in page
    merged = json.loads((pytester.path / "all.json").read_text())
    assert set(merged["hosts"]) == {"node-a", "node-b"} and merged["meta"]["merged_from"] == ["a.json", "b.json"]

    # The same host twice, once with another verdict: the conflict is shown, never dropped.
    c = _rehost(run, "node-b")
    cell = next(x for x in c["cells"] if x["row"] == "system.python")
    cell.update(status="fail", detail="python3 segfaults", fix="rebuild the image", fault="image")
    (pytester.path / "c.json").write_text(json.dumps(c))
    res = cli("merge", "a.json", "b.json", "c.json", "--md", "m.md", "--html", "m.html", cwd=pytester.path)
    assert res.returncode == 1
    assert "CONFLICT system.python on host @ node-b" in res.stdout
    assert "DUPLICATE system.os on host @ node-b: in b.json, c.json" in res.stdout
    md = (pytester.path / "m.md").read_text()
    assert "❌ python3 segfaults **(conflict)**" in md
    assert "shown ❌ python3 segfaults; also ✅ CPython" in md
    assert "- fix: rebuild the image" in md
    assert "- **system.os** on host @ node-b: b.json, c.json" in md
    page = (pytester.path / "m.html").read_text()
    assert 'class="fail conflict"' in page and "<h2>Duplicates</h2>" in page

    res = cli("show", "b.json", "--md", "b.md", "--html", "b.html", cwd=pytester.path)
    assert res.returncode == 0
    assert _table((pytester.path / "b.md").read_text())[0] == ["check", "host"]
    assert "job 77 on node-b" in (pytester.path / "b.html").read_text()
