"""The GPU acceptance kit (tests/gpu/): its skip path and its GPU path run here for real, and its
verdict (``kit.judge``) on constructed matrices.  On a GPU machine the kit itself is the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.checks import builtin_rows
from pytest_containercheck.engine import hostinfo
from pytest_containercheck.engine.probing import ON_DEMAND, available_probes

from helpers import load_kit

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "tests" / "gpu" / "run_kit.sh"
HAS_GPU = bool(hostinfo.nvidia_facts()["has_gpu"])
no_gpu_here = pytest.mark.skipif(HAS_GPU, reason="this host has a GPU: run tests/gpu/run_kit.sh itself")


kit = load_kit()


def _run_kit(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "KIT_PYTHON": sys.executable, "KIT_WHEELS": str(out / "no-wheels"), **env}
    full.pop("OUT", None)
    return subprocess.run(["bash", str(KIT), str(out)], capture_output=True, text=True, env=full, cwd=ROOT,
                          timeout=600)


@no_gpu_here
def test_kit_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    res = _run_kit(tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kit: no GPU: kit skipped (host has no NVIDIA GPU" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["SKIPPED", "kit.log"]
    assert (tmp_path / "out" / "SKIPPED").read_text().startswith("host has no NVIDIA GPU")


@no_gpu_here
def test_kit_packs_its_output_for_the_device_tool(tmp_path: Path) -> None:
    """KIT_PACK: the device tool brings back at most 8 files, so everything goes into one tar."""
    back = tmp_path / "back"
    res = _run_kit(tmp_path / "out", KIT_PACK=str(back / "kit.tgz"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in back.iterdir()) == ["SKIPPED", "kit.log", "kit.tgz"]
    with tarfile.open(back / "kit.tgz") as tar:
        assert {"./SKIPPED", "./kit.log"} <= set(tar.getnames())


@no_gpu_here
def test_device_run_wrapper_without_carried_packages(tmp_path: Path) -> None:
    """tests/gpu/device_run.sh, the command run on the lent GPU machine, on this machine: no packages
    to unpack (KIT_GL empty), the kit's skip path, one tar back with the GL environment in it."""
    (tmp_path / "gl").mkdir()
    env = {**os.environ, "KIT_PYTHON": sys.executable, "KIT_WHEELS": str(tmp_path / "no-wheels"),
           "OUT": str(tmp_path / "back"), "KIT_OUT": str(tmp_path / "kit"), "KIT_GL": str(tmp_path / "gl")}
    (tmp_path / "back").mkdir()
    res = subprocess.run(["bash", str(ROOT / "tests" / "gpu" / "device_run.sh")], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kit: no GPU: kit skipped" in res.stdout
    with tarfile.open(tmp_path / "back" / "kit.tgz") as tar:
        names = set(tar.getnames())
        gl_env = tar.extractfile("./gl-env.txt")
        assert gl_env is not None
        text = gl_env.read().decode()
    assert {"./SKIPPED", "./kit.log", "./gl-env.txt"} <= names
    assert "NVIDIA EGL vendor file in a default directory: none" in text  # no GPU, no driver mount here


@no_gpu_here
def test_kit_gpu_path_fails_loudly_when_rows_do_not_pass(tmp_path: Path) -> None:
    """KIT_ASSUME_GPU=1 runs the GPU path here: pytest, the raw facts, the verdict -- which must fail."""
    out = tmp_path / "out"
    res = _run_kit(out, KIT_ASSUME_GPU="1", KIT_PYTEST_TIMEOUT="400")
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "KIT: FAIL" in res.stdout and "- torch.cuda: FAIL" in res.stdout
    for name in ("matrix.json", "matrix.html", "matrix.md", "junit.xml", "pytest.log", "verdict.txt",
                 "nvidia-smi-q.txt", "probes/host_facts.json",
                 *(f"probes/{stem}.json" for *_, stem in kit.probe_runs())):
        assert (out / name).is_file(), name
    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["complete"] is True and [c["row"] for c in matrix["cells"]] == [r.name for r in builtin_rows()]
    system = json.loads((out / "probes" / "system.json").read_text())
    assert system["status"] == "ok" and system["source"]["python"] == sys.executable
    assert kit.judge(matrix)  # the same verdict as the script's


def _cell(row: str, status: str = "pass", detail: str = "ok", **more: Any) -> dict[str, Any]:
    return {"row": row, "status": status, "detail": detail, **more}


def _matrix(*cells: dict[str, Any], complete: bool = True) -> dict[str, Any]:
    return {"complete": complete, "cells": [_cell(r) for r in kit.required_rows()] + list(cells)}


def test_kit_lists_come_from_the_checks_and_the_probes_dir() -> None:
    """Every built-in row is required or in an optional family, and every probe in probes/ is recorded:
    a new row or probe is in the kit without editing it."""
    rows = [r.name for r in builtin_rows()]
    required = kit.required_rows()
    assert set(required) | {r for r in rows if r.startswith(kit.OPTIONAL)} == set(rows)
    assert {"system.tls", "system.nvidia_env", "torch.cuda", "transformers.cuda"} <= set(required)
    assert not {r for r in required if r.startswith(("render.", "xgboost."))}
    runs = kit.probe_runs()
    # Every probe a check declares; the on-demand ones (other interpreters) have no GPU side.
    assert sorted({name for name, *_ in runs}) == sorted(set(available_probes()) - set(ON_DEMAND))
    stems = [stem for *_, stem in runs]
    assert len(set(stems)) == len(stems) and {"render-egl", "render-osmesa", "system", "tls"} <= set(stems)
    assert ("render", {"backend": "egl"}, "render-egl") in runs


def test_judge_passes_when_every_required_row_passes() -> None:
    m = _matrix(_cell("xgboost.cuda", "skip", "xgboost is not installed in the image (ModuleNotFoundError: No "
                      "module named 'xgboost')"),
                _cell("render.egl", "skip", "pyvista/vtk not installed in the image (ModuleNotFoundError: ...)"))
    assert kit.judge(m) == []


def test_judge_fails_on_a_failed_row_with_its_fix() -> None:
    m = _matrix(_cell("render.egl", "fail", "--require-hw-render: EGL rendered with llvmpipe (software): ...",
                      fault="image", fix="ship 10_nvidia.json"))
    assert kit.judge(m) == ["render.egl: FAIL [image fault] --require-hw-render: EGL rendered with llvmpipe "
                            "(software): ... -- fix: ship 10_nvidia.json"]


def test_judge_fails_on_gpu_skips_missing_rows_errors_and_interruptions() -> None:
    m = _matrix(_cell("xgboost.cuda", "skip", "host has no NVIDIA GPU (...)"),
                _cell("render.osmesa", "error", "probe render timed out after 150 s (killed)"), complete=False)
    m["cells"] = [c for c in m["cells"] if c["row"] != "torch.cuda"]
    problems = kit.judge(m)
    assert problems[0].startswith("matrix incomplete")
    assert "xgboost.cuda: SKIP on a GPU machine: host has no NVIDIA GPU (...)" in problems
    assert any(p.startswith("render.osmesa: ERROR") for p in problems)
    assert "torch.cuda: missing from the matrix" in problems
    # a required row may never skip, even for a missing library
    req = _matrix()
    req["cells"] = [_cell("transformers.cuda", "skip", "transformers is not installed in the image")
                    if c["row"] == "transformers.cuda" else c for c in req["cells"]]
    assert kit.judge(req) == ["transformers.cuda: SKIP on a GPU machine: transformers is not installed in the image"]


def test_judge_main_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_matrix()))
    bad.write_text(json.dumps(_matrix(_cell("torch.cuda", "fail", "no kernels"))))
    script = str(ROOT / "tests" / "gpu" / "kit.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # as run_kit.sh runs it: the plugin from the tree
    ok = subprocess.run([sys.executable, script, "judge", str(good)], capture_output=True, text=True, env=env,
                        timeout=300)
    assert ok.returncode == 0 and "KIT: PASS" in ok.stdout
    no = subprocess.run([sys.executable, script, "judge", str(bad)], capture_output=True, text=True, env=env,
                        timeout=300)
    assert no.returncode == 1 and "KIT: FAIL (1 problem(s))" in no.stdout and "torch.cuda: FAIL no kernels" in no.stdout
