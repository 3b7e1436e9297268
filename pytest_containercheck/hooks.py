"""Hooks pytest-containercheck adds; implement them in a conftest.py or plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .engine.matrix import Matrix


def pytest_containercheck_matrix(matrix: Matrix, config: pytest.Config) -> None:
    """Called on the controller once the matrix is complete, before it is written or shown.

    Add cells or rows (``matrix.put(Cell(...))``), or read it for your own reports.
    """
