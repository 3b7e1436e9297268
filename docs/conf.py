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
myst_enable_extensions = ["colon_fence", "deflist"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "gen_reference.py"]
# Typography never changes what a reader copies: docutils' smart quotes would turn "--image" in
# plain text into an en dash and 'none' into curly quotes (tests/test_docs.py checks the site).
smartquotes = False
# A block without a language is shown as written (a command, a run's output), not guessed as Python.
highlight_language = "none"
html_theme = "alabaster"
html_title = f"pytest-containercheck {release}"
# At 1280 px the body is 920 px wide (alabaster's default page is 940 px: a 660 px body cut the
# reference's tables); custom.css wraps long code lines and table cells instead of cutting them.
html_theme_options = {"page_width": "1200px", "sidebar_width": "220px", "show_powered_by": False}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
