"""The documented Slurm recipe, as a test runs it: the scripts read from docs/how-to/cluster.md,
submitted as the non-root test user on the test cluster (``tests/images/slurm.py``), waited
for, and their jobs' accounting records.  Shared by tests/test_slurm.py and tests/test_journey.py;
the ``slurm_node`` fixture is in conftest.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from helpers import ROOT, NonRootEnv, load_tool

RECIPE_DOC = ROOT / "docs" / "how-to" / "cluster.md"
"""Where the Slurm recipe users copy lives (the README links to it)."""


SECTION = "## On-cluster acceptance with Slurm"


PARTITIONS = ("part-a", "part-b")


WAIT_S = 600.0


SACCT_FIELDS = ("JobID", "JobName", "Partition", "Start", "End", "State", "ExitCode", "NodeList", "User", "WorkDir")


def recipe_scripts(readme: str) -> dict[str, str]:
    """{'acceptance.sbatch': ..., 'submit.sh': ...}: the bash blocks of the docs' Slurm section."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end >= 0 else len(readme)]
    scripts: dict[str, str] = {}
    for block in re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M):
        for name in ("acceptance.sbatch", "submit.sh"):
            if re.search(rf"^# {re.escape(name)}\b", block, re.M):
                assert name not in scripts, f"two blocks of the documented Slurm section say '# {name}'"
                scripts[name] = block
    assert sorted(scripts) == ["acceptance.sbatch", "submit.sh"], f"the Slurm section has only {sorted(scripts)}"
    return scripts


def load_slurm() -> ModuleType:
    """tests/images/slurm.py as a module (the test cluster's provisioning)."""
    return load_tool("slurm")


def slurm_problem(slurm: ModuleType) -> str | None:
    """Why the test cluster cannot be used, or None when its node is usable in both partitions."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm is not installed (run: python3 tests/images/provision.py)"
    parts = slurm.sinfo()
    if not parts:
        return "slurmctld does not answer 'sinfo' (run: python3 tests/images/slurm.py)"
    missing = [p for p in PARTITIONS if not any(s in slurm.USABLE_STATES for _, s in parts.get(p, []))]
    if missing:
        return (f"no usable node in partition(s) {' '.join(missing)}: sinfo says {parts} "
                "(run: python3 tests/images/slurm.py)")
    return None


@dataclasses.dataclass
class RecipeRun:
    """One ``bash submit.sh`` and the jobs it submitted, once none is left in the queue."""

    shared: Path
    node: str
    user: str
    submit: subprocess.CompletedProcess[str]
    jobs: dict[str, dict[str, str]]
    """sacct records (``sacct -c``, job completion data) by job id."""
    seconds: float

    def acceptance(self) -> dict[str, dict[str, str]]:
        """The acceptance jobs by partition."""
        return {j["Partition"]: j for j in self.jobs.values() if j["JobName"] == "containercheck"}

    def merge(self) -> dict[str, str]:
        (job,) = [j for j in self.jobs.values() if j["JobName"] == "containercheck-merge"]
        return job

    def result(self, job_id: str, suffix: str) -> Path:
        return self.shared / "results" / f"{job_id}-{self.node}{suffix}"


def _wrappers(bindir: Path, env: NonRootEnv) -> None:
    """``pytest`` and ``containercheck`` as a venv with the plugin installed would have them."""
    python = env.venv / "bin" / "python"
    bindir.mkdir()
    (bindir / "pytest").write_text(
        f'#!/bin/sh\nPYTHONPATH={env.src} exec {python} -m pytest -p pytest_containercheck.plugin "$@"\n')
    (bindir / "containercheck").write_text(
        f'#!/bin/sh\nPYTHONPATH={env.src} exec {python} -m pytest_containercheck.cli "$@"\n')
    for script in bindir.iterdir():
        script.chmod(0o755)


def queued(user: str, workdir: Path) -> list[str]:
    """Ids of this user's jobs still in the queue that were submitted from *workdir*."""
    res = subprocess.run(["squeue", "--noheader", "--user", user, "--format", "%i %Z"],
                         capture_output=True, text=True, timeout=60, check=True)
    return [line.split()[0] for line in res.stdout.splitlines() if line.split()[1:] == [str(workdir)]]


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    res = subprocess.run(["sacct", "--completion", "--parsable2", "--noheader", "--jobs", ",".join(job_ids),
                          "--format", ",".join(SACCT_FIELDS)], capture_output=True, text=True, timeout=60, check=True)
    records = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in res.stdout.splitlines() if line]
    return {r["JobID"]: r for r in records}


@contextlib.contextmanager
def submit_recipe(image: Path, slurm_node: str, nonroot_env: NonRootEnv) -> Iterator[RecipeRun]:
    """The documented recipe for *image*, submitted as the test user from a fresh directory, run to its end."""
    user = nonroot_env.user
    shared = Path(tempfile.mkdtemp(prefix="containercheck-slurm-"))
    for name, text in recipe_scripts(RECIPE_DOC.read_text()).items():
        (shared / name).write_text(text)
    _wrappers(shared / "bin", nonroot_env)
    for path in [shared, *shared.rglob("*")]:
        shutil.chown(path, user, user)
    env = {"HOME": f"/home/{user}", "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
           "PATH": f"{shared / 'bin'}:/usr/local/bin:/usr/bin:/bin",
           "IMAGE": str(image), "PARTITIONS": " ".join(PARTITIONS),
           # The node has no GPU gres: overrides the script's '#SBATCH --gres=gpu:1'.
           "SBATCH_GRES": "none"}
    started = time.monotonic()
    submit = subprocess.run(["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                             "bash", "submit.sh"], cwd=shared, capture_output=True, text=True, timeout=120)
    seen: set[str] = set()
    try:
        assert submit.returncode == 0, f"submit.sh failed: {submit.stdout}{submit.stderr}"
        deadline = started + WAIT_S
        while waiting := queued(user, shared):
            seen.update(waiting)
            if time.monotonic() > deadline:
                squeue = subprocess.run(["squeue"], capture_output=True, text=True, timeout=60).stdout
                pytest.fail(f"jobs {' '.join(waiting)} still queued after {WAIT_S:.0f}s:\n{squeue}", pytrace=False)
            time.sleep(1.0)
        seconds = time.monotonic() - started
        sys.stderr.write(f"[slurm] submit.sh to the end of the merge job: {seconds:.1f}s\n")
        yield RecipeRun(shared, slurm_node, user, submit, _sacct(sorted(seen, key=int)), seconds)
    finally:
        leftover = queued(user, shared)
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=60, check=False)
        shutil.rmtree(shared, ignore_errors=True)
