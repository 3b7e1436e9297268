"""The GPU acceptance kit's Python half: is there a GPU, record the raw probe facts, judge the matrix.

Run by ``tests/gpu/run_kit.sh`` with the interpreter under test, from the repository root, with
the working tree on ``PYTHONPATH`` (nothing is installed).  Three subcommands:

``has-gpu``                      exit 0 when :mod:`pytest_containercheck.engine.hostinfo` finds a GPU, 3 when
                                 not; prints the host's GPU summary either way.
``record OUT_DIR``               run each built-in probe on this interpreter and write its envelope
                                 (``<probe>[-<backend>].json``, the ``tests/data`` format) and the host facts.
``judge MATRIX_JSON``            the kit's verdict on a matrix: exit 0 when every row that must pass
                                 passed, 1 otherwise (each problem on its own line).

``judge`` is a pure function of the matrix file (:func:`judge`), tested on constructed matrices
in ``tests/test_gpu_kit.py``.  Which rows must pass and which probes are recorded are derived
from the built-in checks' markers (:func:`pytest_containercheck.checks.builtin_rows`), never listed here.
"""

from __future__ import annotations

import datetime
import json
import platform
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Row families whose library may be absent on the bare machine (no xgboost, no VTK unless a
#: wheel was carried in): a skip that says the library is not installed is accepted for them.
OPTIONAL = ("xgboost.", "render.")
NOT_INSTALLED = ("not installed", "no module named")


def _builtin_rows() -> list[Any]:
    # The plugin is imported only here: `has-gpu` must answer even where it does not import.
    from pytest_containercheck.checks import builtin_rows

    return builtin_rows()


def required_rows() -> tuple[str, ...]:
    """Rows that must be in the matrix and pass on a GPU machine: every built-in row (from the
    checks' row markers) outside the :data:`OPTIONAL` families; nothing has to be carried in for them."""
    return tuple(r.name for r in _builtin_rows() if not r.name.startswith(OPTIONAL))


def probe_runs() -> tuple[tuple[str, dict[str, Any], str], ...]:
    """(probe, params, file stem) for each probe the built-in checks declare, once per parameter
    set, in matrix order: what ``record`` runs (``render`` once per backend: ``render-egl.json``)."""
    runs: dict[tuple[str, str], tuple[str, dict[str, Any], str]] = {}
    for row in _builtin_rows():
        for name, params_json in row.probes:
            params = json.loads(params_json)
            runs.setdefault((name, params_json), (name, params, "-".join([name, *map(str, params.values())])))
    return tuple(runs.values())


def judge(matrix: Mapping[str, Any], required: Sequence[str] | None = None,
          optional: Sequence[str] = OPTIONAL) -> list[str]:
    """The problems in *matrix* (a ``--matrix-json`` document); empty when the kit passes.

    Every failure or error is a problem; so is a skip, unless the row is optional and its
    library is not installed; so is a required row that is missing or did not pass, and an
    incomplete matrix (pytest was interrupted).
    """
    required = required_rows() if required is None else required
    problems: list[str] = []
    if not matrix.get("complete", False):
        problems.append("matrix incomplete: the run was interrupted (see pytest.log)")
    cells = [c for c in matrix.get("cells") or [] if isinstance(c, Mapping)]
    seen: dict[str, str] = {}
    for cell in cells:
        row, status = str(cell.get("row")), str(cell.get("status"))
        detail = str(cell.get("detail") or "")
        seen[row] = status
        if status in ("fail", "error"):
            fault = f" [{cell['fault']} fault]" if cell.get("fault") else ""
            problems.append(f"{row}: {status.upper()}{fault} {detail}" + (f" -- fix: {cell['fix']}"
                                                                          if cell.get("fix") else ""))
        elif status == "skip":
            absent = any(n in detail.lower() for n in NOT_INSTALLED)
            if not (row.startswith(tuple(optional)) and absent and row not in required):
                problems.append(f"{row}: SKIP on a GPU machine: {detail}")
    for row in required:
        if row not in seen:
            problems.append(f"{row}: missing from the matrix")
    return problems


def _judge_main(path: str) -> int:
    matrix = json.loads(Path(path).read_text(encoding="utf-8"))
    problems = judge(matrix)
    for cell in matrix.get("cells") or []:
        print(f"  {cell.get('status', '?'):5} {cell.get('row')}: {cell.get('detail')}")
    if problems:
        print(f"KIT: FAIL ({len(problems)} problem(s)):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("KIT: PASS (every required row passed; optional rows passed or their library is absent)")
    return 0


def _has_gpu_main() -> int:
    from pytest_containercheck.engine import hostinfo

    facts = hostinfo.nvidia_facts()
    print(facts["gpu_summary"])
    return 0 if facts["has_gpu"] else 3


def _record_main(out: str, timeout: float) -> int:
    from pytest_containercheck.engine import hostinfo
    from pytest_containercheck.engine.dev import try_probe

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    source = {"host": socket.gethostname(), "python": sys.executable, "python_version": platform.python_version(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "how": "tests/gpu/kit.py record (pytest_containercheck.engine.dev.try_probe, --image host)"}
    (outdir / "host_facts.json").write_text(json.dumps({"source": source, "facts": hostinfo.gather(["docker"])},
                                                       indent=1, default=str), encoding="utf-8")
    for name, params, stem in probe_runs():
        t0 = time.monotonic()
        try:
            res = try_probe(name, timeout=timeout, quiet=True, **params)
            doc: dict[str, Any] = {"status": res.status, "error": res.error, "facts": res.facts,
                                   "timings": res.timings, "warnings": res.warnings,
                                   "stderr_tail": res.stderr[-4000:], "traceback": res.traceback}
        except Exception as exc:  # a broken probe must not stop the others from being recorded
            doc = {"status": "kit-error", "error": f"{type(exc).__name__}: {exc}"}
        doc["source"] = {**source, "probe": name, "params": params, "wall": round(time.monotonic() - t0, 3)}
        (outdir / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
        print(f"recorded {stem}: {doc['status']} in {doc['source']['wall']} s")
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry point: ``kit.py has-gpu | record OUT_DIR [TIMEOUT] | judge MATRIX_JSON``."""
    if argv[:1] == ["has-gpu"]:
        return _has_gpu_main()
    if argv[:1] == ["record"] and len(argv) >= 2:
        return _record_main(argv[1], float(argv[2]) if len(argv) > 2 else 180.0)
    if argv[:1] == ["judge"] and len(argv) == 2:
        return _judge_main(argv[1])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
