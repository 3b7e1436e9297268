"""pytest-xdist support, registered only when xdist is loaded (never imported otherwise).

The controller hands the run id and host facts to workers, schedules each image's tests on
one worker (so every image starts once), and tells the reporter which tests each image has.
"""

from __future__ import annotations

from typing import Any

import pytest

from .reporter import MATRIX_KEY
from .rows import image_of_nodeid
from .state import RunState


class XdistHooks:
    """Registered only when xdist is installed: hands run id and host facts to workers,
    and tells the matrix reporter which tests each image has (for the progress lines)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["containercheck"] = {
            "run_id": self.state.launch.run_id, "host": self.state.host,
            "expectations": {image: exp.to_dict() for image, exp in self.state.expectations.items()}}

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Keep each image whole on one worker, so every image starts once."""
        if config.getoption("dist") not in ("load", "loadgroup"):
            return None  # the user chose another distribution: respect it
        return _image_scheduler(config, log, [t.id for t in self.state.targets])

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing under xdist: the workers' node ids are all it gets.
        reporter = node.config.stash.get(MATRIX_KEY, None)
        if reporter is not None:
            reporter.expect(ids)


def _image_scheduler(config: pytest.Config, log: Any, image_ids: list[str]) -> Any:
    """xdist's LoadScope scheduling with the image as the scope: each image's items go to one
    worker, images spread over workers.

    Not ``--dist loadgroup`` with ``xdist_group`` marks: that works by rewriting node ids on
    the workers, which pytest 9.2 no longer honours (xdist 3.8 then silently runs every image
    on every worker).  The image is recognised from the node id's parameter id instead.
    """
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]  # xdist is present here

    class ImageScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return image_of_nodeid(nodeid, image_ids) or nodeid

    return ImageScheduling(config, log)
