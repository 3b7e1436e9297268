"""Renderers: pure functions from a :class:`~pytest_containercheck.matrix.Matrix` to text."""

from .json_ import render_json
from .terminal import render_terminal

__all__ = ["render_json", "render_terminal"]
