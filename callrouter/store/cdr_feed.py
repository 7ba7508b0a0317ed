"""The CDRs as the exporter follows them: one consistent snapshot of totals, then rows above an id cursor.

The snapshot's aggregates are computed by the database (a few thousand rows back, not millions of calls),
all in one REPEATABLE READ transaction on Postgres, so every figure is the truth at the same newest id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping, Sequence

from sqlalchemy import ColumnElement, and_, case, func, select, true
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.store.billing import billed_minutes_sql
from callrouter.store.schema import call_attempts, call_stats, calls, line_stats

GAP_WINDOW = 20_000  # ids below the snapshot's newest checked for rows still uncommitted then
GAP_LOOKUP = 10_000  # gaps looked for per poll (the newest: old ones are mostly burnt ids)
_ROW_COLUMNS = (calls.c.id, calls.c.number, calls.c.disposition, calls.c.started_at, calls.c.billable_seconds, calls.c.ring_seconds)


@dataclass(frozen=True)
class CallRow:
    """The columns of a `calls` row the exporter reads."""

    id: int
    number: str
    disposition: str
    started_at: datetime
    billable_seconds: int
    ring_seconds: int


@dataclass(frozen=True)
class Window:
    """Calls that started at or after `since`: of the numbers listed, or with `exclude` of every other number."""

    since: datetime
    numbers: tuple[str, ...]
    exclude: bool = False


@dataclass(frozen=True)
class WindowCounts:
    """One number's calls in a window; minutes and talk time of the answered ones."""

    number: str
    calls: int
    answered: int
    billed_minutes: int
    talk_seconds: int


@dataclass(frozen=True)
class BucketCount:
    """One number's calls in one histogram bucket (the first bound >= the value; len(bounds) for +Inf)."""

    number: str
    bucket: int
    count: int
    total: float


@dataclass(frozen=True)
class Snapshot:
    max_id: int  # the newest call id the snapshot saw; the figures below count up to it
    calls: Mapping[tuple[str, str], int]  # (number, disposition) -> calls, from the statistics sums
    attempts: Mapping[tuple[str, str], int]  # (number, status) -> attempts, from the statistics sums
    talk: tuple[BucketCount, ...]  # answered calls by talk time
    ring: tuple[BucketCount, ...]  # calls that rang a line, by ring time
    windows: tuple[tuple[WindowCounts, ...], ...]  # one entry per window asked for, in the same order
    recent_ids: tuple[int, ...]  # ids present in (max_id - GAP_WINDOW, max_id]


def _bucket_case(column: ColumnElement[int], bounds: tuple[float, ...]) -> ColumnElement[int]:
    """The histogram bucket of a value, as the pure code computes it (first bound >= value)."""
    return case(*[(column <= bound, i) for i, bound in enumerate(bounds)], else_=len(bounds))


def _row(m: RowMapping) -> CallRow:
    return CallRow(m["id"], m["number"], m["disposition"], _aware(m["started_at"]), int(m["billable_seconds"]), int(m["ring_seconds"]))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)  # SQLite returns naive UTC


async def snapshot(engine: AsyncEngine, talk_bounds: tuple[float, ...], ring_bounds: tuple[float, ...], windows: Sequence[Window]) -> Snapshot:
    """Every total the exporter starts from, read in one snapshot."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            max_id = int((await conn.execute(select(func.coalesce(func.max(calls.c.id), 0)))).scalar_one())
            q = select(call_stats.c.number, call_stats.c.disposition, func.sum(call_stats.c.calls)).group_by(
                call_stats.c.number, call_stats.c.disposition
            )
            by_disposition = {(number, disposition): int(n) for number, disposition, n in await conn.execute(q)}
            q2 = select(line_stats.c.number, line_stats.c.status, func.sum(line_stats.c.attempts)).group_by(
                line_stats.c.number, line_stats.c.status
            )
            by_status = {(number, status): int(n) for number, status, n in await conn.execute(q2)}
            talk = await _histogram(conn, calls.c.billable_seconds, talk_bounds, calls.c.disposition == "answered", max_id)
            ring = await _histogram(conn, calls.c.ring_seconds, ring_bounds, calls.c.ring_seconds > 0, max_id)
            counts = tuple([await _window(conn, w, max_id) for w in windows])
            recent = await conn.execute(select(calls.c.id).where(calls.c.id > max_id - GAP_WINDOW, calls.c.id <= max_id))
            recent_ids = tuple(int(i) for i in recent.scalars())
    return Snapshot(max_id, by_disposition, by_status, talk, ring, counts, recent_ids)


async def _histogram(
    conn: AsyncConnection, column: ColumnElement[int], bounds: tuple[float, ...], where: ColumnElement[bool], max_id: int
) -> tuple[BucketCount, ...]:
    index = _bucket_case(column, bounds).label("b")
    q = select(calls.c.number, index, func.count(), func.sum(column)).where(where, calls.c.id <= max_id).group_by(calls.c.number, index)
    return tuple(BucketCount(number, int(b), int(n), float(total or 0)) for number, b, n, total in await conn.execute(q))


async def _window(conn: AsyncConnection, window: Window, max_id: int) -> tuple[WindowCounts, ...]:
    """One indexed range query."""
    if window.exclude:
        who: ColumnElement[bool] = calls.c.number.not_in(window.numbers) if window.numbers else true()
    else:
        who = calls.c.number.in_(list(window.numbers))
    answered = calls.c.disposition == "answered"
    q = (
        select(
            calls.c.number,
            func.count(),
            func.sum(case((answered, 1), else_=0)),
            func.sum(case((answered, billed_minutes_sql(calls.c.billable_seconds)), else_=0)),
            func.sum(case((answered, calls.c.billable_seconds), else_=0)),
        )
        .where(calls.c.started_at >= window.since, calls.c.id <= max_id, who)
        .group_by(calls.c.number)
    )
    return tuple(
        WindowCounts(number, int(n), int(n_answered or 0), int(minutes or 0), int(talk or 0))
        for number, n, n_answered, minutes, talk in await conn.execute(q)
    )


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
