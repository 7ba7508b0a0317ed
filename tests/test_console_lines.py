"""Line health where people look (issue 16): the overview and the number page say how many lines work."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from callrouter.store.db import open_engine
from callrouter.store.line_health import report
from tests.consoles import NUMBER_A, running_site
from tests.harness import arun

ZHANG = "Local/13800138001@callrouter-lines"  # a line of NUMBER_A's sample plan


def test_a_suspended_line_is_shown_to_its_company_only(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/")
            assert status == 200 and "条线路中" in html and "已暂停" not in html and "所有线路正常" in html

            engine = open_engine(make_url(db_url))
            try:
                at = site.clock().timestamp()
                for i in range(2):  # two CHANUNAVAIL in a row: the sample plan's threshold
                    await report(engine, ZHANG, "CHANUNAVAIL", at + i)
            finally:
                await engine.dispose()

            status, html, _ = await site.get("/console/")
            assert status == 200
            assert "条线路中" in html and "已暂停" in html and "张伟" in html and "连续 2 次无法接通" in html
            assert "138****8001" in html and "13800138001" not in html  # the phone number masked
            status, page, _ = await site.get(f"/console/numbers/{NUMBER_A}")
            assert status == 200 and "已暂停" in page and "张伟" in page

            site.http.cookie_jar.clear()  # another browser: company B's owner
            assert (await site.login("b-owner"))[0] == 303
            status, other, _ = await site.get("/console/")
            assert status == 200 and "已暂停" not in other and "138****8001" not in other

    arun(body())
