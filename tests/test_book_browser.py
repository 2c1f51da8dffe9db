"""The built book, checked as a reader's browser sees it: offline, drawn, without JS errors.

Two kinds of checks on the HTML that `jupyter-book build` wrote (``_build/html`` by default, or
``$R1REWARD_BOOK_HTML``; ``make test`` points it at the ci-profile book):

* static (no browser): no page and no stylesheet refers to an outside host in anything the
  browser would load (``<script src>``, ``<link href>``, ``<img src>``, CSS ``url()`` /
  ``@import``), and every vendored asset the pages use is present;
* headless Chromium (Debian's ``chromium``): every page of the table of contents is opened from
  ``file://`` with outside hosts made unresolvable; the test reads the DOM after the scripts ran
  (``--dump-dom``) and Chromium's NetLog, and asserts that every plotly figure is drawn
  (``.main-svg`` inside it), MathJax typeset the equations, the ipywidgets are rendered, no
  JavaScript error happened (``book/_static/js-error-probe.js`` records them in the DOM), and
  no request left ``file://``. Screenshots of the chapter pages go to ``<build>/screenshots/``.

Both are marked ``browser`` and skip, saying why, when the book is not built or Chromium is
missing. A control page with a deliberate outside request and a deliberate error checks that
the detection itself works.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
BOOK = Path(os.environ.get("R1REWARD_BOOK_HTML", ROOT / "_build" / "html")).resolve()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Virtual time the page gets to run its scripts (MathJax, plotly, the widget manager), in ms.
VIRTUAL_TIME_MS = 20_000
CHROMIUM_TIMEOUT_S = 240

needs_book = pytest.mark.skipif(
    not (BOOK / "index.html").is_file(),
    reason=f"no built book at {BOOK} (run `make book`, or set R1REWARD_BOOK_HTML)",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium; `make chromium`)",
)


def toc_pages() -> list[str]:
    """Every page of _toc.yml (root first), as paths without suffix, e.g. notebooks/02_collapse."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)

    walk(toc)
    return pages


def page_html(page: str) -> Path:
    return BOOK / f"{page}.html"


# --------------------------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------------------------


class _LoadedUrls(HTMLParser):
    """Collects the URLs a browser would fetch while loading a page (not the <a> links)."""

    ATTRS = {
        "script": ("src",),
        "img": ("src", "srcset"),
        "iframe": ("src",),
        "source": ("src", "srcset"),
        "video": ("src", "poster"),
        "audio": ("src",),
        "embed": ("src",),
        "object": ("data",),
        "input": ("src",),
    }
    NON_LOADING_LINK_RELS = {"canonical", "next", "prev", "index", "search", "author", "license"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "link":
            rels = set(values.get("rel", "").lower().split())
            if values.get("href") and not rels <= self.NON_LOADING_LINK_RELS:
                self.urls.append(values["href"])
        for attr in self.ATTRS.get(tag, ()):
            if values.get(attr):
                self.urls.extend(u.strip().split(" ")[0] for u in values[attr].split(","))
        if values.get("style"):
            self.styles.append(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")


def is_outside(url: str) -> bool:
    """True for a URL that leaves the build: any scheme but file/data/blob, or ``//host``."""
    url = url.strip()
    if url.startswith("//"):
        return True
    scheme = urlparse(url).scheme.lower()
    return scheme not in ("", "file", "data", "blob", "about", "javascript")


def css_urls(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # commented-out @imports do not load
    return [a or b for a, b in _CSS_URL.findall(text)]


@needs_book
def test_built_html_loads_nothing_from_outside_hosts() -> None:
    offenders: list[str] = []
    html_files = sorted(BOOK.rglob("*.html"))
    assert html_files, f"{BOOK} has no HTML files"
    for path in html_files:
        parser = _LoadedUrls()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        urls = parser.urls + [u for style in parser.styles for u in css_urls(style)]
        offenders += [f"{path.relative_to(BOOK)}: {u}" for u in urls if is_outside(u)]
    for path in sorted((BOOK / "_static").rglob("*.css")):
        urls = css_urls(path.read_text(encoding="utf-8", errors="replace"))
        offenders += [f"{path.relative_to(BOOK)}: {u}" for u in urls if is_outside(u)]
    assert not offenders, "the built book refers to outside hosts:\n" + "\n".join(offenders)


#: Library chatter that must not reach a reader: weight loading/saving bars and warnings of the
#: libraries the chapters call, warnings in general, and tracebacks.
NOISE = re.compile(
    r"Removed shared tensor|\[RANK \d+\]|Loading weights|Loading checkpoint shards|"
    r"Writing model shards|[A-Z][A-Za-z0-9]*Warning\b|"
    r"Traceback \(most recent call last\)"
)


def noise_lines(html: str) -> list[str]:
    """The lines of a built page (its text and the widget state it embeds) that are library noise."""
    return [ln.strip()[:160] for ln in html.splitlines() if NOISE.search(ln)]


def test_noise_detection_works_on_a_control_text() -> None:
    control = (
        "ok\n[RANK 0] Removed shared tensor {'lm_head.weight'} while saving\n"
        '{"description": "Loading weights"}\nlab runs: 100%\n'
        "/tmp/ipykernel_1/2.py:23: Pandas4Warning: 'str' is not supported as a fill value\n"
    )
    assert len(noise_lines(control)) == 3
    assert noise_lines("lab runs: 40/40 [00:10<00:00]\nRL step 3") == []


@needs_book
def test_no_page_shows_library_noise() -> None:
    found = []
    for page in toc_pages():
        path = page_html(page)
        if path.is_file():
            found += [
                f"{page}: {ln}"
                for ln in noise_lines(path.read_text(encoding="utf-8", errors="replace"))
            ]
    assert not found, f"{len(found)} lines of library noise in the book:\n" + "\n".join(found[:40])


@needs_book
def test_every_locally_loaded_asset_exists() -> None:
    missing: list[str] = []
    for page in toc_pages():
        path = page_html(page)
        assert path.is_file(), f"{page} is in _toc.yml but {path} was not built"
        parser = _LoadedUrls()
        parser.feed(path.read_text(encoding="utf-8"))
        for url in parser.urls:
            if is_outside(url) or url.startswith(("data:", "#")):
                continue
            target = (path.parent / urlparse(url).path).resolve()
            if not target.exists():
                missing.append(f"{page}: {url}")
    assert not missing, "pages load files that are not in the build:\n" + "\n".join(missing)


class _Links(HTMLParser):
    """Collects ``<a href>`` targets and every ``id`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"])


def _parse_links(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


@needs_book
def test_internal_links_and_anchors_resolve() -> None:
    """Every in-book link of every chapter page points to a built file and an existing anchor."""
    broken: list[str] = []
    cache: dict[Path, _Links] = {}
    for page in toc_pages():
        path = page_html(page)
        for href in _parse_links(path).hrefs:
            if is_outside(href) or href.startswith(("mailto:", "javascript:")):
                continue
            parsed = urlparse(href)
            target = (path.parent / parsed.path).resolve() if parsed.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page}: {href} (no file {target})")
                continue
            if parsed.fragment and target.suffix == ".html":
                if target not in cache:  # parse each target once (setdefault would parse it
                    cache[target] = _parse_links(target)  # for every link that names it)
                links = cache[target]
                if parsed.fragment not in links.ids:
                    broken.append(f"{page}: {href} (no id {parsed.fragment!r})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@needs_book
def test_vendored_libraries_are_in_the_build() -> None:
    static = BOOK / "_static" / "vendor"
    for rel in (
        "plotly.min.js",
        "mathjax/tex-mml-chtml.js",
        "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "require.js",
        "html-manager/embed-amd.js",
    ):
        assert (static / rel).is_file(), f"{static / rel} is missing: run tools/vendor_assets.py"
    assert not (static / "mathjax" / "latest.js").exists(), "latest.js would ask a CDN"


# --------------------------------------------------------------------------------------------
# Headless Chromium
# --------------------------------------------------------------------------------------------


def run_chromium(url: str, workdir: Path, *, screenshot: Path | None = None) -> dict:
    """Open ``url`` headless with outside hosts unresolvable; return DOM, log and page requests
    (and, with ``screenshot``, save a full-page picture from the same load).

    Returns ``{"dom": str, "stderr": str, "requests": [url, ...]}`` where ``requests`` are the
    network requests the *page* made (Chromium's own background traffic, whose initiator is
    "not an origin", is left out); file:// loads do not go through the network stack at all.
    """
    netlog = workdir / "netlog.json"
    netlog.unlink(missing_ok=True)
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={workdir / 'profile'}",
        f"--log-net-log={netlog}",
        "--enable-logging=stderr",
        "--v=0",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
    ]
    if screenshot is not None:
        # one load gives both the DOM and a full-page picture (a second Chromium run for the
        # picture cost about 4 s a chapter)
        cmd = [*base, "--window-size=1280,16000", f"--screenshot={screenshot}", "--dump-dom", url]
    else:
        cmd = [*base, "--window-size=1280,2000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"chromium failed on {url} ({proc.returncode}):\n{proc.stderr[-3000:]}"
    )
    return {"dom": proc.stdout, "stderr": proc.stderr, "requests": page_requests(netlog)}


def page_requests(netlog: Path) -> list[str]:
    """URLs of the requests a page started, read from a Chromium NetLog file."""
    if not netlog.is_file():
        return []
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip()
    if not text.endswith("}"):  # a log cut short is still a list of events
        text = text.rstrip(",\n") + "]}"
    data = json.loads(text)
    types = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    urls = []
    for event in data.get("events", []):
        params = event.get("params") or {}
        if types.get(event.get("type")) == "URL_REQUEST_START_JOB" and "url" in params:
            if params.get("initiator") != "not an origin":
                urls.append(params["url"])
    return urls


def js_errors(result: dict) -> list[str]:
    match = re.search(r'<html[^>]*\sdata-js-errors="([^"]*)"', result["dom"])
    assert match, "the page has no data-js-errors attribute: js-error-probe.js did not run"
    errors = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    uncaught = [line for line in result["stderr"].splitlines() if "Uncaught" in line]
    return errors + uncaught


@pytest.fixture(scope="module")
def workdir() -> Path:
    with tempfile.TemporaryDirectory(prefix="r1reward-chromium-") as tmp:
        yield Path(tmp)


@needs_chromium
def test_detection_works_on_a_control_page(workdir: Path) -> None:
    """A page with an outside script, an outside image and an error must be caught."""
    probe = (ROOT / "book" / "_static" / "js-error-probe.js").read_text()
    page = workdir / "control.html"
    page.write_text(
        f"<html><head><script>{probe}</script>"
        '<script src="https://cdn.example.invalid/lib.js"></script></head><body>'
        '<img src="http://example.invalid/x.png"><script>missingFunction();</script>'
        "</body></html>"
    )
    result = run_chromium(page.as_uri(), workdir)
    assert any("cdn.example.invalid" in u for u in result["requests"]), result["requests"]
    assert any("example.invalid/x.png" in u for u in result["requests"]), result["requests"]
    assert any("missingFunction" in e for e in js_errors(result))


def expected_figures(html: str) -> int:
    """Plotly figures in the page: written into it, plus those inside saved ipywidgets state
    (an Output widget's figure, escaped in the state JSON, drawn once the widget renders)."""
    static = re.findall(r'<div id="r1reward-fig-[0-9a-f]+" class="r1reward-plotly"', html)
    in_widgets = re.findall(r'<div id=\\"r1reward-fig-[0-9a-f]+\\" class=\\"r1reward-plotly', html)
    return len(static) + len(in_widgets)


@needs_book
@needs_chromium
@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_offline_without_errors(page: str, workdir: Path) -> None:
    path = page_html(page)
    assert path.is_file(), f"{page} is in _toc.yml but {path} was not built"
    source = path.read_text(encoding="utf-8")
    png = None
    if page.startswith("notebooks/"):
        shots = BOOK.parent / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        png = shots / f"{Path(page).name}.png"
        png.unlink(missing_ok=True)  # a picture left by an earlier run must not pass for this one
    result = run_chromium(path.as_uri(), workdir, screenshot=png)
    dom = result["dom"]

    outside = [u for u in result["requests"] if is_outside(u)]
    assert not outside, f"{page} requested outside hosts: {outside}"
    errors = js_errors(result)
    assert not errors, f"{page} had JavaScript errors: {errors}"

    # Every plotly container in the final DOM was drawn (plotly adds an svg.main-svg).
    figures = re.split(r'(?=<div id="r1reward-fig-)', dom)[1:]
    assert len(figures) >= expected_figures(source)
    undrawn = [f[:80] for f in figures if 'class="main-svg"' not in f.split("r1reward-fig-", 2)[1]]
    assert not undrawn, f"{page}: plotly figures not drawn: {undrawn}"

    if 'class="math' in source or "\\(" in source or "\\[" in source:
        assert "<mjx-container" in dom, f"{page}: MathJax did not typeset the equations"
    if "application/vnd.jupyter.widget-state+json" in source:
        assert "widget-slider" in dom or "jupyter-widgets" in dom, (
            f"{page}: the saved ipywidgets were not rendered"
        )

    if png is not None:
        assert png.is_file() and png.stat().st_size > 10_000, f"no screenshot of {page}"
