"""The console's statistics page over real HTTP, on SQLite and Postgres: the figures equal the calls, the
staffing sentence, the date-range checks next to their fields, the CSV export in the audit log, and tenant
isolation (another tenant's number is 404 and never its data)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from callrouter.console.stats import staffing
from callrouter.packages.rules import agents_needed
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.number_stats import number_statistics
from tests.cdrs import T0, record
from tests.consoles import NUMBER_A, NUMBER_B, Site, running_site
from tests.harness import arun


async def calls_for_a(site: Site) -> None:
    """40 calls to A on Tuesday 24 November 09:00 Shanghai (30 answered, 40 s each), 5 the day before at 15:00."""
    records = [record(i, answered=i % 4 != 0) for i in range(40)]
    records += [record(100 + i, start=T0 - timedelta(hours=18)) for i in range(5)]
    await CdrStore(site.engine).write([rows_from_spooled(spool_entry(r)[0]) for r in records])


def cell(html: str, table: str, row_attr: str, key: str) -> str:
    """The text of the cell `data-key=key` in the row with `row_attr` of the table with id `table`."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    row = body.split(row_attr, 1)[1].split("</tr>", 1)[0]
    found = re.search(rf'data-key="{key}"[^>]*>(.*?)</td>', row, re.S)
    assert found, (table, row_attr, key, row[:400])
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_the_page_shows_the_calls_of_the_last_seven_days_and_the_agents_needed(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            await calls_for_a(site)
            assert (await site.login("a-owner"))[0] == 303
            status, html, r = await site.get("/console/stats")
            assert status == 200, html[:500]
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert f"{NUMBER_A}，2026-11-18 至 2026-11-24（7 天，北京时间）" in html
            assert 'aria-current="page">统计' in html
            # the figures
            assert re.search(r'data-key="calls">45<', html) and re.search(r'data-key="answered">35<', html)
            assert 'data-value="0.7778">77.8%' in html and 'data-seconds="1400">23分20秒' in html
            # per day: every day of the range, zeros too
            assert cell(html, "stats-daily", 'data-day="2026-11-24"', "calls") == "40"
            assert cell(html, "stats-daily", 'data-day="2026-11-24"', "missed") == "10"
            assert cell(html, "stats-daily", 'data-day="2026-11-23"', "calls") == "5"
            assert cell(html, "stats-daily", 'data-day="2026-11-18"', "calls") == "0"
            assert cell(html, "stats-rate", 'data-day="2026-11-24"', "rate") == "75.0%"
            assert cell(html, "stats-rate", 'data-day="2026-11-18"', "rate") == "—"
            assert cell(html, "stats-talk", 'data-day="2026-11-24"', "talk") == "20分00秒"
            assert cell(html, "stats-talk", 'data-day="2026-11-24"', "avg") == "40秒"
            # the heatmap: Tuesday 09:00 and Monday 15:00; hours 09-15 only
            assert 'data-weekday="1" data-calls="40" data-answered="30"' in html
            assert 'data-weekday="0" data-calls="5" data-answered="5"' in html
            assert "09:00–10:00" in html and "15:00–16:00" in html and "08:00–09:00" not in html
            assert 'class="heat-5 rate-low"' in html  # 75% < 80%
            # lines, with their names from the plan
            assert cell(html, "stats-lines", 'data-line="li"', "answered") == "35"
            assert cell(html, "stats-lines", 'data-line="li"', "share") == "100.0%"
            assert cell(html, "stats-lines", 'data-line="zhang"', "busy") == "45"
            assert "李娜" in html and "张伟" in html
            assert 'data-key="unreachable"' not in html and "满线跳过" not in html  # outcomes no line had: no column
            # the staffing: 40 calls on the one Tuesday of the period at 09:00, 40 s each
            agents, _ = agents_needed(40, 40)
            assert f"需要 {agents} 名坐席" in html
            assert "忙时为周二 09:00–10:00：本期 1 个周二的这一小时共来电 40 通，平均每小时 40 通；平均通话 40秒。" in html
            assert "本期最忙的一个小时：2026-11-24 周二 09:00–10:00，来电 40 通，接听 30 通。" in html
            # the charts' numbers, for static/stats.js, and no inline script or style
            assert '<script type="application/json" id="stats-data">' in html and '"calls": [0, 0, 0, 0, 0, 5, 40]' in html
            assert "style=" not in html and "<script>" not in html and "onclick" not in html
            # in English
            status, html, _ = await site.get("/console/stats?lang=en")
            assert status == 200 and "How many agents are needed" in html and "The busiest hour is Tuesday 09:00–10:00: 40 calls in that hour" in html

    arun(body())


def test_another_tenants_number_is_404_and_never_its_data(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            await calls_for_a(site)
            assert (await site.login("b-owner"))[0] == 303
            status, html, _ = await site.get("/console/stats")
            assert status == 200 and NUMBER_B in html and NUMBER_A not in html
            assert re.search(r'data-key="calls">0<', html)
            for path in (f"/console/stats?number={NUMBER_A}", "/console/stats?number=400-800-1234",
                         f"/console/stats.csv?number={NUMBER_A}", "/console/stats?number=4009999999", "/console/stats?number=abc"):
                status, html, _ = await site.get(path)
                assert status == 404, path
                assert "找不到" in html and "李娜" not in html and "data-key" not in html and "stats-data" not in html
            assert await site.audit("stats_export") == []
            # the provider sees A's number
            assert (await site.login("boss"))[0] == 303
            status, html, _ = await site.get(f"/console/stats?number={NUMBER_A}")
            assert status == 200 and re.search(r'data-key="calls">45<', html)
            assert f'<option value="{NUMBER_B}"' in html  # every tenant's number is offered
            # not logged in: the login page
            site.http.cookie_jar.clear()
            assert (await site.get("/console/stats"))[0] == 303

    arun(body())


def test_a_range_of_more_than_366_days_is_an_error_next_to_its_field(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-viewer"))[0] == 303
            status, html, _ = await site.get("/console/stats?from=2025-11-23&to=2026-11-24")  # 367 days
            assert status == 400
            assert 'aria-describedby="stats-from-error"' in html
            assert '<span class="field-error" id="stats-from-error">一次最多查看 366 天（现在是 367 天），请缩短日期范围。</span>' in html
            assert 'value="2025-11-23"' in html and "stats-data" not in html  # the form keeps what was typed; no figures
            status, html, _ = await site.get("/console/stats?from=2025-11-24&to=2026-11-24")  # 366 days: allowed
            assert status == 200 and "366 天" in html
            status, html, _ = await site.get("/console/stats?from=2026-11-24&to=2026-11-20")
            assert status == 400 and 'id="stats-to-error">结束日期不能早于开始日期。' in html
            status, html, _ = await site.get("/console/stats?from=yesterday&to=2026-11-20&lang=en")
            assert status == 400 and 'id="stats-from-error">Enter a date, e.g. 2026-11-24.' in html
            assert (await site.get("/console/stats.csv?from=2025-01-01&to=2026-11-24"))[0] == 400

    arun(body())


def test_the_daily_csv_is_the_table_and_is_audited(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            await calls_for_a(site)
            assert (await site.login("a-viewer"))[0] == 303
            status, text, r = await site.get(f"/console/stats.csv?number={NUMBER_A}&from=2026-11-23&to=2026-11-24")
            assert status == 200 and r.headers["Content-Type"].startswith("text/csv")
            assert 'filename="stats-4008001234-2026-11-23-2026-11-24.csv"' in r.headers["Content-Disposition"]
            rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
            assert [(row["day"], row["calls"], row["answered"], row["talk_seconds"]) for row in rows] == [
                ("2026-11-23", "5", "5", "200"), ("2026-11-24", "40", "30", "1200")]
            [entry] = await site.audit("stats_export")
            assert entry.username == "a-viewer" and entry.tenant_id == site.seeded.tenant_a
            assert entry.after == {"number": NUMBER_A, "from": "2026-11-23", "to": "2026-11-24", "rows": 2}

    arun(body())


def test_staffing_picks_the_busiest_weekday_hour_per_occurrence_without_after_hours_calls(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            tuesday = [record(i, answered=True) for i in range(12)]  # 09:00 on the one Tuesday
            late = [record(100 + i, start=T0 + timedelta(hours=12)) for i in range(30)]  # 21:00 Tuesday, after hours
            late = [replace(r, disposition="after_hours", attempts=(), talk_seconds=0) for r in late]
            await CdrStore(site.engine).write([rows_from_spooled(spool_entry(r)[0]) for r in tuesday + late])
            first = T0.date() - timedelta(days=13)
            stats = await number_statistics(site.engine, NUMBER_A, first, T0.date(), "Asia/Shanghai", numbers=None)
            assert stats is not None and stats.weekday_counts[1] == 2
            s = staffing(stats)
            assert s is not None and (s.weekday, s.hour, s.calls, s.weekdays_in_period) == (1, 9, 12, 2)
            assert s.per_hour == 6 and s.handle_seconds == 40
            assert (s.agents, s.reached) == agents_needed(6, 40)

    arun(body())
