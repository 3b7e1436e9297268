"""Record the probe facts of the depth-two test images (see README.md here), for the verdicts' unit
tests and the walk of every fix against its facts (tests/test_fix_walk.py).

Runs the real probes in the locally built images (``python3 tests/images/build.py depth-glibcxx ...``)::

    python3 tests/data/depth/record.py              # all cases
    python3 tests/data/depth/record.py glibcxx-osmesa  # one case
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from pytest_containercheck.engine import probing  # noqa: E402
from pytest_containercheck.engine.runtimes import LaunchOptions, get_runtime  # noqa: E402
from pytest_containercheck.engine.targets import parse_target  # noqa: E402

#: case -> (recipe, probe, params)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "glibcxx-osmesa": ("depth-glibcxx", "render", {"backend": "osmesa"}),
    "glibcxx-egl": ("depth-glibcxx", "render", {"backend": "egl"}),
    "symbol-egl": ("depth-symbol", "render", {"backend": "egl"}),
    "slimmed-osmesa": ("depth-slimmed", "render", {"backend": "osmesa"}),
    "slimmed-egl": ("depth-slimmed", "render", {"backend": "egl"}),
    "nonumpy-xgboost": ("depth-nonumpy", "xgboost_train", {}),
    "pin-transformers": ("depth-pin", "transformers_infer", {}),
    "abi-xgboost": ("depth-abi", "xgboost_train", {}),
}


def record(case: str) -> None:
    recipe, probe, params = CASES[case]
    image = f"docker://containercheck-test/{recipe}:latest"
    target = parse_target(image)
    session = get_runtime(target.runtime).start(target, LaunchOptions(run_id="record-depth"))
    try:
        py = probing.find_python(session, session.python_candidates(["python3", "python"]))
        res = probing.run_probe(session, py, probe, params, timeout=600)
    finally:
        session.stop()
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", target.ref],
                              capture_output=True, text=True, check=False, timeout=60).stdout.strip()
    doc = {
        "source": {"command": f"python3 tests/data/depth/record.py {case}", "probe": probe, "params": params,
                   "image": image, "image_id": image_id, "host": platform.node(),
                   "date": datetime.date.today().isoformat()},
        "status": res.status, "error": res.error, "facts": res.facts, "timings": res.timings,
        "warnings": res.warnings, "stderr_tail": res.stderr[-1500:],
    }
    (HERE / f"{case}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{case}: {res.status}")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(CASES):
        record(name)
