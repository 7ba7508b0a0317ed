"""The exporter's queries: one consistent baseline at start, then only rows it has not seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.store.billing import billed_minutes_sql
from callrouter.exporter.totals import RING_BUCKETS, TALK_BUCKETS, CallRow, CdrTotals, Histogram, Period, local_midnight
from callrouter.store.schema import call_attempts, call_stats, calls, line_stats

GAP_WINDOW = 20_000  # ids below the snapshot's newest checked for rows still uncommitted then
GAP_LOOKUP = 10_000  # gaps looked for per poll (the newest: old ones are mostly burnt ids)
_ROW_COLUMNS = (calls.c.id, calls.c.number, calls.c.disposition, calls.c.started_at, calls.c.billable_seconds, calls.c.ring_seconds)


@dataclass(frozen=True)
class Baseline:
    totals: CdrTotals
    max_id: int
    recent_ids: list[int]  # ids present in (max_id - GAP_WINDOW, max_id]


def _bucket_case(column: ColumnElement[int], bounds: tuple[float, ...]) -> ColumnElement[int]:
    """The histogram bucket of a value, as the pure code computes it (first bound >= value)."""
    return case(*[(column <= bound, i) for i, bound in enumerate(bounds)], else_=len(bounds))


def _row(m: Mapping[Any, Any]) -> CallRow:
    return CallRow(m["id"], m["number"], m["disposition"], _aware(m["started_at"]), int(m["billable_seconds"]), int(m["ring_seconds"]))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)  # SQLite returns naive UTC


async def load_baseline(engine: AsyncEngine, totals: CdrTotals, zones: Mapping[str, Sequence[str]], default_zone: str, now: datetime) -> Baseline:
    """Absolute totals from one snapshot, so counters are the database's truth at the snapshot's max id.

    zones: time zone -> the configured numbers in it; numbers in no plan count in `default_zone`."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            max_id = int((await conn.execute(select(func.coalesce(func.max(calls.c.id), 0)))).scalar_one())
            q = select(call_stats.c.number, call_stats.c.disposition, func.sum(call_stats.c.calls)).group_by(
                call_stats.c.number, call_stats.c.disposition
            )
            for number, disposition, n in await conn.execute(q):
                totals.calls[(number, disposition)] = int(n)
            q2 = select(line_stats.c.number, line_stats.c.status, func.sum(line_stats.c.attempts)).group_by(
                line_stats.c.number, line_stats.c.status
            )
            for number, status, n in await conn.execute(q2):
                totals.attempts[(number, status)] = int(n)
            await _histograms(conn, totals, max_id)
            await _periods(conn, totals, zones, default_zone, now, max_id)
            recent = await conn.execute(select(calls.c.id).where(calls.c.id > max_id - GAP_WINDOW, calls.c.id <= max_id))
            recent_ids = [int(i) for i in recent.scalars()]
    return Baseline(totals, max_id, recent_ids)


async def _histograms(conn: AsyncConnection, totals: CdrTotals, max_id: int) -> None:
    for column, bounds, table, where in (
        (calls.c.billable_seconds, TALK_BUCKETS, totals.talk, calls.c.disposition == "answered"),
        (calls.c.ring_seconds, RING_BUCKETS, totals.ring, calls.c.ring_seconds > 0),
    ):
        index = _bucket_case(column, bounds).label("b")
        q = select(calls.c.number, index, func.count(), func.sum(column)).where(where, calls.c.id <= max_id).group_by(calls.c.number, index)
        for number, b, n, total in await conn.execute(q):
            table.setdefault(number, Histogram(bounds)).add_bucket(int(b), int(n), float(total or 0))


async def _periods(
    conn: AsyncConnection, totals: CdrTotals, zones: Mapping[str, Sequence[str]], default_zone: str, now: datetime, max_id: int
) -> None:
    """Today's and this month's counts, per time zone: one indexed range query each."""
    elsewhere = [n for zone, numbers in zones.items() if zone != default_zone for n in numbers]
    for zone in set(zones) | {default_zone}:
        tz = ZoneInfo(zone)
        local = now.astimezone(tz).date()
        if zone == default_zone:
            who: ColumnElement[bool] = calls.c.number.not_in(elsewhere) if elsewhere else true()
        else:
            who = calls.c.number.in_(list(zones[zone]))
        for table, first in ((totals.month, date(local.year, local.month, 1)), (totals.today, local)):
            answered = calls.c.disposition == "answered"
            q = (
                select(
                    calls.c.number,
                    func.count(),
                    func.sum(case((answered, 1), else_=0)),
                    func.sum(case((answered, billed_minutes_sql(calls.c.billable_seconds)), else_=0)),
                    func.sum(case((answered, calls.c.billable_seconds), else_=0)),
                )
                .where(calls.c.started_at >= local_midnight(first, tz), calls.c.id <= max_id, who)
                .group_by(calls.c.number)
            )
            for number, n, n_answered, minutes, talk in await conn.execute(q):
                key = (first.year, first.month) if table is totals.month else (first.year, first.month, first.day)
                table[number] = Period(key, int(n), int(n_answered or 0), int(minutes or 0), int(talk or 0))


async def read_rows(engine: AsyncEngine, after: int, limit: int, gaps: Iterable[int]) -> tuple[list[CallRow], list[CallRow]]:
    """New rows above the cursor, and rows that have turned up in the gaps."""
    wanted = sorted(gaps)[-GAP_LOOKUP:]
    async with engine.connect() as conn:
        result = await conn.execute(select(*_ROW_COLUMNS).where(calls.c.id > after).order_by(calls.c.id).limit(limit))
        new = [_row(m) for m in result.mappings()]
        found: list[CallRow] = []
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            result = await conn.execute(select(*_ROW_COLUMNS).where(calls.c.id.in_(chunk)))
            found.extend(_row(m) for m in result.mappings())
    return new, found


async def read_attempts(engine: AsyncEngine, ids: Sequence[int]) -> list[tuple[int, str, str]]:
    """(call id, number, status) of every attempt of these calls; written in the same transaction as the call."""
    out: list[tuple[int, str, str]] = []
    async with engine.connect() as conn:
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            q = (
                select(calls.c.id, calls.c.number, call_attempts.c.status)
                .select_from(
                    call_attempts.join(calls, and_(calls.c.uniqueid == call_attempts.c.call_uniqueid, calls.c.source == call_attempts.c.call_source))
                )
                .where(calls.c.id.in_(chunk))
            )
            out.extend((int(i), number, status) for i, number, status in await conn.execute(q))
    return out
