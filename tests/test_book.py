"""The course book (`make book`, docs/BOOK.md) as a reader meets it: built, every link resolving, in a real browser.

`make test` runs the course notebooks by building this book: once per session, in quick mode (SDEDU_QUICK=1), with
every notebook executed afresh (`nb_execution_mode=force`, no cache) and a cell error failing the build, which is
what nbval --nbval-lax checked before. The site goes to build/book-test/ (a person can open it; `make book` writes
build/book/). Then:
- the navigation lists every course notebook in course order, then every exercise statement, and no solution;
- every internal href and src of every page resolves (the file, and the #anchor in it), and no page loads a
  resource (script, style, image, font) from the network: the book works offline and from file://;
- headless Chromium (Debian's, driven by Playwright, as in tests/test_browser.py) opens the index from file:// and
  three notebook pages, whose figures load and whose equations MathJax renders, asking the network for nothing;
  the search page finds a word of the course. Screenshots are saved under build/browser/.
Only where Chromium or Playwright cannot be had are the browser tests skipped, with the reason.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "book-test"
SCREENSHOTS = ROOT / "build" / "browser"
PAGES = ("02_forward_diffusion", "11_tiny_stable_diffusion_end_to_end", "17_samplers_as_ode_solvers")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
LOCAL_SCHEMES = ("file", "data", "blob", "about")


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
    """The book, built from scratch in quick mode with every notebook executed; returns its folder."""
    shutil.rmtree(SITE, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-c", "book"]
    command += ["-D", "nb_execution_mode=force", "-D", "nb_execution_timeout=900", ".", str(SITE)]
    env = dict(os.environ, SDEDU_QUICK="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("MPLBACKEND", None)  # conftest's Agg would leave the kernels without inline figures
    build = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, f"the book did not build:\n{build.stdout[-3000:]}\n{build.stderr[-6000:]}"
    return SITE


class Page(HTMLParser):
    """The links (tag, attribute, value) and the anchors (id, a name) of one HTML page."""

    def __init__(self, path: pathlib.Path):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.anchors: set[str] = set()
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.anchors.add(value)
            elif name in ("href", "src"):
                self.links.append((tag, name, value))


def broken_links(root: pathlib.Path) -> tuple[list[str], list[str]]:
    """(broken internal links, network resources) of every page under `root`, each as 'page: <tag attr=value>'."""
    pages: dict[pathlib.Path, Page] = {}

    def page(path):
        if path not in pages:
            pages[path] = Page(path)
        return pages[path]

    broken, network = [], []
    for source in sorted(root.rglob("*.html")):
        if "_static" in source.relative_to(root).parts:  # the themes' Jinja macro files, not pages
            continue
        for tag, attribute, value in page(source).links:
            where = f"{source.relative_to(root)}: <{tag} {attribute}={value!r}>"
            url = urllib.parse.urlsplit(value)
            if url.scheme in ("http", "https") or value.startswith("//"):
                if not (tag == "a" and attribute == "href"):  # a link a reader may follow is fine; a resource is not
                    network.append(where)
                continue
            if url.scheme:  # mailto:, javascript:, data:
                continue
            target = (source.parent / urllib.parse.unquote(url.path)).resolve() if url.path else source
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(where)
            elif (
                url.fragment
                and target.suffix == ".html"
                and urllib.parse.unquote(url.fragment) not in page(target).anchors
            ):
                broken.append(f"{where} (no such anchor)")
    return broken, network


def test_the_book_lists_the_course_in_order_then_the_exercises_and_never_a_solution(site):
    notebooks = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
    exercises = sorted(path.stem for path in (ROOT / "exercises").glob("*.ipynb"))
    links = [value for tag, _, value in Page(site / "book" / "index.html").links if tag == "a"]
    order = []
    for value in links:
        match = re.fullmatch(r"\.\./(notebooks|exercises)/(\w+)\.html", value)
        if match and match.groups() not in order:
            order.append(match.groups())
    assert order == [("notebooks", name) for name in notebooks] + [("exercises", name) for name in exercises]
    for name in notebooks:  # each page offers its notebook for download
        assert f"../_sources/notebooks/{name}.ipynb" in {
            v for _, _, v in Page(site / "notebooks" / f"{name}.html").links
        }
    assert not (site / "solutions").exists() and not list(site.rglob("*solution*"))


def test_every_internal_link_of_the_book_resolves_and_nothing_is_fetched_from_the_network(site):
    broken, network = broken_links(site)
    assert not broken, f"{len(broken)} broken links, first ones:\n" + "\n".join(broken[:20])
    assert not network, "pages load resources from the network:\n" + "\n".join(network[:20])


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium where it can run apt-get)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.skip(f"playwright is not importable: {error}")
    return path


@pytest.fixture
def browser_page():
    """A headless Chromium page and the URLs it asked for that are not local files (or that failed)."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        not_local = []
        page.on("request", lambda r: urllib.parse.urlsplit(r.url).scheme in LOCAL_SCHEMES or not_local.append(r.url))
        page.on("requestfailed", lambda r: not_local.append(f"failed: {r.url} ({r.failure})"))
        try:
            yield page, not_local
        finally:
            browser.close()


def wait_for_mathjax(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
    page.evaluate("() => MathJax.startup.promise")


def test_the_index_opens_from_file_and_lands_on_the_front_page(site, browser_page):
    page, not_local = browser_page
    try:
        page.goto((site / "index.html").as_uri())
        page.wait_for_url("**/book/index.html", timeout=30_000)
        nav = page.locator("nav.bd-docs-nav a.reference")
        nav.first.wait_for(timeout=30_000)
        titles = nav.all_inner_texts()
        assert any(title.startswith("00 ") for title in titles) and any(title.startswith("02 ") for title in titles)
        assert not not_local, not_local
    finally:
        page.screenshot(path=str(SCREENSHOTS / "book_index.png"))


@pytest.mark.parametrize("name", PAGES)
def test_a_notebook_page_shows_its_figures_and_equations_offline(site, browser_page, name):
    page, not_local = browser_page
    try:
        page.goto((site / "notebooks" / f"{name}.html").as_uri(), wait_until="load")
        wait_for_mathjax(page)
        figures = page.locator(".cell_output img")
        assert figures.count() >= 1, "no figure on the page"
        sizes = figures.evaluate_all("images => images.map(img => img.complete ? img.naturalWidth : 0)")
        assert all(width > 0 for width in sizes), f"figures not loaded (natural widths {sizes})"
        math = page.locator(".math")
        assert math.count() >= 1, "no equation on the page"
        unrendered = math.evaluate_all("nodes => nodes.filter(n => !n.querySelector('mjx-container')).length")
        assert unrendered == 0, f"{unrendered} of {math.count()} equations not rendered by MathJax"
        assert page.locator("mjx-merror").count() == 0, page.locator("mjx-merror").first.inner_text()
        assert not not_local, not_local
    finally:
        page.screenshot(path=str(SCREENSHOTS / f"book_{name}.png"))


def test_the_search_page_finds_a_word_of_the_course_offline(site, browser_page):
    page, not_local = browser_page
    try:
        page.goto((site / "search.html").as_uri() + "?q=alpha_bar")
        results = page.locator("#search-results li")
        results.first.wait_for(timeout=60_000)
        assert results.count() >= 1
        assert not not_local, not_local
    finally:
        page.screenshot(path=str(SCREENSHOTS / "book_search.png"))
