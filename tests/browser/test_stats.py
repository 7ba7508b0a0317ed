"""The statistics page in a real browser, through a real `callrouter serve`: calls placed with the emulator
show up in the page's tables exactly as their CDRs say, the charts are drawn (uPlot canvases) under the
strict CSP, the page fits a phone, and another company's user gets 404 for the number."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from datetime import date, datetime, time as clock, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from callrouter.emulator.script import CallScript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.schema import call_stats, line_stats
from tests.browser.pages import ConsoleLog, new_page, screenshot
from tests.browser.server import ServeProcess, run_async

NUMBER_A, NUMBER_B = "4008001234", "4008005678"
PASSWORD = "stats-page-password-1"
CALLS = (  # uniqueid, the caller's key press (3: complaints, two lines in turn), how every line behaves
    ("stats.1", "3", DialScript("ANSWER", 2, 65)),
    ("stats.2", "3", DialScript("ANSWER", 4, 130)),
    ("stats.3", "3", DialScript("BUSY", 1)),
    ("stats.4", "3", DialScript("NOANSWER")),
)


def add_user(server: ServeProcess, name: str, tenant: str) -> None:
    server.add_user(PASSWORD, name, "--tenant", tenant, "--role", "viewer")


@pytest.fixture(scope="module")
def placed(server: ServeProcess) -> list[dict[str, Any]]:
    """Two companies with a viewer each; A's calls placed and their CDRs as /api/calls lists them."""
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER_A)
    server.cli("tenants", "add", "乙公司")
    server.cli("tenants", "numbers", "add", "乙公司", NUMBER_B)
    add_user(server, "a-stats", "甲公司")
    add_user(server, "b-stats", "乙公司")
    for uniqueid, digit, dial in CALLS:
        transcript = server.place_call(CallScript(uniqueid=uniqueid, dtmf=(digit,), default_dial=dial))
        assert transcript.variables.get("CALLROUTER_RESULT"), transcript.lines
    deadline = time.monotonic() + 15
    while True:  # the CDR writer stores calls in batches
        request = urllib.request.Request(server.url(f"/api/calls?number={NUMBER_A}&limit=100"), headers=server.api_headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            cdrs = [c for c in json.load(response)["calls"] if c["uniqueid"].startswith("stats.")]
        if len(cdrs) == len(CALLS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(c["uniqueid"] for c in cdrs) == [u for u, _, _ in CALLS]
    return cdrs


SHANGHAI = ZoneInfo("Asia/Shanghai")
LINES = ("zhang", "li", "wang", "service_desk", "zhao")


def seed_month(server: ServeProcess, first: date, last: date) -> dict[date, tuple[int, int]]:
    """Quarter-hour sums of an office's busy month (more calls at 10:00 and 15:00, fewer on Saturday, none on
    Sunday), written straight into the sums as the CDR writer keeps them; returns (calls, answered) per day."""
    rng = random.Random(13)
    per_day: dict[date, tuple[int, int]] = {}
    calls_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    day = first
    while day <= last:
        hours = range(9, 18) if day.weekday() < 5 else range(10, 16) if day.weekday() == 5 else range(0)
        total = answered_total = 0
        for hour in hours:
            mean = {10: 9, 11: 7, 12: 2, 14: 6, 15: 9, 16: 6}.get(hour, 4) * (0.5 if day.weekday() == 5 else 1)
            for quarter in range(4):
                n = max(0, round(rng.gauss(mean / 4 * 4, 1.5)))
                if not n:
                    continue
                rate = 0.72 if mean >= 9 else 0.9
                answered = sum(rng.random() < rate for _ in range(n))
                bucket = int(datetime.combine(day, clock(hour, quarter * 15), SHANGHAI).timestamp())
                talk = sum(rng.randint(60, 300) for _ in range(answered))
                for disposition, k, seconds in (("answered", answered, talk), ("no_answer", n - answered, 0)):
                    if k:
                        calls_rows.append({"number": NUMBER_A, "bucket": bucket, "disposition": disposition, "calls": k,
                                           "billable_seconds": seconds, "rung_calls": k, "ring_seconds": 8 * k})
                who = rng.sample(LINES, 3)
                shares = (answered - answered // 3 - answered // 4, answered // 3, answered // 4)
                for line, k in zip(who, shares):
                    if k:
                        line_rows.append({"number": NUMBER_A, "bucket": bucket, "line_id": line, "status": "ANSWER", "attempts": k,
                                          "ring_seconds": 6 * k, "talk_seconds": talk * k // max(1, answered)})
                if n - answered:
                    line_rows.append({"number": NUMBER_A, "bucket": bucket, "line_id": who[0], "status": "NOANSWER",
                                      "attempts": n - answered, "ring_seconds": 20 * (n - answered), "talk_seconds": 0})
                total += n
                answered_total += answered
        per_day[day] = (total, answered_total)
        day += timedelta(days=1)

    async def write() -> None:
        engine = open_engine(make_url(f"sqlite+aiosqlite:///{server.workdir / 'var' / 'callrouter.db'}"))
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(call_stats), calls_rows)
                await conn.execute(insert(line_stats), line_rows)
        finally:
            await engine.dispose()

    run_async(write())
    return per_day


def log_in(page: Page, server: ServeProcess, username: str) -> None:
    """The login form, posted from the page's own cookies (page.request shares them), without following the
    redirect: this test is about the statistics page, not the overview it lands on."""
    page.goto(server.url("/console/login"))
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    response = page.request.post(server.url("/console/login"), form={"username": username, "password": PASSWORD, "csrf": csrf},
                                 headers={"Origin": server.url("").rstrip("/")}, max_redirects=0)
    assert response.status == 303, response.text()[:300]


def figure(page: Page, key: str, attr: str | None = None) -> str:
    element = page.locator(f"#stats-total [data-key={key}]")
    return (element.get_attribute(attr) if attr else element.inner_text()) or ""


def test_the_tables_equal_the_cdrs_and_the_charts_are_drawn(page: Page, console_log: ConsoleLog, server: ServeProcess,
                                                            placed: list[dict[str, Any]]) -> None:
    calls = len(placed)
    answered = sum(c["disposition"] == "answered" for c in placed)
    talk = sum(c["billable_seconds"] for c in placed)
    assert (calls, answered) == (4, 2) and talk > 0
    today = datetime.fromisoformat(placed[0]["started_at"]).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()

    log_in(page, server, "a-stats")
    page.goto(server.url("/console/stats?lang=zh"))
    page.click("nav >> text=统计")  # the menu item leads here
    page.wait_for_url(server.url("/console/stats"))
    page.wait_for_selector(".chart canvas")
    assert page.locator(".chart canvas").count() >= 3  # the three uPlot charts
    assert figure(page, "calls") == str(calls)
    assert figure(page, "answered") == str(answered)
    assert figure(page, "missed") == str(calls - answered)
    assert float(figure(page, "rate", "data-value")) == pytest.approx(answered / calls, abs=1e-4)
    assert figure(page, "rate") == f"{answered / calls * 100:.1f}%"
    assert int(figure(page, "talk", "data-seconds")) == talk
    assert float(figure(page, "avg", "data-seconds")) == pytest.approx(talk / answered, abs=0.05)

    row = page.locator(f"#stats-daily tr[data-day='{today}']")
    assert row.locator("[data-key=calls]").inner_text() == str(calls)
    assert row.locator("[data-key=answered]").inner_text() == str(answered)
    assert page.locator(f"#stats-talk tr[data-day='{today}'] [data-key=talk]").get_attribute("data-seconds") == str(talk)
    assert page.locator("#stats-daily tbody tr").count() == 7  # the last seven days by default
    # the heatmap has this hour's calls, and each line's answers and talk add up to the CDRs'
    started = datetime.fromisoformat(placed[0]["started_at"]).astimezone(ZoneInfo("Asia/Shanghai"))
    heat = page.locator(f"#stats-heat td[data-weekday='{started.weekday()}'][data-calls='{calls}']")
    assert heat.count() >= 1 and heat.first.get_attribute("data-answered") == str(answered)
    lines = page.locator("#stats-lines tbody tr")
    assert sum(int(lines.nth(i).locator("[data-key=answered]").inner_text()) for i in range(lines.count())) == answered
    assert sum(int(lines.nth(i).locator("[data-key=talk]").get_attribute("data-seconds") or 0) for i in range(lines.count())) == talk
    assert "名坐席" in page.locator("#stats-staffing").inner_text()
    screenshot(page, "stats-desktop")

    page.goto(server.url("/console/stats?lang=en"))
    page.wait_for_selector(".chart canvas")
    assert "How many agents are needed" in page.locator("#stats-staffing").inner_text()
    screenshot(page, "stats-desktop-en")

    # more than 366 days: the error is next to the field (a 400, which the browser reports as a failed load)
    response = page.goto(server.url(f"/console/stats?lang=zh&number={NUMBER_A}&from=2020-01-01&to={today}"))
    assert response is not None and response.status == 400
    assert "一次最多查看 366 天" in page.locator("#stats-from-error").inner_text()
    screenshot(page, "stats-range-error")
    assert all("400" in problem for problem in console_log.take())


def test_on_a_phone(browser: Browser, server: ServeProcess, placed: list[dict[str, Any]]) -> None:
    log = ConsoleLog()
    phone = new_page(browser, log, viewport={"width": 390, "height": 844})
    try:
        log_in(phone, server, "a-stats")
        phone.goto(server.url("/console/stats"))
        phone.wait_for_selector(".chart canvas")
        assert figure(phone, "calls") == str(len(placed))
        # nothing but the wide tables scrolls sideways
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        canvas_width = phone.evaluate("document.querySelector('.chart canvas').getBoundingClientRect().width")
        assert 200 <= canvas_width <= 390
        screenshot(phone, "stats-phone")
    finally:
        phone.context.close()
    assert not log.problems, log.problems


def test_another_companys_user_gets_404_for_the_number(page: Page, console_log: ConsoleLog, server: ServeProcess,
                                                       placed: list[dict[str, Any]]) -> None:
    log_in(page, server, "b-stats")
    page.goto(server.url("/console/stats"))
    assert page.locator("#stats-total [data-key=calls]").inner_text() == "0"
    assert NUMBER_A not in page.locator("select[name=number]").inner_text()
    response = page.goto(server.url(f"/console/stats?number={NUMBER_A}"))
    assert response is not None and response.status == 404
    text = page.locator("body").inner_text()
    assert "找不到" in text and "stats-data" not in page.content() and "data-key" not in page.content()
    response = page.goto(server.url(f"/console/stats.csv?number={NUMBER_A}"))
    assert response is not None and response.status == 404
    # the 404s are the browser's "failed to load" messages, expected here
    assert all("404" in problem for problem in console_log.take())


def test_a_busy_month_reads_well_on_a_desktop_and_a_phone(browser: Browser, page: Page, server: ServeProcess,
                                                         placed: list[dict[str, Any]]) -> None:
    """A month of an office's calls (before the last seven days, so the other tests' figures stay), for the screenshots."""
    today = datetime.now(SHANGHAI).date()
    seeded = seed_month(server, today - timedelta(days=34), today - timedelta(days=7))
    first = today - timedelta(days=34)
    log_in(page, server, "a-stats")
    page.goto(server.url(f"/console/stats?number={NUMBER_A}&from={first}&to={today}"))
    page.wait_for_selector(".chart canvas")
    for day, (calls, answered) in seeded.items():
        row = page.locator(f"#stats-daily tr[data-day='{day}']")
        assert (row.locator("[data-key=calls]").inner_text(), row.locator("[data-key=answered]").inner_text()) == (str(calls), str(answered))
    total = sum(c for c, _ in seeded.values()) + len(placed)
    assert figure(page, "calls") == str(total)
    assert page.locator("#stats-heat tbody tr").count() >= 9
    screenshot(page, "stats-month-desktop")
    log = ConsoleLog()
    phone = new_page(browser, log, viewport={"width": 390, "height": 844})
    try:
        log_in(phone, server, "a-stats")
        phone.goto(server.url(f"/console/stats?number={NUMBER_A}&from={first}&to={today}"))
        phone.wait_for_selector(".chart canvas")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(phone, "stats-month-phone")
    finally:
        phone.context.close()
    assert not log.problems, log.problems
