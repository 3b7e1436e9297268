"""Apptainer and Singularity: one class, two executables.

There is no long-lived container: each probe is one ``apptainer exec`` of the SIF file
(Apptainer mounts the squashfs per exec; a run has a handful of probes, so an instance
would save little and adds a daemon-like process that can leak).  The exec is a child
of pytest on the host, so killing its process group kills the probe.

Command lines follow the Apptainer user guide: ``--nv`` binds the host's NVIDIA driver
libraries and devices (``--nvccli`` uses nvidia-container-cli instead, ``--rocm`` for AMD),
``--no-home`` keeps the user's home directory out, ``--cleanenv`` keeps host secrets out,
``--env K=V`` sets what the probe needs.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from .base import ExecResult, LaunchOptions, Runtime, Session, Target, last_line, run_bounded, text

#: From the SIF specification (sylabs/sif): a 32-byte launch script, then this magic.
SIF_LAUNCH_LEN = 32
SIF_MAGIC = b"SIF_MAGIC\x00"
SIF_HEADER_LEN = 128
_SIF_OFFSETS = struct.Struct("<qqqqqq")  # descriptors free/total/offset/size, data offset/size

GPU_FLAGS = {"nv": ["--nv"], "nvccli": ["--nv", "--nvccli"], "rocm": ["--rocm"], "none": []}


def check_sif(path: str, spec: str) -> dict[str, Any]:
    """Validate a SIF file from its header before anything is launched.

    Raises :class:`pytest.UsageError` for a missing, empty, foreign or truncated file.
    """
    if not os.path.exists(path):
        raise pytest.UsageError(f"--image {spec}: no such file {path!r}; check the path to the .sif image")
    if os.path.isdir(path):
        raise pytest.UsageError(
            f"--image {spec}: {path!r} is a directory; sandbox directories are not supported, "
            "build a SIF with 'apptainer build image.sif <dir>'"
        )
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            header = fh.read(SIF_HEADER_LEN)
    except OSError as exc:
        raise pytest.UsageError(
            f"--image {spec}: cannot read {path!r} ({exc.strerror}); check its permissions") from None
    if size == 0:
        raise pytest.UsageError(f"--image {spec}: {path!r} is empty; copy the .sif again")
    magic = header[SIF_LAUNCH_LEN:SIF_LAUNCH_LEN + len(SIF_MAGIC)]
    if magic != SIF_MAGIC:
        if len(header) < SIF_LAUNCH_LEN + len(SIF_MAGIC):
            why = f"only {size} bytes, too short for a SIF header"
        else:
            why = f"found {magic!r} at offset {SIF_LAUNCH_LEN}"
        raise pytest.UsageError(
            f"--image {spec}: {path!r} is not a SIF image (expected magic 'SIF_MAGIC' at byte "
            f"{SIF_LAUNCH_LEN}; {why}); build one with 'apptainer build'"
        )
    if len(header) < SIF_HEADER_LEN:
        raise pytest.UsageError(
            f"--image {spec}: {path!r} is truncated ({size} bytes, header alone needs {SIF_HEADER_LEN}); copy it again"
        )
    _free, _total, d_off, d_size, data_off, data_size = _SIF_OFFSETS.unpack_from(header, 80)
    needed = max(d_off + d_size, data_off + data_size)
    if needed > size:
        raise pytest.UsageError(
            f"--image {spec}: {path!r} is truncated ({size} bytes on disk, its header says "
            f"{needed}); the copy did not finish, copy it again"
        )
    return {"sif_size": size, "sif_version": header[42:45].rstrip(b"\x00").decode("ascii", "replace")}


class ApptainerRuntime(Runtime):
    """Apptainer, or Singularity on older clusters (same command line)."""

    names = ("apptainer", "singularity")
    family = "sif"

    def __init__(self, name: str, executable: str | None = None) -> None:
        super().__init__(name)
        self.executable = executable or name

    def resolve_executable(self) -> str | None:
        """``apptainer`` if present, else ``singularity`` (older clusters), else None."""
        order = [self.executable] + (["singularity"] if self.executable == "apptainer" else [])
        for exe in order:
            found = shutil.which(exe)
            if found:
                self.executable = exe
                return found
        return None

    def gpu_flags_for(self, options: LaunchOptions) -> list[str]:
        return list(GPU_FLAGS["none" if options.gpus == "none" else options.apptainer_gpu])

    def exec_command(self, target: Target, options: LaunchOptions, argv: Sequence[str],
                     env: Mapping[str, str] | None = None) -> list[str]:
        """The exact ``apptainer exec`` command line that runs *argv* in the SIF."""
        cmd = [self.executable, "exec", *self.gpu_flags_for(options), "--no-home", "--cleanenv"]
        if options.network == "none":
            # --net needs privilege or a configured CNI on most sites; keep it only when
            # the user asked for a particular network with --runtime-arg.
            pass
        merged = dict(options.env)
        merged.update(env or {})
        for key, value in merged.items():
            cmd += ["--env", f"{key}={value}"]
        cmd += list(options.runtime_args)
        return [*cmd, target.ref, *argv]

    def command_line(self, target: Target, options: LaunchOptions, argv: Sequence[str]) -> list[str]:
        return self.exec_command(target, options, argv)

    def preflight(self, target: Target) -> dict[str, Any]:
        facts = check_sif(target.ref, target.spec)
        if self.resolve_executable() is None:
            raise pytest.UsageError(
                f"--image {target.spec}: neither 'apptainer' nor 'singularity' is on PATH; "
                "'module load apptainer' on clusters, or install Apptainer"
            )
        res = run_bounded([self.executable, "--version"], timeout=30)
        if res.returncode != 0:
            raise pytest.UsageError(
                f"--image {target.spec}: '{self.executable} --version' failed ({last_line(res.stderr)}); "
                "check the installation"
            )
        facts.update(runtime=self.executable, runtime_version=parse_version(text(res.stdout)))
        return facts

    def start(self, target: Target, options: LaunchOptions) -> Session:
        self.resolve_executable()
        return ApptainerSession(self, target, options)


def parse_version(output: str) -> str:
    """``apptainer version 1.3.4`` / ``singularity-ce version 4.1.0`` -> ``1.3.4``."""
    m = re.search(r"version\s+(\S+)", output)
    return m.group(1) if m else output.strip()


class ApptainerSession(Session):
    """Runs each process with its own ``apptainer exec``."""

    def __init__(self, runtime: ApptainerRuntime, target: Target, options: LaunchOptions) -> None:
        super().__init__(target)
        self.runtime = runtime
        self.options = options
        gpu = "none" if options.gpus == "none" else options.apptainer_gpu
        self.facts.update(
            runtime=runtime.executable,
            gpu={"requested": gpu, "attached": gpu != "none", "error": None, "flags": GPU_FLAGS[gpu]},
        )

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, timeout: float | None = None) -> ExecResult:
        res = run_bounded(self.runtime.exec_command(self.target, self.options, argv, env),
                          stdin=stdin, timeout=timeout)
        err = text(res.stderr)
        if "Could not find any nv files" in err or "could not find any nv libraries" in err.lower():
            # Apptainer warns and goes on without the driver libraries: record it, the GPU
            # checks turn it into a verdict.
            self.facts["gpu"].update(attached=False, error=last_line(err))
        return res

    def kill_inside(self, pid: int, python: str) -> None:
        """Kill the probe's process group on the host.

        Apptainer runs processes in the host's PID namespace unless ``--pid``/``--containall``
        is given, so the pid the probe reported is a host pid.  With a PID namespace the
        pid means nothing here, but killing ``apptainer exec`` (done by run_bounded) ends the
        namespace's init and with it every process in it.  So the pid is only used when
        the host process with that pid really is our probe interpreter (``<python> -``).
        """
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            return
        if len(argv) >= 2 and argv[1] == b"-" and os.path.basename(argv[0].decode(errors="replace")) == \
                os.path.basename(python):
            try:
                os.killpg(pid, 9)
            except OSError:
                pass

    def stop(self) -> None:
        """Nothing outlives an exec; there is nothing to stop."""
