"""Renderers: pure functions from a :class:`~pytest_containercheck.engine.matrix.Matrix` to text."""

from .html import render_html
from .json_ import render_json
from .markdown import render_markdown
from .terminal import fit, line_width, render_terminal

__all__ = ["fit", "line_width", "render_html", "render_json", "render_markdown", "render_terminal"]
