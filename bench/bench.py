"""Benchmark: pytest --image against the manual workflow it replaces, and against the floor.

Runs side by side, interleaved, in one run, on one image (default: the full test image):

  (a) manual: three `docker run --rm IMAGE python3 -` (a pyvista render, an xgboost training, a
      transformers inference), as users check images by hand today;
  (b) plugin: `pytest --image IMAGE` with the whole built-in suite;
  (c) floor:  one container start and one Python process doing (a)'s three jobs in sequence;
  (s) start-up: `pytest --image IMAGE --collect-only` (everything before the first probe but the
      container start);

and, when apptainer works here, on the same image's SIF (built the users' way, docker save +
apptainer build docker-archive://):

  (d) manual on a cluster: three `apptainer exec IMAGE.sif python3 -`;
  (e) plugin: `pytest --image IMAGE.sif` (one apptainer instance, every probe an exec into it);
  (g)/(h) `pytest -k system` on the base image under Docker and under Podman;
  (f) the session mechanism alone: the built-in probes one after another, each as its own
      `apptainer exec IMAGE.sif` (SIF mounted per probe) vs as `apptainer exec instance://`
      into one instance (SIF mounted once; instance start and stop included);

then the physical limit (each probe and bundle alone; the torch bundle beside a nice-19 busy
loop; the probes scheduled as the suite schedules them, without pytest), and four images (tags of
the same image) under `pytest -n 0` and `-n 2`.  Prints median wall times, the ratios (b)/(a),
(b)/(c), (e)/(b), how many checks each ran, and the CPU-seconds the machine spent on each pytest
run.  --baseline-tree DIR adds (bB) and (eB): (b) and (e) with the plugin from DIR, a checkout of
an earlier commit (git worktree add DIR COMMIT), for the before and after of a change.

    .tox/py/bin/python bench/bench.py [--image REF] [--repeat 3] [--skip-xdist] [--skip-apptainer]
                                      [--skip-podman] [--baseline-tree DIR]

Run it with a Python that has the plugin's dependencies (pytest, numpy, Pillow, scikit-image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [HERE / "manual" / n for n in ("render.py", "xgb.py", "transformers_infer.py")]


def tree_env(tree: Path) -> dict[str, str]:
    """pytest runs import the plugin from *tree*, not from whatever copy is installed, with
    bytecode caching on, as for an installed copy (pip compiles it): a shell that exports
    PYTHONDONTWRITEBYTECODE would otherwise compile the plugin anew on every run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


TREE_ENV = tree_env(HERE.parent)


def pytest_args() -> list[str]:
    """``python -m pytest`` with the plugin loaded: through its entry point when it is installed
    for this interpreter (the tree's copy then wins through PYTHONPATH), else by name."""
    from importlib.metadata import entry_points

    installed = any(ep.value == "pytest_containercheck.plugin" for ep in entry_points(group="pytest11"))
    return [sys.executable, "-m", "pytest", *([] if installed else ["-p", "pytest_containercheck.plugin"])]


def check_interpreter() -> None:
    """The plugin's own dependencies must import here: the runs use this interpreter."""
    import importlib.util

    missing = [m for m in ("pytest", "numpy", "PIL", "skimage") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"bench: {sys.executable} lacks {', '.join(missing)}, which the plugin needs; run the "
                         "benchmark with a Python where it is installed (pip install -e . ; tox's .tox/py/bin/python)")
LIMITS: dict[str, float] = {}
"""Limits computed besides the one ``limit`` returns (``docker scheduled``)."""
BUSY: dict[str, list[float]] = {}
"""Per mode: CPU-seconds the whole machine spent during each run (every process: pytest, the
runtime's CLI, daemons and shims, the probes), from /proc/stat."""


def machine_busy() -> float:
    """CPU-seconds this machine has spent busy since boot (all CPUs; /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def timed(argv: Sequence[str], stdin: bytes | None = None, cwd: str | None = None,
          env: Mapping[str, str] | None = None, mode: str | None = None) -> tuple[float, str]:
    busy0 = machine_busy()
    t0 = time.monotonic()
    res = subprocess.run(list(argv), input=stdin, capture_output=True, cwd=cwd, timeout=1800,
                         env=dict(env or TREE_ENV))
    wall = time.monotonic() - t0
    if mode:
        BUSY.setdefault(mode, []).append(machine_busy() - busy0)
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


def plugin(images: Sequence[str], *extra: str, tree: Path | None = None, mode: str | None = None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [*pytest_args(), "-p", "no:cacheprovider", "-q", "--matrix-json", "m.json"]
        for image in images:
            args += ["--image", image]
        wall, _ = timed([*args, *extra], cwd=tmp, env=tree_env(tree) if tree else None, mode=mode)
        cells = json.loads((Path(tmp) / "m.json").read_text())["cells"]
    return wall, len(cells)


def startup(image: str) -> tuple[float, int]:
    """pytest's start-up with the plugin: options, image checks, host facts, collection; no probe."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, _ = timed([*pytest_args(), "-p", "no:cacheprovider", "-q", "--image", image, "--collect-only"],
                        cwd=tmp)
    return wall, 0


def userns() -> list[str]:
    """As root this sandbox needs apptainer's --userns (tests/test_apptainer.py says why)."""
    return ["--userns"] if os.geteuid() == 0 else []


def manual_sif(sif: str) -> tuple[float, int]:
    total = 0.0
    for script in SCRIPTS:
        wall, _ = timed(["apptainer", "exec", *userns(), "--cleanenv", sif, "python3", "-"], stdin=script.read_bytes())
        total += wall
    return total, len(SCRIPTS)


#: The built-in probes and their parameters, as the built-in checks run them.
PROBES = (("system", {}), ("render", {"backend": "osmesa"}), ("render", {"backend": "egl"}),
          ("torch_device", {}), ("xgboost_train", {}), ("transformers_infer", {}))


def probe_programs() -> list[bytes]:
    sys.path.insert(0, str(HERE.parent))
    from pytest_containercheck.engine import probing

    return [probing.compose(name, params, f"bench{i}", 600) for i, (name, params) in enumerate(PROBES)]


def probes_exec(sif: str) -> tuple[float, int]:
    t0 = time.monotonic()
    for program in probe_programs():
        timed(["apptainer", "exec", *userns(), "--cleanenv", sif, "python3", "-"], stdin=program)
    return time.monotonic() - t0, len(PROBES)


def probes_instance(sif: str) -> tuple[float, int]:
    name = f"containercheck-bench-{os.getpid()}"
    t0 = time.monotonic()
    timed(["apptainer", "instance", "start", *userns(), "--cleanenv", sif, name])
    try:
        for program in probe_programs():
            timed(["apptainer", "exec", "--cleanenv", f"instance://{name}", "python3", "-"], stdin=program)
    finally:
        timed(["apptainer", "instance", "stop", "--force", name])
    return time.monotonic() - t0, len(PROBES)


def full_sif(image: str) -> str | None:
    """The image's SIF (built if needed), or None when apptainer does not work here."""
    if subprocess.run(["apptainer", "version"], capture_output=True).returncode != 0:
        return None
    sys.path.insert(0, str(HERE.parent / "tests" / "images"))
    import apptainer  # the Apptainer provisioning and SIF builds of the test suite

    return str(apptainer.ensure_sif(image))


def podman_base() -> tuple[str, str] | None:
    """The base test image's Docker and Podman references (docker save | podman load), or None
    without podman."""
    if subprocess.run(["podman", "--version"], capture_output=True).returncode != 0:
        return None
    sys.path.insert(0, str(HERE.parent / "tests" / "images"))
    import build  # the test-image recipes

    return str(build.ensure_image("base")), str(build.ensure_podman_image("base"))


CPU_WRAP = ("import resource,subprocess,sys,time;t=time.time();subprocess.run([sys.executable,'-'],stdin=sys.stdin,"
            "stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);r=resource.getrusage(resource.RUSAGE_CHILDREN);"
            "print('%.3f %.3f'%(r.ru_utime+r.ru_stime,time.time()-t))")


def limit(image: str, startup_s: float) -> float:
    """The physical limit: what the suite's probes need, each run alone in one warm container.

    CPU-seconds (user + system, children included) and wall time of each probe run on its own,
    and of the two bundles as the suite runs them. No schedule on this machine's cores can end
    the probes sooner than the CPU-seconds divided by the cores, nor sooner than the longest
    chain that must run in order (the torch bundle: torch, then transformers, which imports it).
    """
    sys.path.insert(0, str(HERE.parent))
    from pytest_containercheck.engine import probing

    name = f"containercheck-bench-limit-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--network", "none", "--name", name, "--entrypoint", "sleep",
                    image, "infinity"], capture_output=True, check=True)
    try:
        def alone(program: bytes) -> tuple[float, float]:
            out = subprocess.run(["docker", "exec", "-i", name, "python3", "-c", CPU_WRAP], input=program,
                                 capture_output=True, check=True).stdout.decode().split()
            return float(out[0]), float(out[1])

        suite = (*PROBES, ("tls", {}))
        for name_, params in suite:  # warm the page cache
            alone(probing.compose(name_, params, "warm", 600))
        single = {f"{n} {p.get('backend', '')}".strip(): alone(probing.compose(n, p, "x", 600)) for n, p in suite}
        torch_program = probing.compose_bundle([("torch_device", {}, "t"), ("transformers_infer", {}, "f")],
                                               ("torch",), 600)
        torch_bundle = alone(torch_program)
        render_bundle = alone(probing.compose_bundle([("render", {"backend": "osmesa"}, "o"),
                                                      ("render", {"backend": "egl"}, "e")],
                                                     ("numpy", "pyvista", "pyvista.plotting"), 600))
        # Do this VM's two CPUs run independently?  The torch bundle beside a busy loop that only
        # takes what is left over (nice 19), on the other CPU.
        burned = []
        for _ in range(2):
            burner = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.2)
                burned.append(alone(torch_program)[1])
            finally:
                burner.kill()
                burner.wait()
        # The probes as the suite schedules them, without pytest: the torch bundle on one lane,
        # everything else (at nice +10, as the plugin starts them) on the other.
        others = [probing.compose_bundle([("render", {"backend": "osmesa"}, "o"), ("render", {"backend": "egl"}, "e")],
                                         ("numpy", "pyvista", "pyvista.plotting"), 600, nice=10),
                  *(probing.compose(n, p, "x", 600, nice=10) for n, p in (("xgboost_train", {}), ("tls", {}),
                                                                           ("system", {})))]
        scheduled = []
        for _ in range(2):
            t0 = time.monotonic()
            lane = threading.Thread(target=lambda: [alone(p) for p in others])
            lane.start()
            alone(torch_program)
            lane.join()
            scheduled.append(time.monotonic() - t0)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
    cores = os.cpu_count() or 1
    print("\nphysical limit (each alone in a warm container; CPU-seconds / wall):")
    for k, (cpu, wall) in single.items():
        print(f"  {k:22} {cpu:5.2f} / {wall:5.2f} s")
    print(f"  {'bundle torch+transf.':22} {torch_bundle[0]:5.2f} / {torch_bundle[1]:5.2f} s")
    print(f"  {'bundle render x2':22} {render_bundle[0]:5.2f} / {render_bundle[1]:5.2f} s")
    separate = sum(cpu for cpu, _ in single.values())
    bundled = separate - sum(single[k][0] for k in ("torch_device", "transformers_infer", "render osmesa",
                                                   "render egl")) + torch_bundle[0] + render_bundle[0]
    chain = torch_bundle[1]
    floor_probes = max(bundled / cores, chain)
    print(f"  CPU need: {separate:.2f} s as separate probes, {bundled:.2f} s with bundles; on {cores} cores "
          f"at least {bundled / cores:.2f} s; the longest chain (torch bundle) {chain:.2f} s")
    print(f"  the torch bundle beside a nice-19 busy loop on the other CPU: {statistics.median(burned):.2f} s "
          f"({statistics.median(burned) / chain - 1:+.0%}: this machine's CPUs slow each other down)")
    sched = statistics.median(scheduled)
    print(f"  the probes as the suite schedules them, without pytest (torch bundle | the rest at nice +10, "
          f"one after the other): {sched:.2f} s")
    t0 = time.monotonic()
    subprocess.run(["docker", "run", "-d", "--rm", "--network", "none", "--name", name, "--entrypoint", "sleep",
                    image, "infinity"], capture_output=True, check=True)
    started = time.monotonic() - t0
    t0 = time.monotonic()
    subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=True)
    removed = time.monotonic() - t0
    total = startup_s + started + floor_probes + removed
    print(f"  => probes alone cannot end sooner than {floor_probes:.2f} s; with start-up (s) {startup_s:.2f} s, a "
          f"container's start {started:.2f} s and removal {removed:.2f} s: about {total:.2f} s for the suite")
    LIMITS["docker scheduled"] = startup_s + started + sched + removed
    print(f"  => scheduled as the suite does it, with the same start-up, start and removal: about "
          f"{LIMITS['docker scheduled']:.2f} s")
    return total


def limit_apptainer(sif: str, startup_s: float) -> float:
    """Apptainer's limit: the torch bundle in a freshly started instance (every run mounts the
    SIF anew, so squashfuse reads and decompresses the libraries cold), and the instance's own
    start and stop."""
    sys.path.insert(0, str(HERE.parent))
    from pytest_containercheck.engine import probing

    name = f"containercheck-bench-limit-{os.getpid()}"
    program = probing.compose_bundle([("torch_device", {}, "t"), ("transformers_infer", {}, "f")], ("torch",), 600)
    t0 = time.monotonic()
    subprocess.run(["apptainer", "instance", "start", *userns(), "--cleanenv", sif, name], capture_output=True,
                   check=True)
    started = time.monotonic() - t0
    try:
        out = subprocess.run(["apptainer", "exec", "--cleanenv", f"instance://{name}", "python3", "-c", CPU_WRAP],
                             input=program, capture_output=True, check=True).stdout.decode().split()
    finally:
        from pytest_containercheck.engine.runtimes.apptainer import _stop_instance

        t0 = time.monotonic()
        _stop_instance("apptainer", name)  # as the plugin stops it: done when the master has exited
        stopped = time.monotonic() - t0
    # The command alone, for comparison: it also waits for PID 1 to reap the master.
    subprocess.run(["apptainer", "instance", "start", *userns(), "--cleanenv", sif, name], capture_output=True,
                   check=True)
    t0 = time.monotonic()
    subprocess.run(["apptainer", "instance", "stop", "--force", name], capture_output=True)
    stop_command = time.monotonic() - t0
    cpu, chain = float(out[0]), float(out[1])
    total = startup_s + started + chain + stopped
    print(f"  Apptainer: instance start {started:.2f} s, torch bundle on a cold mount {cpu:.2f} / {chain:.2f} s, "
          f"instance stop {stopped:.2f} s ('apptainer instance stop' itself: {stop_command:.2f} s, as it waits "
          f"for PID 1 to reap the exited master) => about {total:.2f} s for the suite")
    return total


def full_image() -> str:
    sys.path.insert(0, str(HERE.parent / "tests" / "images"))
    import build  # the test-image recipes

    return str(build.ensure_image("full"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="image to benchmark (default: the full test image, built if needed)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-xdist", action="store_true")
    parser.add_argument("--skip-apptainer", action="store_true")
    parser.add_argument("--skip-podman", action="store_true")
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="also run (b) with the plugin imported from DIR, a checkout of an earlier commit "
                             "(git worktree add DIR COMMIT), interleaved with the others: the before/after of a change")
    args = parser.parse_args()
    check_interpreter()
    if args.baseline_tree and not (args.baseline_tree / "pytest_containercheck" / "__init__.py").is_file():
        parser.error(f"--baseline-tree {args.baseline_tree}: no pytest_containercheck/ there; make one with "
                     "'git worktree add DIR COMMIT'")
    image = args.image or full_image()
    sif = None if args.skip_apptainer else full_sif(image)
    print(f"image: {image}\nmachine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"repeat {args.repeat}, interleaved\n")
    timed(["docker", "run", "--rm", "--network", "none", image, "true"])  # warm the page cache for all modes

    modes = {"(a) manual, 3 x docker run": lambda: manual(image),
             "(b) pytest --image (built-in suite)": lambda: plugin([image], mode="b"),
             "(b0) the same, --no-probe-bundles": lambda: plugin([image], "--no-probe-bundles"),
             "(c) floor, 1 container + 1 process": lambda: floor(image),
             "(s) start-up: pytest --image --collect-only": lambda: startup(image)}
    if args.baseline_tree:
        baseline = args.baseline_tree.resolve()
        modes["(bB) (b) with the plugin from --baseline-tree"] = lambda: plugin([image], tree=baseline, mode="bB")
    if sif:
        print(f"sif: {sif}")
        sif_args = [f"--runtime-arg={a}" for a in userns()]
        modes.update({"(d) manual, 3 x apptainer exec": lambda: manual_sif(sif),
                      "(e) pytest --image IMAGE.sif": lambda: plugin([sif], *sif_args, mode="e"),
                      "(e0) the same, --no-probe-bundles": lambda: plugin([sif], *sif_args, "--no-probe-bundles"),
                      "(f1) probes, one apptainer exec each": lambda: probes_exec(sif),
                      "(f2) probes, exec into one instance": lambda: probes_instance(sif)})
        if args.baseline_tree:
            baseline_sif = args.baseline_tree.resolve()
            modes["(eB) (e) with the plugin from --baseline-tree"] = lambda: plugin([sif], *sif_args,
                                                                                   tree=baseline_sif, mode="eB")
    base = None if args.skip_podman else podman_base()
    if base:
        docker_ref, podman_ref = base
        modes.update({"(g) pytest -k system, Docker (base)": lambda: plugin([docker_ref], "-k", "system"),
                      "(h) pytest -k system, Podman (base)": lambda: plugin([f"podman://{podman_ref}"], "-k",
                                                                          "system")})
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
    def m(tag: str) -> float:
        return next(v for k, v in med.items() if k.startswith(f"({tag})"))

    def n_checks(tag: str) -> int:
        return next(v for k, v in checks.items() if k.startswith(f"({tag})"))

    a, b, b0, c = m("a"), m("b"), m("b0"), m("c")
    print(f"start-up (s) = {m('s'):.2f} s  (target <= 0.8 s to the first probe; this is collection without "
          "starting the image)")
    print(f"\n(b)/(a) = {b / a:.2f}  (target <= 0.70, with {n_checks('b')} checks vs {n_checks('a')})")
    print(f"(b)/(c) = {b / c:.2f}  (target <= 0.80)")
    print(f"(b)/(b0) = {b / b0:.2f}  (probe bundles against every probe in its own interpreter)")
    if args.baseline_tree:
        print(f"(b)/(bB) = {b / m('bB'):.2f}  (this tree against {args.baseline_tree})")
    for tag, busy in BUSY.items():
        print(f"({tag}) kept the machine busy {statistics.median(busy):.2f} CPU-seconds (median; every process, "
              f"/proc/stat), {statistics.median(busy) / (os.cpu_count() or 1):.2f} s of wall time on "
              f"{os.cpu_count()} CPUs")
    if sif:
        d, e, e0, f1, f2 = m("d"), m("e"), m("e0"), m("f1"), m("f2")
        print(f"(e)/(b) = {e / b:.2f}  (Apptainer vs Docker, target <= 1.20); (e)/(d) = {e / d:.2f}; "
              f"(e)/(e0) = {e / e0:.2f} (bundles)")
        print(f"(f2)/(f1) = {f2 / f1:.2f}  (instance vs one exec per probe)")
        if args.baseline_tree:
            print(f"(e)/(eB) = {e / m('eB'):.2f}  (this tree against {args.baseline_tree})")
    if base:
        g, h = m("g"), m("h")
        print(f"(h)/(g) = {h / g:.2f}  (Podman vs Docker, same image and rows, target <= 1.30)")
    docker_limit = limit(image, m("s"))
    print(f"  (b) = {b:.2f} s is {b / docker_limit:.2f}x that limit; the limit is {docker_limit / a:.2f}x (a) and "
          f"{docker_limit / c:.2f}x (c)")
    sched = LIMITS["docker scheduled"]
    print(f"  (b) is {b / sched:.2f}x the scheduled limit; that one is {sched / a:.2f}x (a) and {sched / c:.2f}x (c)")
    if sif:
        app_limit = limit_apptainer(sif, m("s"))
        e = m("e")
        print(f"  (e) = {e:.2f} s is {e / app_limit:.2f}x that limit; Apptainer's limit over Docker's: "
              f"{app_limit / docker_limit:.2f}")

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
