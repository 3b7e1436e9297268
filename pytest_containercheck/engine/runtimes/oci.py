"""Docker and Podman: one class, two executables.

A session is one long-lived container (``sleep`` as the entrypoint, bounded lifetime,
labelled with the run id); every probe is a ``docker exec -i`` into it.  An image without
``sleep`` (distroless-style) is kept running by its own Python instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import itertools
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..archives import ArchiveInfo, run_config, write_untagged
from ..errors import UsageProblem
from ..platforms import foreign_problem
from . import nvidia_errors
from .base import (
    ExecResult,
    Health,
    LaunchOptions,
    Runtime,
    RuntimeFault,
    Session,
    Target,
    help_flags,
    last_line,
    pid_alive,
    run_bounded,
    target_archive,
    text,
    unknown_flag,
)

LABEL_RUN = "org.containercheck.run"
"""Every container we start carries this label with the run id (for cleanup and audits)."""
LABEL_OWNER = "org.containercheck.owner"
"""``<hostname>/<pid>`` of the pytest process that owns the container."""

#: Messages meaning "the host cannot give this container a GPU" (no NVIDIA Container
#: Toolkit, no CDI spec, driver not loaded, a stale CDI spec: :mod:`.nvidia_errors`).  The
#: container is then started without GPUs and the GPU checks explain why.
_GPU_UNAVAILABLE = re.compile(
    r'could not select device driver ".*" with capabilities|unresolvable CDI devices|'
    r"nvidia-container-cli|nvidia-container-runtime|failed to inject CDI devices",
    re.IGNORECASE,
)
#: libnvidia-container's prestart check of the image's ``NVIDIA_REQUIRE_CUDA`` against the
#: driver ("nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5, please
#: update your driver to a newer version, or use an earlier cuda container"): the toolkit
#: works, the image needs a newer CUDA than the driver -- a pair fault, not a missing toolkit.
_CUDA_REQUIREMENT = re.compile(r"requirement error: unsatisfied condition: (?P<condition>[^,\n]+)", re.IGNORECASE)


def gpu_refusal(stderr: str, runtime: str) -> dict[str, str | None]:
    """What a refused GPU start means: ``{"error", "fix", "fault"}`` for the session's ``gpu``
    facts.  A CUDA requirement the driver does not meet is the pair's fault; a known
    libnvidia-container or CDI failure (:func:`.nvidia_errors.classify`) gets its own fault and
    fix; anything else matched by ``_GPU_UNAVAILABLE`` is a missing toolkit or CDI spec."""
    lines = [ln.strip().removeprefix("docker: ") for ln in stderr.splitlines() if _GPU_UNAVAILABLE.search(ln)]
    req = _CUDA_REQUIREMENT.search(stderr)
    if req:
        line = next((ln.strip() for ln in stderr.splitlines() if _CUDA_REQUIREMENT.search(ln)), req.group(0))
        condition = req.group("condition").strip()
        return {"error": line.removeprefix("docker: "), "fault": "pair",
                "fix": (f"the image requires {condition} (its NVIDIA_REQUIRE_CUDA) and the host driver is older: "
                        "use an image built for an older CUDA, upgrade the host driver, or, when the image "
                        "ships cuda-compat for a datacenter GPU, start it with NVIDIA_DISABLE_REQUIRE=1 "
                        "(--container-env NVIDIA_DISABLE_REQUIRE=1)")}
    known = nvidia_errors.classify(stderr)
    if known is not None:
        return {**known, "error": str(known["error"]).removeprefix("docker: ")}
    return {"error": lines[0] if lines else stderr.strip()[-300:], "fault": "host", "fix": TOOLKIT_FIX[runtime]}


#: ``docker load``: "Loaded image ID: sha256:<hex>"; ``podman load``: "Loaded image: sha256:<hex>"
#: (older: "Loaded image(s): ..."), for an archive that names no image.
_LOADED_ID = re.compile(r"Loaded image(?: ID)?(?:\(s\))?: (?:sha256:)?([0-9a-f]{64})\b")

_DAEMON_DOWN = re.compile(r"cannot connect to the docker daemon|is the docker daemon running|"
                          r"connection refused|no such file or directory.*\.sock", re.IGNORECASE)
#: The hint the docker CLI prints after every error; never the reason itself.
_HELP_HINT = re.compile(r"^(?:Run|See) '\S+ \S+ --help'")
_PERMISSION = re.compile(r"permission denied.*(socket|daemon)|dial unix .*: connect: permission denied",
                         re.IGNORECASE)

#: What keeps a session's container running, in order: ``sleep`` (coreutils, busybox), else
#: the image's own Python (distroless images have one but no ``sleep``).  The lifetime in
#: seconds is the last argument.
KEEPALIVES: tuple[tuple[str, ...], ...] = (
    ("sleep",),
    ("python3", "-c", "import sys, time; time.sleep(float(sys.argv[1]))"),
    ("python", "-c", "import sys, time; time.sleep(float(sys.argv[1]))"),
)
#: runc: ``exec: "sleep": executable file not found in $PATH``; crun: ``executable file `sleep` not found``.
_NOT_FOUND = re.compile(r'exec: "(?P<runc>[^"]+)": executable file not found|'
                        r"executable file `(?P<crun>[^`]+)` not found")

#: AMD's devices for ROCm in a container: the compute interface shared by all GPUs, and the
#: DRI render nodes, one per GPU (rocm.docs.amd.com, "Running ROCm Docker containers").
AMD_DEVICE_FLAGS = ("--device", "/dev/kfd", "--device", "/dev/dri")


#: The image's variables the GPU stack reads when a container starts: the NVIDIA hook's
#: (nvidia-container-toolkit ``internal/config/image``: ``NVIDIA_*``, and ``CUDA_VERSION`` for a
#: "legacy" image without ``NVIDIA_REQUIRE_CUDA``, ``cuda_image.go`` ``IsLegacy``).
_IMAGE_GPU_ENV = re.compile(r"^(?:NVIDIA_\w+|CUDA_VERSION)$")


def image_gpu_env(env: Sequence[str]) -> dict[str, str]:
    """The image's own ``NVIDIA_*`` and ``CUDA_VERSION`` variables from its config's ``Env``
    (``NAME=VALUE`` strings; a later one wins, as the toolkit's ``WithEnv`` builds its map)."""
    out: dict[str, str] = {}
    for item in env:
        name, sep, value = str(item).partition("=")
        if sep and _IMAGE_GPU_ENV.match(name):
            out[name] = value
    return out


def _amd_selection(gpus: str) -> str | None:
    """``--gpus`` as ROCm's ``ROCR_VISIBLE_DEVICES``: ``device=0,2`` -> ``0,2``; ``2`` -> ``0,1``;
    ``all`` -> None (every GPU)."""
    if gpus.startswith("device="):
        return gpus.removeprefix("device=").strip('"')
    if gpus.isdigit():
        return ",".join(str(i) for i in range(int(gpus)))
    return None


TOOLKIT_FIX = {
    "docker": "install the NVIDIA Container Toolkit on the host, run 'nvidia-ctk runtime configure "
              "--runtime=docker' and restart dockerd",
    "podman": "install the NVIDIA Container Toolkit on the host and generate its CDI spec: "
              "'nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml'",
}


class OCIRuntime(Runtime):
    """Docker or Podman, selected by *name* (the executable)."""

    names = ("docker", "podman")
    family = "oci"

    def __init__(self, name: str, executable: str | None = None) -> None:
        super().__init__(name)
        self.executable = executable or name

    # -- command lines -------------------------------------------------------------

    @staticmethod
    def requested_gpus(options: LaunchOptions) -> str:
        """The ``--gpus`` value to ask for: the user's; else, in a Slurm job with GPUs, that job's
        by UUID (``device=GPU-...,GPU-...``; AMD: its render nodes, ``device=/dev/dri/renderD128``), as
        :func:`~..gpumap.map_job_gpus` named them, since the daemon is outside the job's cgroup and
        ``all`` would hand the container every GPU of the node, other jobs' included; ``none`` when
        they could not be named (a GPU the job was not given is never tested); else ``all``."""
        if options.gpus_auto and options.gpus == "all" and options.job_gpus:
            if options.job_gpus_problem or not options.job_devices:
                return "none"
            return "device=" + ",".join(options.job_devices)
        return options.gpus

    def gpu_flags_for(self, options: LaunchOptions) -> list[str]:
        return self.gpu_flags(self.requested_gpus(options), options.gpu_vendor)

    def check_options(self, options: LaunchOptions) -> None:
        """Refuse ``--runtime-arg`` values that would override a flag the plugin sets itself."""
        for key, value in options.env.items():
            if client_owned(key) and "\n" in value:
                raise UsageProblem(f"--container-env {key}: a value with a line break cannot be passed for a variable "
                                   f"the {self.name} client reads itself; give it without one")
        problem = owned_flag(options.runtime_args)
        if problem:
            raise UsageProblem(problem)

    def reap_stale(self) -> list[str]:
        reap_env_dirs()
        return reap_stale(self.executable)

    def check_launch(self, options: LaunchOptions) -> None:
        """``--network`` names a network (or mode) this engine has, and every ``--runtime-arg``
        flag is one ``docker/podman run`` knows (its ``--help``): each a one-line usage error."""
        if shutil.which(self.executable) is None:
            return  # preflight says so, naming the package
        problem = self.network_problem(options.network)
        if problem:
            raise UsageProblem(problem)
        if options.runtime_args:
            res = run_bounded([self.executable, "run", "--help"], timeout=30)
            longs, shorts = help_flags(text(res.stdout))
            problem = unknown_flag(options.runtime_args, longs, shorts, f"{self.executable} run")
            if problem:
                raise UsageProblem(problem)

    def network_problem(self, network: str) -> str | None:
        """Why ``--network`` *network* would be refused by this engine, or None.

        Docker takes ``bridge``, ``host``, ``none`` (networks it always has), ``container:NAME``
        or a network's name or id (``docker run --network``); Podman also takes the modes
        ``private``, ``slirp4netns[:…]``, ``pasta[:…]``, ``ns:PATH`` and ``NAME:options``
        (``podman run --network``, podman-run(1)).  A network is looked up with
        ``network inspect``."""
        mode, _, rest = network.partition(":")
        if network in ("none", "host", "bridge", "default") or not network:
            return None
        if self.name == "podman" and mode in ("private", "slirp4netns", "pasta", "ns"):
            return None
        if mode == "container":
            if run_bounded([self.executable, "container", "inspect", rest], timeout=30).returncode == 0:
                return None
            return (f"--network {network}: {self.name} has no container {rest!r} to share a network with; start it "
                    f"first, or give another --network")
        names = network.split(",") if self.name == "podman" else [network]
        for name in (n.partition(":")[0] for n in names):
            if run_bounded([self.executable, "network", "inspect", name], timeout=30).returncode == 0:
                continue
            listed = run_bounded([self.executable, "network", "ls", "--format", "{{.Name}}"], timeout=30)
            known = sorted(set(text(listed.stdout).split()))
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            return (f"--network {network}: {self.name} has no network {name!r}{hint} (it has: {', '.join(known)}; "
                    f"'{self.executable} network ls' lists them)")
        return None

    def gpu_flags(self, gpus: str, vendor: str = "nvidia") -> list[str]:
        """Flags that request GPUs; Docker uses ``--gpus``, Podman CDI device names.

        On an AMD host both pass AMD's devices, as AMD documents for Docker ("Running ROCm Docker
        containers": ``--device /dev/kfd --device /dev/dri``; its optional ``--security-opt
        seccomp=unconfined`` and group flags are left to ``--runtime-arg``); a GPU selection
        travels as ``ROCR_VISIBLE_DEVICES`` (:meth:`container_env`).
        """
        if gpus == "none":
            return []
        if vendor == "amd":
            nodes = [d for d in gpus.removeprefix("device=").split(",") if d.startswith("/dev/dri/renderD")]
            if nodes:  # the job's own GPUs: only their render nodes, so ROCm sees those alone
                return ["--device", "/dev/kfd", *[f for n in nodes for f in ("--device", n)]]
            return [*AMD_DEVICE_FLAGS]
        if self.name == "podman":
            if gpus == "all":
                return ["--device", "nvidia.com/gpu=all"]
            # CDI names devices, it has no count: "--gpus 2" means the first two GPUs.
            ids = [str(i) for i in range(int(gpus))] if gpus.isdigit() else gpus.removeprefix("device=").split(",")
            return [f for i in ids for f in ("--device", f"nvidia.com/gpu={i.strip()}")]
        if "," in gpus and not gpus.startswith('"'):
            # docker parses --gpus as one CSV record: unquoted, device=0,1 means device 0 and count 1
            gpus = f'"{gpus}"'
        return ["--gpus", gpus]

    def container_env(self, options: LaunchOptions, gpus: str) -> dict[str, str]:
        """The variables set in the session's container: ``--container-env`` values, and on an AMD
        host a GPU selection as ``ROCR_VISIBLE_DEVICES``.

        Nothing of the NVIDIA stack's own: ``NVIDIA_DRIVER_CAPABILITIES`` stays the image's, as
        under a plain ``docker run --gpus all`` (moby ``daemon/devices_nvidia_linux.go``
        ``injectNVIDIARuntimeHook`` sets only ``NVIDIA_VISIBLE_DEVICES`` for ``--gpus all``; the
        capabilities come from the image's environment, default ``utility,compute``:
        nvidia-container-toolkit ``cmd/nvidia-container-runtime-hook/container_config.go``
        ``getDriverCapabilities``).  An image without ``graphics`` gets no EGL driver from its
        users' launch, so it gets none in the check (``render.egl`` says so, see
        :func:`~..verdicts_gpu.driver_capabilities`); a deployment that sets it is emulated with
        ``--container-env``, which the report lists as a launch difference.
        """
        env = dict(options.env)
        if gpus != "none" and options.gpu_vendor == "amd" and not options.job_devices:
            devices = _amd_selection(gpus)
            if devices is not None:
                env.setdefault("ROCR_VISIBLE_DEVICES", devices)
        return env

    def run_command(self, target: Target, options: LaunchOptions, name: str, gpus: str,
                    keepalive: Sequence[str] = KEEPALIVES[0], env_file: str = "<env-file>") -> list[str]:
        """The ``docker run`` line that starts the session's long-lived container.

        *keepalive* is the entrypoint and its arguments (see :data:`KEEPALIVES`); the
        container's lifetime in seconds follows them.  Variables are named (``--env NAME``),
        never given with their values: the client reads each from its own environment
        (:meth:`client_env`), so no value is on a command line that ``ps`` shows, or in the
        launch facts the reports keep.  Variables the client itself reads (``PATH``, ``HOME``,
        ``DOCKER_*``, ``LD_*``, proxies: :func:`client_owned`) must not change the client's own
        environment: they go in *env_file*, a file only this user can read, removed once the
        container runs.
        """
        argv = [
            self.executable, "run", "--detach", "--rm", "--pull", "never",
            "--name", name,
            "--label", f"{LABEL_RUN}={options.run_id}",
            "--label", f"{LABEL_OWNER}={socket.gethostname()}/{os.getpid()}",
            "--network", options.network,
            "--entrypoint", keepalive[0],
        ]
        argv += self.gpu_flags(gpus, options.gpu_vendor)
        env = self.container_env(options, gpus)
        for key in env:
            if not client_owned(key):
                argv += ["--env", key]
        if any(map(client_owned, env)):
            argv += ["--env-file", env_file]
        argv += list(options.runtime_args)
        argv += [target.ref, *keepalive[1:], str(options.lifetime)]
        return argv

    @staticmethod
    def client_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
        """The docker/podman client's environment that carries the values of *env*
        (``--env NAME`` takes the value of ``NAME`` from it); None: the client inherits ours."""
        mine = {k: v for k, v in (env or {}).items() if not client_owned(k)}
        return {**os.environ, **mine} if mine else None

    def exec_command(self, container: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """The ``docker exec`` line that runs *argv* in a running container; the values of
        *env* travel in the client's environment (:meth:`client_env`)."""
        cmd = [self.executable, "exec", "--interactive"]
        for key in env or {}:
            cmd += ["--env", key]
        return [*cmd, container, *argv]

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        return self.exec_command("<container>", argv)

    # -- preflight -----------------------------------------------------------------

    def preflight(self, target: Target) -> dict[str, Any]:
        exe = shutil.which(self.executable)
        if exe is None:
            pkg = "docker.io (Debian/Ubuntu) or docker-ce" if self.name == "docker" else "podman"
            raise UsageProblem(
                f"--image {target.spec}: {self.executable!r} is not installed; install {pkg}, "
                "or pick another runtime with --runtime"
            )
        fmt = "{{.Server.Version}}" if self.name == "docker" else "{{.Client.Version}}"
        res = run_bounded([self.executable, "version", "--format", fmt], timeout=30)
        if res.returncode != 0 or res.timed_out:
            raise UsageProblem(self._daemon_problem(target, res))
        version = text(res.stdout).strip()
        if target.archive:  # checked and identified by archives.inspect_archive; loaded at start
            return {"runtime": self.name, "runtime_version": version}
        inspect = run_bounded([self.executable, "image", "inspect", target.ref], timeout=60)
        if inspect.returncode != 0:
            msg = last_line(inspect.stderr)
            if _DAEMON_DOWN.search(msg) or _PERMISSION.search(msg):
                raise UsageProblem(self._daemon_problem(target, inspect))
            raise UsageProblem(
                f"--image {target.spec}: image {target.ref!r} not found by {self.name} "
                f"({msg or 'no such image'}); pull or build it first "
                f"('{self.executable} pull {target.ref}'), or check the name with '{self.executable} images'"
            )
        facts: dict[str, Any] = {"runtime": self.name, "runtime_version": version}
        try:
            info = json.loads(inspect.stdout)[0]
            cfg = info.get("Config") or {}
            facts["image"] = {
                "id": info.get("Id"),
                "tags": info.get("RepoTags") or [],
                "digests": info.get("RepoDigests") or [],
                "architecture": info.get("Architecture"),
                "os": info.get("Os"),
                "entrypoint": cfg.get("Entrypoint"),
                "cmd": cfg.get("Cmd"),
                "user": cfg.get("User") or "",
                "size": info.get("Size"),
                "labels": cfg.get("Labels") or {},
                # What the NVIDIA hook reads from the image (its own ENV): judged, never replaced.
                "env": image_gpu_env(cfg.get("Env") or []),
            }
        except (ValueError, IndexError, AttributeError):
            pass
        foreign = foreign_problem(str((facts.get("image") or {}).get("architecture") or ""), target.spec)
        if foreign:
            raise UsageProblem(foreign)
        return facts

    def _daemon_problem(self, target: Target, res: ExecResult) -> str:
        msg = last_line(res.stderr) or last_line(res.stdout) or "no answer"
        if res.timed_out:
            return f"--image {target.spec}: '{self.executable} version' did not answer in 30 s; check the daemon"
        if _PERMISSION.search(msg):
            return (
                f"--image {target.spec}: permission denied on the {self.name} socket; add your user "
                f"to the 'docker' group (then log in again) or run as root ({msg})"
            )
        if self.name == "docker":
            return (
                f"--image {target.spec}: the Docker daemon is not answering ({msg}); start it "
                "('sudo systemctl start docker' or 'sudo dockerd &'), or use --runtime podman"
            )
        return f"--image {target.spec}: {self.executable} does not work here ({msg})"

    # -- sessions ------------------------------------------------------------------

    def load_archive(self, target: Target) -> tuple[str, dict[str, Any]]:
        """The image of an archive target, loaded unless the engine has it already: (image id, facts).

        Nothing the user has is renamed: the archive is loaded without its names
        (:func:`~..archives.write_untagged`), so ``docker load`` does not move a tag of the
        user's onto it, and the clean-up removes only the nameless image the run loaded.
        """
        info = target_archive(target)
        present = self.find_image(info)
        if present is not None:
            image, how = present
            return image, {"config_digest": info.config_digest, "loaded": False,
                           "prepared": f"{self.name} already had it{how}"}
        t0 = time.monotonic()
        res = run_bounded([self.executable, "load"], stdin=lambda pipe: write_untagged(target.ref, pipe),
                          timeout=3600)
        if res.returncode != 0 or res.timed_out:
            raise RuntimeFault(f"'{self.executable} load' failed: {runtime_error(text(res.stderr)) or 'timed out'}",
                               fix="check the archive (--verify-archive) and the engine's disk space",
                               evidence=text(res.stderr)[-4000:], fault="host")
        took = round(time.monotonic() - t0, 1)
        loaded = _LOADED_ID.search(text(res.stdout))
        image = f"sha256:{loaded.group(1)}" if loaded else info.config_digest
        return image, {"config_digest": info.config_digest, "loaded": True, "load_seconds": took,
                       "image_id": image, "prepared": f"{self.executable} load {took:.1f} s"}

    def find_image(self, info: ArchiveInfo) -> tuple[str, str] | None:
        """The engine's own image that is the archive's image: (its id, how it was recognised), or None.

        Compared like with like: by the config digest (the image id of a ``docker save`` in
        Docker, and of any archive the engine loaded before), else, for each name in the
        archive, the image under that name when its layers (``rootfs.diff_ids``) and run
        configuration are the archive's -- Podman rewrites the config when it saves an OCI
        archive, so the archive's config digest is never Podman's id for the image it came from.
        """
        have = run_bounded([self.executable, "image", "inspect", "--format", "{{.Id}}", info.config_digest],
                           timeout=60)
        if have.returncode == 0:
            return info.config_digest, ""
        if not info.diff_ids or not info.run_config:
            return None
        for tag in info.repo_tags:
            res = run_bounded([self.executable, "image", "inspect", tag], timeout=60)
            if res.returncode != 0:
                continue
            try:
                local = json.loads(res.stdout)[0]
                layers = tuple((local.get("RootFS") or {}).get("Layers") or ())
                image_id = str(local["Id"])
            except (ValueError, IndexError, KeyError, TypeError, AttributeError):
                continue
            if layers == info.diff_ids and run_config(local) == info.run_config:
                image_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
                return image_id, f" as {tag} (same layers and configuration)"
        return None

    def start(self, target: Target, options: LaunchOptions) -> Session:
        if target.archive:
            image, loaded = self.load_archive(target)
            try:
                session = self._start(dataclasses.replace(target, ref=image), options)
            except BaseException:
                if loaded["loaded"] and not options.keep_loaded:
                    remove_loaded(self.executable, image)
                raise
            session.target = target
            session.facts.update(archive=loaded)
            if loaded["loaded"] and not options.keep_loaded:
                assert isinstance(session, OCISession)
                session.remove_image = image
            return session
        return self._start(target, options)

    def _start(self, target: Target, options: LaunchOptions) -> Session:
        owned = {k: v for k, v in self.container_env(options, options.gpus).items() if client_owned(k)}
        if not owned:
            return self._start_with(target, options, "<env-file>")
        with private_env_file(owned) as (env_file, fds):
            return self._start_with(target, options, env_file, fds)

    def _start_with(self, target: Target, options: LaunchOptions, env_file: str,
                    fds: Sequence[int] = ()) -> Session:
        name = _container_name(options.run_id)
        gpus = self.requested_gpus(options)
        flags = self.gpu_flags(gpus, options.gpu_vendor)
        gpu: dict[str, Any] = {"requested": options.gpus, "attached": options.gpus != "none", "error": None,
                               "vendor": options.gpu_vendor,
                               # CDI (Podman): the spec's env edits set NVIDIA_VISIBLE_DEVICES=void.
                               "cdi": any(f.startswith("nvidia.com/gpu=") for f in flags)}
        if options.gpus_why:
            gpu["why"] = options.gpus_why
        if options.job_gpus and options.gpus_auto and options.gpus == "all":
            if gpus == "none":
                gpu.update(requested="none", attached=False, fault="host", error=(
                    f"the Slurm job's GPUs cannot be named for {self.name}, so no GPU was passed in rather than "
                    f"another job's: {options.job_gpus_problem or 'no device mapped'}"),
                    fix="name the job's GPUs by UUID: set Flags=env_uuid in gres.conf (Slurm 26.05+, "
                        "CUDA_VISIBLE_DEVICES then holds UUIDs), or constrain devices (ConstrainDevices=yes in "
                        "cgroup.conf), or give --gpus device=<UUID> yourself (nvidia-smi -L lists them)")
            else:
                gpu.update(requested=gpus, why=f"the Slurm job's GPUs: {options.job_gpus_how}")
        missing: list[str] = []
        not_found: re.Match[str] | None = None
        for keepalive in KEEPALIVES:
            argv = self.run_command(target, options, name, gpus, keepalive, env_file)
            res = run_bounded(argv, env=self.client_env(self.container_env(options, gpus)), timeout=120,
                              pass_fds=fds)
            gpu_error = res.returncode != 0 and nvidia_errors.is_refusal(text(res.stderr))
            if gpu_error and gpus != "none":
                gpu.update(attached=False, tried=argv, **gpu_refusal(text(res.stderr), self.name))
                gpus = "none"
                argv = self.run_command(target, options, name, gpus, keepalive, env_file)
                res = run_bounded(argv, env=self.client_env(self.container_env(options, gpus)), timeout=120,
                                  pass_fds=fds)
            if res.returncode == 0:
                session = OCISession(self, target, name, text(res.stdout).strip(), argv, gpu)
                session.facts["keepalive"] = keepalive[0]
                return session
            # A failed start can leave a created container behind (and a timed-out one may
            # even run): remove it by name, so nothing outlives the run.
            run_bounded(remove_command(self.executable, [name]), timeout=60)
            not_found = _NOT_FOUND.search(text(res.stderr))
            if not_found is None or (not_found.group("runc") or not_found.group("crun")) != keepalive[0]:
                break
            missing.append(keepalive[0])
        err = runtime_error(text(res.stderr)) or "no output"
        if res.timed_out:
            err = f"'{self.executable} run' did not finish in 120 s"
        fix = None
        if _FLAG_ERROR.search(err) and options.runtime_args:
            fix = (f"{self.executable} rejected a flag: fix or drop the --runtime-arg values "
                   f"({' '.join(options.runtime_args)})")
        if len(missing) == len(KEEPALIVES) and not_found is not None:
            err = (f"the image has neither 'sleep' nor Python ({', '.join(missing[1:])}) on its PATH to keep "
                   f"the container running ({not_found.group(0)})")
            fix = "add 'sleep' (coreutils or busybox) or python3 to the image; probes need python3 in any case"
        elif missing:
            fix = "the image has no 'sleep' binary; add coreutils or busybox to it"
        if missing and "PATH" in options.env:
            # The user's PATH replaced the image's: the programs may well be there.
            err += f"; your --container-env PATH={options.env['PATH']} replaces the image's PATH"
            fix = ("drop or fix --container-env PATH (keep the image's own directories, e.g. "
                   "/usr/local/bin:/usr/bin:/bin)")
        raise RuntimeFault(f"{self.name} could not start the image: {err}", fix=fix,
                           evidence=text(res.stderr)[-4000:])


#: The docker/podman CLI's own complaint about its command line (cobra/pflag wording).
_FLAG_ERROR = re.compile(r"^(?:\S+: )?(?:invalid argument |unknown (?:shorthand )?flag|flag needs an argument|"
                         r"bad flag syntax|invalid (?:value|reference format)|conflicting options)", re.IGNORECASE)
#: What the CLI prints around an error: usage banners and help hints, never the reason itself.
_BANNER = re.compile(r"^(?:Usage:|Run a command in a new container|Create and run a new container)")


def runtime_error(stderr: str) -> str:
    """The runtime's own error line from its stderr: a flag error when there is one (it comes
    first, before the ``Usage:`` banner), else the last line that is not a banner or hint."""
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and not _BANNER.match(ln.strip()) and not _HELP_HINT.match(ln.strip())]
    flag = next((ln for ln in lines if _FLAG_ERROR.search(ln)), None)
    return flag or (lines[-1] if lines else "")


#: Flags of ``run`` the plugin owns, and the option that sets them instead.
_OWNED_LONG = {
    "name": "the plugin names each container itself (containercheck-<run>-<pid>-<n>), so it can remove it",
    "entrypoint": "the plugin replaces the entrypoint to keep the container running; "
                  "name the interpreter with --container-python",
    "detach": "the plugin runs its container detached itself",
    "rm": "the plugin removes its containers itself",
    "network": "use --network MODE",
    "net": "use --network MODE",
    "gpus": "use --gpus VALUE",
    "pull": "nothing is pulled: pull or build the image first",
}
_OWNED_SHORT = {"d": "detach"}
_LABEL_PREFIX = "org.containercheck."


def owned_flag(args: Sequence[str]) -> str | None:
    """Why one of *args* (``--runtime-arg`` values) cannot be given, or None.

    The plugin's own flags (container name, entrypoint, detach/remove, network, GPUs, its
    ``org.containercheck.*`` labels) decide how it finds, keeps alive and removes a container;
    overriding one would leave a container behind or blame the image for the plugin's fault.
    """
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            name, _, val = arg[2:].partition("=")
            if name in _OWNED_LONG:
                return f"--runtime-arg={arg}: {_OWNED_LONG[name]}; drop it"
            if name == "label":
                val = val or (args[i + 1] if i + 1 < len(args) else "")
                if val.startswith(_LABEL_PREFIX):
                    return f"--runtime-arg={arg}: the {_LABEL_PREFIX}* labels are the plugin's own; use another label"
        elif arg.startswith("-") and len(arg) > 1:
            flags = arg[1:]
            if flags[0] == "l":
                val = flags[1:].lstrip("=") or (args[i + 1] if i + 1 < len(args) else "")
                if val.startswith(_LABEL_PREFIX):
                    return f"--runtime-arg={arg}: the {_LABEL_PREFIX}* labels are the plugin's own; use another label"
            # A cluster of boolean short flags (-dit): one of them may be -d.
            if set(flags) <= set("ditPq") and "d" in flags:
                return f"--runtime-arg={arg}: {_OWNED_LONG[_OWNED_SHORT['d']]}; drop it"
    return None


#: Variables the docker/podman client reads itself (its PATH, home, configuration, proxies,
#: dynamic linker): a --container-env value for one of these must not become the client's.
_CLIENT_OWN = re.compile(r"^(?:PATH|HOME|TMPDIR|TZ|LD_\w*|DOCKER_\w*|CONTAINERS?_\w*|PODMAN_\w*|BUILDAH_\w*|"
                         r"STORAGE_\w*|REGISTRY_AUTH_FILE|XDG_\w*|(?:HTTPS?|NO|ALL|FTP)_PROXY|"
                         r"(?:https?|no|all|ftp)_proxy|SSL_CERT_(?:FILE|DIR)|GODEBUG|GOMAXPROCS)$")


ENV_DIR_PREFIX = "containercheck-env-"
"""``<tmp>/containercheck-env-<pid>-XXXX``: the private ``--env-file`` where there is no memfd."""


@contextlib.contextmanager
def private_env_file(values: Mapping[str, str]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The ``--env-file`` of the variables the client reads itself (:func:`client_owned`): (the path
    the client opens, the descriptors it must inherit for that).

    An anonymous memory file (``memfd_create``), which the client opens as ``/dev/fd/N``: nothing is
    ever on disk, so nothing is left however pytest ends (SIGKILL too); docker's and podman's
    clients read the file with a plain open (docker/cli ``opts.ParseEnvFile``, podman ``pkg/env``
    ``ParseFile``), which reopens a memfd from its start for every ``docker run`` of the start.
    Without memfd (not Linux): a file only this user can read, in a directory named for this
    pytest's pid, removed once the container runs, or by the next run when this one was killed
    first (:func:`reap_env_dirs`).
    """
    data = "".join(f"{k}={v}\n" for k, v in values.items()).encode()
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("containercheck-env")  # close-on-exec: only the client it is passed to gets it
        try:
            with os.fdopen(os.dup(fd), "wb") as fh:
                fh.write(data)
            yield f"/dev/fd/{fd}", (fd,)
        finally:
            os.close(fd)
        return
    private = tempfile.mkdtemp(prefix=f"{ENV_DIR_PREFIX}{os.getpid()}-")  # 0700
    try:
        path = os.path.join(private, "env")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        yield path, ()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def reap_env_dirs(tmp: str | None = None) -> list[str]:
    """Remove the private env-file directories of earlier runs whose pytest is gone (a SIGKILL
    leaves them): the paths removed."""
    tmp = tmp or tempfile.gettempdir()
    gone = []
    try:
        entries = os.listdir(tmp)
    except OSError:
        return []
    for entry in entries:
        pid = entry[len(ENV_DIR_PREFIX):].partition("-")[0]
        if entry.startswith(ENV_DIR_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
            gone.append(os.path.join(tmp, entry))
    return gone


def client_owned(name: str) -> bool:
    """Whether the docker/podman client itself reads variable *name* (see :meth:`OCIRuntime.run_command`)."""
    return bool(_CLIENT_OWN.match(name))


_serial = itertools.count(1)


def _container_name(run_id: str) -> str:
    # Unique across xdist workers (pid) and across images in one worker (serial).
    return f"containercheck-{run_id}-{os.getpid()}-{next(_serial)}"


class OCISession(Session):
    """A running container that probes ``exec`` into."""

    def __init__(self, runtime: OCIRuntime, target: Target, name: str, container_id: str,
                 run_argv: list[str], gpu: dict[str, Any]) -> None:
        super().__init__(target)
        self.runtime = runtime
        self.name = name
        self.facts.update(container=name, container_id=container_id[:12], run_command=run_argv, gpu=gpu)
        self._stopped = False
        self.remove_image: str | None = None
        """An image this run loaded from an archive: removed after the container."""

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, timeout: float | None = None) -> ExecResult:
        return run_bounded(self.runtime.exec_command(self.name, argv, env), stdin=stdin,
                           env=self.runtime.client_env(env), timeout=timeout)

    def kill_inside(self, pid: int, python: str) -> None:
        code = "import os,sys\ntry:\n os.killpg(int(sys.argv[1]), 9)\nexcept OSError:\n pass"
        run_bounded(self.runtime.exec_command(self.name, [python, "-c", code, str(pid)]), timeout=30)

    def alive(self) -> bool:
        res = run_bounded([self.runtime.executable, "inspect", "--format", "{{.State.Running}}", self.name],
                          timeout=30)
        return res.returncode == 0 and text(res.stdout).strip() == "true"

    def health(self, since: float) -> Health:
        """Running or not, from ``inspect``; why, from the runtime's events since *since*.

        Docker reports an ``oom`` event whenever the kernel's OOM killer ends a process in
        the container's cgroup (also one started by ``exec``), ``kill`` with the signal when
        someone ran ``docker kill``/``rm --force``, and ``die`` with the exit code.
        """
        exe = self.runtime.executable
        res = run_bounded([exe, "inspect", "--format", "{{.State.Running}}|{{.HostConfig.Memory}}", self.name],
                          timeout=30)
        err = last_line(res.stderr)
        if res.timed_out or (res.returncode != 0 and _DAEMON_DOWN.search(err)):
            return Health(running=False, runtime_down=True,
                          reason=f"the {self.runtime.name} daemon stopped answering ({err or 'no answer in 30 s'})")
        running_s, _, memory_s = text(res.stdout).strip().partition("|")
        running = res.returncode == 0 and running_s == "true"
        memory = int(memory_s) if memory_s.isdigit() else 0
        limit = f"its memory limit ({memory // 2**20} MiB)" if memory else "the host's memory (no --memory limit)"
        actions: list[tuple[str, dict[str, str]]] = []
        ev = run_bounded([exe, "events", "--since", f"{since - 1:.3f}", "--until", f"{time.time() + 0.5:.3f}",
                          "--filter", f"container={self.name}", "--format", "{{json .}}"], timeout=15)
        for line in text(ev.stdout).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            action = str(event.get("Action") or event.get("Status") or "")
            attrs = (event.get("Actor") or {}).get("Attributes") or event.get("Attributes") or {}
            actions.append(("die" if action == "died" else action, {str(k): str(v) for k, v in attrs.items()}))
        oom = any(a == "oom" for a, _ in actions)
        if running:
            reason = f"the kernel's OOM killer ended a process: the container reached {limit}" if oom else ""
            return Health(running=True, reason=reason, oom_killed=oom)
        kill = next((attrs for a, attrs in actions if a == "kill"), None)
        die = next((attrs for a, attrs in actions if a == "die"), None)
        if oom:
            reason = f"the container ran out of memory: it reached {limit}"
        elif kill is not None:
            reason = (f"the container was killed from outside (signal {kill.get('signal', '?')}: "
                      f"'{exe} kill', '{exe} rm --force', or the host)")
        elif die is not None:
            reason = f"the container's main process exited (exit code {die.get('exitCode', '?')})"
        else:
            reason = f"the container is gone ({err or 'not running'})"
        return Health(running=False, reason=reason, oom_killed=oom)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        run_bounded(remove_command(self.runtime.executable, [self.name]), timeout=60)
        if self.remove_image:
            remove_loaded(self.runtime.executable, self.remove_image)


def remove_loaded(executable: str, image: str) -> None:
    """Remove the nameless image a run loaded from an archive, unless a name now points at it
    (someone tagged it during the run: it is theirs now)."""
    res = run_bounded([executable, "image", "inspect", "--format", "{{json .RepoTags}}", image], timeout=60)
    try:
        names = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        names = None
    if res.returncode == 0 and names:
        return
    run_bounded([executable, "rmi", image], timeout=120)


def remove_command(executable: str, names: Sequence[str]) -> list[str]:
    """Remove containers at once.  ``docker rm --force`` kills with SIGKILL; ``podman rm --force``
    first sends SIGTERM and waits 10 s, which ``sleep`` as PID 1 ignores: ``--time 0`` kills now."""
    wait = ["--time", "0"] if os.path.basename(executable) == "podman" else []
    return [executable, "rm", "--force", *wait, *names]


def reap_stale(executable: str) -> list[str]:
    """Remove containers left by earlier runs on this host whose pytest process is gone.

    A SIGKILLed pytest cannot clean up; its containers carry our owner label, so the next
    run removes them.  Returns the names removed.
    """
    res = run_bounded([executable, "ps", "--all", "--filter", f"label={LABEL_RUN}",
                       "--format", '{{.Names}}\t{{.Label "' + LABEL_OWNER + '"}}'], timeout=30)
    if res.returncode != 0:
        return []
    me = socket.gethostname()
    stale = []
    for line in text(res.stdout).splitlines():
        name, _, owner = line.partition("\t")
        host, _, pid = owner.rpartition("/")
        if host == me and pid.isdigit() and not pid_alive(int(pid)):
            stale.append(name.strip())
    if stale:
        run_bounded(remove_command(executable, stale), timeout=60)
    return stale
