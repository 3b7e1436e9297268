"""The README's Slurm recipe, run as written on a real Slurm cluster, as a non-root user, with a SIF.

``acceptance.sbatch`` and ``submit.sh`` are read from README.md (the two ``bash`` blocks of
"On-cluster acceptance with Slurm", found by their ``# acceptance.sbatch`` / ``# submit.sh``
lines), so the documentation cannot drift from what is tested.  The cluster is the one
``tests/images/slurm.py`` starts: this machine as its only node, in two partitions ``part-a``
and ``part-b``, no GPUs.  ``bash submit.sh`` runs as the test user (``runuser``) in a fresh
directory of its own, with ``IMAGE`` the base test image's SIF and ``PARTITIONS="part-a
part-b"``; the jobs find ``pytest`` and ``containercheck`` on their PATH (``--export=ALL``):
two wrapper scripts that run the test user's venv with the world-readable copy of the plugin.

The node has no GPU gres, so ``#SBATCH --gres=gpu:1`` would be refused ("Invalid generic
resource (gres) specification"): ``SBATCH_GRES=none`` in the environment overrides it (sbatch's
input environment variables take precedence over ``#SBATCH`` lines), and the script runs unchanged.

All of it is one test (one submission, also under ``pytest -n 2``).  The test beside it checks,
without Slurm, that two jobs on one node stay two columns with their own Slurm ids when merged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import ROOT, NonRootEnv, load_tool
from test_plugin import ONLY_SYSTEM

pytestmark = [pytest.mark.slurm]

README = ROOT / "README.md"
SECTION = "## On-cluster acceptance with Slurm"
PARTITIONS = ("part-a", "part-b")
WAIT_S = 600.0
#: The rows --require-gpu must fail on a node without a GPU (host fault), whatever the image.
GPU_ROWS = ("system.gpu_devices", "system.nvidia_smi", "system.libcuda")
SACCT_FIELDS = ("JobID", "JobName", "Partition", "Start", "End", "State", "ExitCode", "NodeList", "User", "WorkDir")


def recipe_scripts(readme: str) -> dict[str, str]:
    """{'acceptance.sbatch': ..., 'submit.sh': ...}: the README's bash blocks of the Slurm section."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end >= 0 else len(readme)]
    scripts: dict[str, str] = {}
    for block in re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M):
        for name in ("acceptance.sbatch", "submit.sh"):
            if re.search(rf"^# {re.escape(name)}\b", block, re.M):
                assert name not in scripts, f"two blocks of the README's Slurm section say '# {name}'"
                scripts[name] = block
    assert sorted(scripts) == ["acceptance.sbatch", "submit.sh"], f"README's Slurm section has only {sorted(scripts)}"
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


@pytest.fixture(scope="session")
def slurm_node() -> str:
    """The test cluster's node name; fails under CI=true (skips elsewhere) when the cluster is not there."""
    slurm = load_slurm()
    problem = slurm_problem(slurm)
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Slurm is required under CI=true: {problem}", pytrace=False)
        pytest.skip(problem)
    return str(slurm.node_name(slurm.node_line()))


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


def _queued(user: str, workdir: Path) -> list[str]:
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
    """The README's recipe for *image*, submitted as the test user from a fresh directory, run to its end."""
    user = nonroot_env.user
    shared = Path(tempfile.mkdtemp(prefix="containercheck-slurm-"))
    for name, text in recipe_scripts(README.read_text()).items():
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
        while queued := _queued(user, shared):
            seen.update(queued)
            if time.monotonic() > deadline:
                squeue = subprocess.run(["squeue"], capture_output=True, text=True, timeout=60).stdout
                pytest.fail(f"jobs {' '.join(queued)} still queued after {WAIT_S:.0f}s:\n{squeue}", pytrace=False)
            time.sleep(1.0)
        seconds = time.monotonic() - started
        sys.stderr.write(f"[slurm] submit.sh to the end of the merge job: {seconds:.1f}s\n")
        yield RecipeRun(shared, slurm_node, user, submit, _sacct(sorted(seen, key=int)), seconds)
    finally:
        leftover = _queued(user, shared)
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=60, check=False)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def recipe(slurm_node: str, nonroot_env: NonRootEnv, base_sif: Path) -> Iterator[RecipeRun]:
    """The README's recipe on the base test image's SIF."""
    with submit_recipe(base_sif, slurm_node, nonroot_env) as run:
        yield run


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _logs(run: RecipeRun) -> str:
    return "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n"
                   for p in sorted((run.shared / "results").glob("*.log")))


def test_readme_recipe_runs_on_slurm_as_a_non_root_user(recipe: RecipeRun) -> None:
    # One test, one submission: under pytest -n 2 a fixture shared by several tests would run on both workers.
    _check_jobs(recipe)
    _check_reports(recipe)
    _check_gpu_rows(recipe)
    _check_merge(recipe)
    _check_nothing_left(recipe)


def _check_jobs(recipe: RecipeRun) -> None:
    """submit.sh submitted one job per partition and a merge job; all ended by themselves, as the user."""
    assert re.fullmatch(r"\d+\n", recipe.submit.stdout), recipe.submit.stdout + recipe.submit.stderr
    merge_id = recipe.submit.stdout.strip()
    assert len(recipe.jobs) == 3 and merge_id in recipe.jobs, recipe.jobs
    assert sorted(recipe.acceptance()) == sorted(PARTITIONS), recipe.jobs
    assert recipe.merge()["JobID"] == merge_id
    for job in recipe.jobs.values():
        # Not cancelled, not out of time; on this node, as the test user.
        assert job["State"] in ("COMPLETED", "FAILED"), job
        assert job["NodeList"] == recipe.node and job["User"].split("(")[0] == recipe.user, job


def _check_reports(recipe: RecipeRun) -> None:
    """Each partition's job wrote its JSON, HTML and JUnit files, with its Slurm ids in the host facts."""
    for partition, job in recipe.acceptance().items():
        job_id = job["JobID"]
        for suffix in (".json", ".html", ".xml"):
            assert recipe.result(job_id, suffix).stat().st_size > 0, _logs(recipe)
        assert (recipe.shared / "results" / f"{job_id}.log").exists()
        data = _json(recipe.result(job_id, ".json"))
        key = f"{recipe.node} (job {job_id})"  # the run's host: the node, and the job on it
        host = data["hosts"][key]
        assert host["hostname"] == recipe.node
        # The Slurm ids of the job and the node, as hostinfo.py records them from the job's environment.
        assert host["slurm"]["SLURM_JOB_ID"] == job_id
        assert host["slurm"]["SLURM_JOB_PARTITION"] == partition
        assert host["slurm"]["SLURMD_NODENAME"] == recipe.node
        (column,) = data["columns"]
        assert column["runtime"] == "apptainer" and column["host"] == key
        assert column["facts"]["launch"]["instance"].startswith("containercheck-")
        # The image really ran under apptainer as the test user: its home is the user's.
        cells = {c["row"]: c for c in data["cells"]}
        assert {cells[r]["status"] for r in ("system.python", "system.os", "system.writable_cache")} == {"pass"}
        assert f"home /home/{recipe.user}" in cells["system.writable_cache"]["detail"]
        cases = list(ET.parse(recipe.result(job_id, ".xml")).getroot().iter("testcase"))
        assert len(cases) == len(cells), (len(cases), len(cells))


def _check_gpu_rows(recipe: RecipeRun) -> None:
    """--require-gpu failed the GPU rows as host faults (this node has no GPU), and nothing else failed."""
    for job in recipe.acceptance().values():
        assert job["State"] == "FAILED" and job["ExitCode"] == "1:0", job  # pytest exit 1: checks failed
        cells = {c["row"]: c for c in _json(recipe.result(job["JobID"], ".json"))["cells"]}
        failed = {r: c for r, c in cells.items() if c["status"] in ("fail", "error")}
        assert set(GPU_ROWS) <= set(failed), failed
        for cell in failed.values():
            assert cell["fault"] == "host" and cell["detail"].startswith("--require-gpu:"), cell
        props = {
            (case.get("name"), p.get("name")): p.get("value")
            for case in ET.parse(recipe.result(job["JobID"], ".xml")).getroot().iter("testcase")
            for p in case.iter("property")
        }
        gpu_cases = [name for (name, prop), value in props.items()
                     if prop == "containercheck.row" and value in GPU_ROWS]
        assert len(gpu_cases) == len(GPU_ROWS), props
        for name in gpu_cases:
            assert props[(name, "containercheck.status")] == "fail"
            assert props[(name, "containercheck.fault")] == "host"


def _check_merge(recipe: RecipeRun) -> None:
    """The merge job started after both had ended and wrote the merged matrix."""
    merge = recipe.merge()
    ends = [job["End"] for job in recipe.acceptance().values()]
    assert merge["Start"] >= max(ends), (merge, ends)  # sacct's ISO 8601 local times compare as strings
    assert (recipe.shared / "results" / f"merge-{merge['JobID']}.log").exists()
    # 'containercheck merge' exits 1 when a cell failed (the GPU rows here).
    assert merge["ExitCode"] == "1:0", _logs(recipe)
    for name in ("matrix.html", "matrix.md", "matrix.json"):
        assert (recipe.shared / name).stat().st_size > 0, _logs(recipe)
    data = _json(recipe.shared / "matrix.json")
    acceptance = recipe.acceptance()
    assert sorted(data["meta"]["merged_from"]) == sorted(f"results/{j['JobID']}-{recipe.node}.json"
                                                         for j in acceptance.values())
    # One column per partition run, each with the node's facts and its own job's Slurm ids.
    hosts = {f"{recipe.node} (job {j['JobID']})": partition for partition, j in acceptance.items()}
    assert sorted(c["host"] for c in data["columns"]) == sorted(hosts)
    for key, partition in hosts.items():
        host = data["hosts"][key]
        assert host["hostname"] == recipe.node
        assert host["slurm"]["SLURM_JOB_ID"] == acceptance[partition]["JobID"]
        assert host["slurm"]["SLURM_JOB_PARTITION"] == partition
        assert f"job {host['slurm']['SLURM_JOB_ID']} on {recipe.node}" in (recipe.shared / "matrix.html").read_text()
    statuses = {(c["row"], c["host"]): c["status"] for c in data["cells"]}
    assert all(statuses[("system.gpu_devices", key)] == "fail" for key in hosts)


def _check_nothing_left(recipe: RecipeRun) -> None:
    """No job in the queue, no apptainer instance of the user from these runs, no private home left."""
    assert _queued(recipe.user, recipe.shared) == []
    run_ids = [_json(recipe.result(j["JobID"], ".json"))["meta"]["run_id"] for j in recipe.acceptance().values()]
    listed = subprocess.run(["runuser", "-u", recipe.user, "--", "apptainer", "instance", "list", "--json"],
                            capture_output=True, text=True, timeout=60)
    instances = [str(i["instance"]) for i in json.loads(listed.stdout or "{}").get("instances") or []]
    assert not [i for i in instances if any(f"-{r}-" in i for r in run_ids)], instances
    for job in recipe.acceptance().values():
        command = _json(recipe.result(job["JobID"], ".json"))["columns"][0]["facts"]["launch"]["command"]
        home = command[command.index("--home") + 1].split(":", 1)[0]
        assert not Path(home).exists(), f"the job's private home {home} was left behind"


def test_merge_keeps_the_slurm_ids_of_two_jobs_on_one_node(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # What the recipe does when two partitions share a node, without Slurm: two runs on this host, each
    # with its own job's variables, then 'containercheck merge'.  Each job's ids should survive the merge.
    for job_id, partition in (("101", "part-a"), ("102", "part-b")):
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
        monkeypatch.setenv("SLURM_JOB_PARTITION", partition)
        monkeypatch.setenv("SLURMD_NODENAME", "node1")
        result = pytester.runpytest_subprocess("--image", "host", "--matrix-json", f"{job_id}.json", *ONLY_SYSTEM)
        if result.ret != 0:  # not an AssertionError: only the expected failure below may be the xfail
            pytest.fail(result.stdout.str()[-2000:])
    merged = subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", "merge", "101.json", "102.json",
                             "--json", "matrix.json"], cwd=pytester.path, capture_output=True, text=True, timeout=120)
    if merged.returncode != 0:
        pytest.fail(merged.stdout + merged.stderr)
    data = _json(pytester.path / "matrix.json")
    if _values(_json(pytester.path / "101.json"), "SLURM_JOB_ID") != {"101"}:
        pytest.fail("hostinfo.py no longer records SLURM_JOB_ID in the host facts")
    assert _values(data, "SLURM_JOB_ID") == {"101", "102"}, data["hosts"]


def _values(obj: Any, key: str) -> set[str]:
    """Every value of *key* anywhere in a JSON document."""
    if isinstance(obj, dict):
        return {str(v) for k, v in obj.items() if k == key} | {x for v in obj.values() for x in _values(v, key)}
    if isinstance(obj, list):
        return {x for v in obj for x in _values(v, key)}
    return set()
