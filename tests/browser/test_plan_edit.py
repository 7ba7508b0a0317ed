"""Editing plans in a real browser, through a real `callrouter serve` (issue 14).

甲公司's admin reorders its sales lines with the form's own buttons, checks the confirm page and applies; the
next emulated call rings the lines in the new order. It restores version 1 from the versions page and the
order comes back. A viewer sees no edit link and is refused (403) on the form and on a post. A save made
while another person edited is refused with who saved what. Screenshots of every new page, desktop and
phone (390×844), in tests/artifacts/screenshots/plan-edit-*.png.
"""

from __future__ import annotations

import re
import signal
from typing import Iterator

import pytest
from playwright.sync_api import Browser, Page

from callrouter.emulator.script import CallScript, DialScript
from tests.browser import pages
from tests.browser.pages import SCREENSHOTS, ConsoleLog, new_page, screenshot
from tests.browser.server import ServeProcess
from tests.test_process import ROOT

PASSWORD = "plan-edit-password-1"
NUMBER = "4008001234"  # the sample plan, open around the clock: "1" reaches sales (round robin 张伟, 李娜, 王芳)
HOURS_NUMBER = "4008001236"  # the sample plan as it ships, with business hours, holidays and a 调休 Sunday
PHONE = {"width": 390, "height": 844}
LINES = {"Local/13800138001@callrouter-lines": "zhang", "Local/13800138002@callrouter-lines": "li",
         "Local/13800138003@callrouter-lines": "wang"}


@pytest.fixture(scope="module")
def accounts(server: ServeProcess) -> Iterator[None]:
    """甲公司 owns the sample number and a second one with hours; its admin and a viewer."""
    plan = (ROOT / "dialplans" / "4008001234.yaml").read_text().replace('number: "4008001234"', f'number: "{HOURS_NUMBER}"')
    (server.workdir / "dialplans" / f"{HOURS_NUMBER}.yaml").write_text(plan)
    mark = len(server.log)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(r"configuration reloaded: 2 plans", after=mark)
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER)
    server.cli("tenants", "numbers", "add", "甲公司", HOURS_NUMBER)
    server.add_user(PASSWORD, "pa-admin", "--tenant", "甲公司", "--role", "admin")
    server.add_user(PASSWORD, "pa-viewer", "--tenant", "甲公司", "--role", "viewer")
    yield


def base(server: ServeProcess) -> str:
    return server.url("").rstrip("/")


def sales_rings(server: ServeProcess, uniqueid: str) -> list[str]:
    """The sales lines one call to "1" rings, in order (nobody answers: each busy in turn)."""
    t = server.place_call(CallScript(uniqueid=uniqueid, dtmf=("1",), default_dial=DialScript("BUSY")))
    return [LINES[target] for d in t.dials for target in d.targets]


def as_cycle(order: list[str]) -> list[str]:
    """A round-robin group starts each call at the next line; the order around the circle is what the plan
    says. Rotated to start at 张伟 to compare."""
    i = order.index("zhang")
    return order[i:] + order[:i]


def row_ids(page: Page) -> list[str]:
    return [page.locator("#lines tbody tr").nth(i).get_attribute("data-line") or "" for i in range(page.locator("#lines tbody tr").count())]


def test_the_admin_reorders_sales_the_next_call_follows_then_restore_brings_it_back(page: Page, server: ServeProcess, accounts: None) -> None:
    before = sales_rings(server, "1700000700.1")
    assert sorted(before) == ["li", "wang", "zhang"] and as_cycle(before) == ["zhang", "li", "wang"]

    pages.log_in(page, base(server), "pa-admin", PASSWORD, f"/console/numbers/{NUMBER}")
    page.click(f'a[href="/console/numbers/{NUMBER}/edit/groups/sales"]')
    page.wait_for_url(re.compile(r".*/edit/groups/sales$"))
    assert row_ids(page) == ["zhang", "li", "wang"]
    screenshot(page, "plan-edit-group")
    page.click('button[aria-label="把 王芳 上移"]')  # a form post that re-draws the rows: nothing saved yet
    assert row_ids(page) == ["zhang", "wang", "li"]
    page.click("#check")
    page.wait_for_selector("#apply")
    text = page.locator("main").inner_text()
    assert "确认修改" in text and "接听顺序" in text and "按 1 的来电" in text
    screenshot(page, "plan-edit-confirm")
    page.click("#apply")
    page.wait_for_url(re.compile(rf".*/console/numbers/{NUMBER}\?saved=2$"))
    assert "已生效（版本 2）" in page.locator("#saved").inner_text()
    screenshot(page, "plan-edit-saved")

    after = sales_rings(server, "1700000700.2")
    assert as_cycle(after) == ["zhang", "wang", "li"]  # the new order, on the very next call

    page.click(f'a[href="/console/numbers/{NUMBER}/versions"]')
    page.wait_for_selector("#versions")
    assert page.locator("#versions tbody tr").count() == 2 and "pa-admin" in page.locator('tr[data-version="2"]').inner_text()
    screenshot(page, "plan-edit-versions")
    page.click(f'a[href="/console/numbers/{NUMBER}/versions/1"]')
    page.wait_for_selector("#restore")
    screenshot(page, "plan-edit-version")
    page.click("#restore")
    page.wait_for_selector("#apply")
    assert "恢复版本 1" in page.locator("main").inner_text()
    screenshot(page, "plan-edit-restore-confirm")
    page.click("#apply")
    page.wait_for_url(re.compile(rf".*/console/numbers/{NUMBER}\?saved=3$"))
    assert "已生效（版本 3）" in page.locator("#saved").inner_text()

    restored = sales_rings(server, "1700000700.3")
    assert as_cycle(restored) == ["zhang", "li", "wang"]  # the order is back


def test_a_viewer_sees_no_form_and_is_refused(page: Page, server: ServeProcess, accounts: None, console_log: ConsoleLog) -> None:
    pages.log_in(page, base(server), "pa-viewer", PASSWORD, f"/console/numbers/{NUMBER}")
    assert page.locator("#edit-links").count() == 0 and page.locator('a[href*="/edit/"]').count() == 0
    assert page.locator(f'a[href="/console/numbers/{NUMBER}/versions"]').count() == 1  # the history is readable
    token = page.locator('input[name="csrf"]').first.get_attribute("value") or ""
    response = page.goto(server.url(f"/console/numbers/{NUMBER}/edit/groups/sales"))
    assert response is not None and response.status == 403 and 'id="group-form"' not in page.content()
    screenshot(page, "plan-edit-viewer-403")
    refused = page.request.post(server.url(f"/console/numbers/{NUMBER}/edit/groups/sales"), headers={"Origin": base(server)},
                                form={"csrf": token, "version": "3", "rows": "1", "strategy": "sequential", "ring_budget": "60",
                                      "line-0-id": "li", "line-0-name": "李娜", "line-0-dest": "13800138002", "line-0-ring": "20",
                                      "line-0-calls": "1", "line-0-enabled": "1", "step": "apply"})
    assert refused.status == 403
    page.goto(server.url(f"/console/numbers/{NUMBER}/versions/1"))
    assert page.locator("#restore").count() == 0
    problems = console_log.take()  # the browser reports the 403 it was shown
    assert all("403" in p for p in problems), problems


def test_every_edit_page_on_desktop_and_phone_and_a_stale_save(browser: Browser, server: ServeProcess, accounts: None) -> None:
    log = ConsoleLog()
    paths = {"group": f"/console/numbers/{HOURS_NUMBER}/edit/groups/sales", "hours": f"/console/numbers/{HOURS_NUMBER}/edit/hours",
             "menu": f"/console/numbers/{HOURS_NUMBER}/edit/menus/main", "greeting": f"/console/numbers/{HOURS_NUMBER}/edit/greeting",
             "number": f"/console/numbers/{HOURS_NUMBER}"}
    for size, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", PHONE)):
        page = new_page(browser, log, viewport=viewport)
        try:
            pages.log_in(page, base(server), "pa-admin", PASSWORD)
            for name, path in paths.items():
                page.goto(server.url(path))
                screenshot(page, f"plan-edit-{name}-{size}")
                # nothing wider than the screen but the diff and the plan pictures (which scroll by themselves)
                overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, (name, size, overflow)
                assert page.evaluate(pages.CUT_OFF) == [], (name, size)  # every page link on screen, every value whole
            page.goto(server.url(paths["number"]))
            page.locator("main section.card").first.screenshot(path=str(SCREENSHOTS / f"plan-edit-number-top-{size}.png"))
            page.goto(server.url(paths["hours"] + "?lang=en"))
            assert "Business hours" in page.locator("h1").inner_text()
            page.goto(server.url(paths["hours"] + "?lang=zh"))
            assert page.locator("#day-mon").input_value() == "09:00-12:00, 13:30-18:00"
            page.fill("#day-sat", "18:00-10:00")  # the end before the start: shown next to 周六
            page.click("#check")
            said = page.locator("#err-day-sat").inner_text()
            assert said.startswith("18:00-10:00：结束时间必须晚于开始时间"), said  # in Chinese, and its place is the field itself
            screenshot(page, f"plan-edit-hours-error-{size}")
            log.take()  # the 422 the browser was shown
        finally:
            page.context.close()

    # two people open the menu form; the first saves; the second is told who saved which version, and nothing of its change is stored
    first, second = new_page(browser, log), new_page(browser, log, viewport=PHONE)
    try:
        for p in (first, second):
            pages.log_in(p, base(server), "pa-admin", PASSWORD)
            p.goto(server.url(paths["menu"]))
        first.fill("#wording", "咨询产品请按1，售后服务请按2，投诉建议请按3。")
        first.click("#check")
        screenshot(first, "plan-edit-menu-confirm")
        first.click("#apply")
        first.wait_for_url(re.compile(r".*\?saved=\d+$"))
        second.fill("#retries", "3")
        second.click("#check")
        stale = second.locator("#stale").inner_text()
        assert "在您编辑期间，pa-admin 于" in stale and "保存了版本" in stale and "您的修改没有保存" in stale
        screenshot(second, "plan-edit-stale-phone")
        problems = log.take()
        assert all("409" in p or "422" in p for p in problems), problems
    finally:
        first.context.close()
        second.context.close()
    assert not log.problems, log.problems
