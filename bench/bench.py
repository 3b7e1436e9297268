"""Benchmark: pytest --image against the manual workflow it replaces, and against the floor.

Runs side by side, interleaved, in one run, on one image (default: the full test image):

  (a) manual: three `docker run --rm IMAGE python3 -` (a pyvista render, an xgboost training, a
      transformers inference), as users check images by hand today;
  (b) plugin: `pytest --image IMAGE` with the whole built-in suite;
  (c) floor:  one container start and one Python process doing (a)'s three jobs in sequence;

then four images (tags of the same image) under `pytest -n 0` and `-n 2`.  Prints median wall
times, the ratios (b)/(a) and (b)/(c), and how many checks each ran.

    python3 bench/bench.py [--image REF] [--repeat 3] [--skip-xdist]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [HERE / "manual" / n for n in ("render.py", "xgb.py", "transformers_infer.py")]


def timed(argv: Sequence[str], stdin: bytes | None = None, cwd: str | None = None) -> tuple[float, str]:
    t0 = time.monotonic()
    res = subprocess.run(list(argv), input=stdin, capture_output=True, cwd=cwd, timeout=1800)
    wall = time.monotonic() - t0
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    if res.returncode not in (0, 1):  # pytest exits 1 when a check fails: still a complete run
        raise SystemExit(f"benchmark step failed ({res.returncode}): {' '.join(argv)}\n{out[-3000:]}")
    return wall, out


def manual(image: str) -> tuple[float, int]:
    total = 0.0
    for script in SCRIPTS:
        wall, _ = timed(["docker", "run", "--rm", "-i", "--network", "none", image, "python3", "-"],
                        stdin=script.read_bytes())
        total += wall
    return total, len(SCRIPTS)


def floor(image: str) -> tuple[float, int]:
    program = "\n".join(s.read_text() for s in SCRIPTS).encode()
    wall, _ = timed(["docker", "run", "--rm", "-i", "--network", "none", image, "python3", "-"], stdin=program)
    return wall, len(SCRIPTS)


def plugin(images: Sequence[str], *extra: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--matrix-json", "m.json"]
        for image in images:
            args += ["--image", image]
        wall, _ = timed([*args, *extra], cwd=tmp)
        cells = json.loads((Path(tmp) / "m.json").read_text())["cells"]
    return wall, len(cells)


def full_image() -> str:
    sys.path.insert(0, str(HERE.parent / "tests" / "images"))
    import build  # the test-image recipes

    return str(build.ensure_image("full"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="image to benchmark (default: the full test image, built if needed)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-xdist", action="store_true")
    args = parser.parse_args()
    image = args.image or full_image()
    print(f"image: {image}\nmachine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"repeat {args.repeat}, interleaved\n")
    timed(["docker", "run", "--rm", "--network", "none", image, "true"])  # warm the page cache for all modes

    modes = {"(a) manual, 3 x docker run": lambda: manual(image),
             "(b) pytest --image (built-in suite)": lambda: plugin([image]),
             "(c) floor, 1 container + 1 process": lambda: floor(image)}
    walls: dict[str, list[float]] = {m: [] for m in modes}
    checks: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, run in modes.items():
            wall, n = run()
            walls[name].append(wall)
            checks[name] = n
    med = {m: statistics.median(w) for m, w in walls.items()}
    for m in modes:
        print(f"{m:40} median {med[m]:6.1f} s  ({', '.join(f'{w:.1f}' for w in walls[m])})  checks: {checks[m]}")
    (ma, a), (mb, b), (_mc, c) = med.items()
    print(f"\n(b)/(a) = {b / a:.2f}  (target <= 1.00 with >= 2x the checks: {checks[mb]} vs {checks[ma]})")
    print(f"(b)/(c) = {b / c:.2f}  (target <= 1.15)")

    if not args.skip_xdist:
        tags = [f"containercheck-bench/img{i}:latest" for i in range(4)]
        for t in tags:
            subprocess.run(["docker", "tag", image, t], check=True)
        try:
            print("\nfour images (tags of the same image):")
            results: dict[str, list[float]] = {}
            variants = {"-n 0": [], "-n 2": ["-n", "2"], "-n 0 --probe-jobs 1": ["--probe-jobs", "1"],
                        "-n 2 --probe-jobs 1": ["-n", "2", "--probe-jobs", "1"]}
            for _ in range(max(1, args.repeat - 1)):
                for v, extra in variants.items():
                    results.setdefault(v, []).append(plugin(tags, *extra)[0])
            x = {v: statistics.median(w) for v, w in results.items()}
            for v in variants:
                print(f"  pytest {v:24} median {x[v]:6.1f} s  ({', '.join(f'{w:.1f}' for w in results[v])})")
            print(f"  -n 2 / -n 0 = {x['-n 2'] / x['-n 0']:.2f} (target <= 0.60); with --probe-jobs 1: "
                  f"{x['-n 2 --probe-jobs 1'] / x['-n 0 --probe-jobs 1']:.2f}")
        finally:
            subprocess.run(["docker", "rmi", *tags], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
