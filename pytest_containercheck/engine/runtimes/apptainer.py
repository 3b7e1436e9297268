"""Apptainer and Singularity: one class, two executables.

A session is one Apptainer *instance* of the SIF (``apptainer instance start``), the
counterpart of the Docker path's long-lived container: the SIF is mounted once and its
page cache stays warm, so the second import of torch or VTK does not decompress the
squashfs again.  Every probe is an ``apptainer exec instance://NAME``.  The instance is
named ``containercheck-<pytest pid>-<run id>-<n>`` and stopped at the end of the run (also
after a timeout, Ctrl-C or SIGTERM); one left by a killed pytest is stopped by the next run.

Command lines follow the Apptainer user guide and source (``internal/pkg/runtime/launch``):

* ``--nv`` binds the host's NVIDIA driver files (``--nvccli`` runs nvidia-container-cli
  instead, ``--rocm`` for AMD); so does plain ``--nv`` where ``apptainer.conf`` says ``use
  nvidia-container-cli = yes`` (launcher_linux.go ``SetGPUConfig``: "If nvccli was not enabled by
  flag or config, drop down to legacy binds").  The legacy ``--nv`` reads no ``NVIDIA_*``
  variable; nvidia-container-cli reads them from *apptainer's own* environment (default
  capabilities ``compute,utility``, without ``graphics``: no EGL driver), which is passed as it
  is, as the users' own launch passes it: the verdicts say what it lacks.
* ``--cleanenv`` keeps host variables (and secrets) out; variables for the image go through
  apptainer's own environment as ``APPTAINERENV_K=V`` (``SINGULARITYENV_K`` for Singularity),
  never ``--env K=V``, which splits values at commas and does not exist before Singularity 3.6.
  The GPU selection Slurm makes (``CUDA_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``,
  ``HIP_VISIBLE_DEVICES``) is forwarded that way.
* ``--home TMP:HOME`` gives the image an empty, writable, private home at the user's home
  path: the user's real home (and its ``~/.local`` site-packages) stays out, yet HOME is
  writable as it is on a cluster, so ``system.writable_cache`` judges the image, not our flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..archives import decompress_to, inspect_archive
from ..errors import UsageProblem
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

# The SIF format (check_sif and the header's constants) moved to .sif; still importable from here.
from .sif import SIF_HEADER_LEN as SIF_HEADER_LEN
from .sif import SIF_PART_PRIMSYS, check_sif, sif_id, sif_partitions

GPU_FLAGS = {"nv": ["--nv"], "nvccli": ["--nv", "--nvccli"], "rocm": ["--rocm"], "none": []}

INSTANCE_PREFIX = "containercheck-"
_INSTANCE_NAME = re.compile(r"^containercheck-(?P<pid>\d+)-")
HOME_PREFIX = "containercheck-home-"
#: Variables that say which GPUs a job was given (Slurm sets them): forwarded through --cleanenv.
VISIBILITY_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
#: The driver capabilities apptainer passes on to nvidia-container-cli; any other value makes it
#: fail ("unknown NVIDIA_DRIVER_CAPABILITIES value: all"): apptainer internal/pkg/util/gpu/nvidia.go
#: ``nVDriverCapabilities`` and ``NVCLIEnvToFlags``.
NVCCLI_KNOWN_CAPABILITIES = ("compute", "compat32", "graphics", "utility", "video", "display")
START_TIMEOUT_S = 600.0
"""Starting an instance mounts the SIF; on a busy cluster filesystem that can take a while."""

#: Apptainer's GPU warnings (launcher_linux.go addGPUBinds): "Could not find any nv files on
#: this host!", "... nv libraries ..."; Singularity 3.x: "Could not find any NVIDIA binaries on
#: this host!" / "... NVIDIA libraries ...".  Nothing is printed when binding worked, and also
#: nothing on a host without a GPU, so silence proves nothing.  Only apptainer's WARNING, ERROR
#: and FATAL lines count (:func:`gpu_warnings`): with --nvccli it says "INFO: Setting
#: --writable-tmpfs (required by nvidia-container-cli)" and "INFO: Setting
#: 'NVIDIA_VISIBLE_DEVICES=all' to emulate legacy GPU binding." when all is well
#: (launcher_linux.go setNvCCLIConfig).
_GPU_WARNING = re.compile(r"could not find any (?:nv|nvidia|rocm)\b|nvidia-container-cli|nvccli", re.IGNORECASE)
_WARNING_LEVELS = ("WARNING", "ERROR", "FATAL")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: apptainer's own log lines ("FATAL:   ...", "ERROR  : ...", "WARNING: ..."), not the image's output.
_LOG_LINE = re.compile(r"^(FATAL|ERROR|WARNING|INFO|VERBOSE|DEBUG)\s*:\s*(.*)$")


def gpu_warnings(stderr: str) -> list[str]:
    """Apptainer's own warnings and errors in *stderr* that say GPU files were not bound or
    nvidia-container-cli failed (never its INFO lines, never the image's output, never a path:
    "WARNING: Error changing the container working directory ... chdir /tmp/test_nvccli0" is not
    about GPUs)."""
    return [msg for level, msg in apptainer_lines(stderr)
            if level in _WARNING_LEVELS and _GPU_WARNING.search(re.sub(r"/\S*", "", msg))]


def apptainer_lines(stderr: str) -> list[tuple[str, str]]:
    """Apptainer's own log lines in *stderr* as (level, message), colours removed."""
    out = []
    for raw in _ANSI.sub("", stderr).splitlines():
        m = _LOG_LINE.match(raw.strip())
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


#: What apptainer's failures mean: (pattern in its message, fix).  The first message that
#: matches one names the cause; apptainer also prints generic lines ("while executing starter",
#: "container cleanup failed") around it.
_CAUSES: tuple[tuple[str, str], ...] = (
    ("requesting capability set", "this host withholds a capability that apptainer needs as root without a user "
     "namespace: run as a non-root user (as on a cluster), or add --runtime-arg=--userns"),
    ("no root filesystem", "the SIF has no root file system partition: rebuild it with 'apptainer build'"),
    ("not allowed in setuid mode", "apptainer runs nvidia-container-cli only without its setuid starter "
     "(prepare_linux.go): use --apptainer-gpu nv, whose binding works setuid, or add --runtime-arg=--userns"),
    ("unknown nvidia_driver_capabilities value", "apptainer turns NVIDIA_DRIVER_CAPABILITIES into nvidia-container-cli "
     "flags and rejects values it does not know, 'all' among them: set it to a list such as compute,utility,graphics"),
    # apptainer gpu/nvidia.go NVCLIEnvToFlags: "One --require flag for each NVIDIA_REQUIRE_* environment", read
    # from apptainer's own environment (launcher_linux.go setNvCCLIConfig passes os.Environ()'s NVIDIA_*).
    ("requirement error: unsatisfied condition", "the requirement came from NVIDIA_REQUIRE_* in the environment "
     "apptainer runs in (nvidia-container-cli gets it as --require; the image's own is not read): unset it there, or "
     "set NVIDIA_DISABLE_REQUIRE=1, or upgrade the host driver to one that meets it"),
    ('"nvidia-container-cli": executable file not found',
     "install nvidia-container-cli (libnvidia-container-tools) on the host, or use --apptainer-gpu nv (and "
     "'use nvidia-container-cli = no' in apptainer.conf)"),
    ("nvidia-container-cli", "nvidia-container-cli failed on the host: run 'nvidia-container-cli -k -d /dev/tty info' "
     "there to see why; or use apptainer's own binding (--nv with 'use nvidia-container-cli = no')"),
    ("user namespace", "enable unprivileged user namespaces (sysctl user.max_user_namespaces=15000), or ask the "
     "admins for a setuid installation of apptainer"),
    ("squashfuse", "install squashfuse (and fuse2fs) on the host, and make /dev/fuse usable (mode 0666), so "
     "apptainer can mount the SIF without root; a truncated SIF fails here too: copy it again"),
    ("/dev/fuse", "make /dev/fuse usable by users (mode 0666, as udev sets it)"),
    ("image format not recognized", "the file is not a SIF apptainer can read: build it with 'apptainer build'"),
)


#: Lines apptainer prints around a failure that do not say why it failed.
_GENERIC = re.compile(r"container cleanup failed|while executing starter|failed to start instance|"
                      r"no instance found", re.IGNORECASE)


def classify_failure(stderr: str) -> tuple[str, str]:
    """Apptainer's reason for failing (the message naming the cause, else its first FATAL line
    that is not generic, else its first ERROR line) and the fix."""
    lines = apptainer_lines(stderr)
    messages = [msg for level, msg in lines if level in ("ERROR", "FATAL")]
    for msg in messages:
        for pattern, fix in _CAUSES:
            if pattern in msg.lower():
                return f"apptainer: {msg}", fix
    # The first FATAL line says why; ERROR lines around it are apptainer tidying up after the
    # failure ("container cleanup failed: no instance found"), quoted only when nothing else is.
    ranked = [msg for want_generic in (False, True) for level in ("FATAL", "ERROR") for lv, msg in lines
              if lv == level and bool(_GENERIC.search(msg)) == want_generic]
    reason = ranked[0] if ranked else (last_line(_ANSI.sub("", stderr)) or "no message")
    return f"apptainer: {reason}", "see apptainer's message; 'apptainer --debug instance start ...' shows more"


class ApptainerRuntime(Runtime):
    """Apptainer, or Singularity on older clusters (same command line)."""

    names = ("apptainer", "singularity")
    family = "sif"
    verifies_archives = True  # its SIFs are cached by the archive's content (convert_archive)
    _counter = itertools.count(1)

    def __init__(self, name: str, executable: str | None = None) -> None:
        super().__init__(name)
        self.executable = executable or name
        self.env_prefix = "APPTAINERENV_" if self.executable == "apptainer" else "SINGULARITYENV_"
        """How apptainer is told variables for the image (Singularity: ``SINGULARITYENV_``)."""
        self.no_mount = True
        """``--no-mount`` exists (Apptainer; Singularity 3.7+): see :meth:`containment`."""
        self._versions: dict[str, ExecResult] = {}
        self.nvccli_configured = False
        """``apptainer.conf`` says ``use nvidia-container-cli = yes``: plain ``--nv`` runs nvidia-container-cli."""
        self.conf_file = ""
        """The configuration file :meth:`_learn_config` read (``apptainer buildcfg``'s ``*_CONF_FILE``)."""

    def resolve_executable(self) -> str | None:
        """``apptainer`` if present, else ``singularity`` (older clusters), else None."""
        order = [self.executable] + (["singularity"] if self.executable == "apptainer" else [])
        for exe in order:
            found = shutil.which(exe)
            if found:
                self.executable = exe
                return found
        return None

    def _version(self) -> ExecResult:
        """``EXECUTABLE --version``, asked once per executable (preflight, then every start)."""
        cached = self._versions.get(self.executable)
        if cached is None or cached.returncode != 0:
            cached = self._versions[self.executable] = run_bounded([self.executable, "--version"], timeout=30)
        return cached

    def _learn_config(self) -> None:
        """Read ``apptainer.conf`` once (its path from ``apptainer buildcfg``): whether plain ``--nv``
        goes through nvidia-container-cli (:func:`nvccli_configured`)."""
        if self.conf_file:
            return
        buildcfg = text(run_bounded([self.executable, "buildcfg"], timeout=30).stdout)
        self.conf_file, self.nvccli_configured = nvccli_configured(buildcfg)

    def _learn_product(self) -> str:
        """``apptainer --version`` names the product; Apptainer's own ``singularity`` is still Apptainer."""
        out = text(self._version().stdout)
        self.env_prefix = "APPTAINERENV_" if "apptainer" in out.lower() else "SINGULARITYENV_"
        self.no_mount = "apptainer" in out.lower() or _version_tuple(parse_version(out)) >= (3, 7)
        return out

    # -- command lines -------------------------------------------------------------------

    def gpu_flags_for(self, options: LaunchOptions) -> list[str]:
        return list(GPU_FLAGS["none" if options.gpus == "none" else options.apptainer_gpu])

    def check_launch(self, options: LaunchOptions) -> None:
        """Every ``--runtime-arg`` flag is one ``apptainer instance start`` knows (its ``--help``)."""
        if not options.runtime_args or self.resolve_executable() is None:
            return
        res = run_bounded([self.executable, "instance", "start", "--help"], timeout=30)
        longs, shorts = help_flags(text(res.stdout))
        problem = unknown_flag(options.runtime_args, longs, shorts, f"{self.executable} instance start")
        if problem:
            raise UsageProblem(problem)

    def start_command(self, target: Target, options: LaunchOptions, name: str, home: str,
                      gpu_flags: Sequence[str] | None = None) -> list[str]:
        """The ``apptainer instance start`` command line of a session."""
        flags = self.gpu_flags_for(options) if gpu_flags is None else list(gpu_flags)
        return [self.executable, "instance", "start", *flags, "--cleanenv", "--home", f"{home}:{home_path()}",
                *self.containment(home), *options.runtime_args, target.ref, name]

    def containment(self, home: str) -> list[str]:
        """Flags that keep the host's /tmp, /var/tmp and working directory out of the image.

        Apptainer binds all three read-write by default (its ``mount tmp`` and ``mount cwd``):
        the image could read and change the host's files.  ``--no-mount tmp,cwd`` (Apptainer,
        Singularity 3.7+) drops them, and private directories beside the private home (removed
        with it) are /tmp and /var/tmp, writable as programs expect; /dev stays as it is, so
        ``--nv`` and ``--rocm`` devices are untouched.  Older Singularity gets ``--contain``.
        A directory a check needs is bound on purpose: ``--runtime-arg=--bind=/data``.
        """
        if not self.no_mount:
            return ["--contain"]
        return ["--no-mount", "tmp,cwd", "--bind", f"{private_tmp(home)}:/tmp",
                "--bind", f"{private_tmp(home, 'var-tmp')}:/var/tmp"]

    def exec_command(self, name: str, argv: Sequence[str]) -> list[str]:
        """The ``apptainer exec`` command line that runs *argv* in instance *name*."""
        return [self.executable, "exec", "--cleanenv", f"instance://{name}", *argv]

    def launch_env(self, options: LaunchOptions, env: Mapping[str, str] | None = None,
                   host_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Apptainer's own environment for a start or exec: the host's, plus the image's variables
        as ``APPTAINERENV_K``, the job's GPU selection, and nvidia-container-cli's settings."""
        host = dict(os.environ if host_env is None else host_env)
        out = {k: v for k, v in host.items() if not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}
        image: dict[str, str] = {k: host[k] for k in VISIBILITY_VARS if k in host}
        gpu = "none" if options.gpus == "none" else options.apptainer_gpu
        devices = _device_list(options.gpus)
        if devices is not None and gpu in ("nv", "nvccli"):
            image["CUDA_VISIBLE_DEVICES"] = devices
        if devices is not None and gpu == "rocm":
            image["ROCR_VISIBLE_DEVICES"] = devices
        if gpu == "nvccli" or (gpu == "nv" and self.nvccli_configured):
            # NVIDIA_DRIVER_CAPABILITIES stays what this environment has: nvidia-container-cli reads
            # apptainer's own environment, as on the users' own launch (no 'graphics' by default).
            if devices is not None:
                out["NVIDIA_VISIBLE_DEVICES"] = devices
            # What apptainer itself sets without --contain; with --contain (older Singularity here)
            # it would warn and bind no GPU (launcher_linux.go setNvCCLIConfig).
            out.setdefault("NVIDIA_VISIBLE_DEVICES", "all")
        image.update(options.env)
        image.update(env or {})
        out.update({self.env_prefix + k: v for k, v in image.items()})
        return out

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        return self.exec_command(instance_name(options.run_id, 1), argv)

    # -- lifecycle -------------------------------------------------------------------------

    def preflight(self, target: Target) -> dict[str, Any]:
        # An archive was checked and identified by archives.inspect_archive; it is converted at start,
        # and hashed now: the SIF made from it is cached by what it is made of (convert_archive).
        facts: dict[str, Any] = {} if target.archive else check_sif(target.ref, target.spec)
        if self.resolve_executable() is None:
            raise UsageProblem(
                f"--image {target.spec}: neither 'apptainer' nor 'singularity' is on PATH; "
                "'module load apptainer' on clusters, or install Apptainer"
            )
        res = self._version()
        if res.returncode != 0:
            raise UsageProblem(
                f"--image {target.spec}: '{self.executable} --version' failed ({last_line(res.stderr)}); "
                "check the installation"
            )
        if not target.archive:
            try:
                parts = sif_partitions(target.ref)
            except (OSError, struct.error):
                parts = []
            if not any(p["parttype"] == SIF_PART_PRIMSYS for p in parts):
                raise UsageProblem(
                    f"--image {target.spec}: {target.ref!r} has no root file system partition (its SIF descriptors "
                    f"list {len(parts)} partition(s), none of them the primary system one); rebuild it with "
                    "'apptainer build'")
        problem = userns_problem()
        if problem:
            # Where user namespaces are off, sites install apptainer setuid: its starter-suid runs
            # the container without one (launcher_linux.go useSuid).  Ask it only then.
            setuid, why = setuid_installation(text(run_bounded([self.executable, "buildcfg"], timeout=30).stdout))
            if not setuid:
                raise UsageProblem(f"--image {target.spec}: {problem} ({why})")
            facts["setuid"] = why
        facts.update(runtime=self.executable, runtime_version=parse_version(text(res.stdout)))
        if not target.archive:
            facts.update(sif_id=sif_id(target.ref), labels=self.labels(target.ref))
        else:
            # Hashed last, once Apptainer is known to be able to run it (a multi-GB archive takes a
            # while): the SIF made from it is cached by what it is made of (convert_archive).
            inspect_archive(target.ref, target.spec, verify=True,
                            kind=None if target.archive == "archive" else target.archive)
        return facts

    def labels(self, sif: str) -> dict[str, str]:
        """The image's labels as the SIF keeps them (``apptainer inspect --labels``): the source
        image's own labels plus Apptainer's ``org.label-schema.*`` build notes; {} if unreadable."""
        res = run_bounded([self.executable, "inspect", "--json", "--labels", sif], timeout=60)
        try:
            labels = json.loads(text(res.stdout))["data"]["attributes"]["labels"]
        except (ValueError, KeyError, TypeError):
            return {}
        return {str(k): str(v) for k, v in (labels or {}).items()} if isinstance(labels, dict) else {}

    def start(self, target: Target, options: LaunchOptions) -> Session:
        if self.resolve_executable() is None:
            raise RuntimeFault("neither 'apptainer' nor 'singularity' is on PATH",
                               fix="'module load apptainer' on clusters, or install Apptainer")
        self._learn_product()
        self._learn_config()
        prepared: dict[str, Any] | None = None
        if target.archive:
            sif, prepared = self.convert_archive(target)
            run_target = dataclasses.replace(target, ref=sif, archive="")
        else:
            run_target = target
        name = instance_name(options.run_id, next(self._counter))
        home = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-")
        try:
            for sub in ("tmp", "var-tmp"):
                os.makedirs(private_tmp(home, sub), mode=0o1777 if os.geteuid() == 0 else 0o700)
            session = self._start(run_target, options, name, home)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        if prepared is not None:
            session.target = target
            session.facts["archive"] = prepared
        return session

    def convert_archive(self, target: Target) -> tuple[str, dict[str, Any]]:
        """The SIF of an archive target, converted once and cached by what the image is made of.

        ``apptainer exec docker-archive://x.tar`` would convert on every exec; users convert once
        with ``apptainer build``, and so do we, into ``$XDG_CACHE_HOME/containercheck/sif``.

        The archive is verified before it is converted and before a SIF is reused: its config and
        every layer hashed against the digests its metadata names (for a docker archive the
        config's ``diff_ids``), and the SIF named by :attr:`~..archives.ArchiveInfo.content_key`, the
        digest of the config's and every layer's.  Keyed by the config digest alone, an archive with
        a genuine config and an altered layer was converted once, and the genuine archive then ran
        the altered SIF.  A layer that does not match is a usage error naming it (at preflight);
        the config digest is still the image id the reports show.
        """
        info = target_archive(target, verify=True)
        cache = sif_cache()
        sif = os.path.join(cache, f"sha256-{info.content_key}.sif")
        facts: dict[str, Any] = {"config_digest": info.config_digest, "content_key": f"sha256:{info.content_key}",
                                 "sif": sif}
        if os.path.isfile(sif):
            facts.update(converted=False, prepared=f"cached SIF {os.path.basename(sif)}")
            return sif, facts
        os.makedirs(cache, exist_ok=True)
        partial = partial_path(sif)
        t0 = time.monotonic()
        source = target.ref
        if info.compression:
            # apptainer 1.4.5 reads only plain tars ("gzip: invalid header"): decompress beside the SIF.
            source = f"{partial}.tar"
            try:
                decompress_to(target.ref, info.compression, source)
            except (OSError, EOFError, ValueError) as exc:
                if os.path.exists(source):
                    os.unlink(source)
                raise RuntimeFault(f"decompressing {target.ref!r} for apptainer build failed: {exc}",
                                   fix="check the disk space of the cache directory, or decompress it yourself",
                                   fault="host") from None
        try:
            res = run_bounded([self.executable, "build", "--force", partial, f"{info.kind}://{source}"],
                              timeout=24 * 3600)
        finally:
            if source != target.ref and os.path.exists(source):
                os.unlink(source)
        if res.returncode != 0 or res.timed_out:
            if os.path.exists(partial):
                os.unlink(partial)
            reason, fix = classify_failure(text(res.stderr) + text(res.stdout))
            raise RuntimeFault(f"converting the archive to a SIF failed: {reason}", fix=fix,
                               evidence=_ANSI.sub("", text(res.stderr))[-4000:], fault="host")
        os.replace(partial, sif)
        took = round(time.monotonic() - t0, 1)
        facts.update(converted=True, convert_seconds=took, prepared=f"apptainer build {took:.1f} s")
        return sif, facts

    def _start(self, target: Target, options: LaunchOptions, name: str, home: str) -> ApptainerSession:
        flags = self.gpu_flags_for(options)
        gpu: dict[str, Any] = {"requested": "none" if options.gpus == "none" else options.apptainer_gpu,
                               "flags": flags, "attached": bool(flags), "error": None, "warnings": []}
        if options.gpus_why:
            gpu["why"] = options.gpus_why
        if self.nvccli_configured:
            gpu["nvccli_configured"] = f"use nvidia-container-cli = yes in {self.conf_file}"
        if gpu["requested"] == "nvccli" or (gpu["requested"] == "nv" and self.nvccli_configured):
            # What nvidia-container-cli is given: apptainer's own environment's capabilities (the
            # launch env passes this process's), default compute,utility (gpu/nvidia.go NVCLIEnvToFlags).
            caps = self.launch_env(options).get("NVIDIA_DRIVER_CAPABILITIES") or ""
            gpu.update(nvccli=True, nvccli_capabilities=caps)
        res = run_bounded(self.start_command(target, options, name, home), env=self.launch_env(options),
                          timeout=START_TIMEOUT_S)
        err = text(res.stderr)
        if res.returncode != 0 and flags and gpu.get("nvccli") and _mentions_nvccli(err):
            # nvidia-container-cli missing or failing is fatal to apptainer: run without GPUs,
            # as the Docker path does when the toolkit is missing; the GPU rows say why.
            reason, fix = classify_failure(err)
            # nvidia-container-cli's own failure (driver, device, the image's driver files) says more
            # than "it failed": the same libnvidia-container texts as Docker's hook.
            known = nvidia_errors.classify(err)
            fault = known["fault"] if known else "host"
            fix = str(known["fix"]) if known else fix
            if "requirement error" in err:
                # The requirement is apptainer's environment's, never the image's (see _CAUSES); the
                # driver does not meet it: the pair of that environment and this host's driver.
                fault = "pair"
            gpu.update(attached=False, error=reason, fix=fix, fault=fault, start_stderr=err[-2000:])
            _stop_instance(self.executable, name)
            flags = []
            res = run_bounded(self.start_command(target, options, name, home, gpu_flags=[]),
                              env=self.launch_env(options), timeout=START_TIMEOUT_S)
            err = text(res.stderr)
        if res.timed_out or res.returncode != 0:
            _stop_instance(self.executable, name)
            if res.timed_out:
                raise RuntimeFault(f"'{self.executable} instance start' did not finish in {START_TIMEOUT_S:.0f} s",
                                   fix="check the filesystem the SIF is on, and apptainer's log", evidence=err,
                                   fault="host")
            reason, fix = classify_failure(err)
            raise RuntimeFault(reason, fix=fix, evidence=_ANSI.sub("", err)[-4000:], fault="host")
        warnings = gpu_warnings(err)
        if flags and warnings:
            gpu.update(attached=False, warnings=warnings, error=warnings[0],
                       fix="check the host's ROCm installation (rocm-smi or amd-smi on the host); Apptainer binds "
                           "what rocmliblist.conf lists and finds" if gpu["requested"] == "rocm" else
                           "check the host's NVIDIA driver installation (nvidia-smi on the host); nvidia-container-cli "
                           "mounts what the driver has for the capabilities it is given (nvliblist.conf is not read)"
                           if gpu.get("nvccli") else
                           "check the host's NVIDIA driver installation (nvidia-smi on the host); Apptainer "
                           "binds what nvliblist.conf lists and finds")
        elif flags:
            gpu["note"] = "apptainer reported no missing GPU files (it prints nothing when binding worked, " \
                          "and nothing on a host without a GPU either)"
        return ApptainerSession(self, target, options, name, home, gpu)

    def reap_stale(self) -> list[str]:
        """Stop instances, and remove private homes and half-built SIFs (:func:`reap_partials`), of
        earlier runs on this host whose pytest is gone."""
        if self.resolve_executable() is None:
            return []
        res = run_bounded([self.executable, "instance", "list", "--json"], timeout=60)
        stale = []
        try:
            listed = json.loads(text(res.stdout) or "{}").get("instances") or []
        except ValueError:
            listed = []
        for inst in listed:
            m = _INSTANCE_NAME.match(str(inst.get("instance", "")))
            if m and not pid_alive(int(m.group("pid"))):
                stale.append(str(inst["instance"]))
        for name in stale:
            _stop_instance(self.executable, name)
        reap_partials()
        tmp = tempfile.gettempdir()
        for entry in os.listdir(tmp):
            pid = entry[len(HOME_PREFIX):].partition("-")[0]
            if entry.startswith(HOME_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
        return stale


def sif_cache() -> str:
    """Where archives converted to SIFs are kept: ``$XDG_CACHE_HOME/containercheck/sif``."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(home_path(), ".cache"), "containercheck",
                        "sif")


#: ``<sif>.<host>.<pid>.partial`` (the SIF being built) and ``<sif>.<host>.<pid>.partial.tar`` (the
#: archive decompressed for the build): whose they are, so that the next run on this host removes
#: those of a pytest that is gone (a home directory may be shared by the nodes of a cluster).
_PARTIAL = re.compile(r"^(?P<sif>[^/]+?\.sif)\.(?P<host>.+)\.(?P<pid>\d+)\.partial(?:\.tar)?$")


def partial_path(sif: str) -> str:
    """Where this pytest builds *sif* before renaming it into place."""
    return f"{sif}.{socket.gethostname()}.{os.getpid()}.partial"


def reap_partials(cache: str | None = None) -> list[str]:
    """Remove the half-built SIFs and decompressed archives (gigabytes for real images) that runs
    on this host left in the SIF cache when they were killed: the paths removed."""
    cache = cache or sif_cache()
    try:
        entries = os.listdir(cache)
    except OSError:
        return []
    gone = []
    for entry in entries:
        m = _PARTIAL.match(entry)
        if m and m.group("host") == socket.gethostname() and not pid_alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(cache, entry))
                gone.append(os.path.join(cache, entry))
    return gone


def instance_name(run_id: str, n: int) -> str:
    """``containercheck-<pytest pid>-<run id>-<n>``: the pid lets a later run reap it."""
    return f"{INSTANCE_PREFIX}{os.getpid()}-{run_id or 'run'}-{n}"


def home_path() -> str:
    """The home directory of the user running pytest (the path HOME has on a cluster)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or "/tmp"
    except KeyError:
        return os.environ.get("HOME") or "/tmp"


def setuid_installation(buildcfg: str) -> tuple[bool, str]:
    """Whether apptainer (or Singularity) will use its setuid starter for a non-root user, from
    ``apptainer buildcfg``; and why, in words.

    Apptainer uses ``starter-suid`` when ``APPTAINER_SUID_INSTALL`` is 1 (it is when
    ``LIBEXECDIR/apptainer/bin/starter-suid`` exists: internal/pkg/buildcfg/confgen/gen.go
    ``isSuidInstall``) and apptainer.conf says ``allow setuid = yes`` (the default), for a
    non-root user without ``--userns`` (internal/pkg/runtime/launch/launcher_linux.go ``useSuid``).
    The starter must also be setuid root, or it cannot do its privileged part.
    """
    cfg = dict(line.partition("=")[::2] for line in buildcfg.splitlines() if "=" in line)
    product = "singularity" if "SINGULARITY_SUID_INSTALL" in cfg else "apptainer"
    prefix = product.upper()
    if cfg.get(f"{prefix}_SUID_INSTALL", "").strip() != "1":
        return False, f"{product} is not a setuid installation ({prefix}_SUID_INSTALL is not 1: no starter-suid)"
    starter = os.path.join(cfg.get("LIBEXECDIR", "").strip(), product, "bin", "starter-suid")
    try:
        st = os.stat(starter)
    except OSError as exc:
        return False, f"{starter}: {exc.strerror}"
    if st.st_uid != 0 or not st.st_mode & 0o4000:
        return False, f"{starter} is not setuid root (mode {st.st_mode & 0o7777:o}, owner uid {st.st_uid})"
    conf = cfg.get(f"{prefix}_CONF_FILE", "").strip()
    allow = "yes"  # apptainerconf: AllowSetuid default:"yes"
    try:
        with open(conf, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, val = line.split("#", 1)[0].partition("=")
                if key.strip().lower() == "allow setuid" and val.strip():
                    allow = val.strip().lower()
    except OSError:
        pass
    if allow != "yes":
        return False, f"{conf} says 'allow setuid = {allow}', so {product} will not use {starter}"
    return True, f"setuid installation: {starter}, 'allow setuid = yes' in {conf}"


def read_conf(path: str) -> dict[str, str]:
    """``apptainer.conf`` as ``{directive: value}`` (lower-case directives; the last one wins; ``#``
    starts a comment): pkg/util/apptainerconf's ``directive:"..."`` keys."""
    conf: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, val = line.split("#", 1)[0].partition("=")
                if sep and key.strip():
                    conf[" ".join(key.split()).lower()] = val.strip()
    except OSError:
        pass
    return conf


def nvccli_configured(buildcfg: str) -> tuple[str, bool]:
    """(the configuration file, whether it says ``use nvidia-container-cli = yes``) from ``apptainer
    buildcfg``'s ``APPTAINER_CONF_FILE`` (``SINGULARITY_CONF_FILE``).  apptainer
    pkg/util/apptainerconf/config.go: ``UseNvCCLI bool default:"no" directive:"use nvidia-container-cli"``;
    with it, plain ``--nv`` runs nvidia-container-cli (launcher_linux.go ``SetGPUConfig``)."""
    cfg = dict(line.partition("=")[::2] for line in buildcfg.splitlines() if "=" in line)
    path = (cfg.get("APPTAINER_CONF_FILE") or cfg.get("SINGULARITY_CONF_FILE") or "").strip()
    if not path:
        return "apptainer.conf (not found: apptainer buildcfg named none)", False
    return path, read_conf(path).get("use nvidia-container-cli", "no").lower() == "yes"


def userns_problem(*, euid: int | None = None, max_user_namespaces: str = "/proc/sys/user/max_user_namespaces"
                   ) -> str | None:
    """Why a non-setuid apptainer cannot run here without privilege, when that is known before
    launch (:func:`setuid_installation` says whether a setuid one can)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return None
    try:
        with open(max_user_namespaces) as fh:
            if int(fh.read().strip() or "1") == 0:
                return ("user namespaces are disabled on this host (user.max_user_namespaces = 0), so a non-setuid "
                        "apptainer cannot start; enable them (sysctl user.max_user_namespaces=15000) or use a "
                        "setuid installation")
    except (OSError, ValueError):
        pass
    return None


def _device_list(gpus: str) -> str | None:
    """``device=0,2`` -> ``0,2``; ``2`` -> ``0,1``; ``all``/``none`` -> None (no selection)."""
    if gpus.startswith("device="):
        return gpus.removeprefix("device=")
    if gpus.isdigit():
        return ",".join(str(i) for i in range(int(gpus)))
    return None


def _mentions_nvccli(stderr: str) -> bool:
    low = stderr.lower()
    return "nvidia-container-cli" in low or "nvccli" in low


def _stop_instance(executable: str, name: str, timeout: float = 60) -> None:
    """``apptainer instance stop --force NAME``, done once the instance's master has exited.

    The master (the starter process named ``Apptainer instance: USER [NAME]``, a child of PID 1)
    unmounts the SIF, waits for squashfuse, deletes the instance file and exits last; ``instance
    stop`` then polls every 10 ms until the master's pid is gone (apptainer
    internal/app/apptainer/instance_linux.go ``killInstance``).  A zombie still has its pid, so
    the command waits for PID 1 to reap it: immediate under systemd, but 1-2 s under a PID 1
    that reaps lazily (this development VM's).  Once the master has exited and the command has
    had 0.1 s to notice, it is ended: nothing of the instance is left by then.
    """
    master = _instance_master(name)
    try:
        proc = subprocess.Popen([executable, "instance", "stop", "--force", name], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if master is not None and exited_at is None and _exited(master):
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 0.1:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _instance_master(name: str) -> int | None:
    """The pid of instance *name*'s master (its process title is ``Apptainer instance: USER
    [NAME]``, ``Singularity`` for SingularityCE: apptainer internal/pkg/instance
    ``ProcName``), or None."""
    title = re.compile(rb"^(?:Apptainer|Singularity) instance: [^\x00\[]* \[" + re.escape(name.encode())
                       + rb"\]\x00?$")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if title.match(fh.read(4096)):
                        return int(entry)
            except OSError:
                continue
    return None


def _exited(pid: int) -> bool:
    """Whether process *pid* is gone, or a zombie (it has exited; only its reaping is left)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


def private_tmp(home: str, which: str = "tmp") -> str:
    """The host directory bound as the image's /tmp (``tmp``) or /var/tmp (``var-tmp``): inside the
    session's private home directory, hidden, so it goes wherever the home goes."""
    return os.path.join(home, f".containercheck-{which}")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def parse_version(output: str) -> str:
    """``apptainer version 1.3.4`` / ``singularity-ce version 4.1.0`` -> ``1.3.4``."""
    m = re.search(r"version\s+(\S+)", output)
    return m.group(1) if m else output.strip()


class ApptainerSession(Session):
    """One running instance of the SIF; each process is an ``apptainer exec instance://NAME``."""

    def __init__(self, runtime: ApptainerRuntime, target: Target, options: LaunchOptions, name: str, home: str,
                 gpu: dict[str, Any]) -> None:
        super().__init__(target)
        self.runtime = runtime
        self.options = options
        self.name = name
        self.home = home
        self._stopped = False
        self.facts.update(runtime=runtime.executable, instance=name, gpu=gpu,
                          command=runtime.start_command(target, options, name, home, gpu_flags=gpu["flags"]))

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, timeout: float | None = None) -> ExecResult:
        return run_bounded(self.runtime.exec_command(self.name, argv), stdin=stdin,
                           env=self.runtime.launch_env(self.options, env), timeout=timeout)

    def kill_inside(self, pid: int, python: str) -> None:
        """Kill process group *pid* inside the instance (killing the exec client leaves it running)."""
        code = "import os,sys\ntry:\n os.killpg(int(sys.argv[1]), 9)\nexcept OSError:\n pass"
        run_bounded(self.runtime.exec_command(self.name, [python, "-c", code, str(pid)]),
                    env=self.runtime.launch_env(self.options), timeout=30)

    def alive(self) -> bool:
        res = run_bounded([self.runtime.executable, "instance", "list", "--json", self.name], timeout=30)
        try:
            listed = json.loads(text(res.stdout) or "{}").get("instances") or []
        except ValueError:
            return False
        return any(i.get("instance") == self.name for i in listed)

    def health(self, since: float) -> Health:
        if self.alive():
            return Health(running=True)
        return Health(running=False, reason=f"the apptainer instance {self.name} is gone")

    def stop(self) -> None:
        """Stop the instance (its processes and its SIF mount) and remove the private home."""
        if self._stopped:
            return
        self._stopped = True
        _stop_instance(self.runtime.executable, self.name)
        shutil.rmtree(self.home, ignore_errors=True)
