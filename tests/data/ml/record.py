"""Re-record the ML probe facts used by tests/test_verdicts_ml.py (see README.md here).

Runs the real probes on this host (``--image host``) and in the locally built test
images, and writes one JSON file per case.  Needs Docker and the test images
(``python3 tests/images/build.py full xgboost-cpu``)::

    python3 tests/data/ml/record.py            # all cases
    python3 tests/data/ml/record.py xgboost_cpu_wheel   # one case
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from pytest_containercheck.engine import hostinfo, probing  # noqa: E402
from pytest_containercheck.engine.runtimes import LaunchOptions, Session, get_runtime  # noqa: E402
from pytest_containercheck.engine.targets import parse_target  # noqa: E402

FULL = "docker://containercheck-test/full:latest"
XGB_CPU = "docker://containercheck-test/xgboost-cpu:latest"


def _record(case: str, probe: str, image: str, params: dict[str, Any] | None = None, *,
            runtime_args: tuple[str, ...] = (), before: Callable[[Session], None] | None = None,
            note: str = "") -> None:
    target = parse_target(image)
    session = get_runtime(target.runtime).start(target, LaunchOptions(run_id="record-ml", runtime_args=runtime_args))
    try:
        if before is not None:
            before(session)
        py = probing.find_python(session, session.python_candidates(["python3", "python"]))
        res = probing.run_probe(session, py, probe, params or {}, timeout=600)
    finally:
        session.stop()
    image_id = ""
    if target.runtime != "host":
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", target.ref],
                             capture_output=True, text=True, check=False)
        image_id = out.stdout.strip()
    doc = {
        "source": {
            "command": f"python3 tests/data/ml/record.py {case}",
            "probe": probe, "params": params or {}, "image": image, "image_id": image_id,
            "runtime_args": list(runtime_args), "host": platform.node(),
            "date": datetime.date.today().isoformat(), "note": note,
        },
        "status": res.status, "error": res.error, "facts": res.facts, "timings": res.timings,
        "warnings": res.warnings, "stderr_tail": res.stderr[-1500:],
    }
    (HERE / f"{case}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{case}: {res.status} {res.timings}")


def _record_host() -> None:
    doc = {"source": {"command": "python3 tests/data/ml/record.py host_facts", "host": platform.node(),
                      "date": datetime.date.today().isoformat(), "note": "hostinfo.gather(['docker'])"},
           "facts": hostinfo.gather(["docker"])}
    (HERE / "host_facts.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _tiny_model_dir() -> str:
    import torch
    import transformers

    path = Path(tempfile.gettempdir()) / "containercheck-tiny-gpt2"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                         bos_token_id=0, eos_token_id=0)
        transformers.GPT2LMHeadModel(config).save_pretrained(str(path))
    return str(path)


CASES: dict[str, Callable[[], None]] = {
    "host_facts": _record_host,
    "torch_host_cpu_build": lambda: _record("torch_host_cpu_build", "torch_device", "host"),
    "torch_full_cpu_build": lambda: _record("torch_full_cpu_build", "torch_device", FULL),
    "torch_not_installed": lambda: _record("torch_not_installed", "torch_device", XGB_CPU),
    "xgboost_host_cuda_wheel": lambda: _record("xgboost_host_cuda_wheel", "xgboost_train", "host"),
    "xgboost_full_cuda_wheel": lambda: _record("xgboost_full_cuda_wheel", "xgboost_train", FULL),
    "xgboost_cpu_wheel": lambda: _record("xgboost_cpu_wheel", "xgboost_train", XGB_CPU),
    "torch_full_readonly_notmp": lambda: _record(
        "torch_full_readonly_notmp", "torch_device", FULL, runtime_args=("--read-only",),
        note="docker run --read-only without a tmpfs: no writable directory at all"),
    "transformers_host_tiny": lambda: _record("transformers_host_tiny", "transformers_infer", "host"),
    "transformers_full_tiny": lambda: _record("transformers_full_tiny", "transformers_infer", FULL),
    "transformers_host_model_path": lambda: _record(
        "transformers_host_model_path", "transformers_infer", "host", {"model_path": _tiny_model_dir()},
        note="a GPT-2 (2 layers, 32 wide) saved with save_pretrained, no tokenizer files"),
    "transformers_full_readonly_notmp": lambda: _record(
        "transformers_full_readonly_notmp", "transformers_infer", FULL, runtime_args=("--read-only",),
        note="docker run --read-only without a tmpfs: no writable directory at all"),
    "transformers_full_readonly": lambda: _record(
        "transformers_full_readonly", "transformers_infer", FULL, runtime_args=("--read-only", "--tmpfs", "/tmp"),
        note="docker run --read-only --tmpfs /tmp: like a SIF, HOME=/root (and the HF cache) is read-only"),
    "transformers_not_installed": lambda: _record("transformers_not_installed", "transformers_infer", XGB_CPU),
}


def main(argv: list[str]) -> None:
    """Record the named cases (all when none are named)."""
    for name in argv or list(CASES):
        CASES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
