"""The ``system.tls`` row: its verdict on constructed facts, its probe for real, and the row as
users run it on this host and in Docker (the base image, and images with the CA bundle removed).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_containercheck.engine import verdicts_system as system
from pytest_containercheck.engine.dev import try_probe

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TLS_CHECKS = str(Path(__file__).resolve().parent.parent / "pytest_containercheck" / "checks" / "test_tls.py")
ONLY_TLS = ("--no-builtin-checks", TLS_CHECKS)

#: The facts of probes/tls.py in the Debian bookworm test image (containercheck-test/base), as recorded.
BOOKWORM: dict[str, Any] = {
    "ssl": {
        "importable": True, "openssl_version": "OpenSSL 3.0.20 7 Apr 2026",
        "verify_paths": {"cafile": "/usr/lib/ssl/cert.pem", "capath": "/usr/lib/ssl/certs",
                         "openssl_cafile_env": "SSL_CERT_FILE", "openssl_cafile": "/usr/lib/ssl/cert.pem",
                         "openssl_capath_env": "SSL_CERT_DIR", "openssl_capath": "/usr/lib/ssl/certs"},
        "store": {"crl": 0, "x509": 142, "x509_ca": 142},
    },
    "cafile": {"path": "/usr/lib/ssl/cert.pem", "exists": True, "is_file": True, "certificates": 142,
               "realpath": "/etc/ssl/certs/ca-certificates.crt", "size": 216591},
    "capath": {"path": "/usr/lib/ssl/certs", "exists": True, "is_dir": True, "files": 285, "hashed": 142,
               "hashed_dangling": 0},
    "openssl_cafile": {"path": "/usr/lib/ssl/cert.pem", "exists": True, "is_file": True, "certificates": 142,
                       "realpath": "/etc/ssl/certs/ca-certificates.crt", "size": 216591},
    "openssl_capath": {"path": "/usr/lib/ssl/certs", "exists": True, "is_dir": True, "files": 285, "hashed": 142,
                       "hashed_dangling": 0},
    "env": {},
    "certifi": {"installed": False},
    "os_release": {"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"},
}


def _facts(**changes: Any) -> dict[str, Any]:
    facts = copy.deepcopy(BOOKWORM)
    facts.update(changes)
    return facts


def _without_cas(**changes: Any) -> dict[str, Any]:
    """The bookworm facts after ``rm -rf /etc/ssl/certs`` (ca-certificates removed), as recorded."""
    facts = _facts(cafile=None, capath=None, **changes)
    facts["ssl"]["verify_paths"].update(cafile=None, capath=None)
    facts["ssl"]["store"] = {"crl": 0, "x509": 0, "x509_ca": 0}
    facts["openssl_cafile"] = {"path": "/usr/lib/ssl/cert.pem", "exists": False, "is_file": False,
                               "realpath": "/etc/ssl/certs/ca-certificates.crt"}
    facts["openssl_capath"] = {"path": "/usr/lib/ssl/certs", "exists": False, "is_dir": False}
    return facts


CERTIFI = {"installed": True, "version": "2026.10.19", "where": "/usr/lib/python3/dist-packages/certifi/cacert.pem",
           "bundle": {"path": "/usr/lib/python3/dist-packages/certifi/cacert.pem", "exists": True, "is_file": True,
                      "certificates": 117}}
#: The verdict on the facts of base without /etc/ssl/certs (recorded above, and observed in Docker below).
NO_CA_DETAIL = ("no CA certificates in the image, so every HTTPS download fails with CERTIFICATE_VERIFY_FAILED: "
                "/usr/lib/ssl/cert.pem is a dangling link to /etc/ssl/certs/ca-certificates.crt, "
                "/usr/lib/ssl/certs is missing; certifi not installed")


# -- the verdict, one rule at a time -------------------------------------------------------------


def test_a_ca_bundle_passes_naming_it_and_its_count() -> None:
    v = system.tls(_facts())
    assert v.passed
    assert v.detail == ("OpenSSL 3.0.20 7 Apr 2026: 142 CAs from /usr/lib/ssl/cert.pem -> "
                        "/etc/ssl/certs/ca-certificates.crt")


def test_a_hashed_ca_directory_alone_passes() -> None:
    """A capath is loaded on demand: cert_store_stats() says 0, the hashed files say 142."""
    facts = _facts(cafile=None)
    facts["ssl"]["store"] = {"crl": 0, "x509": 0, "x509_ca": 0}
    v = system.tls(facts)
    assert v.passed
    assert v.detail == "OpenSSL 3.0.20 7 Apr 2026: 142 CAs in /usr/lib/ssl/certs (looked up by hash on demand)"


def test_certifi_is_named_in_a_pass() -> None:
    assert system.tls(_facts(certifi=CERTIFI)).detail.endswith("; certifi 2026.10.19 (117 CAs)")


def test_no_ca_certificates_fail_as_the_images_fault_with_the_package_to_install() -> None:
    v = system.tls(_without_cas())
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail == NO_CA_DETAIL
    assert v.fix == ("apt-get install -y ca-certificates in the image, or set SSL_CERT_FILE to a CA bundle "
                     "the image contains")


@pytest.mark.parametrize(("release", "command"), [
    ({"ID": "ubuntu", "ID_LIKE": "debian"}, "apt-get install -y ca-certificates"),
    ({"ID": "rocky", "ID_LIKE": "rhel centos fedora"}, "dnf install -y ca-certificates"),
    ({"ID": "fedora"}, "dnf install -y ca-certificates"),
    ({"ID": "alpine"}, "apk add ca-certificates"),
    ({}, "apt-get install -y ca-certificates (Debian/Ubuntu) or dnf install -y ca-certificates (RHEL/Fedora)"),
])
def test_the_fix_names_the_distributions_package_manager(release: dict[str, str], command: str) -> None:
    v = system.tls(_without_cas(os_release=release))
    assert v.fix is not None and v.fix.startswith(command + " in the image")


def test_certifi_alone_fails_and_the_fix_points_ssl_cert_file_at_it() -> None:
    v = system.tls(_without_cas(certifi=CERTIFI))
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("Python's ssl module has no CA certificate, so urllib and torch.hub fail with "
                               "CERTIFICATE_VERIFY_FAILED; only certifi has CAs (117, for requests): ")
    assert v.fix == ("apt-get install -y ca-certificates in the image, or set "
                     "SSL_CERT_FILE=/usr/lib/python3/dist-packages/certifi/cacert.pem")


@pytest.mark.parametrize("variable", system.CA_FILE_VARIABLES)
def test_a_ca_variable_naming_a_missing_file_fails(variable: str) -> None:
    # The default bundle is fine: only the variable is wrong.
    v = system.tls(_facts(env={variable: {"path": "/nonexistent.pem", "exists": False, "is_file": False}}))
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail == f"{variable}=/nonexistent.pem does not exist: tools that read it find no CA bundle"
    assert v.fix is not None and "/etc/ssl/certs/ca-certificates.crt" in v.fix and "unset it" in v.fix


@pytest.mark.parametrize(("info", "why"), [
    ({"exists": True, "is_file": True, "certificates": 0}, "holds no PEM certificate"),
    ({"exists": True, "is_file": False}, "is not a file"),
    ({"exists": True, "is_file": True, "error": "PermissionError: [Errno 13] Permission denied"},
     "cannot be read (PermissionError: [Errno 13] Permission denied)"),
])
def test_a_ca_variable_naming_no_usable_bundle_fails(info: dict[str, Any], why: str) -> None:
    v = system.tls(_facts(env={"REQUESTS_CA_BUNDLE": {"path": "/etc/bundle.pem", **info}}))
    assert v.status == "fail"
    assert v.detail.startswith(f"REQUESTS_CA_BUNDLE=/etc/bundle.pem {why}")


def test_empty_ca_variables_are_ignored_like_the_libraries_do() -> None:
    assert system.tls(_facts(env={"REQUESTS_CA_BUNDLE": {"path": "", "exists": False, "is_file": False}})).passed


def test_a_python_without_ssl_fails() -> None:
    v = system.tls(_facts(ssl={"importable": False, "error": "ModuleNotFoundError: No module named '_ssl'"}))
    assert (v.status, v.fault) == ("fail", "image")
    assert v.detail.startswith("Python's ssl module does not import (ModuleNotFoundError: No module named '_ssl')")


# -- the probe, for real on this host ------------------------------------------------------------


def test_probe_counts_bundles_and_hashed_files_without_the_network(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "two.pem").write_text(pem * 2)
    (tmp_path / "empty.pem").write_text("")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "1e09d511.0").write_text(pem)
    (certs / "not-hashed.pem").write_text(pem)
    (certs / "deadbeef.0").symlink_to(tmp_path / "gone.pem")  # dangling: ca-certificates removed
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "two.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "empty.pem"))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "missing.pem"))
    res = try_probe("tls", quiet=True)  # --image host: the probe inherits this environment
    assert res.status == "ok", res.error
    facts = res.facts
    env = facts["env"]
    assert env["SSL_CERT_FILE"]["certificates"] == 2
    assert (env["SSL_CERT_DIR"]["hashed"], env["SSL_CERT_DIR"]["hashed_dangling"], env["SSL_CERT_DIR"]["files"]) \
        == (1, 1, 3)
    assert env["REQUESTS_CA_BUNDLE"]["certificates"] == 0
    assert env["CURL_CA_BUNDLE"] == {"path": str(tmp_path / "missing.pem"), "exists": False, "is_file": False}
    # The ssl module resolved the variables: its default file and directory are ours.
    assert facts["cafile"]["path"] == str(tmp_path / "two.pem")
    assert facts["capath"]["path"] == str(certs)
    assert facts["ssl"]["importable"] is True and facts["ssl"]["openssl_version"].startswith("OpenSSL")
    assert set(facts["ssl"]["store"]) >= {"x509", "x509_ca"}
    v = system.tls(facts)
    assert v.status == "fail" and "REQUESTS_CA_BUNDLE=" in v.detail and "CURL_CA_BUNDLE=" in v.detail


# -- the row as users run it ---------------------------------------------------------------------


def _cell(path: Path) -> dict[str, Any]:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["row"] == "system.tls"]
    assert len(cells) == 1
    cell: dict[str, Any] = cells[0]
    return cell


def _cells(path: Path) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in json.loads(path.read_text())["cells"] if c["row"] == "system.tls"}


def test_host_passes(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", *ONLY_TLS, "--matrix-json", "m.json")
    result.assert_outcomes(passed=1)
    cell = _cell(pytester.path / "m.json")
    assert cell["status"] == "pass"
    assert re.match(r"OpenSSL \d+\.\d+\.\d+\S* .*: \d+ CAs (from|in) /", cell["detail"]), cell["detail"]
    assert cell["evidence"]["tls"]["ssl"]["store"]["x509_ca"] > 0 or cell["evidence"]["tls"]["capath"]["hashed"] > 0


def test_host_with_ssl_cert_file_naming_a_missing_file_fails(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--image", "host", *ONLY_TLS, "--matrix-json", "m.json",
                                "--container-env", "SSL_CERT_FILE=/nonexistent.pem")
    result.assert_outcomes(failed=1)
    cell = _cell(pytester.path / "m.json")
    assert (cell["status"], cell["fault"]) == ("fail", "image")
    assert cell["detail"] == "SSL_CERT_FILE=/nonexistent.pem does not exist: tools that read it find no CA bundle"


def _docker_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:benchmark", *ONLY_TLS, "--matrix-json", "m.json", *args,
                                         timeout=300)


@pytest.mark.docker
def test_base_image_passes_and_fails_with_a_missing_ssl_cert_file(pytester: pytest.Pytester, base_image: str) -> None:
    """The debootstrap image has ca-certificates (a dependency of its python3 install): pass.
    Pointing SSL_CERT_FILE at nothing, as a wrong ENV line does, fails."""
    col = f"docker://{base_image}"
    result = _docker_run(pytester, "--image", base_image)
    assert result.ret == 0, result.stdout.str()[-3000:]
    cell = _cells(pytester.path / "m.json")[col]
    assert cell["status"] == "pass"
    assert re.fullmatch(r"OpenSSL 3\.0\.\d+ .+: \d{3} CAs from /usr/lib/ssl/cert.pem -> "
                        r"/etc/ssl/certs/ca-certificates.crt", cell["detail"]), cell["detail"]

    result = _docker_run(pytester, "--image", base_image, "--container-env", "SSL_CERT_FILE=/nonexistent.pem")
    assert result.ret == 1
    cell = _cells(pytester.path / "m.json")[col]
    assert (cell["status"], cell["fault"]) == ("fail", "image")
    assert cell["detail"] == "SSL_CERT_FILE=/nonexistent.pem does not exist: tools that read it find no CA bundle"


@pytest.fixture
def images_without_cas(base_image: str) -> Iterator[tuple[str, str]]:
    """(base without its CA certificates, the same plus certifi copied from this interpreter):
    made with ``docker commit`` for this test, removed afterwards."""
    import certifi

    pid = os.getpid()
    noca, with_certifi = f"containercheck-test/tls-noca:{pid}", f"containercheck-test/tls-certifi:{pid}"
    work = [f"containercheck-tls-noca-{pid}", f"containercheck-tls-certifi-{pid}"]

    def docker(*args: str) -> None:
        subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)

    try:
        docker("run", "--name", work[0], "--network", "none", base_image, "rm", "-rf", "/etc/ssl/certs")
        docker("commit", work[0], noca)
        docker("create", "--name", work[1], noca)
        docker("cp", os.path.dirname(certifi.__file__), f"{work[1]}:/usr/lib/python3/dist-packages/certifi")
        docker("commit", work[1], with_certifi)
        yield noca, with_certifi
    finally:
        subprocess.run(["docker", "rm", "-f", *work], capture_output=True, check=False, timeout=300)
        subprocess.run(["docker", "image", "rm", noca, with_certifi], capture_output=True, check=False, timeout=300)


@pytest.mark.docker
def test_images_without_ca_certificates_fail_and_the_fix_works(pytester: pytest.Pytester,
                                                               images_without_cas: tuple[str, str]) -> None:
    noca, with_certifi = images_without_cas
    result = _docker_run(pytester, "--image", noca, "--image", with_certifi)
    assert result.ret == 1
    cells = _cells(pytester.path / "m.json")
    cell = cells[f"docker://{noca}"]
    assert (cell["status"], cell["fault"]) == ("fail", "image")
    assert cell["detail"] == NO_CA_DETAIL
    assert cell["fix"].startswith("apt-get install -y ca-certificates in the image")
    assert cell["evidence"]["tls"]["ssl"]["store"]["x509_ca"] == 0
    bundle = "/usr/lib/python3/dist-packages/certifi/cacert.pem"
    cell = cells[f"docker://{with_certifi}"]
    assert (cell["status"], cell["fault"]) == ("fail", "image")
    assert "only certifi has CAs" in cell["detail"]
    assert cell["fix"] == f"apt-get install -y ca-certificates in the image, or set SSL_CERT_FILE={bundle}"

    # The fix, applied: the same image passes with SSL_CERT_FILE pointing at certifi's bundle.
    result = _docker_run(pytester, "--image", with_certifi, "--container-env", f"SSL_CERT_FILE={bundle}")
    assert result.ret == 0, result.stdout.str()[-3000:]
    cell = _cells(pytester.path / "m.json")[f"docker://{with_certifi}"]
    assert cell["status"] == "pass"
    assert re.search(rf": \d+ CAs from {re.escape(bundle)} \(SSL_CERT_FILE\); certifi ", cell["detail"]), cell["detail"]
