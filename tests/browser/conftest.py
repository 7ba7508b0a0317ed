"""Fixtures for tests in a real browser: Debian's chromium through Playwright, and a real `callrouter serve`.

    def test_login_page(page: Page, server: ServeProcess) -> None:
        page.goto(server.url("/console/"))
        screenshot(page, "login")
        assert page.locator("form").count() == 1

`page` is fresh per test (own cookies, zh-CN, 1280x800; `new_page(browser, console_log, viewport=...)` for a
phone) and fails the test at teardown if the page logged a console error, threw, or requested anything off this
machine. `server` is one `callrouter serve` per test module (SQLite in its folder, sample plans open around
the clock): `server.url(path)`, `server.cli("users", "add", ...)`, `server.place_call(CallScript(...))`.
Tests here are plain functions, not `arun` bodies (see `browser`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Generator, Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.pages import ConsoleLog, launch, new_page, require_chromium, require_cjk_font
from tests.browser.server import ServeProcess, browser_workspace


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless chromium for all the browser tests (starting one costs about a second).

    Package-scoped rather than session-scoped: while Playwright's sync API is up, its event loop counts as
    running in this thread and every `asyncio.run` of the rest of the suite would refuse to start, so the
    browser must be gone when tests/browser/ is done. Inside these tests run coroutines with
    `tests.browser.server.run_async` (or `server.place_call` for an emulated call).
    """
    require_chromium()
    require_cjk_font()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console_log() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser: Browser, console_log: ConsoleLog) -> Iterator[Page]:
    page = new_page(browser, console_log)
    try:
        yield page
    finally:
        page.context.close()
    if console_log.problems:
        pytest.fail("the page reported problems:\n" + "\n".join(console_log.problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used `server` shows the end of its log: a 500 in the browser is a traceback there."""
    report = yield
    server = getattr(item, "funcargs", {}).get("server")
    if report.failed and isinstance(server, ServeProcess):
        report.sections.append(("callrouter serve log (last 60 lines)", "\n".join(server.log[-60:])))
    return report


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder: Path = tmp_path_factory.mktemp("serve")
    process = ServeProcess(browser_workspace(folder))
    try:
        yield process
    finally:
        process.stop()
