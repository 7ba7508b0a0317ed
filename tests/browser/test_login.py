"""Logging in, in a real browser: wrong passwords are refused and then rate-limited; the session cookie is
HttpOnly and SameSite=Lax. Screenshots tests/artifacts/screenshots/login-*.png."""

from __future__ import annotations


from playwright.sync_api import Page

from tests.browser.pages import ConsoleLog, screenshot
from tests.browser.server import ServeProcess

PASSWORD = "login-test-password-1"


def test_wrong_passwords_are_refused_then_rate_limited_and_the_cookie_is_guarded(page: Page, server: ServeProcess, console_log: ConsoleLog) -> None:
    server.cli("tenants", "add", "丁公司")
    server.add_user(PASSWORD, "d-owner", "--tenant", "丁公司", "--role", "owner")
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/console/login") and r.request.method == "POST" else None)
    for _ in range(5):
        page.goto(server.url("/console/login"))
        page.fill("#username", "d-owner")
        page.fill("#password", "not the password")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "用户名或密码错误" in page.content()
    screenshot(page, "login-wrong-password")
    page.goto(server.url("/console/login"))
    page.fill("#username", "d-owner")
    page.fill("#password", PASSWORD)  # even the right password, while the limit holds
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "登录失败次数过多" in page.content()
    assert statuses[-1] == 429 and len(statuses) == 6 and 429 not in statuses[:5]
    screenshot(page, "login-rate-limited")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "callrouter_session"]  # the pre-login session (its CSRF token)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console/"
    page.goto(server.url("/console/"))
    assert page.url == server.url("/console/login")  # still not logged in
    # The browser reports each refused login page (401, then 429) as a failed load: expected here, and only those.
    taken = console_log.take()
    assert len(taken) == 6 and all("status of 401" in p or "status of 429" in p for p in taken), taken
