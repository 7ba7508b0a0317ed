"""Thin page helpers for the real-browser tests: launching Debian's chromium, what a page logged, screenshots.

Kept to plain calls (goto, click, fill, read text) so that moving to Selenium + chromium-driver, should
Debian's chromium drift too far from what Playwright expects, means rewriting this file and the fixtures only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, Request

from tests.ci import missing, on_ci

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never `playwright install`, which downloads a browser
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No calls home: a test must see only the requests the page itself makes.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
TIMEOUT_MS = 10_000  # a page that needs longer than this is broken, and failing fast says so


def require_chromium() -> None:
    """Skip without Debian's chromium, but never on CI: there a missing browser is a failure, not a green skip."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)", "the browser tests")


def require_cjk_font() -> None:
    """Without a Chinese font the screenshots show boxes for every character, and nobody can judge the pages.

    The tests themselves read text, not pixels, so elsewhere this only warns; on CI it fails.
    """
    found = ""
    if shutil.which("fc-list"):
        found = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, timeout=30).stdout.strip()
    if not found:
        message = "no Chinese font for chromium (apt-get install -y fonts-wqy-microhei; .ci/run installs it): screenshots will show boxes"
        if on_ci():
            pytest.fail(message + "; CI=true: the screenshots must be readable", pytrace=False)
        warnings.warn(message, stacklevel=2)


def launch(playwright: Playwright) -> Browser:
    """Headless Debian chromium, with the flags that keep it quiet and off the network."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


@dataclass
class ConsoleLog:
    """What went wrong on a page: console errors, uncaught exceptions, and requests that left the machine.

    The `page` fixture fails the test at teardown if anything is left here, so every page test also checks
    that the page runs clean under its CSP (a refused inline style or script is a console error).
    """

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._pageerror)
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        location = message.location
        # Chromium guesses /favicon.ico for a page that declares no icon (a JSON page, say): its 404 is the
        # browser's, not the page's. A console page should declare its own icon, which is then checked.
        if message.type == "error" and urlsplit(location.get("url", "")).path != "/favicon.ico":
            self.problems.append(f"console error at {location.get('url', '?')}:{location.get('lineNumber', '?')}: {message.text}")

    def _pageerror(self, error: Error) -> None:
        self.problems.append(f"uncaught exception: {error.message}")

    def _request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            self.problems.append(f"request to a non-local address (everything must be vendored): {request.url}")

    def take(self) -> list[str]:
        """The problems so far, cleared: for a test that provokes an error on purpose and checks it."""
        taken, self.problems = self.problems, []
        return taken


def new_page(browser: Browser, log: ConsoleLog, **context_options: Any) -> Page:
    """A page in a fresh context (its own cookies), watched by `log`. Chinese by default, as the console is.

    Pass context options for other cases, e.g. `viewport={"width": 390, "height": 844}` for a phone screen
    or `locale="en-US"`. Close it with `page.context.close()`.
    """
    options: dict[str, Any] = {"locale": "zh-CN", "timezone_id": "Asia/Shanghai", "viewport": {"width": 1280, "height": 800}}
    options.update(context_options)
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    log.watch(page)
    return page


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under tests/artifacts/screenshots/ (gitignored) for people to look at."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "page"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Page, base: str, username: str, password: str, path: str = "/console/") -> None:
    """The console's login form, then wait for the page it sends the user to (`path`, via `?next=`)."""
    page.goto(f"{base}/console/login" + (f"?next={path}" if path != "/console/" else ""))
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")


# What a manager could not read without scrolling inside a field or the menu: a page link beyond the screen's
# edge (the phone's menu had 审计 cut off), a text field narrower than its value (a special day's hours).
CUT_OFF = """() => [
  ...[...document.querySelectorAll('.nav a')].filter(a => a.getBoundingClientRect().right > window.innerWidth + 1)
     .map(a => 'nav: ' + a.textContent.trim()),
  ...[...document.querySelectorAll('input:not([type=date]):not([type=checkbox]):not([type=hidden]):not([type=file])')]
     .filter(i => i.value && i.offsetParent !== null && i.scrollWidth > i.clientWidth + 1).map(i => 'field: ' + (i.name || i.id)),
]"""
