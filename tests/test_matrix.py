"""The compatibility matrix: serialisation, merging across hosts, and the terminal rendering."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytest_containercheck.engine.matrix import SCHEMA, SCHEMA_VERSION, Cell, Column, Matrix, merge, same_image
from pytest_containercheck.engine.report import render_json, render_terminal

IMG = "docker://img:1"


def build(host: str, *, torch: str = "fail") -> Matrix:
    """One host's run of one image: a pass, a fail with a fix, a skip and an error."""
    m = Matrix()
    m.hosts[host] = {"hostname": host, "gpus": []}
    m.meta = {"run_id": f"run-{host}"}
    m.add_column(Column(IMG, host, spec="img:1", runtime="docker", ref="img:1", facts={"runtime_version": "20.10"}))
    m.put(Cell("system.python", IMG, host, "pass", "Python 3.11.2", duration=0.5, nodeid="checks/test_system.py::t"))
    m.put(Cell("torch.cuda", IMG, host, torch, "torch sees no GPU" if torch != "pass" else "",
               fix="install the NVIDIA Container Toolkit", fault="host", evidence={"cuda": False}))  # fmt: skip
    m.put(Cell("render.vtk", IMG, host, "skip", "no pyvista in image"))
    m.put(Cell("render.egl", IMG, host, "error", "probe render crashed (killed by signal 11 (SIGSEGV))",
               artifacts={"png": f"artifacts/{host}/egl.png"}))  # fmt: skip
    return m


def status(m: Matrix, row: str, column: tuple[str, str]) -> str | None:
    cell = m.get(row, column)
    return cell.status if cell is not None else None


def without_created(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "created"}


# -- (de)serialisation ----------------------------------------------------------------------


def test_to_dict_from_dict_round_trip() -> None:
    m = build("gpu1")
    m.complete = False
    m.put(Cell("torch.cuda", IMG, "gpu1", "pass", "cuda 12.4"), conflict=True)
    data = json.loads(render_json(m))  # through real JSON: builtins only
    assert data["schema"] == SCHEMA and data["version"] == SCHEMA_VERSION
    assert data["summary"] == {"pass": 1, "fail": 1, "error": 1, "skip": 1}
    back = Matrix.from_dict(data)
    assert without_created(back.to_dict()) == without_created(m.to_dict())
    assert back.rows == ["system.python", "torch.cuda", "render.vtk", "render.egl"]
    assert back.complete is False
    assert back.columns[(IMG, "gpu1")].facts == {"runtime_version": "20.10"}
    assert [(c.status, c.detail) for c in back.conflicts] == [("pass", "cuda 12.4")]


def test_from_dict_ignores_unknown_cell_keys() -> None:
    data = build("gpu1").to_dict()
    data["cells"][0]["added_in_a_later_minor"] = 1
    assert Matrix.from_dict(data).get("system.python", (IMG, "gpu1")) is not None


def test_from_dict_rejects_a_foreign_file() -> None:
    with pytest.raises(ValueError, match=r"not a containercheck matrix file \(no 'schema': 'containercheck-matrix'\)"):
        Matrix.from_dict({"tests": [], "version": 1})


def test_from_dict_rejects_a_newer_schema() -> None:
    data = build("gpu1").to_dict()
    data["version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError) as info:
        Matrix.from_dict(data)
    assert str(info.value) == (
        f"matrix schema version {SCHEMA_VERSION + 1} is newer than this containercheck understands "
        f"({SCHEMA_VERSION}); upgrade pytest-containercheck"
    )


# -- merging ----------------------------------------------------------------------------------


def test_merge_two_hosts_gives_image_by_host_columns() -> None:
    laptop = build("laptop")
    laptop.add_column(Column("host", "laptop"))
    laptop.put(Cell("system.python", "host", "laptop", "pass", "Python 3.11.7"))
    laptop.put(Cell("xgboost.train", "host", "laptop", "pass"))
    merged = merge([build("gpu1", torch="pass"), laptop])
    assert list(merged.columns) == [(IMG, "gpu1"), (IMG, "laptop"), ("host", "laptop")]
    assert merged.rows == ["system.python", "torch.cuda", "render.vtk", "render.egl", "xgboost.train"]
    assert set(merged.hosts) == {"gpu1", "laptop"}
    assert status(merged, "torch.cuda", (IMG, "gpu1")) == "pass"
    assert status(merged, "torch.cuda", (IMG, "laptop")) == "fail"
    assert status(merged, "torch.cuda", ("host", "laptop")) is None
    assert merged.conflicts == []
    assert merged.counts() == {"pass": 5, "fail": 1, "error": 2, "skip": 2}


@pytest.mark.parametrize("worse_first", [True, False])
def test_conflicting_duplicate_cells_are_kept_and_the_worse_is_shown(worse_first: bool) -> None:
    good, bad = build("gpu1", torch="pass"), build("gpu1", torch="fail")
    merged = merge([bad, good] if worse_first else [good, bad])
    assert status(merged, "torch.cuda", (IMG, "gpu1")) == "fail"
    assert [(c.row, c.status) for c in merged.conflicts] == [("torch.cuda", "pass")]
    assert len(merged.cells) == 4  # the grid still has one cell per (row, column, host)


def test_identical_duplicates_are_not_conflicts() -> None:
    merged = merge([build("gpu1"), build("gpu1")])
    assert merged.conflicts == [] and len(merged.cells) == 4


def test_merge_is_incomplete_when_any_part_is() -> None:
    partial = build("laptop")
    partial.complete = False
    assert merge([build("gpu1"), partial]).complete is False
    assert merge([build("gpu1")]).complete is True


def test_merge_round_trips_through_json() -> None:
    merged = merge([build("gpu1", torch="pass"), build("gpu1"), build("laptop")])
    back = Matrix.from_dict(json.loads(render_json(merged)))
    assert [(c.row, c.status) for c in back.conflicts] == [("torch.cuda", "pass")]
    assert list(back.columns) == list(merged.columns)


# -- terminal rendering ---------------------------------------------------------------------


def test_render_one_column() -> None:
    lines = render_terminal(build("gpu1"))
    assert lines == [
        "check          docker://img:1",
        "system.python  PASS Python 3.11.2",
        "torch.cuda     FAIL torch sees no GPU",
        "render.vtk     skip no pyvista in image",
        "render.egl     ERROR probe render crashed (killed by signal 11 (SIGSEGV))",
        "",
        "1 pass, 1 fail, 1 error, 1 skip",
        "",
        "ERROR render.egl on docker://img:1: probe render crashed (killed by signal 11",
        "      (SIGSEGV))",
        "      render.egl png: artifacts/gpu1/egl.png",
        "FAIL  torch.cuda on docker://img:1: [host fault] torch sees no GPU",
        "      fix: install the NVIDIA Container Toolkit",
    ]


def test_render_one_column_moves_long_and_shared_details_to_notes() -> None:
    # Nothing is cut: a detail too long for the line, or a skip reason several rows share, is
    # said once as a numbered note under the grid (as the Markdown report does).
    m = build("gpu1")
    m.put(Cell("torch.cuda", IMG, "gpu1", "pass", "x" * 300))
    for row in ("system.gpu_devices", "system.libcuda"):
        m.put(Cell(row, IMG, "gpu1", "skip", "host has no NVIDIA GPU"))
    lines = render_terminal(m, width=80)
    assert "torch.cuda          PASS [1]" in lines
    assert lines.count("system.gpu_devices  skip [2]") == 1 and "system.libcuda      skip [2]" in lines
    notes = lines[lines.index("[1] " + "x" * 76):]
    assert "".join(ln.strip() for ln in notes[:5]).startswith("[1] " + "x" * 300)
    assert "[2] host has no NVIDIA GPU" in lines
    assert all(len(ln) <= 80 for ln in lines)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    laptop = build("laptop")
    for n in range(12):
        laptop.add_column(Column(f"registry.example.com:5000/team/a-long-image-name-{n}:1.4.{n}", "laptop"))
        laptop.put(Cell("system.python", f"registry.example.com:5000/team/a-long-image-name-{n}:1.4.{n}", "laptop",
                        "fail", "y " * 200, fix="z " * 100, fault="image"))
    for verbosity in (-1, 0, 1):
        lines = render_terminal(merge([build("gpu1"), laptop]), width=width, verbosity=verbosity)
        assert max(map(len, lines)) <= width, (verbosity, max(lines, key=len))


def test_render_several_columns_with_legend_and_grouped_details() -> None:
    laptop = build("laptop")
    laptop.add_column(Column("host", "laptop"))
    laptop.put(Cell("system.python", "host", "laptop", "pass", "Python 3.11.7"))
    laptop.put(Cell("torch.cuda", "host", "laptop", "fail", "torch sees no GPU", fix="install the NVIDIA Container "
                    "Toolkit", fault="host"))  # fmt: skip
    lines = render_terminal(merge([build("gpu1"), laptop]))
    assert lines[:15] == [
        "check          [1]     [2]     [3]",
        "system.python  PASS    PASS    PASS",
        "torch.cuda     FAIL    FAIL    FAIL",
        "render.vtk     skip    skip    -",
        "render.egl     ERROR   ERROR   -",
        "",
        "[1] docker://img:1 @ gpu1",
        "[2] docker://img:1 @ laptop",
        "[3] host @ laptop",
        "",
        "3 pass, 3 fail, 2 error, 2 skip",
        "",
        "ERROR render.egl on docker://img:1 @ gpu1, docker://img:1 @ laptop: probe render",
        "      crashed (killed by signal 11 (SIGSEGV))",
        "      render.egl png: artifacts/gpu1/egl.png",
    ]
    # Identical verdicts are one entry naming every column, with their fix once.
    fail = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL  torch.cuda on docker://img:1 @ gpu1,"))
    assert " ".join(ln.strip() for ln in lines[fail:fail + 2]) == (
        "FAIL  torch.cuda on docker://img:1 @ gpu1, docker://img:1 @ laptop, host @ laptop: [host fault] torch sees "
        "no GPU")
    assert lines.count("      fix: install the NVIDIA Container Toolkit") == 1
    assert not any(line.startswith(("PASS ", "skip ")) for line in lines)


def test_render_verbose_lists_every_cell_in_full() -> None:
    lines = render_terminal(merge([build("gpu1"), build("laptop")]), verbosity=1)
    text = " ".join(ln.strip() for ln in lines)
    assert "PASS  system.python on docker://img:1 @ gpu1, docker://img:1 @ laptop: Python 3.11.2" in text
    assert "skip  render.vtk on docker://img:1 @ gpu1, docker://img:1 @ laptop: no pyvista in image" in text


@pytest.mark.parametrize("several", [False, True])
def test_render_quiet_shows_only_problems(several: bool) -> None:
    m = merge([build("gpu1"), build("laptop")]) if several else build("gpu1")
    lines = render_terminal(m, verbosity=-1)
    assert re.match(r"\d+ pass, ", lines[0]), lines  # no grid: the counts first
    verdicts = [ln.split()[0] for ln in lines[1:] if ln and not ln.startswith(" ")]
    assert verdicts == ["ERROR", "FAIL"]
    assert "      fix: install the NVIDIA Container Toolkit" in lines


def test_render_conflicts_and_incomplete_runs() -> None:
    merged = merge([build("gpu1", torch="pass"), build("gpu1")])
    merged.complete = False
    lines = render_terminal(merged)
    assert "1 pass, 1 fail, 1 error, 1 skip  (INCOMPLETE: the run was interrupted)" in lines
    assert lines[-1] == "CONFLICT torch.cuda on docker://img:1 @ gpu1: another result said pass:"


def test_render_empty_matrix() -> None:
    assert render_terminal(Matrix()) == ["no containercheck cells were recorded"]


def test_same_verdict_with_other_timings_is_not_a_conflict() -> None:
    # Two passing runs of one image on one host differ in their timing text only.
    a, b = build("gpu1"), build("gpu1")
    b.put(Cell("system.python", IMG, "gpu1", "pass", "CPython 3.11.2, probe 0.41 s"))
    assert merge([a, b]).conflicts == []


# -- same image on several columns ----------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def test_same_image_knows_the_archive_digest_of_a_sif_converted_from_it() -> None:
    """``--image img.tar`` under Docker and under Apptainer (which converts the tar to a SIF and records
    the archive's config digest in the launch facts, ``apptainer.convert_archive``): one image."""
    docker, sif = build("node1"), Matrix()
    docker.columns[(IMG, "node1")].facts["config_digest"] = DIGEST
    sif.add_column(Column("apptainer+docker-archive://img.tar", "node2", facts={"launch": {
        "archive": {"config_digest": DIGEST, "sif": f"/home/u/.cache/containercheck/sif/{DIGEST.replace(':', '-')}.sif",
                    "converted": True}}}))
    sif.put(Cell("system.python", "apptainer+docker-archive://img.tar", "node2", "pass", "Python 3.11.2"))
    (group,) = same_image(merge([docker, sif]))
    assert (group["identity"], group["by"]) == (DIGEST, "digest")
    assert group["columns"] == [{"column": IMG, "host": "node1"},
                                {"column": "apptainer+docker-archive://img.tar", "host": "node2"}]


@pytest.mark.parametrize("bad", ["fail", "error"])
def test_same_image_with_a_pass_and_a_failure_or_error_is_a_different_verdict(bad: str) -> None:
    one, two = Matrix(), Matrix()
    for m, host, status in ((one, "node1", "pass"), (two, "node2", bad)):
        m.add_column(Column(IMG, host, facts={"config_digest": DIGEST}))
        m.put(Cell("render.egl", IMG, host, status, "x"))
        m.put(Cell("system.python", IMG, host, "pass", "x"))
    (group,) = same_image(merge([one, two]))
    assert group["different_verdicts"] == [
        {"row": "render.egl", "verdicts": {f"{IMG} @ node1": "pass", f"{IMG} @ node2": bad}}]
