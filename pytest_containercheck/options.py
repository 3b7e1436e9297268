"""The command-line options, their ini mirrors and parsers, and what they add up to.

Every option is one :class:`Option` record in :data:`OPTIONS`; :func:`value` reads it
(command line first, then ini, through the option's own parser), and :func:`read` turns
the lot into the run's targets, :class:`~.runtimes.LaunchOptions` and
:class:`~.policy.CheckOptions`, raising :class:`pytest.UsageError` (or the engine's
:class:`~.engine.errors.UsageProblem`, which ``plugin.pytest_configure`` turns into one) with a
one-line fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest

from . import junit, require
from .engine import gpumap, probing, scheduling
from .engine.archives import ArchiveError, inspect_archive
from .engine.expectations import find_pyproject
from .engine.outputs import Output, check_directory, check_named, check_outputs, is_step_summary
from .engine.policy import CheckOptions
from .engine.runtimes import LaunchOptions, Target, get_runtime, runtime_names
from .engine.targets import Targets, read_targets
from .hints import usage_error

MAX_PROBE_TIMEOUT = 24 * 3600
"""Seconds: no probe may outlive its container (whose lifetime is bounded by as much)."""
MAX_PROBE_JOBS = 256


def _positive_float(value: str) -> float:
    try:
        f = float(value)
    except (ValueError, OverflowError):
        f = math.nan
    # Finite and bounded: inf or nan would reach the probe's in-image watchdog (signal.alarm)
    # and every probe would fail instead of this one line.
    if not math.isfinite(f) or f <= 0 or f > MAX_PROBE_TIMEOUT:
        raise usage_error(f"--probe-timeout {value!r}: give a number of seconds > 0 and at most "
                          f"{MAX_PROBE_TIMEOUT}, e.g. --probe-timeout 600")
    return f


def _whole(value: str) -> int | None:
    """*value* as a non-negative whole number in ASCII digits (``²`` and 5000-digit strings are not)."""
    v = value.strip()
    return int(v) if v.isascii() and v.isdigit() and len(v) <= 6 else None


def _positive_int(value: str) -> int:
    n = _whole(value)
    if n is None or not 1 <= n <= MAX_PROBE_JOBS:
        raise usage_error(f"--probe-jobs {value!r}: give a whole number from 1 to {MAX_PROBE_JOBS}, "
                          "e.g. --probe-jobs 2")
    return n


def _gpus(value: str) -> str:
    v = value.strip()
    if v in ("all", "none") or _whole(v) is not None or (v.startswith("device=") and v.isascii()
                                                          and v != "device=" and " " not in v):
        return v
    raise usage_error(f"--gpus {value!r}: use 'all', 'none', a count like 2, or 'device=0,1'")


def _choice(option: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise usage_error(f"{option} {value!r}: choose one of {', '.join(choices)}")
        return value
    parse.__name__ = option.lstrip("-").replace("-", "_")
    return parse


_RUNTIMES = ("auto", *runtime_names())
_UPDATE = ("missing", "failed", "all")
_APPTAINER_GPU = ("nv", "nvccli", "rocm", "none")

class Option(NamedTuple):
    """One command-line option and its ini mirror."""

    flag: str
    dest: str
    ini: str
    ini_type: Literal["string", "paths", "pathlist", "args", "linelist", "bool"] | None
    """How pytest reads the ini value; None: a string, parsed by ``kwargs["type"]`` when given."""
    default: Any
    """The ini default, used when neither the command line nor the ini file sets it."""
    kwargs: dict[str, Any]
    """argparse keywords: ``action``, ``type`` (a parser raising UsageError), ``metavar``."""
    help: str


OPTIONS: list[Option] = [
    Option("--image", "cc_images", "containercheck_images", "args", [], {"action": "append", "metavar": "REF"},
     "image to check (repeatable): 'host', a .sif path, an image reference, or with a docker://, "
     "podman://, apptainer:// prefix"),
    Option("--runtime", "cc_runtime", "containercheck_runtime", None, "auto",
     {"type": _choice("--runtime", _RUNTIMES), "metavar": "NAME"},
     f"runtime for every --image ({', '.join(_RUNTIMES)}); default: detect from the image"),
    Option("--gpus", "cc_gpus", "containercheck_gpus", None, None, {"type": _gpus, "metavar": "VALUE"},
     "GPUs for Docker/Podman (--gpus value; 'none' disables GPU flags for every runtime); default all, "
     "or none on a host without a GPU for this run (where the GPU rows skip)"),
    Option("--apptainer-gpu", "cc_apptainer_gpu", "containercheck_apptainer_gpu", None, None,
     {"type": _choice("--apptainer-gpu", _APPTAINER_GPU), "metavar": "FLAG"},
     "Apptainer GPU support: nv (--nv, default), nvccli (--nv --nvccli), rocm (default on an AMD host), none"),
    Option("--require-gpu", "cc_require_gpu", "containercheck_require_gpu", "bool", False, {"action": "store_true"},
     "fail GPU checks instead of skipping them when the host has no GPU (CI gate on GPU runners)"),
    Option("--require-hw-render", "cc_require_hw_render", "containercheck_require_hw_render", "bool", False,
     {"action": "store_true"}, "fail render checks that ran on a software renderer (llvmpipe)"),
    Option("--require", "cc_require", "containercheck_require", "args", [], {"action": "append", "metavar": "ROW"},
     "matrix row that must pass: a skip or absence fails the run (repeatable), e.g. torch.cuda"),
    Option("--expectations", "cc_expectations", "containercheck_expectations", "paths", [], {"metavar": "FILE"},
     "TOML file of per-image expectations ([[image]] tables: match, require, allow-fail, intent, "
     "trust-image-allowances); default: [tool.containercheck] of the repository's pyproject.toml (the nearest "
     "with that table from where pytest runs, up to the repository's top)"),
    Option("--probe-timeout", "cc_probe_timeout", "containercheck_probe_timeout", None, "300",
     {"type": _positive_float, "metavar": "SECONDS"},
     "seconds one probe may run before it is killed inside the image; default 300"),
    Option("--runtime-arg", "cc_runtime_args", "containercheck_runtime_args", "args", [],
     {"action": "append", "metavar": "ARG"},
     "extra flag for 'docker run' / 'apptainer exec' (repeatable; use --runtime-arg=--flag=value)"),
    Option("--container-python", "cc_container_python", "containercheck_container_python", None, None,
     {"metavar": "PATH"}, "interpreter inside the image; default: try python3, then python"),
    Option("--host-python", "cc_host_python", "containercheck_host_python", None, None, {"metavar": "PATH"},
     "interpreter for --image host; default: the one running pytest"),
    Option("--container-env", "cc_container_env", "containercheck_container_env", "args", [],
     {"action": "append", "metavar": "NAME[=VALUE]"},
     "pass a variable into the image (repeatable); host variables are not passed unless named. Each is a launch "
     "difference the report lists; one the GPU stack reads (NVIDIA_DRIVER_CAPABILITIES, ...) emulates a "
     "deployment's environment, and a failure it causes is the deployment's"),
    Option("--network", "cc_network", "containercheck_network", None, "none", {"metavar": "MODE"},
     "Docker/Podman network for the container; default none (no network)"),
    Option("--matrix-json", "cc_matrix_json", "containercheck_matrix_json", None, None, {"metavar": "PATH"},
     "write the compatibility matrix as JSON (its schema: the docs' page \"Matrix JSON schema\")"),
    Option("--matrix-md", "cc_matrix_md", "containercheck_matrix_md", None, None, {"metavar": "PATH"},
     "write the matrix as compact Markdown for a CI job summary (e.g. $GITHUB_STEP_SUMMARY, which is "
     "appended to, never replaced)"),
    Option("--matrix-md-append", "cc_matrix_md_append", "containercheck_matrix_md_append", "bool", False,
     {"action": "store_true"}, "append the --matrix-md Markdown to the file instead of replacing it (always so "
     "for the file named by $GITHUB_STEP_SUMMARY)"),
    Option("--matrix-html", "cc_matrix_html", "containercheck_matrix_html", None, None, {"metavar": "PATH"},
     "write the matrix as one self-contained HTML page (evidence and render images inline)"),
    Option("--artifacts-dir", "cc_artifacts_dir", "containercheck_artifacts_dir", None, "containercheck-artifacts",
     {"metavar": "DIR"}, "where failing checks save images and diffs; default ./containercheck-artifacts"),
    Option("--baseline-dir", "cc_baseline_dir", "containercheck_baseline_dir", None, None, {"metavar": "DIR"},
     "directory of render baselines, looked up before the shipped ones"),
    Option("--update-baselines", "cc_update_baselines", "containercheck_update_baselines", None, None,
     {"type": _choice("--update-baselines", _UPDATE), "metavar": "WHICH"},
     "write render baselines for this renderer: missing, failed or all"),
    Option("--hf-model", "cc_hf_model", "containercheck_hf_model", None, None, {"metavar": "PATH"},
     "a transformers model directory inside the image to run instead of the tiny built-in model"),
    Option("--probe-jobs", "cc_probe_jobs", "containercheck_probe_jobs", None, None,
     {"type": _positive_int, "metavar": "N"},
     "probes run at once per image (default: CPU count, at most 4; 1 = one by one, on demand)"),
    Option("--no-probe-bundles", "cc_no_bundles", "containercheck_no_probe_bundles", "bool", False,
     {"action": "store_true"}, "run every probe in its own interpreter, even those that share heavy imports "
     "(torch; pyvista/VTK), which otherwise import them once and fork"),
    Option("--probe-dir", "cc_probe_dirs", "containercheck_probe_dirs", "paths", [],
     {"action": "append", "metavar": "DIR"},
     "directory of your own probes (NAME.py defining run(params, ctx)), for container.probe(NAME)"),
    Option("--no-builtin-checks", "cc_no_builtin", "containercheck_no_builtin_checks", "bool", False,
     {"action": "store_true"}, "do not collect the built-in checks; run only your own container tests"),
    Option("--verify-archive", "cc_verify_archive", "containercheck_verify_archive", "bool", False,
     {"action": "store_true"}, "for image archives (docker save / OCI tars): also hash every layer and config "
     "against its digest before anything starts (always checked: complete, nothing missing; always hashed "
     "under Apptainer, whose SIF cache is keyed by those digests)"),
    Option("--keep-loaded-images", "cc_keep_loaded", "containercheck_keep_loaded_images", "bool", False,
     {"action": "store_true"}, "keep the images this run loaded from archives into Docker/Podman (default: "
     "removed at the end)"),
    Option("--junit-names", "cc_junit_names", "containercheck_junit_names", None, "row",
     {"type": _choice("--junit-names", junit.MODES), "metavar": "STYLE"},
     "names of --junitxml test cases: row ('system.python [docker://img:1.4]', default) or pytest "
     "(the node id's, 'test_python[docker://img:1.4]')"),
]


COMMANDS: list[Option] = [
    Option("--containercheck-rows", "cc_list_rows", "", None, False, {"action": "store_true"},
     "list every row (built-in, and your own checks in the paths given) with what it proves, and exit; "
     "the names -k and --require take"),
]
"""Options that do something else instead of a run (like ``--markers``): no ini mirror."""


def add_options(parser: pytest.Parser) -> None:
    """Register every option in one ``containercheck`` group, each with its ini mirror."""
    group = parser.getgroup("containercheck", "container image checks (pytest-containercheck)")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, default=None, help=opt.help, **opt.kwargs)
        parser.addini(opt.ini, help=f"default for {opt.flag}", type=opt.ini_type, default=opt.default)
    for opt in COMMANDS:
        group.addoption(opt.flag, dest=opt.dest, default=False, help=opt.help, **opt.kwargs)


_BY_DEST = {opt.dest: opt for opt in OPTIONS}


def value(config: pytest.Config, dest: str) -> Any:
    """Command line first, ini second; ini strings go through the option's own parser."""
    opt = _BY_DEST[dest]
    got = config.getoption(dest)
    if got not in (None, []):
        return got
    got = config.getini(opt.ini)
    if opt.ini_type is None and got is not None and "type" in opt.kwargs:
        return opt.kwargs["type"](str(got))
    return got


def images(config: pytest.Config) -> list[str]:
    """The ``--image`` values (empty: the plugin stays out of the way)."""
    return list(value(config, "cc_images") or [])


def expectations_file(config: pytest.Config) -> tuple[str, str, bool] | None:
    """The repository's expectations: ``(path, name shown, is a pyproject.toml)`` of the file
    ``--expectations`` names (relative to the current directory; the ini key's, to the ini file),
    else of the repository's ``pyproject.toml`` (:func:`~.engine.expectations.find_pyproject`: found from
    where pytest runs, not from pytest's rootdir, which a path given to a plugin's option can move
    above the checkout), else None."""
    given = config.getoption("cc_expectations")
    if given is not None:
        check_named("--expectations", str(given))
        return str(given), str(given), False
    paths = config.getini("containercheck_expectations") or []
    if len(paths) > 1:
        raise usage_error(f"containercheck_expectations: {len(paths)} paths; give one TOML file")
    if paths:
        return str(paths[0]), str(paths[0]), False
    found = find_pyproject(config.invocation_params.dir, config.inipath)
    if found is None:
        return None
    here = config.invocation_params.dir
    shown = "pyproject.toml" if found.parent == here else os.path.relpath(found, here)
    return str(found), shown, True


def md_append(config: pytest.Config, path: str) -> bool:
    """Whether ``--matrix-md`` appends to *path*: ``--matrix-md-append``, or the job summary file."""
    return bool(value(config, "cc_matrix_md_append")) or is_step_summary(path)


def gpus_for_host(launch: LaunchOptions, host: Mapping[str, Any]) -> None:
    """No GPU request on a host without a GPU for this run, unless ``--gpus`` or
    ``--apptainer-gpu`` was given; AMD's devices (and ``--rocm`` unless ``--apptainer-gpu`` was
    given) on a host whose GPU is AMD's.

    Every GPU row skips on such a host whatever the image was started with (see
    ``Container.gpu_expected``), so a request (refused by Docker and Podman without the
    NVIDIA toolkit, warned about by ``apptainer --nv``) only costs the start time.
    """
    if launch.gpus_auto and not host.get("has_gpu"):
        launch.gpus = "none"
        launch.gpus_why = f"not requested: {host.get('gpu_summary') or 'host has no GPU'}; --gpus all requests it"
    elif launch.gpus_auto:
        job = slurm_gpus(host.get("slurm") or {})
        if job is not None:
            launch.job_gpus, launch.job_gpus_from = job[1], job[0]
            mapped = gpumap.map_job_gpus(job[1], job[0], host.get("job_gpus") or {},
                                         str(host.get("gpu_vendor") or "nvidia"))
            launch.job_devices, launch.job_gpus_how, launch.job_gpus_problem = (mapped.devices, mapped.how,
                                                                                mapped.problem)
    if host.get("gpu_vendor") == "amd":
        # AMD's devices, not NVIDIA's: /dev/kfd and /dev/dri for Docker/Podman, --rocm for Apptainer.
        launch.gpu_vendor = "amd"
        if launch.apptainer_gpu_auto:
            launch.apptainer_gpu = "rocm"


def slurm_gpus(slurm: Mapping[str, Any]) -> tuple[str, str] | None:
    """(variable, ids) of the GPUs Slurm gave this job step (``SLURM_STEP_GPUS``) or job
    (``SLURM_JOB_GPUS``): "the global GPU IDs ... not relative to any device cgroup" (Slurm's
    srun(1) and sbatch(1), OUTPUT ENVIRONMENT VARIABLES), which is what ``docker --gpus
    device=`` and CDI names take; None outside a GPU job."""
    for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        # Whatever it holds (numbers, or UUIDs a site's prolog may write): :func:`gpumap.map_job_gpus`
        # reads it, and one it cannot read selects no GPU, never every GPU of the node.
        ids = str(slurm.get(name) or "").strip()
        if ids:
            return name, ids
    return None


def checks_for_host(checks: CheckOptions, host: Mapping[str, Any]) -> CheckOptions:
    """*checks* with what the host's GPUs demand of the probe schedule: GPU probes one at a time when
    a GPU is in an exclusive compute mode (:func:`~.engine.scheduling.exclusive_gpus`)."""
    why = scheduling.exclusive_gpus(host)
    return dataclasses.replace(checks, serial_gpu_probes=why) if why else checks


def read(config: pytest.Config) -> tuple[Targets, LaunchOptions, CheckOptions]:
    """The run's targets (and the images named twice) and options; :class:`pytest.UsageError` or
    :class:`~.engine.errors.UsageProblem` on bad input."""
    runtime = value(config, "cc_runtime")
    oci_default = "docker" if shutil.which("docker") or not shutil.which("podman") else "podman"
    given = read_targets(images(config), runtime, oci_default)
    targets = given.targets
    launch = LaunchOptions(
        run_id="", gpus=value(config, "cc_gpus") or "all",
        gpus_auto=not value(config, "cc_gpus") and not value(config, "cc_apptainer_gpu"),
        apptainer_gpu=value(config, "cc_apptainer_gpu") or "nv",
        apptainer_gpu_auto=not value(config, "cc_apptainer_gpu"),
        network=value(config, "cc_network"), runtime_args=tuple(value(config, "cc_runtime_args") or ()),
        env=_container_env(list(value(config, "cc_container_env") or [])),
        host_python=value(config, "cc_host_python"), keep_loaded=bool(value(config, "cc_keep_loaded")),
    )
    for name in dict.fromkeys(t.runtime for t in targets):
        get_runtime(name).check_options(launch)
    cpy = value(config, "cc_container_python")
    checks = CheckOptions(
        require_gpu=bool(value(config, "cc_require_gpu")),
        require_hw_render=bool(value(config, "cc_require_hw_render")),
        probe_timeout=float(value(config, "cc_probe_timeout")),
        artifacts_dir=str(value(config, "cc_artifacts_dir")),
        baseline_dir=value(config, "cc_baseline_dir"),
        update_baselines=value(config, "cc_update_baselines"),
        hf_model=value(config, "cc_hf_model"),
        container_python=(cpy,) if cpy else ("python3", "python"),
        probe_jobs=value(config, "cc_probe_jobs") or _default_probe_jobs(config),
        probe_dirs=tuple(str(Path(d).resolve()) for d in (value(config, "cc_probe_dirs") or [])),
        probe_bundles=not value(config, "cc_no_bundles"),
        keep_render_images=bool(value(config, "cc_matrix_html")),
        required_rows=require.parse(value(config, "cc_require") or []),
    )
    if checks.baseline_dir is not None:
        check_named("--baseline-dir", checks.baseline_dir)
    if checks.update_baselines and not checks.baseline_dir:
        raise usage_error(
            "--update-baselines needs --baseline-dir DIR: baselines are never written into the installed package")
    if checks.baseline_dir is not None:
        check_directory("--baseline-dir", checks.baseline_dir, create=bool(checks.update_baselines))
    _check_probe_dirs(checks.probe_dirs, list(value(config, "cc_probe_dirs") or []))
    if not hasattr(config, "workerinput"):  # the controller writes the reports
        output_paths(config)
    return given, launch, checks


_REPORTS = (("--matrix-json", "cc_matrix_json", ".json"), ("--matrix-md", "cc_matrix_md", ".md"),
            ("--matrix-html", "cc_matrix_html", ".html"))


def output_paths(config: pytest.Config) -> dict[str, str]:
    """Every report file of the run (flag -> absolute path), checked before anything starts
    (:func:`~.engine.outputs.check_outputs`: two reports on one path would overwrite each other)."""
    # An empty value is given, not absent: check_outputs refuses it (an unset variable in a CI script).
    given = [Output(flag, str(value(config, dest)), suffix) for flag, dest, suffix in _REPORTS
             if value(config, dest) is not None]
    check_named("--artifacts-dir", str(value(config, "cc_artifacts_dir")))
    xmlpath = getattr(config.option, "xmlpath", None)
    if xmlpath is not None:
        given.append(Output("--junitxml", os.path.expanduser(os.path.expandvars(xmlpath)), ".xml"))
    return check_outputs(given)


def _check_probe_dirs(resolved: tuple[str, ...], given: list[str]) -> None:
    """A ``--probe-dir`` is a directory whose probes shadow no built-in probe and no other's."""
    builtin = set(probing.available_probes())
    owner: dict[str, str] = {}
    for full, spec in zip(resolved, given):
        check_named("--probe-dir", str(spec))
        if not os.path.isdir(full):
            raise usage_error(f"--probe-dir {spec}: not a directory; give a directory of NAME.py probes")
        for name in sorted(p.stem for p in Path(full).glob("*.py") if not p.stem.startswith("_")):
            if name in builtin:
                raise usage_error(
                    f"--probe-dir {spec}: {name}.py has the name of a built-in probe, which the built-in checks "
                    f"read; rename it (e.g. my_{name}.py) and ask for it by that name")
            if name in owner:
                raise usage_error(
                    f"--probe-dir {spec}: probe {name!r} is also in --probe-dir {owner[name]}; rename one of them")
            owner[name] = spec


def check_archives(config: pytest.Config, targets: list[Target]) -> dict[str, dict[str, Any]]:
    """Read every archive target to its end before anything starts (and hash it with
    ``--verify-archive``, or where its runtime hashes every archive anyway: then once, here, and the
    runtime's preflight finds it done): per target id, what it holds.  A bad archive is a usage error."""
    verify = bool(value(config, "cc_verify_archive"))
    facts: dict[str, dict[str, Any]] = {}
    for t in targets:
        if t.archive:
            try:
                info = inspect_archive(t.ref, t.spec, verify=verify or get_runtime(t.runtime).verifies_archives,
                                       kind=None if t.archive == "archive" else t.archive)
            except ArchiveError as exc:
                raise usage_error(str(exc)) from None
            facts[t.id] = info.facts()
    return facts


def _default_probe_jobs(config: pytest.Config) -> int:
    """CPUs (at most 4) per pytest process: xdist workers share the machine's CPUs, and
    probes past that only compete for them."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    return max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))


def _container_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not name.isidentifier():
            raise usage_error(f"--container-env {item!r}: expected NAME or NAME=VALUE")
        if sep:
            env[name] = val
        elif name in os.environ:
            env[name] = os.environ[name]
        else:
            raise usage_error(f"--container-env {name}: not set on the host; give NAME=VALUE")
    return env
