"""The statistics page's store queries (store/number_stats.py) on SQLite and Postgres: days, weekday x hour
and lines equal the raw calls, cut at the plan's local midnight; only the quarter-hour sums are read; a
number outside the scope's numbers gives nothing."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from callrouter.model.record import CallRecord
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.db import open_engine
from callrouter.store.number_stats import NumberStatistics, number_statistics, weekday_counts
from callrouter.store.schema import call_stats
from tests.cdrs import record
from tests.harness import arun

NUMBER = "4008001234"


def spread(n: int, first: date, days: int, tz: ZoneInfo, seed: int = 5) -> list[CallRecord]:
    rng = random.Random(seed)
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(timezone.utc)
    return [record(i, start=start + timedelta(seconds=rng.randrange(days * 86400) - i), answered=rng.random() < 0.7) for i in range(n)]


def statistics(url: str, records: list[CallRecord], first: date, last: date, zone: str,
               numbers: frozenset[str] | None = None, number: str = NUMBER) -> NumberStatistics | None:
    async def body() -> NumberStatistics | None:
        engine = open_engine(make_url(url))
        try:
            if records:
                await CdrStore(engine).write([rows_from_spooled(spool_entry(r)[0]) for r in records])
            return await number_statistics(engine, number, first, last, zone, numbers=numbers)
        finally:
            await engine.dispose()

    return arun(body())


def test_weekday_counts() -> None:
    assert weekday_counts(date(2026, 11, 24), date(2026, 11, 24)) == (0, 1, 0, 0, 0, 0, 0)  # a Tuesday
    assert weekday_counts(date(2026, 11, 23), date(2026, 12, 6)) == (2,) * 7
    assert sum(weekday_counts(date(2026, 1, 1), date(2026, 12, 31))) == 365


@pytest.mark.parametrize(
    ("zone", "first"),
    [("Asia/Shanghai", date(2026, 11, 20)), ("America/New_York", date(2026, 10, 29))],  # New York: clocks go back on 1 November
)
def test_days_week_grid_and_lines_equal_the_raw_calls(db_url: str, zone: str, first: date) -> None:
    tz = ZoneInfo(zone)
    records = spread(700, first - timedelta(days=1), 9, tz)
    last = first + timedelta(days=6)
    stats = statistics(db_url, records, first, last, zone, numbers=frozenset({NUMBER}))
    assert stats is not None
    inside = [r for r in records if first <= r.started_at.astimezone(tz).date() <= last]
    assert 400 < len(inside) < 700
    assert stats.total.calls == len(inside)
    assert stats.total.answered == sum(r.disposition == "answered" for r in inside)
    assert stats.total.talk_seconds == sum(r.talk_seconds for r in inside)
    assert [d for d, _ in stats.days] == [first + timedelta(days=i) for i in range(7)]  # every day, in order
    by_day = Counter(r.started_at.astimezone(tz).date() for r in inside)
    assert {d: s.calls for d, s in stats.days} == {d: by_day.get(d, 0) for d, _ in stats.days}
    cells = Counter((r.started_at.astimezone(tz).weekday(), r.started_at.astimezone(tz).hour) for r in inside)
    assert {(wd, h): stats.week[wd][h].calls for wd in range(7) for h in range(24) if stats.week[wd][h].calls} == dict(cells)
    answered_cells = Counter((r.started_at.astimezone(tz).weekday(), r.started_at.astimezone(tz).hour) for r in inside if r.disposition == "answered")
    assert {(wd, h): stats.week[wd][h].answered for wd in range(7) for h in range(24) if stats.week[wd][h].answered} == dict(answered_cells)
    assert stats.weekday_counts == (1,) * 7
    hours = Counter(r.started_at.astimezone(tz).replace(minute=0, second=0, microsecond=0, tzinfo=None) for r in inside)
    assert stats.busiest_hour is not None and stats.busiest_hour[1].calls == max(hours.values())
    assert stats.busiest_hour[0] == min(h for h, n in hours.items() if n == max(hours.values()))
    li, zhang = stats.lines  # li answers, zhang is always busy (tests/cdrs.record)
    assert (li.line_id, li.answered, li.no_answer, li.rung, li.talk_seconds) == ("li", stats.total.answered, len(inside) - stats.total.answered,
                                                                                 len(inside), stats.total.talk_seconds)
    assert (zhang.line_id, zhang.busy, zhang.answered, zhang.rung) == ("zhang", len(inside), 0, len(inside))


def test_a_number_outside_the_scope_gives_nothing_and_the_provider_sees_it(db_url: str) -> None:
    day = date(2026, 11, 24)
    records = [record(i) for i in range(3)]
    assert statistics(db_url, records, day, day, "Asia/Shanghai", numbers=frozenset({"4008005678"})) is None
    assert statistics(db_url, [], day, day, "Asia/Shanghai", numbers=frozenset()) is None
    provider = statistics(db_url, [], day, day, "Asia/Shanghai", numbers=None)
    assert provider is not None and provider.total.calls == 3
    other = statistics(db_url, [], day, day, "Asia/Shanghai", numbers=None, number="4008005678")
    assert other is not None and other.total.calls == 0 and other.lines == () and other.busiest_hour is None


def test_a_year_of_quarter_hours_is_read_from_the_sums_alone(db_url: str) -> None:
    """A year of a busy number, 3 calls in every quarter hour, written as sums only: the calls table stays empty,
    so everything shown comes from call_stats; and the page's query stays quick."""
    tz = ZoneInfo("Asia/Shanghai")
    first, last = date(2025, 11, 25), date(2026, 11, 24)  # 365 days
    lo = int(datetime.combine(first, datetime.min.time(), tz).timestamp())
    hi = int(datetime.combine(last + timedelta(days=1), datetime.min.time(), tz).timestamp())
    rows = [{"number": NUMBER, "bucket": b, "disposition": d, "calls": n, "billable_seconds": 60 * n if d == "answered" else 0,
             "rung_calls": n, "ring_seconds": 5 * n}
            for b in range(lo - 900, hi + 900, 900) for d, n in (("answered", 2), ("no_answer", 1))]

    async def body() -> tuple[NumberStatistics | None, float]:
        engine = open_engine(make_url(db_url))
        try:
            async with engine.begin() as conn:
                for i in range(0, len(rows), 5000):
                    await conn.execute(insert(call_stats), rows[i:i + 5000])
            started = time.perf_counter()
            stats = await number_statistics(engine, NUMBER, first, last, "Asia/Shanghai", numbers=frozenset({NUMBER}))
            return stats, time.perf_counter() - started
        finally:
            await engine.dispose()

    stats, seconds = arun(body(), timeout=120)
    assert stats is not None
    assert len(stats.days) == 365 and all(s.calls == 96 * 3 and s.answered == 96 * 2 for _, s in stats.days)
    assert stats.total.calls == 365 * 96 * 3 and stats.total.talk_seconds == 365 * 96 * 2 * 60
    assert stats.week[0][9].calls == stats.weekday_counts[0] * 4 * 3  # each Monday 09:00-10:00: four quarter hours
    assert seconds < 10, f"a year took {seconds:.1f} s"
