"""Result files are someone else's (issue 25, item 8): ``containercheck show/merge`` read any
shape without a traceback, and embed in an HTML page only images the run wrote beside the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.engine.matrix import Column, image_identity, image_labels

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _matrix(**over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "schema": "containercheck-matrix", "version": 1, "hosts": {"h": {}},
        "columns": [{"id": "c", "host": "h", "facts": {}}],
        "cells": [{"row": "r", "column": "c", "host": "h", "status": "pass"}],
    }
    data.update(over)
    return data


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_containercheck.cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("facts", [
    {"launch": "x", "image": 5, "labels": [1]},
    {"launch": {"archive": "x"}, "image": {"id": ["a"], "labels": "x"}},
    {"config_digest": {"x": 1}},
])
def test_wrongly_typed_column_facts_are_not_used(facts: dict[str, object]) -> None:
    column = Column(id="c", host="h", facts=facts)
    assert image_identity(column) is None and image_labels(column) == {}


@pytest.mark.parametrize(("hosts", "error"), [
    (["a"], "'hosts' is a list, expected a dict"),
    ({"h": "x"}, "hosts['h'] is a str, expected an object"),
])
def test_wrongly_typed_hosts_are_one_line(tmp_path: Path, hosts: object, error: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_matrix(hosts=hosts)))
    res = _cli(tmp_path, "show", "a.json", "--md", "a.md", "--html", "a.html")
    assert res.returncode == 4 and error in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_show_and_merge_with_odd_facts_do_not_crash(tmp_path: Path) -> None:
    odd = _matrix(columns=[{"id": "c", "host": "h", "facts": {"launch": "x", "image": 5, "labels": [1]}}])
    (tmp_path / "a.json").write_text(json.dumps(odd))
    (tmp_path / "b.json").write_text(json.dumps(_matrix()))
    for args in (("show", "a.json"), ("merge", "a.json", "b.json")):
        res = _cli(tmp_path, *args, "--md", "x.md", "--html", "x.html")
        assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr


def test_html_embeds_only_images_beside_the_result_file(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(PNG + b"SECRET")
    runs = tmp_path / "runs"
    (runs / "containercheck-artifacts").mkdir(parents=True)
    (runs / "containercheck-artifacts" / "mine.png").write_bytes(PNG + b"MINE")
    (runs / "link.png").symlink_to(secret)
    cell = {"row": "r", "column": "c", "host": "h", "status": "fail",
            "artifacts": {"mine-result": "containercheck-artifacts/mine.png", "abs-result": str(secret),
                          "up-result": "../outside/secret.png", "link-result": "link.png"}}
    (runs / "a.json").write_text(json.dumps(_matrix(cells=[cell])))
    res = _cli(tmp_path, "show", "runs/a.json", "--html", "a.html")
    assert res.returncode in (0, 1), res.stderr
    import base64

    page = (tmp_path / "a.html").read_text()
    assert base64.b64encode(PNG + b"MINE").decode() in page
    assert base64.b64encode(PNG + b"SECRET").decode() not in page
