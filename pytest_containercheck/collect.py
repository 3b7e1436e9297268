"""Collection: the built-in checks, one test per image, row names, row order, probe plans.

* Without ``--image`` the built-in checks are not collected at all.
* ``container`` is parametrized over the targets, with the image's column id as test id.
* Each check names its matrix row (``@pytest.mark.containercheck_row("torch.cuda")``); the
  row name is also a ``-k`` keyword: ``-k torch.cuda``, ``-k "render and not egl"``.
* Check modules declare where their rows go (``containercheck_order(N)`` on the module);
  users' own tests come after the built-in rows.
* After pytest's own ``-k``/``-m`` deselection, the probes the *selected* checks declare
  (``containercheck_probe``) become each image's probe plan.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import require
from .container import shadowing_fixture
from .engine.policy import CheckOptions
from .engine.probing import PlannedProbe, canonical_params
from .hints import usage_error
from .rows import CHECKS_DIR, ORDER_MARKER, USER_ORDER, row_name, target_id
from .state import STATE


def plan_from_markers(item: pytest.Item, options: CheckOptions) -> list[PlannedProbe]:
    """The probes *item* declares with ``@pytest.mark.containercheck_probe(name, params=, weight=)``.

    ``params`` may be a dict or a function of the :class:`CheckOptions` returning one (for
    probes whose parameters come from options, like ``--hf-model``).
    """
    plan = []
    for mark in item.iter_markers("containercheck_probe"):
        name = str(mark.args[0])
        params = mark.kwargs.get("params") or {}
        if callable(params):
            params = params(options)
        plan.append(PlannedProbe(name, canonical_params(params), float(mark.kwargs.get("weight", 1.0))))
    return plan


def _order(item: pytest.Item) -> int:
    marker = item.get_closest_marker(ORDER_MARKER)
    return int(marker.args[0]) if marker is not None and marker.args else USER_ORDER


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Without --image the built-in checks have nothing to run against.
    if STATE not in config.stash and collection_path.is_relative_to(CHECKS_DIR):
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash.get(STATE, None)
    if state is None or "container" not in metafunc.fixturenames:
        return
    metafunc.parametrize("container", state.targets, ids=[t.id for t in state.targets], indirect=True)


# tryfirst: before pytest's own -k/-m deselection, which must see the row keywords.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    items.sort(key=_order)  # stable: keeps each module's own order
    for item in items:
        if target_id(item) is not None:
            item.extra_keyword_matches.add(row_name(item))
    held = state.names_pending
    require.check_collected(config, items)  # every row is known now; a wrong name stops the run here
    if held and starts_early(config):
        state.pool.start_early(state.targets)  # held until the names were checked


def starts_early(config: pytest.Config) -> bool:
    """Whether this process starts the images while their checks are collected: it runs them
    all (not an xdist worker or controller) and runs them at all (not --collect-only, --setup-plan)."""
    return getattr(config, "workerinput", None) is None and config.pluginmanager.getplugin("dsession") is None \
        and not config.option.collectonly and not getattr(config.option, "setupplan", False)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The probe plan of each image, from the checks that will actually run."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    problem = shadowing_fixture(session.config)  # conftest.py files below the root load during collection
    if problem:
        raise usage_error(problem)
    for item in session.items:
        image = target_id(item)
        if image is not None:
            plan = state.pool.plans.setdefault(image, [])
            plan += [p for p in plan_from_markers(item, state.checks) if p not in plan]
    state.pool.planned()
