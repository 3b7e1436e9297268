"""Verdicts for system rows that judge one probe's facts: pure functions, like ``verdicts.ml``.

:func:`os_and_glibc` and :func:`writable_cache` judge the ``system`` probe (``probes/system.py``):
is the image a glibc system new enough for manylinux wheels, and can code write its caches?

:func:`tls` judges ``probes/tls.py``: can HTTPS certificates be verified inside the image?  An
image without CA certificates starts fine and imports everything; it fails only when code first
downloads something (``torch.hub``, ``urllib``, a model hub, ``pip``) with
``ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]``, often deep inside a job.
The probe is offline: it reads the trust store the ``ssl`` module would use, the CA variables
and certifi's bundle, and this module decides.

Where Python's default SSL context (``ssl.create_default_context()``, used by ``urllib``,
``http.client`` and ``torch.hub``) finds CA certificates:

* the CA file ``ssl.get_default_verify_paths().cafile`` (``SSL_CERT_FILE``, else OpenSSL's
  compiled-in ``cert.pem``), loaded at once: ``cert_store_stats()["x509_ca"]`` counts it;
* the CA directory ``capath`` (``SSL_CERT_DIR``, else OpenSSL's ``certs/``), looked up on
  demand by subject-hash file names (``1e09d511.0``): not in ``cert_store_stats()``, so the
  probe counts the hashed files.

``requests`` (and the clients built on it) verify with certifi's bundle instead, unless
``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` name another file, which must then exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..verdict import Verdict, failed, passed

__all__ = ["CA_FILE_VARIABLES", "MIN_GLIBC", "ca_package_fix", "os_and_glibc", "tls", "writable_cache"]

#: Oldest glibc that PyPI's manylinux2014 wheels (torch, vtk, xgboost) load on.
MIN_GLIBC = (2, 17)

#: Variables naming a CA bundle *file*: a tool that reads one that names no bundle verifies
#: nothing (``requests`` raises "Could not find a suitable TLS CA certificate bundle").
CA_FILE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

_APT = "apt-get install -y ca-certificates"
_DNF = "dnf install -y ca-certificates"
_PACKAGE_FIXES = (
    ({"debian", "ubuntu"}, _APT),
    ({"rhel", "fedora", "centos", "rocky", "almalinux", "amzn", "ol"}, _DNF),
    ({"alpine"}, "apk add ca-certificates"),
    ({"suse", "opensuse", "sles"}, "zypper install -y ca-certificates"),
)


def ca_package_fix(os_release: Mapping[str, Any] | None) -> str:
    """The command that installs the CA bundle, for the image's distribution (``/etc/os-release``
    ``ID`` and ``ID_LIKE``); both common ones when the distribution is unknown."""
    release = os_release or {}
    ids = {str(release.get("ID") or "").lower(), *str(release.get("ID_LIKE") or "").lower().split()}
    for names, command in _PACKAGE_FIXES:
        if ids & names:
            return command
    return f"{_APT} (Debian/Ubuntu) or {_DNF} (RHEL/Fedora)"


def os_and_glibc(facts: Mapping[str, Any]) -> Verdict:
    """``system.os``: a glibc system at least :data:`MIN_GLIBC` (the ``system`` probe's facts).

    Fails (the image's fault) on musl or another libc, on an unknown libc version, and on a glibc
    older than manylinux2014's; passes naming the OS, the libc and the machine.
    """
    release = (facts.get("os_release") or {}).get("PRETTY_NAME") or "unknown OS (no /etc/os-release)"
    glibc = facts.get("glibc") or {}
    if glibc.get("name") != "glibc" or not glibc.get("version"):
        return failed(f"{release}: not a glibc system ({glibc}); manylinux wheels (torch, vtk) will not load",
                      fix="use a glibc-based base image (Debian, Ubuntu, RHEL), not Alpine/musl", fault="image")
    version = tuple(int(p) for p in str(glibc["version"]).split(".")[:2])
    if version < MIN_GLIBC:
        return failed(f"glibc {glibc['version']} is older than 2.17; manylinux2014 wheels will not load",
                      fix="rebuild on a newer base image", fault="image")
    return passed(f"{release}, {glibc.get('name')} {glibc.get('version')}, {facts.get('machine')}")


def writable_cache(facts: Mapping[str, Any]) -> Verdict:
    """``system.writable_cache``: HOME and the cache directories the ``system`` probe tried are
    writable; fails (the image's fault) naming each one that is not."""
    writable = facts.get("writable") or {}
    bad = [f"{k} ({v['path']}: {v.get('error')})" for k, v in writable.items() if not v["writable"]]
    if bad:
        return failed("not writable: " + ", ".join(bad), fault="image",
                      fix="point HOME/XDG_CACHE_HOME/HF_HOME/TORCH_HOME at a writable directory "
                          "(e.g. --container-env XDG_CACHE_HOME=/tmp/cache; Apptainer: --writable-tmpfs "
                          "or bind a scratch directory)")
    return passed(", ".join(f"{k} {v['path']}" for k, v in writable.items()) + " writable")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bad_file_variable(name: str, info: Mapping[str, Any]) -> str | None:
    """Why the CA file variable *name* names no usable bundle, or None when it does."""
    path = info.get("path")
    if not path:  # empty: ignored by requests and by Python's ssl module
        return None
    if not info.get("exists"):
        return f"{name}={path} does not exist"
    if not info.get("is_file"):
        return f"{name}={path} is not a file"
    if info.get("error"):
        return f"{name}={path} cannot be read ({info['error']})"
    if _int(info.get("certificates")) == 0:
        return f"{name}={path} holds no PEM certificate"
    return None


def _describe_file(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "no default CA file"
    path = str(info.get("path"))
    if not info.get("exists"):
        target = info.get("realpath")
        return f"{path} is a dangling link to {target}" if target else f"{path} is missing"
    return f"{path} holds {_int(info.get('certificates'))} certificates"


def _describe_dir(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "no default CA directory"
    path = str(info.get("path"))
    if not info.get("is_dir"):
        return f"{path} is missing"
    return f"{path} has {_int(info.get('hashed'))} hashed certificates"


def tls(facts: Mapping[str, Any]) -> Verdict:
    """Can HTTPS be verified inside the image?  Judges the facts of ``probes/tls.py``.

    Fails (the image's fault) when Python has no ``ssl`` module, when a CA variable names a
    missing or empty file, and when Python's default trust store holds no CA certificate
    (also when only certifi's bundle has some: ``urllib`` and ``torch.hub`` do not read it).
    Passes naming the bundle and how many CAs it holds.
    """
    ssl = facts.get("ssl") or {}
    release = facts.get("os_release") or {}
    if not ssl.get("importable"):
        return failed(f"Python's ssl module does not import ({ssl.get('error')}): no HTTPS at all "
                      "(pip, urllib, requests)", fault="image",
                      fix="use a Python built with OpenSSL: the distribution's python3, or build Python after "
                          "installing the OpenSSL headers (libssl-dev / openssl-devel)")

    env = facts.get("env") or {}
    bad = [why for name in CA_FILE_VARIABLES if name in env if (why := _bad_file_variable(name, env[name]))]
    if bad:
        return failed("; ".join(bad) + ": tools that read it find no CA bundle", fault="image",
                      fix="point the variable at an existing CA bundle (Debian/Ubuntu: "
                          "/etc/ssl/certs/ca-certificates.crt, RHEL: /etc/pki/tls/certs/ca-bundle.crt) or unset it "
                          "(ENV in the image, --container-env)")

    store = ssl.get("store") or {}
    loaded = _int(store.get("x509_ca"))
    cafile = facts.get("cafile") or {}
    capath = facts.get("capath") or {}
    hashed = _int(capath.get("hashed"))
    openssl = ssl.get("openssl_version") or "OpenSSL"
    certifi = facts.get("certifi") or {}
    certifi_cas = _int((certifi.get("bundle") or {}).get("certificates"))
    certifi_note = f"; certifi {certifi.get('version')} ({certifi_cas} CAs)" if certifi_cas else ""

    if loaded == 0 and hashed == 0:
        # cafile/capath are None when the path the ssl module resolved does not exist: then
        # name OpenSSL's compiled-in defaults, which is where the certificates should be.
        looked = (f"{_describe_file(facts.get('cafile') or facts.get('openssl_cafile'))}, "
                  f"{_describe_dir(facts.get('capath') or facts.get('openssl_capath'))}")
        if store.get("error"):
            looked += f"; the default context failed: {store['error']}"
        package = ca_package_fix(release)
        if certifi_cas:
            where = certifi.get("where")
            return failed(f"Python's ssl module has no CA certificate, so urllib and torch.hub fail with "
                          f"CERTIFICATE_VERIFY_FAILED; only certifi has CAs ({certifi_cas}, for requests): {looked}",
                          fault="image", fix=f"{package} in the image, or set SSL_CERT_FILE={where}")
        certifi_state = "installed without a bundle" if certifi.get("installed") else "not installed"
        return failed(f"no CA certificates in the image, so every HTTPS download fails with CERTIFICATE_VERIFY_FAILED: "
                      f"{looked}; certifi {certifi_state}", fault="image",
                      fix=f"{package} in the image, or set SSL_CERT_FILE to a CA bundle the image contains")

    if loaded:
        source = cafile.get("path") or "the CA file"
        if cafile.get("realpath"):
            source += f" -> {cafile['realpath']}"
        if "SSL_CERT_FILE" in env:
            source += " (SSL_CERT_FILE)"
        detail = f"{openssl}: {loaded} CAs from {source}"
    else:
        detail = f"{openssl}: {hashed} CAs in {capath.get('path')} (looked up by hash on demand)"
    return passed(detail + certifi_note)


def other_interpreter(missing: str, pythons: Mapping[str, Any], current: str) -> Verdict | None:
    """A row skipped because *missing* is not installed for *current* (the interpreter probes
    ran with): when another interpreter in the image has it (``pythons`` probe facts), the image
    keeps its environment where an entrypoint or a login shell activates it, and the row fails
    naming the ``--container-python`` to use; None when no other interpreter has it."""
    for info in pythons.get("interpreters") or []:
        if isinstance(info, dict) and (info.get("modules") or {}).get(missing):
            exe = str(info.get("executable"))
            return failed(f"{missing} is not installed for {current}, the interpreter on the image's PATH, but "
                          f"{exe} (Python {info.get('version')}) has it: the image's environment is activated by "
                          "its entrypoint or a login shell, which checks do not run",
                          fix=f"--container-python {exe} (or put its bin directory first on PATH: ENV PATH in "
                              "the image)", fault=None)
    return None
