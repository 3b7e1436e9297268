"""``--container-env`` values stay out of what a run records (pytest_containercheck.engine.redact)."""

from __future__ import annotations

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
