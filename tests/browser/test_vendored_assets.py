"""The vendored htmx, its SSE extension and uPlot work in the real browser under the console's CSP.

A page of our own, served with `default-src 'self'` from a small local server, uses each the way the
console will: an hx-get swap, an SSE stream into the page, a uPlot chart. This keeps the console's pages
from being the first to find out that an upgrade of a vendored file broke under the CSP.
"""

from __future__ import annotations

import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.pages import ConsoleLog, screenshot
from tests.test_vendored import VENDOR, version_of

CSP = "default-src 'self'"
HTMX_CONFIG = """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>"""
PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>vendored</title>
{config}
<link rel="icon" href="/icon.svg">
<link rel="stylesheet" href="/vendor/uPlot.min.css">
<script src="/vendor/htmx.min.js"></script>
<script src="/vendor/htmx-ext-sse.min.js"></script>
<script src="/vendor/uPlot.iife.min.js"></script>
<script src="/chart.js"></script>
</head><body>
<button id="load" hx-get="/fragment" hx-target="#fragment">载入</button>
<div id="fragment">空</div>
<div hx-ext="sse" sse-connect="/events"><div id="live" sse-swap="lines">等待</div></div>
<div id="chart"></div>
</body></html>"""
CHART_JS = """document.addEventListener("DOMContentLoaded", function () {
  new uPlot({width: 480, height: 200, series: [{}, {label: "来电", stroke: "#1f77b4"}]},
            [[1, 2, 3, 4], [12, 30, 21, 8]], document.getElementById("chart"));
});"""
ICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><rect width="1" height="1"/></svg>'
TYPES = {".js": "text/javascript", ".css": "text/css"}


class AssetHandler(BaseHTTPRequestHandler):
    """The test page, the vendored files, a fragment and an SSE stream, every answer with the CSP."""

    stopping: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if path in ("/", "/no-htmx-config"):
            self._send(PAGE.replace("{config}", HTMX_CONFIG if path == "/" else ""), "text/html; charset=utf-8")
        elif path == "/chart.js":
            self._send(CHART_JS, "text/javascript")
        elif path == "/icon.svg":
            self._send(ICON, "image/svg+xml")
        elif path == "/fragment":
            self._send("<span id='swapped'>已载入 3 条</span>", "text/html; charset=utf-8")
        elif path == "/events":
            self._events()
        elif path.startswith("/vendor/") and (VENDOR / path.removeprefix("/vendor/")).is_file():
            file = VENDOR / path.removeprefix("/vendor/")
            self._send(file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream"))
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: str | bytes, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(data)

    def _events(self) -> None:
        """One event, then the stream stays open (as the console's live view will) until the test ends."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write("event: lines\ndata: <span id='busy'>忙线 2 条</span>\n\n".encode())
        self.wfile.flush()
        deadline = time.monotonic() + 20
        while not self.stopping.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the browser's own problems instead."""


@pytest.fixture(scope="module")
def asset_site() -> Iterator[str]:
    stopping = threading.Event()
    handler = type("Handler", (AssetHandler,), {"stopping": stopping})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="asset-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_htmx_sse_and_uplot_run_under_the_csp(page: Page, asset_site: str) -> None:
    page.goto(asset_site + "/")
    assert page.evaluate("htmx.version") == version_of("htmx.org")
    page.click("#load")
    assert page.locator("#swapped").inner_text() == "已载入 3 条"
    assert page.locator("#busy").inner_text() == "忙线 2 条"  # arrived over SSE through hx-ext="sse"
    assert page.locator("#chart .uplot canvas").count() == 1
    assert page.locator("#chart .u-legend").inner_text().find("来电") != -1
    assert page.evaluate("getComputedStyle(document.querySelector('.uplot')).boxSizing") == "border-box"  # uPlot.min.css applied
    screenshot(page, "vendored-assets")
    # Console errors (a refused inline style or script among them) fail the test in the `page` fixture.


def test_without_the_htmx_config_meta_its_inline_style_is_refused(page: Page, console_log: ConsoleLog, asset_site: str) -> None:
    """Why VENDORED.md says to set includeIndicatorStyles false; and proof that the harness sees CSP refusals."""
    page.goto(asset_site + "/no-htmx-config")
    page.wait_for_load_state("load")
    problems = console_log.take()
    assert any("inline style" in p and "Content Security Policy" in p for p in problems), problems
