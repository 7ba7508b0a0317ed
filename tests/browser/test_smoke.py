"""The harness end to end: a real `callrouter serve`, Debian's chromium, and the console's login page if it exists yet."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import Page

from callrouter.emulator.script import CallScript, DialScript
from tests.browser.pages import screenshot
from tests.browser.server import ServeProcess


def console_is_mounted(url: str) -> bool:
    """Whether /console/ exists, asked with a plain GET before driving chromium to it.

    Without the console the admin app answers 404, or its JSON 401 when a token is set (every unknown path
    is behind the token); a console page is HTML. Anything else (a 500, say) counts as mounted, and fails below.
    """
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        json_refusal = exc.code in (401, 403) and exc.headers.get_content_type() == "application/json"
        return not (exc.code == 404 or json_refusal)


def test_healthz_opens_in_the_real_browser(page: Page, server: ServeProcess) -> None:
    response = page.goto(server.url("/healthz"))
    assert response is not None and response.status == 200
    assert "alive" in page.locator("body").inner_text()
    screenshot(page, "healthz")


def test_console_login_page_has_a_csp_and_runs_clean(page: Page, server: ServeProcess) -> None:
    if not console_is_mounted(server.url("/console/")):
        pytest.skip("no /console/ on the admin app yet")
    response = page.goto(server.url("/console/"))
    assert response is not None and response.status == 200, response and response.status
    page.wait_for_load_state("networkidle")
    screenshot(page, "console-login")
    csp = response.headers.get("content-security-policy")
    assert csp, f"no Content-Security-Policy on {page.url}"
    assert "default-src" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, csp
    # No console errors, exceptions or off-machine requests: checked by the `page` fixture at teardown.


def test_a_call_through_the_emulator_shows_up_in_the_real_browser(page: Page, server: ServeProcess) -> None:
    """The path the console tests take: a call placed as Asterisk would, then its record seen over HTTP."""
    transcript = server.place_call(CallScript(uniqueid="browser.1", dtmf=("3",), default_dial=DialScript("ANSWER", 1, 5)))
    assert transcript.variables.get("CALLROUTER_RESULT") == "ROUTED", transcript.lines
    page.set_extra_http_headers(server.api_headers)
    deadline = time.monotonic() + 10
    while True:  # the CDR reaches the database in the writer's next batch (cdr.batch_age)
        page.goto(server.url("/api/calls?number=4008001234"))
        if "browser.1" in page.locator("body").inner_text() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert "browser.1" in page.locator("body").inner_text()
