"""containercheck diff: the CI gate's question, 'is the new image worse than the one in production?',
on real runs of two test images that differ in one library (xgboost vs the CPU-only xgboost-cpu)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_containercheck.engine.diff import classify, diff_columns, render_markdown
from pytest_containercheck.engine.matrix import Cell, Column, Matrix

ML = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_ml.py")


@pytest.mark.parametrize(("old", "new", "kind"), [
    ("pass", "fail", "regression"), ("skip", "fail", "regression"), ("pass", "error", "regression"),
    ("pass", "skip", "no longer checked"), ("fail", "pass", "fixed"), ("error", "pass", "fixed"),
    ("fail", "fail", "still failing"), ("fail", "skip", "still failing"), ("pass", "pass", "unchanged pass"),
    ("skip", "skip", "skipped on both"), ("skip", "pass", "unchanged pass"), (None, "pass", "new row"),
    ("pass", None, "gone"), ("fail", None, "dropped"), ("skip", None, "dropped"),
    # an interrupted check did not run to the end: as bad as a failure, both ways
    ("pass", "interrupted", "regression"), ("skip", "interrupted", "regression"),
    ("interrupted", "pass", "fixed"), ("interrupted", "fail", "still failing"),
    ("interrupted", "skip", "still failing"),
])
def test_kinds_of_change(old: str | None, new: str | None, kind: str) -> None:
    assert classify(old, new) == kind


def test_rows_only_the_old_matrix_has_are_kept_as_gone() -> None:
    """A row the new image's run no longer has (its check deselected, or removed) is listed, after
    the new matrix's rows: a gate must not lose a row silently (``gone`` when it passed before)."""
    old_m, new_m = Matrix(), Matrix()
    old_col, new_col = Column("docker://img:1", "h"), Column("docker://img:2", "h")
    for row, status in (("system.python", "pass"), ("torch.cuda", "pass"), ("xgboost.cuda", "fail")):
        old_m.put(Cell(row, old_col.id, "h", status, f"old {row}"))
    new_m.put(Cell("system.python", new_col.id, "h", "pass", "new system.python"))
    new_m.put(Cell("render.egl", new_col.id, "h", "pass", "new render.egl"))
    changes = diff_columns(old_m, old_col, new_m, new_col)
    assert [(c.row, c.kind, c.old, c.new, c.detail) for c in changes] == [
        ("system.python", "unchanged pass", "pass", "pass", "new system.python"),
        ("render.egl", "new row", None, "pass", "new render.egl"),
        ("torch.cuda", "gone", "pass", None, "old torch.cuda"),
        ("xgboost.cuda", "dropped", "fail", None, "old xgboost.cuda"),
    ]


def test_a_pipe_in_a_detail_stays_in_its_markdown_cell() -> None:
    """A ``|`` in a detail (``torch 2.13 | cuda 12.8``, or one an image prints) would end the cell and
    push the rest of the row out of its columns in the job summary: each row keeps its five cells."""
    old_m, new_m = Matrix(), Matrix()
    old_col, new_col = Column("docker://img:1", "h"), Column("docker://img:2", "h")
    old_m.put(Cell("torch.cuda", old_col.id, "h", "pass", "ok"))
    new_m.put(Cell("torch.cuda", new_col.id, "h", "fail", "torch 2.13 | cuda 12.8 | sm_90"))
    text = render_markdown(diff_columns(old_m, old_col, new_m, new_col), old_col, new_col)
    (line,) = [ln for ln in text.splitlines() if "torch.cuda" in ln and ln.startswith("|")]
    cells = re.split(r"(?<!\\)\|", line)[1:-1]  # a Markdown table splits at every pipe not escaped
    assert len(cells) == 5, cells
    assert "torch 2.13" in cells[4] and r"sm\_90" in cells[4]  # escaped as `containercheck show` escapes it


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def two_images(image_factory: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One run over the full image (in production) and the xgboost-cpu image (the new one).

    Both declare they are meant for GPUs, as NVIDIA's CUDA base images do (``CUDA_VERSION``), so the
    CPU-only xgboost of the new one is a defect even on this CPU host (a CPU image would skip)."""
    old, new = image_factory("full"), image_factory("xgboost-cpu")
    where = tmp_path_factory.mktemp("diff")
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", old, "--image", new,
                          "--container-env", "CUDA_VERSION=12.8.1",
                          "--no-builtin-checks", ML, "-k", "xgboost", "--matrix-json", "run.json"], cwd=where,
                         capture_output=True, text=True, timeout=900)
    assert (where / "run.json").exists(), res.stdout[-3000:]
    return where, old, new


def test_new_image_that_lost_cuda_is_a_regression(two_images: tuple[Path, str, str]) -> None:
    where, old, new = two_images
    res = _cli("diff", "run.json", "--old", f"docker://{old}", "--new", f"docker://{new}", "--md", "diff.md",
               cwd=where)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "REGRESSION         xgboost.cuda: skip -> fail" in res.stdout
    md = (where / "diff.md").read_text()
    assert "**1 regression(s)**" in md and "| xgboost.cuda | regression | skip | fail |" in md
    assert "| xgboost.cpu | unchanged pass | pass | pass |" in md


def test_the_other_way_is_fixed_and_passes_the_gate(two_images: tuple[Path, str, str]) -> None:
    where, old, new = two_images
    data = json.loads((where / "run.json").read_text())
    for column, name in ((f"docker://{new}", "old.json"), (f"docker://{old}", "new.json")):
        one = dict(data, columns=[c for c in data["columns"] if c["id"] == column],
                   cells=[c for c in data["cells"] if c["column"] == column])
        (where / name).write_text(json.dumps(one))
    res = _cli("diff", "old.json", "new.json", cwd=where)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FIXED              xgboost.cuda: fail -> skip" not in res.stdout  # skip is not a pass
    assert "STILL FAILING      xgboost.cuda: fail -> skip" in res.stdout


def test_skips_on_both_sides_are_not_unchanged_passes(two_images: tuple[Path, str, str]) -> None:
    where, old, _new = two_images
    res = _cli("diff", "run.json", "--old", f"docker://{old}", "--new", f"docker://{old}", cwd=where)
    assert res.returncode == 0 and "1 unchanged pass" in res.stdout, res.stdout


def test_bad_diff_input_is_one_line(two_images: tuple[Path, str, str]) -> None:
    where, _old, _new = two_images
    res = _cli("diff", "run.json", cwd=where)
    assert res.returncode == 4 and res.stderr.count("\n") == 1
    assert "name both columns with --old IMAGE --new IMAGE" in res.stderr
    res = _cli("diff", "run.json", "--old", "docker://nope", "--new", "docker://nope", cwd=where)
    assert res.returncode == 4 and "--old docker://nope: run.json has no such column" in res.stderr
