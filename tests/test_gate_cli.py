"""``containercheck gate`` and ``diff`` under the gate's rules, on real runs, and the CI recipes of
docs/how-to/ci-gate.md executed as written (issue 28, items 5 and 6).

Two real Docker runs, each a "node" of an on-cluster acceptance: gate-render (its required rows
pass, its own allow-fail label trusted by the repository) and gate-train (its label requires
system.libcuda, which skips on this GPU-less host: a failure).  ``containercheck gate`` on the
merged files must give the same exit code and the same failing cells with the same reasons as
the two pytest runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import FEATURE_REASON, GATE_PYPROJECT, NO_GPU_HOST, OWN_CHECK, ROOT, SYSTEM


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _failing(matrix: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(c["row"], c["column"], c["detail"]) for c in matrix["cells"] if c["status"] in ("fail", "error")}


@pytest.fixture(scope="module")
def two_runs(gate_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each gate image run by pytest on its own (two result files), as two nodes' runs would be."""
    where = tmp_path_factory.mktemp("gate-cli")
    (where / "pyproject.toml").write_text(GATE_PYPROJECT)
    (where / "test_own.py").write_text(OWN_CHECK)
    codes = {}
    for name, ref in gate_images.items():
        res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--image", ref,
                              "--no-builtin-checks", SYSTEM, "test_own.py", "--rootdir", str(where),
                              "--matrix-json", f"{name}.json"], cwd=where, capture_output=True, text=True,
                             timeout=900)
        codes[name] = res.returncode
        assert (where / f"{name}.json").exists(), res.stdout[-3000:] + res.stderr[-2000:]
    return {"where": where, "codes": codes,
            "json": {name: json.loads((where / f"{name}.json").read_text()) for name in gate_images}}


@NO_GPU_HOST
@pytest.mark.docker
def test_gate_on_a_merged_matrix_agrees_with_the_runs(two_runs: dict[str, Any]) -> None:
    where, codes, data = two_runs["where"], two_runs["codes"], two_runs["json"]
    assert codes == {"gate-render": 0, "gate-train": 1}
    for name in ("gate-render", "gate-train"):  # each run alone, as recorded
        res = _cli("gate", f"{name}.json", "--json", f"judged-{name}.json", cwd=where)
        assert res.returncode == codes[name], res.stdout + res.stderr
        assert _failing(json.loads((where / f"judged-{name}.json").read_text())) == _failing(data[name])
    # both, merged by gate itself: the worse of the two, and exactly the runs' failing cells
    expected = _failing(data["gate-render"]) | _failing(data["gate-train"])
    assert {row for row, _, _ in expected} == {"system.libcuda"}
    merged = _cli("gate", "gate-render.json", "gate-train.json", "--json", "all.json", "--md", "all.md", cwd=where)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert _failing(json.loads((where / "all.json").read_text())) == expected
    assert merged.stdout.splitlines()[-1] == "containercheck gate: the gate fails: 1 cell(s) failed or errored"
    assert "required row 'system.libcuda' was skipped (required by image label): host has no NVIDIA GPU" in \
        " ".join(merged.stdout.split())
    # a merge first, then the gate on its file: the same
    subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", "merge", "gate-render.json", "gate-train.json",
                    "--json", "merged.json"], cwd=where, capture_output=True, timeout=300)
    again = _cli("gate", "merged.json", "--json", "again.json", cwd=where)
    assert again.returncode == 1 and _failing(json.loads((where / "again.json").read_text())) == expected
    # judged under the repository's file now: the same verdicts, found again from names and labels
    by_file = _cli("gate", "gate-render.json", "gate-train.json", "--expectations", "pyproject.toml", "--json",
                   "by-file.json", cwd=where)
    assert by_file.returncode == 1 and _failing(json.loads((where / "by-file.json").read_text())) == expected


@NO_GPU_HOST
@pytest.mark.docker
def test_gate_applies_other_expectations_and_its_rules(two_runs: dict[str, Any], tmp_path: Path) -> None:
    where = two_runs["where"]
    # without the trust, gate-render's own allowance is ignored: its failing mine.feature fails
    (tmp_path / "untrusting.toml").write_text("[[image]]\nmatch = '*gate-*'\n")
    res = _cli("gate", str(where / "gate-render.json"), "--expectations", "untrusting.toml", "--json", "u.json",
               cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (cell,) = [c for c in json.loads((tmp_path / "u.json").read_text())["cells"] if c["row"] == "mine.feature"]
    assert (cell["status"], cell["gate"]["ignored"]) == ("fail", [{"source": "image label", "reason": FEATURE_REASON}])
    # an image no table covers: exit 4, as pytest
    (tmp_path / "typo.toml").write_text("[[image]]\nmatch = '*gate-rendr*'\n")
    res = _cli("gate", str(where / "gate-render.json"), "--expectations", "typo.toml", cwd=tmp_path)
    assert res.returncode == 4 and res.stderr.count("\n") == 1
    assert "no table of typo.toml [[image]] matches it" in res.stderr and "closest: *gate-rendr*" in res.stderr
    # --require on every image
    res = _cli("gate", str(where / "gate-render.json"), "--require", "system.libcuda", cwd=tmp_path)
    assert res.returncode == 1 and "required row 'system.libcuda' was skipped (required by --require)" in \
        " ".join(res.stdout.split())
    # an interrupted run cannot pass: exit 2
    data = json.loads((where / "gate-render.json").read_text())
    data["complete"] = False
    (tmp_path / "half.json").write_text(json.dumps(data))
    res = _cli("gate", "half.json", cwd=tmp_path)
    assert res.returncode == 2 and "interrupted" in res.stdout.splitlines()[-1]
    # a file that is not a matrix: one line, exit 4
    os.mkfifo(tmp_path / "fifo.json")
    res = _cli("gate", "fifo.json", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (4, "containercheck: error: fifo.json: a named pipe (FIFO), not a matrix "
                                                "JSON file\n")


@NO_GPU_HOST
@pytest.mark.docker
def test_diff_of_an_allowed_failure_exits_0_and_shows_it(two_runs: dict[str, Any]) -> None:
    """gate-train passes mine.feature (it has /opt/feature); gate-render fails it, as its trusted
    label allows: no regression, listed as an allowed failure with who allowed it."""
    where = two_runs["where"]
    res = _cli("diff", "gate-train.json", "gate-render.json", "--md", "diff.md", cwd=where)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ALLOWED FAILURE    mine.feature: pass -> xfail  no /opt/feature in the image (allowed to fail by image " \
           f"label: {FEATURE_REASON})" in res.stdout
    md = (where / "diff.md").read_text()
    assert "No regressions." in md and "1 allowed failure(s)" in md
    assert "| mine.feature | allowed failure | pass | xfail |" in md
    # --old/--new take the --image value as well as the column id
    merged = _cli("merge", "gate-train.json", "gate-render.json", "--json", "both.json", cwd=where)
    assert (where / "both.json").exists(), merged.stderr
    train, render = (two_runs["json"][n]["columns"][0] for n in ("gate-train", "gate-render"))
    res = _cli("diff", "both.json", "--old", train["spec"], "--new", render["id"], cwd=where)
    assert res.returncode == 0 and "ALLOWED FAILURE" in res.stdout, res.stdout + res.stderr


# -- the CI recipes, as written --------------------------------------------------------------------------

RECIPES = ROOT / "docs" / "how-to" / "ci-gate.md"
USER_PYPROJECT = """
[[tool.containercheck.image]]
match = "team/render:*"
require = ["system.python", "system.os"]
allow-fail = {"system.tls" = "an offline image: no CA certificates (ticket 7)"}
"""


def _recipe(title: str) -> dict[str, Any]:
    import yaml  # transformers' dependency: in the test environment

    text = RECIPES.read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        if block.startswith(f"# {title}"):
            return dict(yaml.safe_load(block))
    raise AssertionError(f"no '# {title}' recipe in {RECIPES}")


def _wheel(tmp: Path) -> Path:
    """The wheel the recipes install, built from this checkout as the docs say."""
    out = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("pytest_containercheck-*.whl")
    return wheel


@pytest.fixture(scope="module")
def user_repo(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A user's repository: its default branch builds the production image (with CA certificates),
    the change builds one without them (system.tls fails, as the repository allows); both gated by
    its pyproject.toml; the wheel kept in ci/wheels.  ``origin`` is a bare clone of it."""
    top = tmp_path_factory.mktemp("recipes")
    src = top / "src"
    src.mkdir()
    wheel = _wheel(top)

    def git(*args: str, cwd: Path = src) -> None:
        subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args], cwd=cwd,
                       check=True, capture_output=True, timeout=120)

    git("init", "-q", "-b", "main")
    (src / "ci" / "wheels").mkdir(parents=True)
    shutil.copy(wheel, src / "ci" / "wheels" / wheel.name)
    (src / "pyproject.toml").write_text(USER_PYPROJECT)
    (src / "Dockerfile").write_text(f"FROM {base_image}\nLABEL org.example.app=render\n")
    git("add", "-A")
    git("commit", "-q", "-m", "production image")
    git("checkout", "-q", "-b", "change")
    (src / "Dockerfile").write_text(f"FROM {base_image}\nLABEL org.example.app=render\n"
                                    "RUN rm -rf /etc/ssl/certs /usr/share/ca-certificates /usr/lib/ssl/cert.pem\n")
    git("commit", "-q", "-am", "an offline image")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True,
                         timeout=120).stdout.strip()
    git("clone", "-q", "--bare", str(src), str(top / "origin.git"), cwd=top)
    return {"top": top, "origin": top / "origin.git", "sha": sha}


def _checkout(repo: dict[str, Any], work: Path) -> None:
    """actions/checkout and GitLab's clone: a shallow clone of the change, ``origin`` the repository."""
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "change", f"file://{repo['origin']}", str(work)],
                   check=True, capture_output=True, timeout=120)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """A CI runner's environment: this machine's, without what would point at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DOCKER_HOST", "COLUMNS")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".tox" not in p and ".venv" not in p)
    return {**env, **extra}


def _cleanup_images(sha: str) -> None:
    subprocess.run(["docker", "rmi", "-f", f"team/render:{sha}", "team/render:prod"], capture_output=True, timeout=120)


@pytest.mark.docker
@pytest.mark.slow
def test_the_github_actions_recipe_runs_as_written(user_repo: dict[str, Any], tmp_path: Path) -> None:
    """Each step as GitHub runs it (``bash -e`` in the checkout, its own ``$GITHUB_STEP_SUMMARY``
    file, ``$GITHUB_PATH`` lines put before ``PATH`` for the later steps, ``if: always()``), and the
    job summary -- every step's summary in order -- holds the matrix and the diff."""
    job = _recipe("GitHub Actions")["jobs"]["gate"]
    work, runner = tmp_path / "workspace", tmp_path / "runner"
    runner.mkdir()
    github_path = runner / "path"
    github_path.touch()
    sha = user_repo["sha"]
    summaries: list[Path] = []
    failed = False
    try:
        for i, step in enumerate(job["steps"]):
            uses = step.get("uses", "")
            if uses.startswith("actions/checkout"):
                _checkout(user_repo, work)
                continue
            if uses.startswith("actions/upload-artifact"):
                pattern = step["with"]["path"]
                assert sorted(p.name for p in work.glob(pattern)) == ["prod.json", "run.json"], step
                continue
            if failed and step.get("if") != "always()":
                continue
            script = step["run"].replace("${{ github.event.repository.default_branch }}", "main")
            assert "${{" not in script, f"an expression the test does not know: {script}"
            summary = runner / f"step-{i}.md"
            summary.touch()
            summaries.append(summary)
            added = [ln for ln in github_path.read_text().splitlines() if ln][::-1]
            env = _clean_env({"GITHUB_SHA": sha, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_PATH": str(github_path),
                              "RUNNER_TEMP": str(runner), "GITHUB_WORKSPACE": str(work), "CI": "true",
                              "GITHUB_ACTIONS": "true"})
            env["PATH"] = ":".join([*added, env["PATH"]])
            res = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=1200)
            assert res.returncode == 0, f"step {step.get('name')!r} failed:\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
            if "--matrix-md" in script:
                assert "## containercheck matrix" in summary.read_text()
            if "containercheck diff" in script:
                assert "### containercheck diff" in summary.read_text()
        job_summary = "\n".join(p.read_text() for p in summaries)
        assert job_summary.index("## containercheck matrix") < job_summary.index("### containercheck diff")
        assert "system.tls" in job_summary and "allowed failure" in job_summary
        run = json.loads((work / "run.json").read_text())
        (tls,) = [c for c in run["cells"] if c["row"] == "system.tls"]
        assert tls["status"] == "xfail", tls
    finally:
        _cleanup_images(sha)


@pytest.mark.docker
@pytest.mark.slow
def test_the_gitlab_ci_recipe_runs_as_written(user_repo: dict[str, Any], tmp_path: Path) -> None:
    """The script lines as GitLab runs them (one shell, stopping at the first failure), with its
    variables (``CI_COMMIT_SHA``, ``CI_DEFAULT_BRANCH``; ``DOCKER_HOST`` left to this machine's
    engine instead of the ``docker:dind`` service); ``gate.md`` holds the matrix, then the diff."""
    job = _recipe("GitLab CI")["gate"]
    work = tmp_path / "build"
    _checkout(user_repo, work)
    sha = user_repo["sha"]
    variables = {k: str(v) for k, v in job.get("variables", {}).items() if k != "DOCKER_HOST"}
    # A runner's container has its own dpkg; on this machine another process may hold the lock for a
    # while (another test's or a person's apt-get): apt waits for it instead of failing at once.
    apt_conf = tmp_path / "apt.conf"
    apt_conf.write_text('DPkg::Lock::Timeout "900";\n')
    env = _clean_env({**variables, "CI_COMMIT_SHA": sha, "CI_DEFAULT_BRANCH": "main", "CI": "true",
                      "GITLAB_CI": "true", "APT_CONFIG": str(apt_conf)})
    script = "\n".join(job["script"])
    # A GitLab job starts in a new container; on this machine, what an earlier run of the recipe left
    # in the paths it names (its venv, the baseline's worktree) goes first, as a fresh runner has none.
    scratch = [Path(p) for p in re.findall(r"(/tmp/[\w.-]+)", script)]
    for path in scratch:
        shutil.rmtree(path, ignore_errors=True)
    try:
        res = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work, env=env,
                             capture_output=True, text=True, timeout=2400)
        assert res.returncode == 0, f"{res.stdout[-5000:]}\n{res.stderr[-3000:]}"
        for path in job["artifacts"]["paths"]:
            assert (work / path).stat().st_size > 0, path
        assert (work / job["artifacts"]["reports"]["junit"]).exists()
        md = (work / "gate.md").read_text()
        assert md.startswith("## containercheck matrix") and md.index("## containercheck matrix") < \
            md.index("### containercheck diff"), md[:400]
        assert "allowed failure" in md
    finally:
        _cleanup_images(sha)
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
