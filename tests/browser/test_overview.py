"""The overview (概览) in a real browser, through a real `callrouter serve`: today's figures equal the CDRs,
a missed caller is listed with a link to the call, and a call held in its Dial shows up live as in progress
with its line busy, and goes when it ends; the other company's overview never shows it. Screenshots of the
desktop and the phone page in tests/artifacts/screenshots/.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, expect

from callrouter.emulator.script import CallScript, DialScript
from tests.browser.pages import ConsoleLog, new_page, screenshot
from tests.browser import pages
from tests.browser.server import ServeProcess

PASSWORD = "overview-password-1"
NUMBER = "4008001234"  # the sample plan, open around the clock in the browser workspace
NUMBER_B = "4008005678"  # 乙公司's (no plan)
ZHAO = "Local/01088886666@callrouter-lines"  # the complaints group (3) rings 赵强 first
PHONE = {"width": 390, "height": 844}
SHANGHAI = ZoneInfo("Asia/Shanghai")


def add_user(server: ServeProcess, name: str, *args: str) -> None:
    server.add_user(PASSWORD, name, *args)


@pytest.fixture(scope="module")
def accounts(server: ServeProcess) -> Iterator[None]:
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER)
    server.cli("tenants", "add", "乙公司")
    server.cli("tenants", "numbers", "add", "乙公司", NUMBER_B)
    add_user(server, "a-owner", "--tenant", "甲公司", "--role", "owner")
    add_user(server, "b-owner", "--tenant", "乙公司", "--role", "owner")
    yield


def log_in(page: Page, server: ServeProcess, username: str) -> None:
    pages.log_in(page, server.url("").rstrip("/"), username, PASSWORD)


def stored_calls(server: ServeProcess, want: int) -> list[dict[str, Any]]:
    """The number's CDRs through the API, once `want` of them have reached the database."""
    deadline = time.monotonic() + 15
    while True:
        request = urllib.request.Request(server.url(f"/api/calls?number={NUMBER}&limit=200"), headers=server.api_headers)
        with urllib.request.urlopen(request, timeout=10) as r:
            calls: list[dict[str, Any]] = json.loads(r.read())["calls"]
        if len(calls) >= want or time.monotonic() > deadline:
            return calls
        time.sleep(0.2)


def test_the_overview_shows_today_the_missed_caller_and_a_call_in_progress_live(
    page: Page, browser: Browser, console_log: ConsoleLog, server: ServeProcess, accounts: None,
) -> None:
    answer = DialScript("ANSWER", 1, 95)
    for i, (caller, dial) in enumerate((("13711110001", answer), ("13711110002", answer), ("13722220003", DialScript("NOANSWER")))):
        t = server.place_call(CallScript(uniqueid=f"overview.{i}", callerid=caller, dtmf=("3",), default_dial=dial))
        assert t.variables.get("CALLROUTER_RESULT") == "ROUTED", t.lines
    calls = stored_calls(server, 3)
    today = datetime.now(SHANGHAI).date()
    mine = [c for c in calls if datetime.fromisoformat(c["started_at"]).astimezone(SHANGHAI).date() == today]
    answered = [c for c in mine if c["disposition"] == "answered"]
    assert len(mine) == 3 and len(answered) == 2
    missed = next(c for c in mine if c["caller"] == "13722220003")

    log_in(page, server, "a-owner")
    # today's figures are the CDRs'
    assert page.locator('[data-figure="calls"]').inner_text() == str(len(mine))
    assert page.locator('[data-figure="answered"]').inner_text() == str(len(answered))
    assert page.locator('[data-figure="rate"]').inner_text() == f"{len(answered) * 100 / len(mine):.0f}%"
    talk = sum(c["billable_seconds"] for c in answered)
    assert page.locator('[data-figure="talk"]').inner_text() == f"{talk // 60} 分 {talk % 60:02d} 秒"
    # the missed caller, with a link to the call
    row = page.locator('.live-missed-row[data-caller="13722220003"]')
    expect(row).to_have_count(1)
    assert "查看通话" in row.inner_text()
    assert page.locator('.live-missed-row[data-caller="13711110001"]').count() == 0
    href = row.locator("a", has_text="查看通话").get_attribute("href") or ""
    assert href.startswith(f"/console/calls/{missed['uniqueid']}?source=")
    # the package bar and its figures
    assert "3,000 分钟" in page.locator("#package").inner_text()
    expect(page.locator("#live-status")).to_have_text("实时更新中")
    expect(page.locator("#live-now")).to_contain_text("现在没有来电")

    other = new_page(browser, console_log)
    try:
        log_in(other, server, "b-owner")
        expect(other.locator("#live-status")).to_have_text("实时更新中")
        script = lambda hold: CallScript(  # noqa: E731
            uniqueid="overview.live", callerid="13655556666", dtmf=("3",), dial={ZHAO: DialScript("ANSWER", 1, 30, hold=hold)})
        with server.held_call(script) as ended:
            live_call = page.locator(".live-call", has_text="13655556666")
            expect(live_call).to_have_count(1, timeout=10_000)
            expect(live_call).to_contain_text("正在转接 赵强")
            zhao = page.locator('[data-line="4008001234/zhao"]')
            expect(zhao).to_have_class("live-line live-line-busy")
            expect(zhao).to_contain_text("忙")
            expect(page.locator("#live-now")).to_contain_text("1 条忙 / 共 5 条")
            assert page.locator(".live-line-busy").count() == 1
            screenshot(page, "overview-live-call")

            small = new_page(browser, console_log, viewport=PHONE)
            try:
                log_in(small, server, "a-owner")
                expect(small.locator(".live-call", has_text="13655556666")).to_have_count(1)
                screenshot(small, "overview-live-call-phone")
            finally:
                small.context.close()

            # the other company's overview, live all the while, never showed the call
            other.wait_for_timeout(2500)
            assert "13655556666" not in other.locator("main").inner_text()
            assert other.locator(".live-call").count() == 0
            assert not ended.done()
        assert ended.result().variables.get("CALLROUTER_RESULT") == "ROUTED"
        expect(page.locator(".live-call")).to_have_count(0, timeout=10_000)
        expect(page.locator("#live-now")).to_contain_text("现在没有来电")
        expect(page.locator('[data-line="4008001234/zhao"]')).to_have_class("live-line live-line-free")
        assert "13655556666" not in other.locator("main").inner_text()
    finally:
        other.context.close()
    page.reload()
    screenshot(page, "overview")
    small = new_page(browser, console_log, viewport=PHONE)
    try:
        log_in(small, server, "a-owner")
        screenshot(small, "overview-phone")
    finally:
        small.context.close()
