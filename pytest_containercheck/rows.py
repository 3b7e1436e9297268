"""Where a test goes in the matrix: its row (from its marker or name), its image, the markers.

One place for what collection, the fixture, the reporter and the xdist scheduler all need to
know of a test item.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKS_DIR = Path(__file__).resolve().parent / "checks"
"""The built-in checks' directory: collected with ``--image``, never without."""

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
