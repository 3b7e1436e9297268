"""The ML rows as users run them: real torch, xgboost and transformers, on this host and in Docker.

There is no GPU on the machines these run on, so the GPU rows are exercised on their CPU-side
paths: the skip with the host's no-GPU reason, ``--require-gpu`` / ``--require`` turning that
into failures, and the image defects that show without a GPU (``xgboost-cpu``).  The GPU-side
verdicts are unit-tested on recorded facts in tests/test_verdicts_ml.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import hostinfo

#: These tests pin the outcomes of a host without a GPU (rows that skip, --require-gpu failing
#: them).  On a GPU runner they do not apply: tests/gpu/run_kit.sh checks the GPU outcomes.
NO_GPU_HOST = pytest.mark.skipif(bool(hostinfo.nvidia_facts()["has_gpu"]),
                                 reason="asserts a host without a GPU; on a GPU host run tests/gpu/run_kit.sh")

ML = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_ml.py")
ONLY_ML = ("--no-builtin-checks", ML)
CPU_ROWS = ("torch.cpu", "xgboost.cpu", "transformers.cpu", "transformers.cache")
GPU_ROWS = ("torch.cuda", "xgboost.cuda", "transformers.cuda")
NO_GPU = "host has no NVIDIA GPU"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:benchmark", "--matrix-json", "m.json", *ONLY_ML, *args,
                                         timeout=900)


def _cells(pytester: pytest.Pytester, column: str) -> dict[str, dict[str, Any]]:
    data = json.loads((pytester.path / "m.json").read_text())
    return {c["row"]: c for c in data["cells"] if c["column"] == column}


@pytest.fixture
def host_libs() -> None:
    """--image host runs this interpreter: its CPU rows need the real libraries here."""
    for module in ("torch", "xgboost", "transformers"):
        pytest.importorskip(module)


# -- host --------------------------------------------------------------------------------------


def test_host_python_without_the_libraries_says_this_python_not_the_image(pytester: pytest.Pytester,
                                                                          tmp_path: Path) -> None:
    """--image host has no image: a library this Python lacks is "not installed in this Python".
    Real run with a bare venv of this interpreter (no site packages) as --host-python."""
    import subprocess
    import venv

    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(bare)
    python = bare / "bin" / "python"
    gone = subprocess.run([str(python), "-c", "import torch"], capture_output=True, timeout=60)
    assert gone.returncode != 0, "the bare venv sees torch"
    result = _run(pytester, "--image", "host", "--host-python", str(python), "-k", "cpu")
    result.assert_outcomes(skipped=3)
    cells = _cells(pytester, "host")
    for row, library in (("torch.cpu", "torch"), ("xgboost.cpu", "xgboost"), ("transformers.cpu", "transformers")):
        assert cells[row]["detail"].startswith(f"{library} is not installed in this Python"), cells[row]
    assert "in the image" not in result.stdout.str()


@NO_GPU_HOST
def test_host_cpu_rows_pass_and_gpu_rows_skip_with_no_gpu_reason(host_libs: None, pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--image", "host")
    result.assert_outcomes(passed=4, skipped=3)
    # Details too long for the terminal's line are numbered notes under the grid.
    result.stdout.fnmatch_lines(["torch.cpu*PASS*", "xgboost.cpu*PASS*", "transformers.cpu*PASS*"])
    result.stdout.fnmatch_lines(["[[]*[]] torch 2.13.0+cpu: matmul+conv on cpu match*"])
    cells = _cells(pytester, "host")
    for row in CPU_ROWS:
        assert cells[row]["status"] == "pass", cells[row]
    assert cells["xgboost.cpu"]["detail"].startswith("xgboost 3.2.0: hist on cpu, accuracy 0.920")
    for row in GPU_ROWS:
        assert cells[row]["status"] == "skip" and cells[row]["detail"].startswith(NO_GPU), cells[row]
    assert "GPT2LMHeadModel rel" in cells["transformers.cpu"]["detail"]
    assert "BertModel rel" in cells["transformers.cpu"]["detail"]
    # the CPU-only torch is named in the skip, so a reader knows a GPU host would fail it
    assert "torch 2.13.0+cpu is a CPU-only build" in cells["torch.cuda"]["detail"]
    # where the work ran and what it took are in the evidence
    assert cells["xgboost.cuda"]["evidence"]["xgboost"]["train"]["cuda"]["booster_device"] == "cpu"
    assert cells["torch.cpu"]["probes"]["torch_device"]["timings"]["import"] > 0


@NO_GPU_HOST
def test_host_require_gpu_fails_gpu_rows_with_whose_fault(host_libs: None, pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--image", "host", "--require-gpu")
    result.assert_outcomes(passed=4, failed=3)
    cells = _cells(pytester, "host")
    # a CPU-only torch is an image fault once GPUs are expected; xgboost's wheel has CUDA,
    # so what is missing there is the host's GPU
    assert (cells["torch.cuda"]["status"], cells["torch.cuda"]["fault"]) == ("fail", "image")
    assert "download.pytorch.org/whl/cu" in cells["torch.cuda"]["fix"]
    assert (cells["transformers.cuda"]["status"], cells["transformers.cuda"]["fault"]) == ("fail", "image")
    assert (cells["xgboost.cuda"]["status"], cells["xgboost.cuda"]["fault"]) == ("fail", "host")
    assert cells["xgboost.cuda"]["detail"].startswith("--require-gpu: host has no NVIDIA GPU")


@NO_GPU_HOST
def test_host_required_rows_fail_instead_of_skipping(host_libs: None, pytester: pytest.Pytester) -> None:
    # the ini key users put in their config (given with -o: the checks' rootdir is this project)
    result = _run(pytester, "--image", "host", "-k", "cuda", "-o", "containercheck_require=torch.cuda xgboost.cuda")
    result.assert_outcomes(failed=2, skipped=1)
    cells = _cells(pytester, "host")
    assert cells["torch.cuda"]["fault"] == "image"
    assert "row torch.cuda is required (containercheck_require)" in cells["torch.cuda"]["detail"]
    # the plugin turns a required row's skip into a failure
    assert cells["xgboost.cuda"]["status"] == "fail"
    assert cells["transformers.cuda"]["status"] == "skip"


@NO_GPU_HOST
def test_host_torch_and_transformers_share_torch_unless_told_not_to(host_libs: None,
                                                                    pytester: pytest.Pytester) -> None:
    """The bundle on the host's own Python; --no-probe-bundles runs each probe alone."""
    _run(pytester, "--image", "host", "--probe-jobs", "2", "-k", "torch or transformers").assert_outcomes(
        passed=3, skipped=2)
    cells = _cells(pytester, "host")
    bundled = cells["torch.cpu"]["probes"]["torch_device"]["bundle"]
    assert bundled["with"] == ["torch_device", "transformers_infer"] and bundled["shared_imports"] == ["torch"]
    assert cells["transformers.cpu"]["probes"]["transformers_infer"]["bundle"] == bundled
    # One probe at a time, on demand (--probe-jobs 1, as each xdist worker on a small machine):
    # the first check that asks for torch_device gets transformers_infer run with it, bundled.
    _run(pytester, "--image", "host", "--probe-jobs", "1", "-k", "torch or transformers").assert_outcomes(
        passed=3, skipped=2)
    assert _cells(pytester, "host")["torch.cpu"]["probes"]["torch_device"]["bundle"]["with"] == [
        "torch_device", "transformers_infer"]
    _run(pytester, "--image", "host", "--probe-jobs", "2", "-k", "torch or transformers",
         "--no-probe-bundles").assert_outcomes(passed=3, skipped=2)
    cells = _cells(pytester, "host")
    assert "bundle" not in cells["torch.cpu"]["probes"]["torch_device"]
    assert "bundle" not in cells["transformers.cpu"]["probes"]["transformers_infer"]
    assert cells["torch.cpu"]["status"] == cells["transformers.cpu"]["status"] == "pass"


def test_hf_model_runs_a_model_directory_instead(host_libs: None, pytester: pytest.Pytester, tmp_path: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model_dir = tmp_path / "tiny-gpt2"
    transformers.GPT2LMHeadModel(config).save_pretrained(str(model_dir))
    result = _run(pytester, "--image", "host", "--hf-model", str(model_dir), "-k", "transformers_cpu")
    result.assert_outcomes(passed=1)
    cell = _cells(pytester, "host")["transformers.cpu"]
    assert f"GPT2LMHeadModel ({model_dir}) rel" in cell["detail"]
    assert cell["evidence"]["transformers"]["mode"] == "model_path"


def test_hf_model_missing_directory_fails_as_image_fault(host_libs: None, pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--image", "host", "--hf-model", "/nonexistent/model", "-k", "transformers_cpu")
    result.assert_outcomes(failed=1)
    cell = _cells(pytester, "host")["transformers.cpu"]
    assert cell["fault"] == "image" and "/nonexistent/model" in cell["detail"]


# -- Docker ------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@NO_GPU_HOST
def test_full_image_cpu_rows_pass_gpu_rows_skip(pytester: pytest.Pytester, full_image: str) -> None:
    column = f"docker://{full_image}"
    result = _run(pytester, "--image", column, "--probe-jobs", "2")
    result.assert_outcomes(passed=4, skipped=3)
    cells = _cells(pytester, column)
    for row in CPU_ROWS:
        assert cells[row]["status"] == "pass", cells[row]
    for row in GPU_ROWS:
        assert cells[row]["detail"].startswith(NO_GPU), cells[row]
    assert cells["transformers.cache"]["detail"].startswith("HF cache writable: /root/.cache/huggingface/hub")
    # torch_device and transformers_infer ran as one bundle, torch imported once before both
    # (its import is silent in this image), so neither probe spent time importing torch.
    torch_run = cells["torch.cpu"]["probes"]["torch_device"]
    tf_run = cells["transformers.cpu"]["probes"]["transformers_infer"]
    assert torch_run["bundle"] == tf_run["bundle"] == {
        "with": ["torch_device", "transformers_infer"], "shared_imports": ["torch"], "shared": True}
    assert torch_run["timings"]["import"] < 0.05, torch_run


@pytest.mark.docker
@pytest.mark.slow
@NO_GPU_HOST
def test_full_image_require_gpu_fails_gpu_rows(pytester: pytest.Pytester, full_image: str) -> None:
    column = f"docker://{full_image}"
    result = _run(pytester, "--image", column, "--require-gpu", "-k", "cuda")
    result.assert_outcomes(failed=3)
    faults = {row: c["fault"] for row, c in _cells(pytester, column).items()}
    assert faults == {"torch.cuda": "image", "transformers.cuda": "image", "xgboost.cuda": "host"}


@pytest.mark.docker
@NO_GPU_HOST
def test_xgboost_cpu_image_fails_the_cuda_row_as_image_defect_once_meant_for_gpus(
        pytester: pytest.Pytester, image_factory: Callable[[str], str]) -> None:
    """A CPU-only xgboost skips on a CPU host, as a CPU-only torch does (a CPU image may ship one);
    when the image is meant for GPUs (here: CUDA_VERSION, as NVIDIA's CUDA base images set) it fails."""
    column = f"docker://{image_factory('xgboost-cpu')}"
    plain = _run(pytester, "--image", column)
    plain.assert_outcomes(passed=1, skipped=6)
    skipped = _cells(pytester, column)["xgboost.cuda"]
    assert skipped["status"] == "skip"
    assert "note: xgboost 3.2.0 (xgboost-cpu) is built without CUDA" in skipped["detail"]
    result = _run(pytester, "--image", column, "--container-env", "CUDA_VERSION=12.8.1")
    result.assert_outcomes(passed=1, failed=1, skipped=5)
    result.stdout.fnmatch_lines(["*[[]image fault[]] xgboost 3.2.0 (xgboost-cpu) is built without CUDA*",
                                 "*install the `xgboost` wheel (CUDA-enabled), not xgboost-cpu*"])
    cells = _cells(pytester, column)
    assert cells["xgboost.cpu"]["status"] == "pass"
    assert (cells["xgboost.cuda"]["status"], cells["xgboost.cuda"]["fault"]) == ("fail", "image")
    assert "CUDA_VERSION=12.8.1" in cells["xgboost.cuda"]["detail"]
    assert cells["torch.cpu"]["detail"].startswith("torch is not installed in the image")
    assert cells["transformers.cpu"]["detail"] == "transformers is not installed in the image"


@pytest.mark.docker
@pytest.mark.slow
def test_read_only_image_fails_the_hf_cache_row(pytester: pytest.Pytester, full_image: str) -> None:
    # Like a SIF on a cluster: the image (and HOME inside it) is read-only, /tmp is not.
    column = f"docker://{full_image}"
    result = _run(pytester, "--image", column, "--runtime-arg=--read-only", "--runtime-arg=--tmpfs=/tmp",
                  "-k", "transformers_cpu or transformers_cache")
    result.assert_outcomes(passed=1, failed=1)
    cells = _cells(pytester, column)
    assert cells["transformers.cpu"]["status"] == "pass"
    cache = cells["transformers.cache"]
    assert (cache["status"], cache["fault"]) == ("fail", "pair")
    assert "Read-only file system" in cache["detail"] and "HF_HOME" in cache["fix"]
