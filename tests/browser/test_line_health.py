"""Line health in the console, in a real browser (issue 16 shown where people look): after 赵强's phone is
unreachable twice, the overview and the number page say "2 条线路中 1 条正常", name 赵强 as set aside, and the
next call does not ring 赵强. Screenshots in tests/artifacts/screenshots/line-health-*.png."""

from __future__ import annotations

from typing import Iterator

import pytest
from playwright.sync_api import Page

from callrouter.emulator.script import CallScript, DialScript
from tests.browser.pages import screenshot
from tests.browser import pages
from tests.browser.server import ServeProcess

PASSWORD = "line-health-password-1"
NUMBER = "4008001234"  # the sample plan: "3" reaches the complaints group, 赵强 then 张伟
ZHAO = "Local/01088886666@callrouter-lines"


@pytest.fixture(scope="module")
def owner(server: ServeProcess) -> Iterator[str]:
    server.cli("tenants", "add", "丙公司")
    server.cli("tenants", "numbers", "add", "丙公司", NUMBER)
    server.add_user(PASSWORD, "c-owner", "--tenant", "丙公司", "--role", "owner")
    yield "c-owner"


def test_an_unreachable_line_is_shown_set_aside_and_is_not_rung(page: Page, server: ServeProcess, owner: str) -> None:
    for i in range(2):
        t = server.place_call(CallScript(uniqueid=f"1700000400.{i}", dtmf=("3",), dial={ZHAO: DialScript("CHANUNAVAIL")},
                                         default_dial=DialScript("ANSWER", 2, 20)))
        assert [d.targets[0] for d in t.dials][:1] == [ZHAO]
    third = server.place_call(CallScript(uniqueid="1700000400.9", dtmf=("3",), default_dial=DialScript("ANSWER", 2, 20)))
    assert ZHAO not in [target for d in third.dials for target in d.targets]  # set aside: not rung at all

    pages.log_in(page, server.url("").rstrip("/"), owner, PASSWORD)
    card = page.locator(f'section.line-health[data-number="{NUMBER}"]')
    text = card.inner_text()
    assert "条线路中" in text and "条正常" in text
    assert "赵强" in text and "已暂停" in text and "连续 2 次无法接通" in text
    screenshot(page, "line-health-overview")
    page.goto(server.url(f"/console/numbers/{NUMBER}"))
    assert "赵强" in page.locator("section.line-health").inner_text()
    screenshot(page, "line-health-number")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server.url("/console/"))
    screenshot(page, "line-health-overview-phone")
