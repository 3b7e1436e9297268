"""Values passed into the image never reach a report, a terminal or ``ps``, in any form.

A variable passed into the image is often a secret (``HF_TOKEN``, a registry password, a proxy's
``https://user:pass@proxy``).  The runtimes get ``--container-env`` values through their client's
environment (``docker run --env NAME``, ``APPTAINERENV_NAME``), never on a command line any local
user can read; this module keeps them out of what the run records:

* :func:`redact_args` -- pytest's own command line (``meta.pytest_args``, the HTML header):
  ``--container-env NAME=VALUE`` and the ini override in every spelling (``-o``, ``-oKEY=``,
  ``--override-ini KEY=``, ``--override-ini=KEY=``) become ``NAME=<redacted>``, and so do the
  variables ``--runtime-arg`` gives the runtime (``--env=NAME=VALUE``, ``--env NAME=VALUE``,
  ``-e NAME=VALUE``, ``-eNAME=VALUE``; :func:`runtime_arg_env`);
* :class:`Redactor` -- every cell (detail, fix, evidence, launch facts) and every failure message:
  in a mapping, the value under a passed variable's name becomes ``$NAME`` whatever its length;
  ``NAME=VALUE`` anywhere (a command line) becomes ``NAME=$NAME``; in any text, each passed value
  of at least :data:`MIN_TEXT_LEN` characters (:data:`MIN_SECRET_TEXT_LEN` when the name looks
  like a secret's) becomes ``$NAME`` -- in every form a program prints it in (:func:`forms`:
  as it is, Python's ``repr``, JSON, shell quoting, URL encoding, its whitespace collapsed) and,
  for a value of several lines (a PEM key), each line.  Shorter values are left in free text,
  where replacing every ``1`` or ``all`` would garble the reports.

Redaction comes first: before the detail's whitespace is collapsed, before control characters
are shown as escapes, before anything is cut to length; a value changed by any of these would
no longer be found.

An absolute path (``HF_HOME=/scratch/hf``, ``SSL_CERT_FILE=/etc/ssl/x.pem``) is kept, unless the
name looks like a secret's: paths are what the rows reason about ("... does not exist"), and a
token or password does not start with ``/``.

A value on the runtime's own command line (``--runtime-arg=--env=NAME=VALUE``) is visible to
every user of the host while the runtime runs (``ps``): :func:`command_line_warning` says so,
with the way to pass it safely.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, quote_plus

MIN_TEXT_LEN: Final = 8
MIN_SECRET_TEXT_LEN: Final = 4
REDACTED: Final = "<redacted>"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|KEY|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
_ENV_OPTION: Final = "--container-env"
_RUNTIME_ARG: Final = "--runtime-arg"
_INI_OPTIONS: Final = ("-o", "--override-ini")
_ENV_INI: Final = "containercheck_container_env"
_RUNTIME_INI: Final = "containercheck_runtime_args"
#: The runtimes' flags that give a variable a value: docker/podman ``--env``/``-e`` (pflag: ``-e V``,
#: ``-eV``, ``-e=V``, ``--env V``, ``--env=V``), apptainer's ``--env``.  Apptainer's ``-e`` is
#: ``--cleanenv`` and takes no value: reading its next argument as one only redacts more.
_ENV_FLAGS: Final = ("--env", "-e")


_PATH = re.compile(r"^/\S*$")


def looks_secret(name: str) -> bool:
    """Whether variable *name* reads like a secret's (``HF_TOKEN``, ``DB_PASSWORD``, ``API_KEY``)."""
    return bool(_SECRET_NAME.search(name))


def forms(value: str) -> set[str]:
    """The ways a program may print *value*, and each line of it (:class:`Redactor` replaces them all):

    as it is; its whitespace collapsed (a detail is one line); Python's ``repr`` and ``ascii``
    without their quotes (``\\n`` for a new line, ``\\'`` or not); JSON without its quotes
    (``\\u00e9`` or ``é``); shell quoting (``shlex.quote``, and inside double quotes); URL encoding
    (``quote`` with and without ``/``, ``quote_plus``).
    """
    out: set[str] = set()
    for x in {value, " ".join(value.split()), *value.splitlines()}:
        if not x:
            continue
        out |= {x, repr(x)[1:-1], repr(x + '"')[1:-2], ascii(x)[1:-1], json.dumps(x)[1:-1],
                json.dumps(x, ensure_ascii=False)[1:-1], shlex.quote(x), re.sub(r'(["\\$`])', r"\\\1", x),
                quote(x), quote(x, safe=""), quote_plus(x)}
    return out


#: Variables whose values the verdicts read and the reports show, so they are no secret: what the
#: GPU stack reads (NVIDIA's runtime hook and nvidia-container-cli: ``NVIDIA_*``; CUDA's and ROCm's
#: device selection; glvnd's EGL/GLX vendor choice; VTK's EGL device) and ``CUDA_VERSION`` (the
#: mark of NVIDIA's CUDA base images).  A value set with ``--container-env`` for one of these
#: emulates a deployment, and the report names it as a launch difference (``plainlaunch.py``).
SHOWN = re.compile(r"^(?:NVIDIA_\w+|CUDA_VISIBLE_DEVICES|CUDA_DEVICE_ORDER|CUDA_VERSION|ROCR_VISIBLE_DEVICES|"
                   r"HIP_VISIBLE_DEVICES|GPU_DEVICE_ORDINAL|__EGL_VENDOR_LIBRARY_\w+|__GLX_VENDOR_LIBRARY_NAME|"
                   r"VTK_(?:DEFAULT_)?EGL_DEVICE_INDEX)$")


class Redactor:
    """Replaces the values of the variables passed into the image wherever they appear."""

    __slots__ = ("_env", "_texts")

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {name: value for name, value in env.items()
                     if looks_secret(name) or not (_PATH.match(value) or SHOWN.match(name))}
        texts: dict[str, str] = {}
        for name, value in self._env.items():
            if value:
                texts[f"{name}={value}"] = f"{name}=${name}"  # a command line's NAME=VALUE, however short
            least = MIN_SECRET_TEXT_LEN if looks_secret(name) else MIN_TEXT_LEN
            for form in forms(value):
                if len(form) >= least:
                    texts.setdefault(form, f"${name}")
        # Longest first, so a value that contains another (or a form that contains a line) is replaced whole.
        self._texts = sorted(texts.items(), key=lambda p: -len(p[0]))

    def __bool__(self) -> bool:
        return bool(self._env)

    def text(self, value: str) -> str:
        """*value* with every long enough passed value, in each of its forms, replaced by ``$NAME``."""
        for secret, replacement in self._texts:
            if secret in value:
                value = value.replace(secret, replacement)
        return value

    def __call__(self, value: Any) -> Any:
        """A copy of *value* (builtins, nested) with passed values replaced."""
        if not self._env:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if isinstance(key, str) and key in self._env and isinstance(item, str) and item == self._env[key]:
                    out[key] = f"${key}"
                else:
                    out[key] = self(item)
            return out
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        return value


def _env_flag_values(args: Sequence[str]) -> list[tuple[int, str, str]]:
    """(index, the text before the item, ``NAME=VALUE``) of each variable *args* (a runtime's
    flags) give with a value; the item is ``args[index]`` minus that prefix."""
    found = []
    i = 0
    while i < len(args):
        arg = str(args[i])
        if arg in _ENV_FLAGS and i + 1 < len(args):
            found.append((i + 1, "", str(args[i + 1])))
            i += 2
            continue
        if arg.startswith("--env="):
            found.append((i, "--env=", arg[len("--env="):]))
        elif arg.startswith("-e") and not arg.startswith("--") and len(arg) > 2:
            prefix = "-e=" if arg.startswith("-e=") else "-e"
            found.append((i, prefix, arg[len(prefix):]))
        i += 1
    return [(i, prefix, item) for i, prefix, item in found if "=" in item]


def runtime_arg_env(args: Sequence[str]) -> dict[str, str]:
    """NAME -> VALUE of each variable the ``--runtime-arg`` values *args* give the runtime on its
    command line (``--env=NAME=VALUE``, ``--env NAME=VALUE``, ``-e NAME=VALUE``, ``-eNAME=VALUE``)."""
    return dict(item.partition("=")[::2] for _i, _prefix, item in _env_flag_values(args))


def redact_runtime_args(args: Sequence[str]) -> list[str]:
    """*args* (a runtime's flags) with the value of each variable they give replaced by ``<redacted>``."""
    out = [str(a) for a in args]
    for i, prefix, item in _env_flag_values(args):
        out[i] = f"{prefix}{_redact_item(item)}"
    return out


def command_line_warning(args: Sequence[str]) -> str | None:
    """One line for a run whose ``--runtime-arg`` values put a variable's value on the runtime's
    command line, where every user of the host can read it while the runtime runs; None otherwise."""
    names = list(runtime_arg_env(args))
    if not names:
        return None
    given = ", ".join(f"--runtime-arg=--env={n}=..." for n in names)
    safe = " ".join(f"--container-env {n}" for n in names)
    return (f"WARNING: {given} puts the value on the runtime's command line, where every user of this host can "
            f"read it (ps) while the container starts; pass it with {safe} instead (the value is then taken from "
            "your environment and reaches the runtime through its own)")


def redact_args(args: Sequence[str]) -> list[str]:
    """pytest's command line with every value a variable is given replaced by ``<redacted>``:
    ``--container-env``, its ini key through ``-o``/``--override-ini`` (every spelling), and the
    ``--env``/``-e`` values of ``--runtime-arg`` (also through its ini key).

    A ``--runtime-arg`` value may be split over two options (``--runtime-arg=-e --runtime-arg=N=V``):
    the runtime arguments are redacted as the one list the runtime gets.
    """
    out = [str(a) for a in args]
    runtime: list[tuple[int, str]] = []  # (index in out, prefix) of each --runtime-arg value
    i = 0
    while i < len(out):
        arg = out[i]
        name, eq, rest = arg.partition("=")
        takes_next = i + 1 < len(out)
        if name == _ENV_OPTION:
            if eq:
                out[i] = f"{name}={_redact_item(rest)}"
            elif takes_next:
                out[i + 1] = _redact_item(out[i + 1])
                i += 1
        elif name == _RUNTIME_ARG:
            if eq:
                runtime.append((i, f"{name}="))
            elif takes_next:
                runtime.append((i + 1, ""))
                i += 1
        elif arg in _INI_OPTIONS and takes_next:
            out[i + 1] = _redact_ini(out[i + 1])
            i += 1
        elif name == "--override-ini" and eq:
            out[i] = f"--override-ini={_redact_ini(arg[len('--override-ini='):])}"
        elif arg.startswith("-o") and not arg.startswith("--"):
            out[i] = "-o" + ("=" if arg.startswith("-o=") else "") + _redact_ini(arg[2:].removeprefix("="))
        i += 1
    values = redact_runtime_args([out[j][len(prefix):] for j, prefix in runtime])
    for (j, prefix), value in zip(runtime, values):
        out[j] = prefix + value
    return out


def _redact_ini(override: str) -> str:
    """``KEY=VALUE`` of an ini override, with the values its variables are given redacted."""
    key, eq, value = override.partition("=")
    if not eq or key not in (_ENV_INI, _RUNTIME_INI):
        return override
    try:
        items = shlex.split(value)  # how pytest reads an "args" ini value
    except ValueError:
        return f"{key}={REDACTED}"
    redacted = [_redact_item(v) for v in items] if key == _ENV_INI else redact_runtime_args(items)
    return f"{key}={' '.join(redacted)}"  # shown, never parsed again


def _redact_item(item: str) -> str:
    name, eq, _ = item.partition("=")
    return f"{name}={REDACTED}" if eq else item
