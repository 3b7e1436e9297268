"""Exact command lines for Docker, Podman and Apptainer, and how Docker's errors are read."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess

import pytest

from pytest_containercheck.engine.errors import UsageProblem
from pytest_containercheck.engine.runtimes import LaunchOptions, RuntimeFault, get_runtime
from pytest_containercheck.engine.runtimes.apptainer import ApptainerRuntime, classify_failure, home_path, parse_version
from pytest_containercheck.engine.runtimes.base import last_line
from pytest_containercheck.engine.runtimes.host import HostRuntime
from pytest_containercheck.engine.runtimes.oci import _GPU_UNAVAILABLE, _HELP_HINT, LABEL_OWNER, LABEL_RUN, OCIRuntime
from pytest_containercheck.engine.targets import parse_target

IMAGE = "registry:5000/team/name:1.4"
NAME = "containercheck-r1-42-1"
CAPS = "NVIDIA_DRIVER_CAPABILITIES"


def _prefix(executable: str) -> list[str]:
    return [
        executable, "run", "--detach", "--rm", "--pull", "never",
        "--name", NAME,
        "--label", f"{LABEL_RUN}=r1",
        "--label", f"{LABEL_OWNER}={socket.gethostname()}/{os.getpid()}",
        "--network", "none",
        "--entrypoint", "sleep",
    ]  # fmt: skip


def _no_host_mounts(argv: list[str]) -> None:
    assert "--privileged" not in argv
    assert not any(a in ("-v", "--volume", "--mount") or a.startswith(("--volume=", "--mount=")) for a in argv)


# -- docker / podman run ------------------------------------------------------------------


def test_docker_run_with_all_gpus() -> None:
    # As users run it (issue 29): --gpus all and nothing the NVIDIA hook reads; the image's own
    # NVIDIA_DRIVER_CAPABILITIES decides (moby daemon/devices_nvidia_linux.go sets none for --gpus all).
    argv = OCIRuntime("docker").run_command(parse_target(IMAGE), LaunchOptions(run_id="r1"), NAME, "all")
    assert argv == [*_prefix("docker"), "--gpus", "all", IMAGE, "86400"]
    assert not any(CAPS in a for a in argv)
    _no_host_mounts(argv)


def test_docker_run_without_gpus_has_no_gpu_flags() -> None:
    options = LaunchOptions(run_id="r1", gpus="none")
    argv = OCIRuntime("docker").run_command(parse_target(IMAGE), options, NAME, "none")
    assert argv == [*_prefix("docker"), IMAGE, "86400"]
    assert not any("NVIDIA" in a or "gpu" in a for a in argv)


def test_docker_run_with_device_list_quotes_the_csv_value() -> None:
    # docker reads --gpus as one CSV record: bare device=0,1 would mean "device 0, count 1".
    argv = OCIRuntime("docker").run_command(parse_target(IMAGE), LaunchOptions(run_id="r1"), NAME, "device=0,1")
    assert argv == [*_prefix("docker"), "--gpus", '"device=0,1"', IMAGE, "86400"]
    assert OCIRuntime("docker").gpu_flags("device=0") == ["--gpus", "device=0"]
    assert OCIRuntime("docker").gpu_flags("2") == ["--gpus", "2"]


def test_podman_uses_cdi_device_names() -> None:
    podman = OCIRuntime("podman")
    argv = podman.run_command(parse_target(f"podman://{IMAGE}"), LaunchOptions(run_id="r1"), NAME, "all")
    assert argv == [*_prefix("podman"), "--device", "nvidia.com/gpu=all", IMAGE, "86400"]
    assert "--gpus" not in argv
    assert podman.gpu_flags("device=0,1") == ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]
    assert podman.gpu_flags("none") == []


def test_runtime_args_come_before_the_image_and_user_env_is_passed() -> None:
    options = LaunchOptions(
        run_id="r1", network="bridge", runtime_args=("--shm-size=1g", "--ipc", "host"),
        env={"OMP_NUM_THREADS": "2", "NVIDIA_DRIVER_CAPABILITIES": "compute"}, lifetime=600,
    )  # fmt: skip
    argv = OCIRuntime("docker").run_command(parse_target(IMAGE), options, NAME, "all")
    assert argv[argv.index("--network") + 1] == "bridge"
    # A deployment's capabilities are emulated only when asked (and listed as a launch difference).
    tail = ["--env", "OMP_NUM_THREADS", "--env", "NVIDIA_DRIVER_CAPABILITIES",
            "--shm-size=1g", "--ipc", "host", IMAGE, "600"]  # fmt: skip
    assert argv[-len(tail) :] == tail
    assert OCIRuntime("docker").container_env(options, "all")["NVIDIA_DRIVER_CAPABILITIES"] == "compute"
    assert OCIRuntime("docker").container_env(LaunchOptions(run_id="r1"), "all") == {}
    assert OCIRuntime("docker").container_env(LaunchOptions(run_id="r1"), "none") == {}


def test_values_never_reach_the_command_line() -> None:
    # Any local user reads command lines (ps, /proc/PID/cmdline); a --container-env value is
    # often a token.  docker/podman 'run --env NAME' and 'exec --env NAME' read the value
    # from the client's environment, which only the same user can read.
    secret = "hf_SeCrEtVaLuE123"
    options = LaunchOptions(run_id="r1", env={"HF_TOKEN": secret})
    for rt in (OCIRuntime("docker"), OCIRuntime("podman")):
        argv = rt.run_command(parse_target(IMAGE), options, NAME, "none")
        assert not any(secret in a for a in argv), argv
        assert argv[argv.index("HF_TOKEN") - 1] == "--env"
        env = rt.client_env(rt.container_env(options, "none"))
        assert env is not None and env["HF_TOKEN"] == secret and env["PATH"] == os.environ["PATH"]
        exec_argv = rt.exec_command(NAME, ["true"], {"HF_TOKEN": secret})
        assert exec_argv == [rt.executable, "exec", "--interactive", "--env", "HF_TOKEN", NAME, "true"]
    assert OCIRuntime.client_env({}) is None  # nothing to carry: the client inherits ours


def test_oci_executable_can_differ_from_name() -> None:
    rt = OCIRuntime("docker", executable="/opt/bin/docker")
    argv = rt.run_command(parse_target(IMAGE), LaunchOptions(run_id="r1", gpus="none"), NAME, "none")
    assert argv[0] == "/opt/bin/docker"


def test_docker_exec_command() -> None:
    rt = OCIRuntime("docker")
    assert rt.exec_command(NAME, ["python3", "-"], {"K": "V", "A": "b c"}) == [
        "docker", "exec", "--interactive", "--env", "K", "--env", "A", NAME, "python3", "-",
    ]  # fmt: skip
    assert rt.exec_command(NAME, ["true"]) == ["docker", "exec", "--interactive", NAME, "true"]
    assert rt.command_line(parse_target(IMAGE), LaunchOptions(run_id="r1"), ["python3", "-"]) == [
        "docker", "exec", "--interactive", "<container>", "python3", "-",
    ]  # fmt: skip


def test_get_runtime_registry() -> None:
    assert isinstance(get_runtime("podman"), OCIRuntime) and get_runtime("podman").name == "podman"
    assert isinstance(get_runtime("singularity"), ApptainerRuntime)
    assert isinstance(get_runtime("host"), HostRuntime)
    with pytest.raises(KeyError):
        get_runtime("lxc")


# -- apptainer / singularity exec ------------------------------------------------------------


@pytest.mark.parametrize(
    ("apptainer_gpu", "flags"),
    [("nv", ["--nv"]), ("nvccli", ["--nv", "--nvccli"]), ("rocm", ["--rocm"]), ("none", [])],
)
@pytest.mark.parametrize("executable", ["apptainer", "singularity"])
def test_apptainer_instance_start_command(executable: str, apptainer_gpu: str, flags: list[str]) -> None:
    target = parse_target("/images/app.sif")
    options = LaunchOptions(run_id="r1", apptainer_gpu=apptainer_gpu, env={"K": "V"})
    argv = ApptainerRuntime(executable).start_command(target, options, "containercheck-1-r1-1", "/tmp/h")
    assert argv == [executable, "instance", "start", *flags, "--cleanenv", "--home", f"/tmp/h:{home_path()}",
                    *_contained("/tmp/h"), "/images/app.sif", "containercheck-1-r1-1"]  # fmt: skip
    assert "--env" not in argv and "--net" not in argv and "--no-home" not in argv


def _contained(home: str) -> list[str]:
    return ["--no-mount", "tmp,cwd", "--bind", f"{home}/.containercheck-tmp:/tmp",
            "--bind", f"{home}/.containercheck-var-tmp:/var/tmp"]


def test_apptainer_keeps_the_hosts_tmp_and_cwd_out() -> None:
    # Apptainer binds the host's /tmp, /var/tmp and working directory read-write by default
    # ("mount tmp", "mount cwd" in apptainer.conf); the session's own private directories
    # stand in for /tmp and /var/tmp.  Singularity before 3.7 has no --no-mount: --contain.
    rt = ApptainerRuntime("singularity")
    assert rt.containment("/h") == _contained("/h")
    rt.no_mount = False
    assert rt.containment("/h") == ["--contain"]


def test_apptainer_exec_goes_into_the_instance() -> None:
    argv = ApptainerRuntime("apptainer").exec_command("containercheck-1-r1-1", ["python3", "-"])
    assert argv == ["apptainer", "exec", "--cleanenv", "instance://containercheck-1-r1-1", "python3", "-"]


def test_apptainer_gpus_none_drops_gpu_flags() -> None:
    options = LaunchOptions(run_id="r1", gpus="none", apptainer_gpu="nv", runtime_args=("--contain",))
    argv = ApptainerRuntime("apptainer").start_command(parse_target("app.sif"), options, "n", "/h")
    assert argv == ["apptainer", "instance", "start", "--cleanenv", "--home", f"/h:{home_path()}", *_contained("/h"),
                    "--contain", "app.sif", "n"]  # fmt: skip


def test_apptainer_image_variables_travel_in_apptainers_environment() -> None:
    # --env K=V would split a value with commas and a second '=' (apptainer's --env is a
    # string slice flag), and does not exist before Singularity 3.6.
    options = LaunchOptions(run_id="r1", env={"K": "launch", "XLA_FLAGS": "--a=1,--b=2"})
    env = ApptainerRuntime("apptainer").launch_env(options, {"K": "exec"}, host_env={"PATH": "/bin",
                                                    "APPTAINERENV_STALE": "x"})
    assert env["APPTAINERENV_K"] == "exec" and env["APPTAINERENV_XLA_FLAGS"] == "--a=1,--b=2"
    assert env["PATH"] == "/bin" and "APPTAINERENV_STALE" not in env
    assert "SINGULARITYENV_K" in ApptainerRuntime("singularity").launch_env(options, host_env={})


@pytest.mark.parametrize(("gpus", "apptainer_gpu", "host", "expected"), [
    ("all", "nv", {"CUDA_VISIBLE_DEVICES": "3"}, {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "3"}),
    ("all", "rocm", {"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0"},
     {"APPTAINERENV_ROCR_VISIBLE_DEVICES": "1", "APPTAINERENV_HIP_VISIBLE_DEVICES": "0"}),
    ("device=0,2", "nv", {}, {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "0,2"}),
    ("2", "nv", {}, {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "0,1"}),
    ("device=1", "rocm", {}, {"APPTAINERENV_ROCR_VISIBLE_DEVICES": "1"}),
    # nvidia-container-cli gets apptainer's own environment as the users' launch gives it: no
    # capability of ours (unset: its default compute,utility), a host value unchanged.
    ("device=1", "nvccli", {}, {"APPTAINERENV_CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "1",
                                "NVIDIA_DRIVER_CAPABILITIES": None}),
    ("all", "nvccli", {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
     {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}),
])
def test_apptainer_forwards_the_jobs_gpu_selection(gpus: str, apptainer_gpu: str, host: dict[str, str],
                                                  expected: dict[str, str | None]) -> None:
    # --cleanenv drops CUDA_VISIBLE_DEVICES (Slurm's GPU selection); nvidia-container-cli reads
    # NVIDIA_* from apptainer's own environment, default capabilities compute,utility
    # (apptainer internal/pkg/util/gpu/nvidia.go nVDriverDefaultCapabilities).
    env = ApptainerRuntime("apptainer").launch_env(LaunchOptions(run_id="r", gpus=gpus, apptainer_gpu=apptainer_gpu),
                                                   host_env=host)
    assert {k: env.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("apptainer version 1.3.4\n", "1.3.4"),
        ("singularity-ce version 4.1.0\n", "4.1.0"),
        ("singularity version 3.8.7", "3.8.7"),
        ("apptainer version 1.2.5-1.el8\n", "1.2.5-1.el8"),
        ("something odd\n", "something odd"),
    ],
)
def test_parse_version(output: str, version: str) -> None:
    assert parse_version(output) == version


def test_host_command_line_is_the_argv() -> None:
    assert HostRuntime("host").command_line(parse_target("host"), LaunchOptions(run_id="r1"), ["python3", "-"]) == [
        "python3", "-",
    ]  # fmt: skip


# -- reading docker's errors ---------------------------------------------------------------

# Exactly what Docker 20.10 prints on this machine (no NVIDIA Container Toolkit) for --gpus all.
NO_TOOLKIT = (
    'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].\n'
    "Run 'docker run --help' for more information\n"
)


def test_gpu_unavailable_matches_only_the_device_driver_line() -> None:
    assert _GPU_UNAVAILABLE.search(NO_TOOLKIT)
    matching = [ln for ln in NO_TOOLKIT.splitlines() if _GPU_UNAVAILABLE.search(ln)]
    assert matching == [NO_TOOLKIT.splitlines()[0]]
    # The last line is only the CLI's hint, which is why start() must not report last_line().
    assert last_line(NO_TOOLKIT) == "Run 'docker run --help' for more information"
    assert _HELP_HINT.match(last_line(NO_TOOLKIT))
    assert _HELP_HINT.match("See 'docker run --help'.")
    assert not _HELP_HINT.match(NO_TOOLKIT.splitlines()[0])


@pytest.mark.parametrize(
    "stderr",
    [
        'docker: Error response from daemon: could not select device driver "nvidia" with capabilities: [[gpu]]',
        "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all",
        "nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown",
        "Error: crun: failed to inject CDI devices: unresolvable CDI devices nvidia.com/gpu=0",
    ],
)
def test_gpu_unavailable_variants(stderr: str) -> None:
    assert _GPU_UNAVAILABLE.search(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "docker: Error response from daemon: No such image: nosuch/image:1",
        'exec: "sleep": executable file not found in $PATH: unknown',
        "Run 'docker run --help' for more information",
    ],
)
def test_other_start_errors_are_not_gpu_errors(stderr: str) -> None:
    assert not _GPU_UNAVAILABLE.search(stderr)


def containers_of(run_id: str) -> list[str]:
    """Containers (running or not) of one run: other runs may share this Docker engine."""
    res = subprocess.run(
        ["docker", "ps", "--all", "--filter", f"label={LABEL_RUN}={run_id}", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return res.stdout.split()


@pytest.mark.docker
def test_docker_start_without_toolkit_falls_back_and_records_the_driver_line(nopython_image: str) -> None:
    run_id = f"cmdlines-{secrets.token_hex(4)}"
    session = OCIRuntime("docker").start(parse_target(nopython_image), LaunchOptions(run_id=run_id))
    try:
        gpu = session.facts["gpu"]
        if gpu["attached"]:
            pytest.skip("this host can give containers a GPU; the fallback is not exercised")
        assert gpu["error"].startswith('Error response from daemon: could not select device driver ""')
        assert "--gpus" in gpu["tried"] and "--gpus" not in session.facts["run_command"]
        assert session.alive()
        assert containers_of(run_id) == [session.facts["container"]]
    finally:
        session.stop()
    assert containers_of(run_id) == []


@pytest.mark.docker
def test_docker_start_failure_reports_the_reason_not_the_help_hint(nopython_image: str) -> None:
    run_id = f"cmdlines-{secrets.token_hex(4)}"
    options = LaunchOptions(run_id=run_id, gpus="none", runtime_args=("--entrypoint", "no-such-binary"))
    with pytest.raises(RuntimeFault) as info:
        OCIRuntime("docker").start(parse_target(nopython_image), options)
    message = str(info.value)
    assert message.startswith("docker could not start the image: ")
    assert "executable file not found" in message and "no-such-binary" in message
    assert "--help" not in message
    assert containers_of(run_id) == []


def test_podman_gpu_count_means_the_first_n_devices() -> None:
    assert OCIRuntime("podman").gpu_flags("2") == ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]


def test_containers_are_removed_without_waiting_out_a_grace_period() -> None:
    # podman rm --force sends SIGTERM and waits 10 s before SIGKILL; `sleep` as PID 1 ignores
    # SIGTERM, so every run waited 10 s per container (podman rm --help: "-t, --time ... (default 10)").
    from pytest_containercheck.engine.runtimes.oci import remove_command

    assert remove_command("podman", ["a", "b"]) == ["podman", "rm", "--force", "--time", "0", "a", "b"]
    assert remove_command("/usr/bin/podman", ["a"])[3:5] == ["--time", "0"]
    assert remove_command("docker", ["a"]) == ["docker", "rm", "--force", "a"]  # SIGKILL at once already


def test_apptainer_failure_quotes_the_first_fatal_line() -> None:
    # Apptainer tidies up after a failed start and says so last; the reason is its FATAL line.
    stderr = ("INFO:    gocryptfs not found, will not be able to use gocryptfs\n"
              "FATAL:   container creation failed: mount hook function failure: mount /proc/self/fd/3->/usr: "
              "no space left on device\n"
              "ERROR:   container cleanup failed: no instance found\n")
    reason, _ = classify_failure(stderr)
    assert reason == ("apptainer: container creation failed: mount hook function failure: mount "
                      "/proc/self/fd/3->/usr: no space left on device")


def test_variables_the_client_reads_itself_travel_in_an_env_file() -> None:
    # --env NAME takes the value from the client's environment: for PATH, HOME, DOCKER_HOST,
    # LD_LIBRARY_PATH or a proxy that would change the docker client itself (PATH=/nowhere made
    # "docker: not found").  Those go in a private --env-file; the rest stay named.
    options = LaunchOptions(run_id="r1", env={"PATH": "/nowhere", "DOCKER_HOST": "tcp://x", "HF_TOKEN": "t0k3n"})
    rt = OCIRuntime("docker")
    argv = rt.run_command(parse_target(IMAGE), options, NAME, "none", env_file="/private/env")
    assert argv[argv.index("--env-file") + 1] == "/private/env"
    assert argv[argv.index("HF_TOKEN") - 1] == "--env" and "PATH" not in argv and "DOCKER_HOST" not in argv
    env = rt.client_env(rt.container_env(options, "none"))
    assert env is not None and env["PATH"] == os.environ["PATH"] and env["HF_TOKEN"] == "t0k3n"
    assert env.get("DOCKER_HOST") == os.environ.get("DOCKER_HOST")
    with pytest.raises(UsageProblem, match="line break"):
        rt.check_options(LaunchOptions(run_id="r1", env={"PATH": "/a\n/b"}))
