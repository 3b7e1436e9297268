"""The docs are part of the product (issue 23): the README stays short, every link in it and in
docs/ leads somewhere, and the reference pages come from the code (an option or a row missing
from them fails here).  The lint step builds the site with warnings as errors."""

from __future__ import annotations

import argparse
import html
import html.parser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_containercheck.checks import builtin_rows
from pytest_containercheck.cli import build_parser
from pytest_containercheck.options import OPTIONS

from helpers import missing

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
    command = (DOCS / "reference" / "command.md").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"## `containercheck {name}`" in command, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in command, (name, flag)


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


# -- the built site (issue 32): it stands alone, typography never changes code, nothing is cut --------------

TYPOGRAPHIC = re.compile("[\u2013\u2014\u2018\u2019\u201c\u201d]")
"""En and em dashes, curly quotes: what smart quotes make of ``--`` and ``'...'``."""
_CODE_TAGS = ("code", "pre", "kbd", "samp", "tt")


class _Code(html.parser.HTMLParser):
    """The text inside code elements of a page, and a dash glued to a word anywhere (``–image``)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.code: list[str] = []
        self.glued: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _CODE_TAGS:
            self.depth += 1
            self.code.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in _CODE_TAGS and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.code[-1] += data
        self.glued += re.findall(r"(?:^|[\s(])([\u2013\u2014][A-Za-z][\w-]*)", data)


def typography_problems(page: str) -> list[str]:
    """Code with a typographic dash or quote in it, and option-like words that start with a dash."""
    parser = _Code()
    parser.feed(page)
    return [f"in code: {c.strip()[:80]!r}" for c in parser.code if TYPOGRAPHIC.search(c)] + \
        [f"an option typeset with a dash: {g!r}" for g in parser.glued]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built as the lint step builds it (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "html", str(DOCS),
                          str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_" not in p.relative_to(site).parts[0][:1]
                  and p.name not in ("search.html", "genindex.html"))


def test_the_checker_finds_what_smart_quotes_did() -> None:
    """What the site had before: ``–runtime-arg=–flag=value`` in the reference, curly quotes in code."""
    assert typography_problems("<p>use –runtime-arg=–flag=value (for ‘docker run’)</p>") == [
        "an option typeset with a dash: '–runtime-arg'"]
    assert typography_problems("<pre>pytest –image host</pre>") == [
        "in code: 'pytest –image host'", "an option typeset with a dash: '–image'"]
    assert typography_problems("<p>prose — with a dash, and <code>--image</code></p>") == []


def test_no_typographic_dash_or_quote_in_code_or_options(site: Path) -> None:
    pages = _pages(site)
    assert len(pages) >= 20
    found = {str(p.relative_to(site)): problems for p in pages if (problems := typography_problems(p.read_text()))}
    assert found == {}
    # Not vacuous: the reference's options are there, as written.
    options = (site / "reference" / "options.html").read_text()
    assert "--runtime-arg=--flag=value" in options and "--image" in options


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _readme_block(mark: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(re.escape(mark) + r"\n```\n(.*?)\n```", readme, re.S)
    assert found, mark
    return found.group(1)


def test_the_landing_page_has_the_install_command_and_a_first_run(site: Path) -> None:
    """The site stands alone: its first page says what the tool does, how to install it (the
    README's command, which tests/test_install.py runs on stock Debian 12 and 13) and what the
    first run prints, before any path onwards."""
    command = _readme_block("<!-- newcomer: main job -->")
    page = _text((site / "index.html").read_text())
    body = page[page.index("Does this image really do GPU compute"):]
    onwards = body.index("Where next")
    assert 0 < body.index(command) < body.index("containercheck matrix =") < body.index("N pass, M skip") < onwards
    assert "README" not in body
    assert command in _text((site / "how-to" / "install.html").read_text())


CHROMIUM = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--allow-file-access-from-files")

#: Loads every page in a 1280 px frame and lists what sticks out of the text's column (or makes the
#: page scroll sideways): a table, a code block, a paragraph, a list.
HARNESS = """<html><body><pre id="out">pending</pre><script>
const pages = %s, results = {};
function measure(doc, win) {
  const body = doc.querySelector('div.body');
  const right = body.getBoundingClientRect().right + 1, out = [];
  for (const el of body.querySelectorAll('table, pre, dl, p, li, h1, h2, h3')) {
    if (el.getBoundingClientRect().right > right || el.scrollWidth > el.clientWidth + 1)
      out.push(el.tagName + ': ' + el.textContent.trim().slice(0, 80));
  }
  if (doc.documentElement.scrollWidth > win.innerWidth) out.push('the page scrolls sideways');
  return {cut: out, width: Math.round(body.getBoundingClientRect().width)};
}
let i = 0;
const frame = document.createElement('iframe');
frame.style.cssText = 'width: 1280px; height: 900px; border: 0';
document.body.appendChild(frame);
frame.onload = () => {
  try { results[pages[i]] = measure(frame.contentDocument, frame.contentWindow); }
  catch (e) { results[pages[i]] = {cut: ['not measured: ' + e], width: 0}; }
  if (++i < pages.length) frame.src = pages[i];
  else document.getElementById('out').textContent = JSON.stringify(results);
};
frame.src = pages[0];
</script></body></html>"""


def test_nothing_is_cut_at_1280_px(site: Path) -> None:
    """Every page in a real browser (Debian's chromium, headless) in a 1280 px wide window: no
    table, code block or paragraph sticks out of the text's column, no page scrolls sideways.
    Before: the options table's "meaning" column and the long code blocks were cut."""
    browser = shutil.which("chromium")
    if browser is None:
        missing("Chromium", "chromium is not installed (apt-get install chromium): the site cannot be looked at")
    pages = [str(p.relative_to(site)) for p in _pages(site)]
    (site / "_harness.html").write_text(HARNESS % json.dumps(pages))
    res = subprocess.run([browser, *CHROMIUM, "--window-size=1400,1000", "--virtual-time-budget=120000",
                          "--dump-dom", (site / "_harness.html").as_uri()], capture_output=True, text=True,
                         timeout=300)
    found = re.search(r'<pre id="out">(.*?)</pre>', res.stdout, re.S)
    assert found and found.group(1) != "pending", res.stdout[-2000:] + res.stderr[-2000:]
    results = json.loads(html.unescape(found.group(1)))
    assert sorted(results) == sorted(pages)
    assert {page: r["cut"] for page, r in results.items() if r["cut"]} == {}
    assert all(r["width"] >= 800 for r in results.values()), results  # the text's column is wide, not a strip


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
