"""The CDR exporter: totals equal what the rows say, followed incrementally, the same after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from callrouter.model.billing import billed_minutes
from callrouter.config.loader import RoutingConfig
from callrouter.exporter.cursor import IdCursor
from callrouter.exporter.service import CdrExporter
from callrouter.exporter.totals import RING_BUCKETS, TALK_BUCKETS, CdrTotals, Histogram, bucket_index
from callrouter.model.record import CallRecord
from callrouter.store.cdr_feed import CallRow
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.db import open_engine
from callrouter.store.schema import call_attempts, calls
from tests.cdrs import T0, record
from tests.harness import arun, sample_config
from tests.test_process import ENV, ServerProcess, workspace

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = T0 + timedelta(hours=3)  # 2026-11-24 12:00 in Shanghai


def varied(i: int, start: datetime = T0) -> CallRecord:
    """Calls across two numbers, several dispositions, talk and ring times."""
    base = record(i, number="4008001234" if i % 3 else "4008005678", start=start, answered=i % 4 != 0)
    if i % 7 == 0:
        return dataclasses.replace(base, disposition="after_hours", attempts=(), answered_line=None, answered_at=None, talk_seconds=0, ring_seconds=0)
    if base.disposition == "answered":
        return dataclasses.replace(base, talk_seconds=(i * 37) % 2000 + 1, ring_seconds=i % 50)
    return dataclasses.replace(base, ring_seconds=i % 90)


async def write(url: str, records: list[CallRecord]) -> None:
    engine = open_engine(make_url(url))
    try:
        await CdrStore(engine).write([rows_from_spooled(spool_entry(r)[0]) for r in records])
    finally:
        await engine.dispose()


def expected(records: list[CallRecord], now: datetime) -> dict[str, Any]:
    """The metrics, computed from the records by a route independent of the exporter's."""
    today = now.astimezone(SHANGHAI).date()
    out: dict[str, Any] = {"calls": Counter(), "attempts": Counter(), "talk_count": Counter(), "talk_sum": Counter(),
                           "ring_count": Counter(), "today": Counter(), "today_answered": Counter(), "minutes": Counter()}
    for r in records:
        billable = r.talk_seconds if r.disposition == "answered" else 0
        out["calls"][(r.number, r.disposition)] += 1
        for a in r.attempts:
            out["attempts"][(r.number, a.status)] += 1
        if r.disposition == "answered":
            out["talk_count"][r.number] += 1
            out["talk_sum"][r.number] += billable
        if r.ring_seconds > 0:
            out["ring_count"][r.number] += 1
        local = r.started_at.astimezone(SHANGHAI).date()
        if local == today:
            out["today"][r.number] += 1
            out["today_answered"][r.number] += r.disposition == "answered"
        if (local.year, local.month) == (today.year, today.month):
            out["minutes"][r.number] += billed_minutes(billable)
    return out


def scrape(exporter: CdrExporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = exporter.exposition().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def assert_matches(samples: dict[str, Any], exp: dict[str, Any]) -> None:
    got_calls = {(dict(k)["number"], dict(k)["disposition"]): v for k, v in samples.get("callrouter_cdr_calls_total", {}).items()}
    assert got_calls == dict(exp["calls"])
    got_attempts = {(dict(k)["number"], dict(k)["status"]): v for k, v in samples.get("callrouter_cdr_hunt_attempts_total", {}).items()}
    assert got_attempts == dict(exp["attempts"])
    answered = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_answered_calls_total"].items()}
    assert answered == {n: exp["calls"].get((n, "answered"), 0) for n in answered}
    talk_count = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_talk_seconds_count"].items()}
    assert talk_count == dict(exp["talk_count"])
    talk_sum = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_talk_seconds_sum"].items()}
    assert talk_sum == dict(exp["talk_sum"])
    ring_count = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_ring_seconds_count"].items()}
    assert ring_count == dict(exp["ring_count"])
    today = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_calls_today"].items() if v}
    assert today == dict(exp["today"])
    for key, ratio in samples.get("callrouter_cdr_answer_ratio_today", {}).items():
        number = dict(key)["number"]
        assert math.isclose(ratio, exp["today_answered"][number] / exp["today"][number])
    minutes = {dict(k)["number"]: v for k, v in samples["callrouter_cdr_month_billed_minutes"].items() if v}
    assert minutes == {n: m for n, m in exp["minutes"].items() if m}


def exporter_for(url: str, config: RoutingConfig | None = None, now: datetime = NOW) -> tuple[CdrExporter, Any]:
    engine = open_engine(make_url(url))
    config = config or sample_config()
    return CdrExporter(engine, lambda: config, lambda: now), engine


# -- the cursor -------------------------------------------------------------------------------------

def test_ids_are_counted_once_even_when_a_lower_id_commits_later() -> None:
    cursor = IdCursor(horizon=60)
    assert cursor.accept([1, 2, 4], now=0) == [1, 2, 4]
    assert cursor.gaps == [3]
    assert cursor.accept([3, 4, 5], now=1) == [3, 5]  # 3 turned up; 4 is not counted again
    assert cursor.gaps == []
    assert cursor.accept([1, 2, 3], now=2) == []


def test_a_gap_that_never_fills_is_given_up_after_the_horizon() -> None:
    cursor = IdCursor(horizon=60)
    cursor.accept([1, 5], now=0)
    assert cursor.expire(now=59) == 0 and cursor.gaps == [2, 3, 4]
    assert cursor.expire(now=60) == 3 and cursor.gaps == []
    assert cursor.expired == 3
    assert cursor.accept([3], now=61) == []  # too late: below the cursor and no longer looked for


def test_a_huge_jump_in_ids_keeps_the_gap_set_bounded() -> None:
    cursor = IdCursor(horizon=60, max_gaps=100)
    cursor.accept([1, 5_000_000], now=0)
    assert len(cursor.gaps) == 100 and cursor.gaps[-1] == 4_999_999
    assert cursor.dropped == 5_000_000 - 2 - 100


def test_starting_at_a_snapshot_looks_for_ids_not_yet_visible_then() -> None:
    cursor = IdCursor(horizon=60)
    cursor.start_after(10, present=[7, 8, 10], window_start=6, now=0)
    assert cursor.gaps == [9]
    assert cursor.accept([9, 11], now=1) == [9, 11]


# -- the sums ----------------------------------------------------------------------------------------

def test_histogram_buckets_follow_prometheus_le() -> None:
    assert bucket_index(TALK_BUCKETS, 15) == 0 and bucket_index(TALK_BUCKETS, 15.5) == 1
    assert bucket_index(TALK_BUCKETS, 99999) == len(TALK_BUCKETS)
    h = Histogram(RING_BUCKETS)
    for v in (0.5, 1, 3, 200):
        h.observe(v)
    cumulative = dict(h.cumulative())
    assert cumulative["1.0"] == 2 and cumulative["5.0"] == 3 and cumulative["120.0"] == 3 and cumulative["+Inf"] == 4
    assert h.total == 204.5


def test_today_and_this_month_roll_over_at_local_midnight() -> None:
    totals = CdrTotals(lambda number: "Asia/Shanghai")
    late = datetime(2026, 11, 30, 15, 30, tzinfo=timezone.utc)  # 23:30 on 30 November in Shanghai
    totals.add_call(CallRow(1, "4008001234", "answered", late, 61, 5), now=late)
    assert totals.current(totals.today, "4008001234", late).calls == 1
    assert totals.current(totals.month, "4008001234", late).billed_minutes == 2
    after = late + timedelta(minutes=45)  # 00:15 on 1 December in Shanghai
    assert totals.current(totals.today, "4008001234", after).calls == 0
    assert totals.current(totals.month, "4008001234", after).billed_minutes == 0
    totals.add_call(CallRow(2, "4008001234", "answered", late, 30, 5), now=after)  # yesterday's call written late
    assert totals.current(totals.today, "4008001234", after).calls == 0
    assert totals.calls[("4008001234", "answered")] == 2


# -- against real databases --------------------------------------------------------------------------

def test_totals_equal_the_rows_and_new_rows_are_followed(db_url: str) -> None:
    first = [varied(i) for i in range(60)] + [varied(i, start=T0 - timedelta(days=40)) for i in range(100, 110)]
    later = [varied(i) for i in range(200, 240)]

    async def body() -> None:
        await write(db_url, first)
        exporter, engine = exporter_for(db_url)
        try:
            assert not exporter.ready
            await exporter.load()
            assert exporter.ready
            assert_matches(scrape(exporter), expected(first, NOW))
            await write(db_url, later)
            await exporter.poll()
            assert_matches(scrape(exporter), expected(first + later, NOW))
            await write(db_url, first[:10])  # a spool replay: nothing new
            await exporter.poll()
            assert_matches(scrape(exporter), expected(first + later, NOW))
        finally:
            await engine.dispose()
        again, engine = exporter_for(db_url)  # a restart: the same values, nothing counted twice
        try:
            await again.load()
            assert_matches(scrape(again), expected(first + later, NOW))
        finally:
            await engine.dispose()

    arun(body())


def test_a_call_committed_after_a_later_one_is_counted_exactly_once(pg_url: str) -> None:
    async def body() -> None:
        await write(pg_url, [varied(1)])
        exporter, engine = exporter_for(pg_url)
        held = open_engine(make_url(pg_url))
        try:
            await exporter.load()
            slow = rows_from_spooled(spool_entry(varied(2))[0])
            async with held.connect() as conn:
                tx = await conn.begin()
                await conn.execute(insert(calls).values(**slow.call))  # takes an id, not yet committed
                await conn.execute(insert(call_attempts), list(slow.attempts))
                await write(pg_url, [varied(3)])  # a later id, committed first
                await exporter.poll()
                assert_matches(scrape(exporter), expected([varied(1), varied(3)], NOW))
                assert scrape(exporter)["callrouter_exporter_pending_gaps"][()] == 1
                await tx.commit()
            await exporter.poll()
            assert_matches(scrape(exporter), expected([varied(1), varied(2), varied(3)], NOW))
            await exporter.poll()
            assert_matches(scrape(exporter), expected([varied(1), varied(2), varied(3)], NOW))
        finally:
            await held.dispose()
            await engine.dispose()

    arun(body())


def test_caller_numbers_never_appear_and_hostile_text_keeps_the_exposition_valid(db_url: str) -> None:
    hostile = dataclasses.replace(varied(5), number='400"\n}x', caller="13987654321", caller_name='"; DROP TABLE calls; --')

    async def body() -> None:
        await write(db_url, [varied(1), hostile])
        exporter, engine = exporter_for(db_url)
        try:
            await exporter.load()
            text = exporter.exposition().decode()
            assert "13912345678" not in text and "13987654321" not in text
            families = {f.name for f in text_string_to_metric_families(text)}
            assert "callrouter_cdr_calls" in families
        finally:
            await engine.dispose()

    arun(body())


def test_a_database_down_at_start_is_retried_and_not_ready_meanwhile(tmp_path: Path) -> None:
    async def body() -> None:
        exporter, engine = exporter_for("postgresql+asyncpg://postgres@127.0.0.1:9/none")
        try:
            await exporter.start()
            await asyncio.sleep(0.3)
            assert not exporter.ready
            assert exporter.not_ready_reason() is not None
            samples = scrape(exporter)
            assert samples["callrouter_exporter_poll_errors_total"][()] >= 1
            assert "callrouter_cdr_calls_total" not in samples
        finally:
            await exporter.close()
            await engine.dispose()

    arun(body())


def test_the_exporter_process_serves_metrics_health_and_readiness(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    db = tmp_path / "var" / "callrouter.db"

    async def body() -> None:
        await write(f"sqlite+aiosqlite:///{db}", [varied(i) for i in range(1, 30)])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "exporter", "--config", str(cfg), "--port", "0",
            stderr=asyncio.subprocess.PIPE, cwd=str(tmp_path), env=ENV,
        )
        server = ServerProcess(proc)
        try:
            port = int((await server.wait_for(r"serving /metrics on 127\.0\.0\.1:(\d+)")).group(1))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                        assert asyncio.get_running_loop().time() < deadline, await r.text()
                    await asyncio.sleep(0.05)
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
            total = sum(s.value for f in text_string_to_metric_families(text) if f.name == "callrouter_cdr_calls" for s in f.samples if s.name.endswith("_total"))
            assert total == 29
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0

    arun(body())

