"""Developer helper: run a probe on the host without pytest, and print what it found."""

from __future__ import annotations

import json
from typing import Any

from . import probing
from .probing import ProbeResult
from .runtimes import LaunchOptions, get_runtime
from .targets import parse_target


def try_probe(name: str, image: str = "host", timeout: float = 300, quiet: bool = False,
              **params: Any) -> ProbeResult:
    """Run probe *name* in *image* (default: this interpreter) and print its envelope."""
    target = parse_target(image)
    session = get_runtime(target.runtime).start(target, LaunchOptions(run_id="dev", gpus="none"))
    try:
        py = probing.find_python(session, session.python_candidates(["python3", "python"]))
        result = probing.run_probe(session, py, name, params, timeout=timeout)
    finally:
        session.stop()
    if not quiet:
        print(f"status: {result.status} {result.error or ''}")
        print("facts:", json.dumps(result.facts, indent=1, default=str))
        print("timings:", result.timings, "wall:", round(result.duration, 3))
        print("warnings:", result.warnings)
        if result.stderr:
            print("stderr (tail):", result.stderr[-2000:])
    return result
