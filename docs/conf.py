"""Sphinx configuration of the docs site: how-to, reference, explanation (MyST Markdown).

    sphinx-build -W -b html docs docs/_build/html     # the lint step runs this: warnings fail
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "pytest_containercheck" / "__init__.py").read_text())

project = "pytest-containercheck"
author = "the pytest-containercheck developers"
copyright = "2026, the pytest-containercheck developers"
release = version = _VERSION.group(1) if _VERSION else "0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "gen_reference.py"]
html_theme = "alabaster"
html_title = f"pytest-containercheck {release}"
