"""The users' whole journey, as one test, on a small image: build -> docker save -> the pre-transfer
check of the tar -> apptainer build img.sif docker-archive://img.tar -> the documented Slurm
acceptance (docs/how-to/cluster.md) run on img.sif -> containercheck merge of the build host's and
the cluster's results, which must see one image.  Each step's time is printed (run with -s to see them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import NonRootEnv
from slurm_recipe import submit_recipe

pytestmark = [pytest.mark.slurm, pytest.mark.apptainer, pytest.mark.docker]


@pytest.fixture
def journey_dir() -> Iterator[Path]:
    """A directory the non-root cluster user can read (the SIF goes there)."""
    d = Path(tempfile.mkdtemp(prefix="containercheck-journey-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_build_save_check_convert_accept_merge(base_image: str, apptainer: Any, slurm_node: str,
                                               nonroot_env: NonRootEnv, journey_dir: Path) -> None:
    times: dict[str, float] = {}

    def step(name: str, argv: list[str], ok: tuple[int, ...] = (0,), **kw: Any) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        res = subprocess.run(argv, capture_output=True, text=True, timeout=1800, **kw)
        times[name] = time.monotonic() - t0
        assert res.returncode in ok, f"{name}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
        return res

    tag = f"containercheck-test/journey-{os.getpid()}:1.0"
    try:
        # 1. build (a labelled child of the base test image, so this run's image is its own)
        step("docker build", ["docker", "build", "--quiet", "--tag", tag, "-"],
             input=f"FROM {base_image}\nLABEL org.opencontainers.image.revision=journey-{os.getpid()}\n")
        tar = journey_dir / "img.tar"
        step("docker save", ["docker", "save", "-o", str(tar), tag])
        # 2. the pre-transfer check, on the tar itself
        built = journey_dir / "build-host.json"
        step("pytest --image img.tar", [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", str(tar),
                                        "--verify-archive", "--matrix-json", str(built)], cwd=journey_dir)
        # 3. on the cluster: the users' conversion
        sif = journey_dir / "img.sif"
        step("apptainer build", ["apptainer", "build", str(sif), f"docker-archive://{tar}"])
        sif.chmod(0o644)
        # 4. the acceptance run, as the documented recipe submits it
        t0 = time.monotonic()
        with submit_recipe(sif, slurm_node, nonroot_env) as run:
            times["slurm acceptance"] = time.monotonic() - t0
            cluster = sorted((run.shared / "results").glob("[0-9]*.json"))
            assert len(cluster) == 2, list((run.shared / "results").iterdir())
            for f in cluster:
                shutil.copy(f, journey_dir / f.name)
        # 5. merge the two ends
        merged = step("containercheck merge", [sys.executable, "-m", "pytest_containercheck.cli", "merge",
                                               str(built), *(str(journey_dir / f.name) for f in cluster),
                                               "--json", str(journey_dir / "all.json")], ok=(0, 1), cwd=journey_dir)
    finally:
        subprocess.run(["docker", "rmi", "--force", tag], capture_output=True, timeout=120)
    sys.stderr.write("".join(f"[journey] {name}: {seconds:.1f}s\n" for name, seconds in times.items()))
    data = json.loads((journey_dir / "all.json").read_text())
    (group,) = data["meta"]["same_image"]
    # The build host's tar and both partitions' SIF runs: one image (a hand-built SIF keeps the
    # image's labels, not its digest).
    assert len(group["columns"]) == 3 and group["by"] == "digest+labels", group
    assert {c["column"] for c in group["columns"]} == {"docker-archive://img.tar", "apptainer://img.sif"}
    assert "SAME IMAGE" in merged.stdout
    # GPU rows fail on the GPU-less cluster node (--require-gpu) and skip on the build host: not a
    # pass/fail disagreement; every other row agrees.
    assert group["different_verdicts"] == [], group["different_verdicts"]
