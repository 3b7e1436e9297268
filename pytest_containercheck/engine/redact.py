"""Values passed with ``--container-env`` never reach a report, a terminal or ``ps``.

A variable passed into the image is often a secret (``HF_TOKEN``, a registry password).  The
runtimes get values through their client's environment (``docker run --env NAME``,
``APPTAINERENV_NAME``), never on a command line any local user can read; this module keeps
them out of what the run records:

* :func:`redact_args` -- pytest's own command line (``meta.pytest_args``, the HTML header):
  ``--container-env NAME=VALUE`` becomes ``NAME=<redacted>``;
* :class:`Redactor` -- every cell (detail, fix, evidence, launch facts): in a mapping, the value
  under a passed variable's name becomes ``$NAME`` whatever its length; in any text, each passed
  value of at least :data:`MIN_TEXT_LEN` characters (:data:`MIN_SECRET_TEXT_LEN` when the name
  looks like a secret's) becomes ``$NAME``.  Shorter values are left in free text, where
  replacing every ``1`` or ``all`` would garble the reports.

An absolute path (``HF_HOME=/scratch/hf``, ``SSL_CERT_FILE=/etc/ssl/x.pem``) is kept, unless the
name looks like a secret's: paths are what the rows reason about ("... does not exist"), and a
token or password does not start with ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

MIN_TEXT_LEN: Final = 8
MIN_SECRET_TEXT_LEN: Final = 4
REDACTED: Final = "<redacted>"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|KEY|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
_ENV_OPTIONS: Final = ("--container-env",)
_ENV_INI: Final = "containercheck_container_env="


_PATH = re.compile(r"^/\S*$")


def looks_secret(name: str) -> bool:
    """Whether variable *name* reads like a secret's (``HF_TOKEN``, ``DB_PASSWORD``, ``API_KEY``)."""
    return bool(_SECRET_NAME.search(name))


class Redactor:
    """Replaces the values of the variables passed into the image wherever they appear."""

    __slots__ = ("_env", "_texts")

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {name: value for name, value in env.items() if looks_secret(name) or not _PATH.match(value)}
        pairs = [(value, name) for name, value in self._env.items()
                 if len(value) >= (MIN_SECRET_TEXT_LEN if looks_secret(name) else MIN_TEXT_LEN)]
        # Longest first, so a value that contains another is replaced whole.
        self._texts = sorted(pairs, key=lambda p: -len(p[0]))

    def __bool__(self) -> bool:
        return bool(self._env)

    def text(self, value: str) -> str:
        """*value* with every long enough passed value replaced by ``$NAME``."""
        for secret, name in self._texts:
            if secret in value:
                value = value.replace(secret, f"${name}")
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


def redact_args(args: Sequence[str]) -> list[str]:
    """pytest's command line with the values of ``--container-env NAME=VALUE`` (and of the
    ``-o containercheck_container_env=...`` ini override) replaced by ``<redacted>``."""
    out: list[str] = []
    after_option = False
    for arg in args:
        arg = str(arg)
        if after_option:
            out.append(_redact_item(arg))
            after_option = False
            continue
        name, eq, rest = arg.partition("=")
        if name in _ENV_OPTIONS:
            if eq:
                out.append(f"{name}={_redact_item(rest)}")
            else:
                out.append(arg)
                after_option = True
        elif arg.startswith(_ENV_INI) or arg.startswith("-o" + _ENV_INI):
            head, _, values = arg.partition("=")
            out.append(f"{head}=" + " ".join(_redact_item(v) for v in values.split()))
        else:
            out.append(arg)
    return out


def _redact_item(item: str) -> str:
    name, eq, _ = item.partition("=")
    return f"{name}={REDACTED}" if eq else item
