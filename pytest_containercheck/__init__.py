"""pytest-containercheck: does this image really do GPU compute and headless rendering here?

The public names are imported on first use (PEP 562), so that importing the engine
(``pytest_containercheck.engine``), as the ``containercheck`` command does, loads neither
pytest nor the plugin.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .container import CommandResult, Container
    from .engine.matrix import Cell, Column, Matrix
    from .engine.probing import ProbeResult
    from .engine.runtimes import Target
    from .engine.verdict import Verdict

__all__ = ["Cell", "Column", "CommandResult", "Container", "Matrix", "ProbeResult", "Target", "Verdict"]
__version__ = "0.1.0"

_WHERE = {
    "Cell": ".engine.matrix", "Column": ".engine.matrix", "Matrix": ".engine.matrix",
    "CommandResult": ".container", "Container": ".container",
    "ProbeResult": ".engine.probing", "Target": ".engine.runtimes", "Verdict": ".engine.verdict",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
