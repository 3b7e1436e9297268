"""Values passed into the image stay out of what a run records, in every form
(pytest_containercheck.engine.redact): unit tests, then a real image printing them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_containercheck.engine.redact import REDACTED, Redactor, looks_secret, redact_args

TOKEN = "hf_AbCdEfGhIjKlMnOp"


def test_pytest_args_keep_names_and_lose_values() -> None:
    args = ["--image", "img", "--container-env", f"HF_TOKEN={TOKEN}", f"--container-env=DB_PASS={TOKEN}",
            "--container-env", "FROM_HOST", "-o", f"containercheck_container_env=A={TOKEN} B",
            f"-ocontainercheck_container_env=C={TOKEN}", "-k", "system"]
    out = redact_args(args)
    assert not any(TOKEN in a for a in out), out
    assert out == ["--image", "img", "--container-env", f"HF_TOKEN={REDACTED}", f"--container-env=DB_PASS={REDACTED}",
                   "--container-env", "FROM_HOST", "-o", f"containercheck_container_env=A={REDACTED} B",
                   f"-ocontainercheck_container_env=C={REDACTED}", "-k", "system"]  # fmt: skip


def test_cells_lose_every_passed_value() -> None:
    redact = Redactor({"HF_TOKEN": TOKEN, "DB_PASSWORD": "s3cr", "HUB_URL": "https://u:p4ss@hub", "FLAG": "1",
                       "XDG_CACHE_HOME": "/tmp/cache", "API_KEY": "/not/a/path/but/a/key"})
    cell = {
        "detail": f"token {TOKEN} refused by https://u:p4ss@hub; cache /tmp/cache/hf not writable; 1 GPU; "
                  "key /not/a/path/but/a/key",
        "evidence": {"env": {"HF_TOKEN": TOKEN, "DB_PASSWORD": "s3cr", "FLAG": "1", "OTHER": "1"},
                     "argv": ["curl", "-H", f"Authorization: Bearer {TOKEN}"], "n": 1, "ok": True},
        "pair": ("x", f"pw=s3cr;{TOKEN}"),
    }
    out = redact(cell)
    assert TOKEN not in repr(out) and "s3cr" not in repr(out)
    # An absolute path is kept (rows reason about paths; a token does not start with '/'),
    # unless its name looks like a secret's.
    assert out["detail"] == "token $HF_TOKEN refused by $HUB_URL; cache /tmp/cache/hf not writable; 1 GPU; key $API_KEY"
    # Under the variable's own name, any value goes, however short; elsewhere short values stay,
    # so the reports are not garbled ("1 GPU").
    assert out["evidence"]["env"] == {"HF_TOKEN": "$HF_TOKEN", "DB_PASSWORD": "$DB_PASSWORD", "FLAG": "$FLAG",
                                      "OTHER": "1"}
    assert out["evidence"]["argv"][-1] == "Authorization: Bearer $HF_TOKEN"
    assert out["evidence"]["n"] == 1 and out["evidence"]["ok"] is True
    assert out["pair"] == ("x", "pw=$DB_PASSWORD;$HF_TOKEN")
    assert cell["evidence"]["env"]["HF_TOKEN"] == TOKEN  # a copy: the probe's facts stay whole for verdicts


def test_a_value_inside_another_is_replaced_whole() -> None:
    redact = Redactor({"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefgh-longer"})
    assert redact.text("x abcdefgh-longer y abcdefgh") == "x $B_TOKEN y $A_TOKEN"


def test_no_env_changes_nothing() -> None:
    cell = {"detail": "x"}
    assert Redactor({})(cell) is cell and not Redactor({})


def test_secret_names() -> None:
    assert all(map(looks_secret, ["HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "GITHUB_AUTH", "api_key"]))
    assert not any(map(looks_secret, ["HF_HOME", "XDG_CACHE_HOME", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]))


# -- every form of a value (issue 30, item 2) ------------------------------------------------------

#: Everything that changes a value's printed form: a tab and a double space, both quotes, a backslash,
#: a dollar, a slash, an ampersand, an equals sign, a non-ASCII letter.
ODD = "p@ss  w0rd\t\"q'\\ $x/é&y=z"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n")


def printed(value: str) -> dict[str, str]:
    """*value* as programs print it: each escaping the Redactor must see through."""
    import shlex
    from urllib.parse import quote, quote_plus

    return {"raw": value, "collapsed": " ".join(value.split()), "repr": repr(value), "ascii": ascii(value),
            "json": json.dumps(value), "json-utf8": json.dumps(value, ensure_ascii=False),
            "shell": shlex.quote(value), "url": quote(value, safe=""), "url-path": quote(value),
            "url-plus": quote_plus(value)}


def test_every_printed_form_of_a_value_is_redacted() -> None:
    redact = Redactor({"DB_PASSWORD": ODD, "TLS_KEY": PEM})
    for name, value in (("DB_PASSWORD", ODD), ("TLS_KEY", PEM)):
        for how, text in printed(value).items():
            out = redact.text(f"the image said: {text} (end)")
            assert out.startswith("the image said: ") and out.endswith(" (end)"), (how, out)
            for piece in ("w0rd", "MIIEvQ", "MzEfYy", "BEGIN PRIVATE"):
                assert piece not in out, (name, how, out)
    # each line of a multi-line value alone (a log that prints one line of the key)
    assert redact.text("line: MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu") == "line: $TLS_KEY"


def test_a_value_on_a_command_line_is_redacted_however_short() -> None:
    redact = Redactor({"PASS": "ab"})
    argv = ["docker", "run", "--env=PASS=ab", "-ePASS=ab", "-e", "PASS=ab", "img"]
    assert redact(argv) == ["docker", "run", "--env=PASS=$PASS", "-ePASS=$PASS", "-e", "PASS=$PASS", "img"]
    assert redact.text("1 ab 2") == "1 ab 2"  # alone, a short value is left in free text


def test_the_long_option_forms_are_redacted() -> None:
    args = [f"--override-ini=containercheck_container_env=A={TOKEN} B", "--override-ini",
            f"containercheck_container_env='C={TOKEN} x' D={TOKEN}", f"-o=containercheck_container_env=E={TOKEN}",
            f"--runtime-arg=--env=F={TOKEN}", "--runtime-arg", f"--env=G={TOKEN}", "--runtime-arg=-e",
            f"--runtime-arg=H={TOKEN}", "--runtime-arg=--env", "--runtime-arg", f"I={TOKEN}",
            f"--runtime-arg=-eJ={TOKEN}", "--runtime-arg=--memory=1g",
            "-o", f"containercheck_runtime_args=--env=K={TOKEN} --shm-size=1g", "-k", "x"]
    out = redact_args(args)
    assert not any(TOKEN in a or "x'" in a for a in out), out
    assert out == [f"--override-ini=containercheck_container_env=A={REDACTED} B", "--override-ini",
                   f"containercheck_container_env=C={REDACTED} D={REDACTED}",
                   f"-o=containercheck_container_env=E={REDACTED}", f"--runtime-arg=--env=F={REDACTED}",
                   "--runtime-arg", f"--env=G={REDACTED}", "--runtime-arg=-e", f"--runtime-arg=H={REDACTED}",
                   "--runtime-arg=--env", "--runtime-arg", f"I={REDACTED}", f"--runtime-arg=-eJ={REDACTED}",
                   "--runtime-arg=--memory=1g", "-o", f"containercheck_runtime_args=--env=K={REDACTED} --shm-size=1g",
                   "-k", "x"]  # fmt: skip


def test_variables_given_on_the_runtimes_command_line_are_found_and_warned_about() -> None:
    from pytest_containercheck.engine.redact import command_line_warning, runtime_arg_env

    args = ["--env=A=1", "--memory=1g", "-e", "B=two", "-eC=3", "--env", "D=x=y", "--env=NOVALUE", "--shm-size=1g"]
    assert runtime_arg_env(args) == {"A": "1", "B": "two", "C": "3", "D": "x=y"}
    warning = command_line_warning(args)
    assert warning is not None and "\n" not in warning
    assert "every user of this host can read it (ps)" in warning
    assert "--container-env A --container-env B --container-env C --container-env D" in warning
    assert command_line_warning(["--memory=1g", "--env-file=/x"]) is None


# -- a real image that prints the secrets in every form ---------------------------------------------

SECRETS = {"DB_PASSWORD": "p@ss  w0rdQ7\t\"q'\\ $x/é&y=z", "TLS_KEY": PEM, "API_TOKEN": "tok_Zx81Kq",
           "PROXY_PASS": "pp_Lm29Vw"}
#: What no report may hold: a piece of each secret that every printed form keeps as it is.
PIECES = ("w0rdQ7", "MIIEvQIBADAN", "MzEfYyjiWA4R", "tok_Zx81Kq", "pp_Lm29Vw")

PRINT_ALL = '''
import json, os, shlex
from urllib.parse import quote, quote_plus
for name in ("DB_PASSWORD", "TLS_KEY", "API_TOKEN", "PROXY_PASS"):
    v = os.environ[name]
    for form in (v, " ".join(v.split()), repr(v), ascii(v), json.dumps(v), json.dumps(v, ensure_ascii=False),
                 shlex.quote(v), quote(v, safe=""), quote(v), quote_plus(v)):
        print(name, form)
'''

SECRET_CHECKS = f"""
PRINT_ALL = {PRINT_ALL!r}

def test_noted(container):
    out = container.python(PRINT_ALL).stdout
    container.evidence("stdout", out)
    container.evidence("lines", out.splitlines())
    container.note(out)

def test_failed(container):
    out = container.python(PRINT_ALL).stdout
    container.fail(out, fix=out, fault="image")

def test_asserted(container):
    out = container.python(PRINT_ALL).stdout
    print(out)
    assert out == "", out
"""


@pytest.mark.docker
def test_an_image_printing_secrets_in_every_form_leaks_none(pytester: Any, base_image: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets reach the image four ways: ``--container-env`` values from the host environment and
    with their value, both through the ini key's long option, and ``--runtime-arg=--env=...``.  The
    image prints each in every form; no report holds any of them, and the command line is warned about."""
    monkeypatch.setenv("DB_PASSWORD", SECRETS["DB_PASSWORD"])
    monkeypatch.setenv("TLS_KEY", SECRETS["TLS_KEY"])
    pytester.makepyfile(test_secrets=SECRET_CHECKS)
    result = pytester.runpytest_subprocess(
        "--image", base_image, "--no-builtin-checks", "test_secrets.py",
        f"--override-ini=containercheck_container_env=DB_PASSWORD TLS_KEY API_TOKEN={SECRETS['API_TOKEN']}",
        f"--runtime-arg=--env=PROXY_PASS={SECRETS['PROXY_PASS']}", "-rA",
        "--matrix-json", "m.json", "--matrix-md", "m.md", "--matrix-html", "m.html", "--junitxml", "j.xml")
    terminal = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, terminal[-3000:]
    data = json.loads((pytester.path / "m.json").read_text())
    cells = {c["row"]: c for c in data["cells"]}
    assert set(cells) == {"noted", "failed", "asserted"}, terminal[-3000:]
    assert "$DB_PASSWORD" in cells["noted"]["detail"] and "$TLS_KEY" in cells["failed"]["fix"]
    reports = {"terminal": terminal, **{name: (pytester.path / name).read_text() for name in
                                        ("m.json", "m.md", "m.html", "j.xml")}}
    for name, text in reports.items():
        leaked = [piece for piece in PIECES if piece in text]
        assert leaked == [], (name, leaked)
    assert data["meta"]["pytest_args"][5:7] == [
        f"--override-ini=containercheck_container_env=DB_PASSWORD TLS_KEY API_TOKEN={REDACTED}",
        f"--runtime-arg=--env=PROXY_PASS={REDACTED}"]
    flat = " ".join(terminal.split())
    assert ("containercheck: WARNING: --runtime-arg=--env=PROXY_PASS=... puts the value on the runtime's command "
            "line, where every user of this host can read it (ps)") in flat
    assert "pass it with --container-env PROXY_PASS instead" in flat


def test_values_the_verdicts_show_are_no_secret_unless_named_so() -> None:
    """A --container-env value for a variable the GPU stack reads (or CUDA_VERSION) emulates a
    deployment and is shown, as the launch difference and the verdicts name it; one whose name
    says secret is hidden all the same."""
    r = Redactor({"NVIDIA_DRIVER_CAPABILITIES": "all", "CUDA_VERSION": "12.8.1", "NVIDIA_API_KEY": "nvapi-s3cr3t-x",
                  "HF_TOKEN": "hf_abcdefgh12345"})
    said = "NVIDIA_DRIVER_CAPABILITIES=all, CUDA_VERSION=12.8.1, key nvapi-s3cr3t-x, HF_TOKEN=hf_abcdefgh12345"
    assert r.text(said) == ("NVIDIA_DRIVER_CAPABILITIES=all, CUDA_VERSION=12.8.1, key $NVIDIA_API_KEY, "
                            "HF_TOKEN=$HF_TOKEN")
