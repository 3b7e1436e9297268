"""The built-in checks' registry (``pytest_containercheck/checks/__init__.py``): the rows and probes
read from the checks' markers are the ones pytest collects."""

from __future__ import annotations

import pytest

from pytest_containercheck.checks import builtin_rows
from pytest_containercheck.engine.policy import CheckOptions
from pytest_containercheck.engine.probing import ON_DEMAND, available_probes
from pytest_containercheck.rows import row_name


def test_builtin_rows_are_the_rows_pytest_collects(pytester: pytest.Pytester) -> None:
    """In matrix order: after the plugin's ``containercheck_order`` sort of the collected items."""
    rec = pytester.inline_run("--image", "host", "--collect-only", "-p", "no:cacheprovider")
    items = rec.getcalls("pytest_collection_finish")[0].session.items
    assert [r.name for r in builtin_rows()] == [row_name(item) for item in items]


def test_every_builtin_probe_is_declared_by_a_check() -> None:
    """A probe in probes/ that no check declares is read by nothing (and the GPU kit would not record it)."""
    declared = {name for row in builtin_rows() for name, _ in row.probes}
    assert sorted(declared | set(ON_DEMAND)) == available_probes() and not declared & set(ON_DEMAND)


def test_probe_params_that_depend_on_options_are_evaluated() -> None:
    rows = {r.name: r for r in builtin_rows(CheckOptions(hf_model="/models/tiny"))}
    assert rows["transformers.cpu"].probes == (("transformers_infer", '{"model_path": "/models/tiny"}'),)
    assert rows["render.egl"].probes == (("render", '{"backend": "egl"}'),)
    assert rows["system.os"].probes == (("system", "{}"),) and rows["system.os"].order == 10
