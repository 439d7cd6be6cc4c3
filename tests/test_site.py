"""The website (`make site`), read in a real browser: headless Chromium from Debian, driven by Playwright.

The site is built from the committed notebooks and served on 127.0.0.1. Every page is opened, and
the test fails on a chapter page that is missing, an image that does not decode (naturalWidth 0), an
internal link to a page or anchor that does not exist, a JavaScript console error or uncaught
exception, a request that fails (the site must load nothing from the internet), or a chapter whose
rendered text lacks its title and its recorded results. Search and MathJax are checked to work.
Screenshots of the landing page and of one chapter go to build/screenshots/ for a person to look at.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_site as book_site  # noqa: E402

NOTEBOOKS = book_site.notebooks()
SHOTS = ROOT / "build" / "screenshots"


def chromium() -> str | None:
    return os.environ.get("BOOK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def serve(folder: Path):
    """Serve a folder on a free loopback port; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site():
    """Build the site and serve it; yield its base URL."""
    book_site.build()
    with serve(book_site.HTML) as url:
        yield url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium here: apt-get install chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_build_has_a_page_for_every_chapter_and_loads_nothing_from_a_cdn(site):
    html = book_site.HTML
    assert (html / "index.html").is_file() and (html / "search.html").is_file()
    for nb in NOTEBOOKS:
        assert (html / "notebooks" / f"{nb.stem}.html").is_file(), f"no page for {nb.name}"
    assert html.is_relative_to(ROOT / "build" / "site")
    assert not list(html.rglob("*.ipynb")), "the 5 MB notebook copies are not published"
    external = [p for p in html.rglob("*.html") if "cdn.jsdelivr.net" in p.read_text(errors="ignore")]
    assert not external, f"pages that load scripts from a CDN: {external[:3]}"


def visit(browser, url: str, screenshot: Path | None = None) -> dict:
    """Open one page; return what it shows: text, ids, links, broken images, errors, failed requests."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: HTTP {response.status if response else '?'}"
    page.wait_for_load_state("networkidle")
    seen = page.evaluate("""async () => {
        const images = [...document.images];
        images.forEach(img => { img.loading = "eager"; });
        await Promise.all(images.map(img => img.decode().catch(() => null)));
        return {
            text: document.body.innerText,
            ids: [...document.querySelectorAll("[id]")].map(e => e.id),
            links: [...document.querySelectorAll("a[href]")].map(a => a.href),
            images: images.length,
            broken: images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src),
            math: document.querySelectorAll("mjx-container").length,
            prev: document.querySelector("a.left-prev")?.href ?? null,
            next: document.querySelector("a.right-next")?.href ?? null,
            toc: document.querySelectorAll(".bd-toc a, #bd-toc-nav a").length,
        };
    }""")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    page.close()
    return {**seen, "problems": problems}


def broken_links(seen: dict, base: str, folder: Path) -> list[str]:
    """Internal links (under base) of the visited pages whose page, or anchor on it, does not exist."""
    failures = []
    for rel, s in seen.items():
        for link in s["links"]:
            target, fragment = urldefrag(link)
            if not target.startswith(base):
                continue
            path = target[len(base):].split("?")[0] or "index.html"
            if path.endswith("/"):
                path += "index.html"
            if not (folder / path).is_file():
                failures.append(f"{rel}: broken link {link}")
            elif fragment and path in seen and fragment not in seen[path]["ids"]:
                failures.append(f"{rel}: link to a missing anchor {link}")
    return failures


def test_every_page_in_a_real_browser(site, browser):
    pages = sorted(p.relative_to(book_site.HTML).as_posix() for p in book_site.HTML.rglob("*.html")
                   if "_static" not in p.parts)  # (the theme's template snippets there are not pages)
    seen = {}
    for rel in pages:
        shot = {"index.html": SHOTS / "site_landing.png",
                "notebooks/02_mnist_cnn.html": SHOTS / "site_chapter.png"}.get(rel)
        seen[rel] = visit(browser, urljoin(site, rel), shot)
    failures = [f"{rel}: {p}" for rel, s in seen.items() for p in s["problems"]]
    failures += [f"{rel}: image does not decode: {src}" for rel, s in seen.items() for src in s["broken"]]

    failures += broken_links(seen, site, book_site.HTML)
    assert not failures, "\n".join(failures[:40])

    landing = seen["index.html"]
    for nb in NOTEBOOKS:
        assert book_site.title(nb) in landing["text"], f"the landing page does not list {nb.stem}"
        assert urljoin(site, f"notebooks/{nb.stem}.html") in landing["links"]
        record = json.loads((ROOT / "results" / f"{nb.stem}.json").read_text())
        assert f"{100 * record['test_accuracy']:.2f}%" in landing["text"], "results table"

        chapter = seen[f"notebooks/{nb.stem}.html"]
        assert book_site.title(nb) in chapter["text"], f"{nb.stem}: the page lacks its title"
        accuracy = (f"{100 * record['test_accuracy']:.2f}", f"{record['test_accuracy']:.2%}")
        assert any(a in chapter["text"] for a in accuracy), f"{nb.stem}: its recorded accuracy is not on the page"
        assert f"data: {record['data']}" in chapter["text"], f"{nb.stem}: the page does not say its data"
        assert chapter["images"] >= 3, f"{nb.stem}: its figures are missing"
        i = NOTEBOOKS.index(nb)  # previous/next navigation in reading order, and a table of contents
        assert chapter["prev"] == urljoin(site, f"notebooks/{NOTEBOOKS[i - 1].stem}.html" if i else "index.html")
        assert chapter["next"] == (urljoin(site, f"notebooks/{NOTEBOOKS[i + 1].stem}.html")
                                   if i + 1 < len(NOTEBOOKS) else None), f"{nb.stem}: next-page link"
        assert chapter["toc"] >= 3, f"{nb.stem}: no table of contents"
    assert seen["notebooks/08_quantization.html"]["math"] > 5, "MathJax did not typeset chapter 8's formulas"


def test_search_finds_the_chapters(site, browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(urljoin(site, "search.html?q=convolution"))
    page.wait_for_selector("#search-results li", timeout=20_000)
    found = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.href)")
    page.close()
    assert not errors
    assert any("02_mnist_cnn" in link for link in found), found


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """The same visit() on a page with what the site must never have: it is reported."""
    (tmp_path / "broken.html").write_text(
        '<html><body><h1 id="top">Broken</h1><img src="missing.png"><a href="nowhere.html">x</a>'
        '<a href="#top">fine</a><a href="broken.html#gone">x</a>'
        '<script>console.error("boom"); undefined_function();</script></body></html>')
    with serve(tmp_path) as url:
        seen = visit(browser, url + "broken.html")
        links = broken_links({"broken.html": seen}, url, tmp_path)
    assert links == [f"broken.html: broken link {url}nowhere.html",
                     f"broken.html: link to a missing anchor {url}broken.html#gone"]
    assert seen["broken"] == [url + "missing.png"]
    assert any("console error: boom" in p for p in seen["problems"])
    assert any("uncaught exception" in p and "undefined_function" in p for p in seen["problems"])
    assert any(p.startswith("HTTP 404") or "404" in p for p in seen["problems"])
