"""Record probe facts of library versions older than the rules expect (issue 24), on this host.

    python3 tests/data/record_versions.py vtk931 --python VENV/bin/python         # render, VTK 9.3.1 wheel
    python3 tests/data/record_versions.py tf5-torch241 --python VENV/bin/python   # transformers 5.x
    python3 tests/data/record_versions.py tf4-torch201 --python VENV/bin/python   # transformers 4.x

``vtk931`` runs the real render probe with the interpreter given, which must have PyPI's ``vtk``
9.3.1 wheel and pyvista (``pip install vtk==9.3.1 pyvista``): it writes
``tests/data/render/vtk931-{egl,osmesa}.json``.

``tf5-torch241`` and ``tf4-torch201`` run the real transformers probe with the transformers the
interpreter has (5.x, resp. 4.x), but with a **stand-in torch** put first on ``PYTHONPATH``: a
package that only claims an old version (2.4.1, resp. 2.0.1) and has the four names the probe
touches before it builds a model (``version``, ``device``, ``manual_seed``).  No old torch wheel can
be installed here (PyPI's are multi-GB CUDA builds, download.pytorch.org is out of reach), and
what is recorded is transformers' own reaction to that version: which its code decides from the
installed distribution's version alone.  They write ``tests/data/ml/transformers_<case>_standin.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from pytest_containercheck.engine import probing  # noqa: E402
from pytest_containercheck.engine.runtimes import LaunchOptions, get_runtime  # noqa: E402
from pytest_containercheck.engine.targets import parse_target  # noqa: E402

STAND_IN = '''"""Stand-in torch for tests/data/record_versions.py: a version, and what the probe touches."""
__version__ = "{version}"


class _Version(object):
    cuda = None
    hip = None


version = _Version()


class device(object):
    def __init__(self, kind, index=None):
        self.type = kind
        self.index = index

    def __str__(self):
        return self.type if self.index is None else "%s:%d" % (self.type, self.index)


def manual_seed(seed):
    return None
'''

CASES: dict[str, dict[str, Any]] = {
    "vtk931": {"probe": "render", "runs": [({"backend": "egl"}, "render/vtk931-egl.json"),
                                           ({"backend": "osmesa"}, "render/vtk931-osmesa.json")]},
    "tf5-torch241": {"probe": "transformers_infer", "stand_in": "2.4.1",
                     "runs": [({}, "ml/transformers_tf5_torch241_standin.json")]},
    "tf4-torch201": {"probe": "transformers_infer", "stand_in": "2.0.1",
                     "runs": [({}, "ml/transformers_tf4_torch201_standin.json")]},
}


def _stand_in(root: Path, version: str) -> None:
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text(STAND_IN.format(version=version))
    dist = root / f"torch-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (dist / "top_level.txt").write_text("torch\n")


def record(case: str, python: str) -> None:
    spec = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.environ.get("PYTHONPATH")
        if spec.get("stand_in"):
            _stand_in(Path(tmp), spec["stand_in"])
            os.environ["PYTHONPATH"] = tmp + (os.pathsep + saved if saved else "")
        try:
            for params, out in spec["runs"]:
                target = parse_target("host")
                session = get_runtime(target.runtime).start(target, LaunchOptions(run_id="record-versions",
                                                                                  host_python=python))
                try:
                    py = probing.find_python(session, session.python_candidates(["python3"]))
                    res = probing.run_probe(session, py, spec["probe"], params, timeout=600)
                finally:
                    session.stop()
                doc = {
                    "source": {"command": f"python3 tests/data/record_versions.py {case} --python {python}",
                               "probe": spec["probe"], "params": params, "image": "host", "python": python,
                               "stand_in_torch": spec.get("stand_in"), "host": platform.node(),
                               "date": datetime.date.today().isoformat()},
                    "status": res.status, "error": res.error, "facts": res.facts, "timings": res.timings,
                    "warnings": res.warnings, "stderr_tail": res.stderr[-1500:],
                }
                (HERE / out).write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
                print(f"{case}: {out}: {res.status} {res.error or ''}")
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


def main() -> int:
    """Entry point: ``record_versions.py CASE --python PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--python", required=True, help="the interpreter with the libraries to record")
    args = parser.parse_args()
    record(args.case, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
