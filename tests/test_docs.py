"""The docs are part of the product (issue 23): the README stays short, every link in it and in
docs/ leads somewhere, and the reference pages come from the code (an option or a row missing
from them fails here).  The lint step builds the site with warnings as errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.checks import builtin_rows
from pytest_containercheck.options import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_reference_pages_are_generated_from_the_code() -> None:
    res = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), "--check"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_every_option_and_row_is_in_the_reference() -> None:
    options = (DOCS / "reference" / "options.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}" in options and f"`{opt.ini}`" in options, opt.flag
    rows = (DOCS / "reference" / "rows.md").read_text()
    for row in builtin_rows():
        assert f"| `{row.name}` | {row.doc}" in rows, row.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_lead_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code blocks are examples
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_the_module_map_names_every_module() -> None:
    """docs/development.md's module map matches the tree: every module is in it, and every
    module it names exists.  The checks and the verdicts are packages of one module per row
    family: the map names the package (a new row adds a module there and changes no page)."""
    text = (DOCS / "development.md").read_text()
    package = ROOT / "pytest_containercheck"
    families = ("checks", "verdicts")
    modules = {p.name for p in package.rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts and p.parent.name not in families}
    mapped = text[text.index("## The module map"):text.index("## Tests, lint and CI")]
    assert "`verdicts/`" in mapped and "`checks/`" in mapped
    named = set(re.findall(r"`([a-z_]+\.py)`", mapped))
    assert modules - named == set(), f"not in the module map: {sorted(modules - named)}"
    assert named - modules - {"CONTRACT.py"} == set(), f"named but not in the tree: {sorted(named - modules)}"


#: A count of rows written into a page: "13 of 17 rows", "17 checks", "4 pass, 13 skip".
_ROW_COUNT = re.compile(r"\b\d+ of \d+ rows\b|\b\d+ (?:built-in )?(?:checks|rows)\b|\b\d+ pass(?:ed)?, \d+ skip")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_counts_the_rows(page: Path) -> None:
    """How many rows there are is the registry's (``builtin_rows()``, and the generated reference);
    a count written into a page goes stale with the next row, which must change no page."""
    if page.parent == DOCS / "reference" and page.name in ("rows.md", "options.md"):
        return  # generated from the registry
    found = _ROW_COUNT.findall(page.read_text())
    assert found == [], f"{page.relative_to(ROOT)} counts rows: {found}"
