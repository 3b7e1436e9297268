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

import inspect
import types
from pathlib import Path

import pytest

from .policy import CheckOptions
from .probing import PlannedProbe, canonical_params
from .state import STATE

CHECKS_DIR = Path(__file__).resolve().parent / "checks"
ROW_MARKER = "containercheck_row"
ORDER_MARKER = "containercheck_order"
PROBE_MARKER = "containercheck_probe"
USER_ORDER = 1000
"""Where tests without ``containercheck_order`` (users' own) go: after the built-in rows."""

MARKERS = (
    f"{ROW_MARKER}(name): the matrix row this container check fills (also a -k keyword)",
    f"{ORDER_MARKER}(n): where this module's rows go in the matrix (smaller first; unmarked: last)",
    f"{PROBE_MARKER}(name, params=None, weight=1.0): a probe this check reads; declared probes of an image "
    "start together, heaviest first (params: dict, or function of the options)",
)


def row_name(item: pytest.Item) -> str:
    """The matrix row of a test: its ``containercheck_row`` marker, else its name."""
    marker = item.get_closest_marker(ROW_MARKER)
    if marker is not None and marker.args:
        return str(marker.args[0])
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        extra = [f"{k}={v}" for k, v in callspec.params.items() if k != "container"]
        if extra:
            name += "[" + ",".join(extra) + "]"
    return name


def target_id(item: pytest.Item) -> str | None:
    """The column id of the image *item* runs against, or None for a test without ``container``."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "container" not in callspec.params:
        return None
    return str(callspec.params["container"].id)


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
    if STATE not in config.stash:
        return
    items.sort(key=_order)  # stable: keeps each module's own order
    for item in items:
        if target_id(item) is not None:
            item.extra_keyword_matches.add(row_name(item))


def shadowing_fixture(config: pytest.Config) -> str | None:
    """Why a fixture named ``container`` from a conftest.py or another plugin cannot be used, or None.

    Such a fixture hides the plugin's own from every test under it, the built-in checks
    included: they would fail with AttributeError.  One that asks for ``container`` itself
    (the documented way to wrap a fixture) keeps the plugin's and is fine.
    """
    from .container import container as ours  # not at the top: container.py imports this module

    for plugin in config.pluginmanager.get_plugins():
        if not isinstance(plugin, types.ModuleType):
            continue
        for attr, obj in list(vars(plugin).items()):
            if obj is ours:
                continue
            marker = getattr(obj, "_fixture_function_marker", None) or getattr(obj, "_pytestfixturefunction", None)
            if marker is None or (getattr(marker, "name", None) or attr) != "container":
                continue
            try:
                wraps_ours = "container" in inspect.signature(obj).parameters
            except (TypeError, ValueError):
                wraps_ours = False
            if not wraps_ours:
                where = getattr(plugin, "__file__", None) or plugin.__name__
                return (f"{where} defines a fixture named 'container', which hides pytest-containercheck's own "
                        f"from every test under it (the built-in checks too); rename it (e.g. my_container), or "
                        f"make it take 'container' to wrap the plugin's")
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """The probe plan of each image, from the checks that will actually run."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    problem = shadowing_fixture(session.config)  # conftest.py files below the root load during collection
    if problem:
        raise pytest.UsageError(problem)
    for item in session.items:
        image = target_id(item)
        if image is not None:
            plan = state.pool.plans.setdefault(image, [])
            plan += [p for p in plan_from_markers(item, state.checks) if p not in plan]
    state.pool.planned()


def image_of_nodeid(nodeid: str, image_ids: list[str]) -> str | None:
    """The image a node id belongs to, from its ``@group`` suffix (``--dist loadgroup`` adds the
    image id) or else its parameter id (``test_x[docker://img:1]``, ``test_y[docker://img:1-a]``)."""
    for image in sorted(image_ids, key=len, reverse=True):
        if nodeid.endswith("@" + image):
            return image
    start, end = nodeid.find("["), nodeid.rfind("]")
    if start < 0 or end < start:
        return None
    params = nodeid[start + 1:end]
    for image in sorted(image_ids, key=len, reverse=True):
        if params == image or params.startswith(image + "-") or params.endswith("-" + image) \
                or f"-{image}-" in params:
            return image
    return None
