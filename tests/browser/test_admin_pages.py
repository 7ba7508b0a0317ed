"""The blacklist, numbers, audit, tenants and users pages in a real browser, through a real `callrouter serve`.

A caller blocked in the console is refused on the next emulated call (its CDR says blacklisted); a viewer sees
the list without the forms and its post is refused; a form without its CSRF token is refused; the numbers page
draws the plan with each group's lines in answer order and its "who rings" form answers; the audit page lists
the change; the provider manages tenants and numbers, an owner its company's users. Screenshots of each page,
desktop and phone, in tests/artifacts/screenshots/.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, Page

from callrouter.emulator.script import CallScript, DialScript
from tests.browser.pages import ConsoleLog, new_page, screenshot
from tests.browser import pages
from tests.browser.server import ServeProcess
from tests.test_process import ROOT

PASSWORD = "admin-pages-password-1"
NUMBER = "4008001234"  # the sample plan (open around the clock in the browser workspace)
HOURS_NUMBER = "4008001235"  # 甲公司's second number: the sample plan with its business hours and holidays
NUMBER_B = "4008005678"  # 乙公司's (no plan)
PHONE = {"width": 390, "height": 844}


def add_user(server: ServeProcess, name: str, *args: str) -> None:
    server.add_user(PASSWORD, name, *args)


@pytest.fixture(scope="module")
def accounts(server: ServeProcess) -> Iterator[None]:
    """甲公司 owns the sample number, its owner and a viewer; 乙公司 and its owner; provider staff."""
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER)
    server.cli("tenants", "add", "乙公司")
    server.cli("tenants", "numbers", "add", "乙公司", NUMBER_B)
    add_user(server, "a-owner", "--tenant", "甲公司", "--role", "owner")
    add_user(server, "a-viewer", "--tenant", "甲公司", "--role", "viewer", "--no-download")
    add_user(server, "b-owner", "--tenant", "乙公司", "--role", "owner")
    add_user(server, "ops", "--provider")
    yield


def add_plan_with_hours(server: ServeProcess) -> None:
    """The sample plan as it ships (hours, holidays, a 调休 Sunday) as 甲公司's second number, loaded by SIGHUP."""
    plan = (ROOT / "dialplans" / "4008001234.yaml").read_text().replace('number: "4008001234"', f'number: "{HOURS_NUMBER}"')
    (server.workdir / "dialplans" / f"{HOURS_NUMBER}.yaml").write_text(plan)
    mark = len(server.log)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(r"configuration reloaded: 2 plans", after=mark)
    server.cli("tenants", "numbers", "add", "甲公司", HOURS_NUMBER)


def log_in(page: Page, server: ServeProcess, username: str, path: str) -> None:
    pages.log_in(page, server.url("").rstrip("/"), username, PASSWORD, path)


def phone(browser: Browser, log: ConsoleLog, server: ServeProcess, username: str, path: str, name: str) -> None:
    """The same page on a 390x844 phone screen, for its screenshot."""
    small = new_page(browser, log, viewport=PHONE)
    try:
        log_in(small, server, username, path)
        screenshot(small, name)
        assert small.evaluate(pages.CUT_OFF) == [], name
    finally:
        small.context.close()


def api_call(server: ServeProcess, uniqueid: str, timeout: float = 10) -> dict[str, Any]:
    """The call's CDR, once the writer's next batch has put it in the database."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(server.url(f"/api/calls/{uniqueid}"), headers=server.api_headers)
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                found: dict[str, Any] = json.loads(r.read())
                return found
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def block(page: Page, caller: str, reason: str, *, prefix: bool = False) -> None:
    page.fill("#bl-caller", caller)
    if prefix:
        page.check('input[name=kind][value=prefix]')
    page.fill("#bl-reason", reason)
    page.select_option("#bl-expires", "30d")
    page.select_option("#bl-scope", NUMBER)
    page.click("form.blacklist-form button[type=submit]")
    page.wait_for_url("**/console/blacklist?done=added")


def test_a_caller_blocked_in_the_console_is_refused_on_the_next_call(
        page: Page, browser: Browser, console_log: ConsoleLog, server: ServeProcess, accounts: None) -> None:
    before = server.place_call(CallScript(uniqueid="bl.before", callerid="13900007777", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5)))
    assert before.dials, "not blocked yet: the call reaches a line"
    log_in(page, server, "a-owner", "/console/blacklist")
    assert page.locator('nav a[aria-current="page"]').inner_text() == "黑名单"
    assert "还没有添加黑名单" in page.locator("main").inner_text()
    block(page, "139-0000-7777", "骚扰电话")
    assert "下一通来电起生效" in page.locator("p.done").inner_text()
    cells = page.locator("#blacklist-entries tbody tr").first.locator("td").all_inner_texts()
    assert "13900007777" in cells[0] and cells[1] == "骚扰电话" and cells[2] == NUMBER and cells[4] == "a-owner", cells
    block(page, "0755", "深圳号段推销", prefix=True)
    rows = page.locator("#blacklist-entries tbody tr")
    assert rows.count() == 2 and "0755 开头的号码" in rows.first.inner_text()
    config = page.locator("#bl-config").locator("xpath=..").inner_text()
    assert "服务商配置" in config and "13000000000" in config and "拒接" in config  # the plan's own YAML blacklist, read only
    screenshot(page, "blacklist")
    phone(browser, console_log, server, "a-owner", "/console/blacklist", "blacklist-phone")

    refused = server.place_call(CallScript(uniqueid="bl.after", callerid="+86 139 0000 7777", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5)))
    assert not refused.dials, "a blocked caller must reach no line"
    assert api_call(server, "bl.after")["disposition"] == "blacklisted"
    by_prefix = server.place_call(CallScript(uniqueid="bl.prefix", callerid="075512345678", default_dial=DialScript("ANSWER", 1, 5)))
    assert not by_prefix.dials and api_call(server, "bl.prefix")["disposition"] == "blacklisted"
    others = server.place_call(CallScript(uniqueid="bl.other", callerid="13900008888", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5)))
    assert others.dials and api_call(server, "bl.other")["disposition"] == "answered"

    # removed again: the next call goes through
    page.locator("#blacklist-entries tbody tr", has_text="0755").locator("button").click()
    page.wait_for_url("**/console/blacklist?done=removed")
    assert page.locator("#blacklist-entries tbody tr").count() == 1
    again = server.place_call(CallScript(uniqueid="bl.prefix2", callerid="075512345678", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5)))
    assert again.dials and api_call(server, "bl.prefix2")["disposition"] == "answered"


def test_a_viewer_sees_the_list_without_the_forms_and_cannot_post(
        page: Page, server: ServeProcess, accounts: None, console_log: ConsoleLog) -> None:
    log_in(page, server, "a-viewer", "/console/blacklist")
    main = page.locator("main")
    assert "只能查看黑名单" in main.inner_text()
    assert page.locator("form.blacklist-form").count() == 0 and page.locator("#blacklist-entries button").count() == 0
    screenshot(page, "blacklist-viewer")
    csrf = page.locator("input[name=csrf]").first.input_value()  # the viewer's own token (the logout form's)
    origin = {"Origin": server.url("")}
    refused = page.request.post(server.url("/console/blacklist"), headers=origin,
                                form={"csrf": csrf, "caller": "13900006666", "kind": "exact", "reason": "", "expires": "never", "scope": NUMBER})
    assert refused.status == 403
    removed = page.request.post(server.url("/console/blacklist/remove"), headers=origin,
                                form={"csrf": csrf, "scope": NUMBER, "caller": "13900007777"})
    assert removed.status == 403
    page.reload()
    assert "13900006666" not in main.inner_text()


def test_another_company_sees_none_of_it_and_gets_404(page: Page, server: ServeProcess, accounts: None, console_log: ConsoleLog) -> None:
    log_in(page, server, "b-owner", "/console/blacklist")
    assert "13900007777" not in page.locator("main").inner_text()  # 甲公司's entry, still in force
    assert page.locator("#bl-scope option").all_inner_texts() == [NUMBER_B]
    csrf = page.locator("input[name=csrf]").first.input_value()
    taken = page.request.post(server.url("/console/blacklist/remove"), headers={"Origin": server.url("")},
                              form={"csrf": csrf, "scope": NUMBER, "caller": "13900007777"})
    assert taken.status == 404 and "13900007777" not in taken.text()
    aimed = page.request.post(server.url("/console/blacklist"), headers={"Origin": server.url("")},
                              form={"csrf": csrf, "caller": "13900001111", "kind": "exact", "reason": "", "expires": "never", "scope": NUMBER})
    assert aimed.status == 422  # not one of its numbers
    page.goto(server.url("/console/audit"))
    assert "a-owner" not in page.locator("main").inner_text()
    response = page.goto(server.url(f"/console/numbers/{NUMBER}"))
    assert response is not None and response.status == 404 and "示例科技" not in page.locator("main").inner_text()
    console_log.take()


def test_a_form_posted_without_its_csrf_token_is_refused(page: Page, server: ServeProcess, accounts: None, console_log: ConsoleLog) -> None:
    log_in(page, server, "a-owner", "/console/blacklist")
    page.locator("form.blacklist-form input[name=csrf]").evaluate("field => field.remove()")
    page.fill("#bl-caller", "13900005555")
    with page.expect_response("**/console/blacklist") as answer:
        page.click("form.blacklist-form button[type=submit]")
    assert answer.value.status == 403
    assert "页面已过期" in page.locator("main").inner_text()
    console_log.take()  # the browser reports the 403 it was shown
    page.goto(server.url("/console/blacklist"))
    assert "13900005555" not in page.locator("main").inner_text()


def test_the_numbers_page_draws_the_plan_and_answers_who_rings(
        page: Page, browser: Browser, console_log: ConsoleLog, server: ServeProcess, accounts: None) -> None:
    add_plan_with_hours(server)
    log_in(page, server, "a-owner", "/console/numbers")
    cards = page.locator(".number-card")
    assert cards.count() == 2 and "周一至周五 09:00-12:00、13:30-18:00；周六 10:00-16:00" in cards.nth(1).inner_text()
    assert "全天开放" in cards.nth(0).inner_text() and NUMBER_B not in page.locator("main").inner_text()
    screenshot(page, "numbers")
    page.click(f'a[href="/console/numbers/{NUMBER}"]')
    page.wait_for_url(f"**/console/numbers/{NUMBER}")
    assert page.locator('nav a[aria-current="page"]').inner_text() == "号码"
    flow = page.locator(f"svg#flow-{NUMBER}")
    drawn = flow.text_content() or ""
    assert flow.count() == 1 and "按 1" in drawn and "转接坐席组「sales」" in drawn
    sales = page.locator(f"svg#group-{NUMBER}-sales")
    assert sales.locator("text.group-line").all_text_contents() == ["张伟", "李娜", "王芳"]  # the answer order
    assert "轮循" in (sales.text_content() or "") and "138****8001" in (sales.text_content() or "")
    table = page.locator("#group-sales table.group-lines tbody tr")
    assert [row.locator("td").nth(1).inner_text() for row in table.all()] == ["张伟", "李娜", "王芳"]
    assert "13800138001" not in page.content()  # line numbers are masked everywhere on the page
    assert page.locator("#hours-table").count() == 1
    screenshot(page, "numbers-plan")

    page.fill("#ex-caller", "13912345678")
    page.fill("#ex-digits", "1")
    page.click("#explain button[type=submit]")
    page.wait_for_selector("#explain-result")
    rings = page.locator("#explain-rings tbody tr")
    assert [row.locator("td").nth(1).inner_text() for row in rings.all()] == ["张伟", "李娜", "王芳"]
    assert "留言" in page.locator("#explain-result dd.outcome").inner_text()  # nobody answers: the sales voicemail
    page.select_option("#ex-answer", "first")
    page.click("#explain button[type=submit]")
    page.wait_for_selector("#explain-result")
    assert page.locator("#explain-result dd.outcome").inner_text() == "已接听"
    assert page.locator("#explain-rings tbody tr").count() == 1
    page.click("#explain-result summary")
    assert "按了 1" in page.locator("#explain-steps").inner_text()
    screenshot(page, "numbers-explain")
    phone(browser, console_log, server, "a-owner", f"/console/numbers/{NUMBER}", "numbers-plan-phone")

    # blocked callers are refused in the dry run too, and another tenant's number is not found
    page.goto(server.url(f"/console/numbers/{NUMBER}?caller=13000000000&at=2026-11-24T10:30&digits=1"))  # on the plan's own list
    assert page.locator("#explain-result dd.outcome").inner_text() == "黑名单拦截"
    response = page.goto(server.url(f"/console/numbers/{NUMBER_B}"))
    assert response is not None and response.status == 404
    console_log.take()

    # the plan with business hours: the week drawn, holidays listed, and a call on a holiday goes to voicemail
    page.goto(server.url(f"/console/numbers/{HOURS_NUMBER}"))
    hours = page.locator(f"svg#hours-{HOURS_NUMBER}").text_content() or ""
    assert "2026-10-01" in hours and "2026-10-11" in hours
    assert page.locator("#hours-table tbody tr").nth(5).inner_text().split() == ["周六", "10:00-16:00"]
    assert page.locator("#hours-table tbody tr").nth(6).inner_text().split() == ["周日", "休息"]
    screenshot(page, "numbers-hours")
    page.fill("#ex-caller", "13912345678")
    page.fill("#ex-at", "2026-10-01T10:00")
    page.click("#explain button[type=submit]")
    page.wait_for_selector("#explain-result")
    assert page.locator("#explain-result dd.outcome").inner_text() == "非工作时间"
    assert "节假日休息" in page.locator("#explain-steps").text_content()
    phone(browser, console_log, server, "a-owner", f"/console/numbers/{HOURS_NUMBER}", "numbers-hours-phone")


def test_the_audit_page_lists_the_blacklist_change(
        page: Page, browser: Browser, console_log: ConsoleLog, server: ServeProcess, accounts: None) -> None:
    log_in(page, server, "a-owner", "/console/blacklist")
    block(page, "13900004444", "投诉骚扰")
    page.goto(server.url("/console/audit"))
    first = page.locator("#audit-rows tbody tr").first
    assert first.get_attribute("data-action") == "blacklist_add"
    text = first.inner_text()
    assert "添加黑名单" in text and f"{NUMBER} · 13900004444" in text and "a-owner" in text and "投诉骚扰" in text
    assert "登录" in page.locator("#audit-rows").inner_text()
    page.select_option("#au-action", "blacklist_remove")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/console/audit?action=blacklist_remove*")
    assert {r.get_attribute("data-action") for r in page.locator("#audit-rows tbody tr").all()} == {"blacklist_remove"}
    page.goto(server.url("/console/audit"))
    screenshot(page, "audit")
    phone(browser, console_log, server, "a-owner", "/console/audit", "audit-phone")


def test_the_provider_manages_tenants_and_an_owner_its_users(
        page: Page, browser: Browser, console_log: ConsoleLog, server: ServeProcess, accounts: None) -> None:
    log_in(page, server, "ops", "/console/tenants")
    row = page.locator("#tenants tbody tr", has_text="甲公司")
    assert NUMBER in row.inner_text() and "2" in row.locator("td").nth(2).inner_text()
    page.fill("#tn-name", "丙公司")
    page.click("form[action='/console/tenants'] button[type=submit]")
    page.wait_for_url("**/console/tenants?done=added*")
    new = page.locator("#tenants tbody tr", has_text="丙公司")
    new.locator("input[name=number]").fill("4008009999")
    new.locator("form.assign button").click()
    page.wait_for_url("**/console/tenants?done=assigned")
    assert "4008009999" in page.locator("#tenants tbody tr", has_text="丙公司").inner_text()
    screenshot(page, "tenants")
    phone(browser, console_log, server, "ops", "/console/tenants", "tenants-phone")

    owner = new_page(browser, console_log)
    try:
        log_in(owner, server, "a-owner", "/console/users")
        assert owner.locator("#users tbody tr").count() == 2  # a-owner and a-viewer: never another company's
        owner.fill("#us-username", "a-new")
        owner.fill("#us-password", "a-new-password-1")
        owner.select_option("#us-role", "viewer")
        owner.click("form[action='/console/users'] button[type=submit]")
        owner.wait_for_url("**/console/users?done=added*")
        added = owner.locator("#user-a-new")
        added.locator("select[name=role]").select_option("admin")
        added.locator(".role-form button").click()
        owner.wait_for_url("**/console/users?done=changed")
        assert owner.locator("#user-a-new select[name=role]").input_value() == "admin"
        owner.locator("#user-a-new button.danger").click()
        owner.wait_for_url("**/console/users?done=disabled")
        assert "已停用" in owner.locator("#user-a-new").inner_text()
        screenshot(owner, "users")
        owner.goto(server.url("/console/audit"))
        actions = [r.get_attribute("data-action") for r in owner.locator("#audit-rows tbody tr").all()[:3]]
        assert actions == ["user_disable", "user_role", "user_add"]
    finally:
        owner.context.close()
    phone(browser, console_log, server, "a-owner", "/console/users", "users-phone")
