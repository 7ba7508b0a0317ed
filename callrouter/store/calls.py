"""Stored calls as the admin API and `test-call` read them: search pages, counts, one call with its attempts.

Pages are keyset pages, newest first by (started_at, id), so memory and time stay flat however deep a
client pages or however large an export is. Datetimes come back aware, in UTC (SQLite hands back naive UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Sequence

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import call_attempts, calls


@dataclass(frozen=True)
class CallFilter:
    """Which calls a search or export covers; every field left empty matches everything."""

    number: str | None = None
    caller: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    dispositions: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredCall:
    """A `calls` row as a listing shows it (the trace, which can be long, only in `CallDetail`)."""

    id: int
    uniqueid: str
    source: str
    number: str
    caller: str
    caller_raw: str
    caller_name: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration_seconds: int
    billable_seconds: int
    ring_seconds: int
    disposition: str
    reason: str
    ivr_path: str
    hunt_group: str | None
    strategy: str | None
    answered_line: str | None
    recording_file: str | None
    recording_purged_at: datetime | None
    voicemail_file: str | None
    instance: str
    router_ms: float


@dataclass(frozen=True)
class StoredAttempt:
    """One line the call rang (or skipped at its limit), in order."""

    seq: int
    line_id: str
    target: str
    status: str
    ring_seconds: int
    talk_seconds: int


@dataclass(frozen=True)
class CallDetail:
    call: StoredCall
    trace: str  # the decision trace, one step per line
    attempts: tuple[StoredAttempt, ...]


CALL_FIELDS = tuple(f.name for f in fields(StoredCall))  # also the order of a listing's columns
_ATTEMPT_FIELDS = tuple(f.name for f in fields(StoredAttempt))
_LISTED = [calls.c[name] for name in CALL_FIELDS]


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _call(row: RowMapping) -> StoredCall:
    return StoredCall(**{name: _utc(row[name]) for name in CALL_FIELDS})


def _where(f: CallFilter, numbers: frozenset[str] | None) -> list[ColumnElement[bool]]:
    """The filter's clauses, within the scope's numbers (None: every number; an empty set matches nothing)."""
    clauses: list[ColumnElement[bool]] = []
    if numbers is not None:
        clauses.append(calls.c.number.in_(sorted(numbers)))
    if f.number:
        clauses.append(calls.c.number == f.number)
    if f.caller:
        clauses.append(calls.c.caller == f.caller)
    if f.since:
        clauses.append(calls.c.started_at >= f.since)
    if f.until:
        clauses.append(calls.c.started_at < f.until)
    if f.dispositions:
        clauses.append(calls.c.disposition.in_(f.dispositions))
    return clauses


async def search_calls(
    engine: AsyncEngine, f: CallFilter, limit: int, after: tuple[datetime, int] | None = None, *, numbers: frozenset[str] | None
) -> list[StoredCall]:
    """Up to `limit` matching calls to `numbers` (None: any), newest first, strictly after the keyset position (started_at, id)."""
    q = select(*_LISTED).where(*_where(f, numbers))
    if after is not None:
        at, row_id = after
        q = q.where(or_(calls.c.started_at < at, and_(calls.c.started_at == at, calls.c.id < row_id)))
    q = q.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_call(row) for row in (await conn.execute(q)).mappings()]


async def search_calls_newer(
    engine: AsyncEngine, f: CallFilter, limit: int, before: tuple[datetime, int], *, numbers: frozenset[str] | None
) -> list[StoredCall]:
    """The `limit` matching calls just newer than the keyset position (started_at, id), newest first: the
    page before one that starts there (the console's "previous page")."""
    at, row_id = before
    q = (select(*_LISTED).where(*_where(f, numbers))
         .where(or_(calls.c.started_at > at, and_(calls.c.started_at == at, calls.c.id > row_id)))
         .order_by(calls.c.started_at.asc(), calls.c.id.asc()).limit(limit))
    async with engine.connect() as conn:
        rows = [_call(row) for row in (await conn.execute(q)).mappings()]
    return rows[::-1]


async def count_calls_upto(engine: AsyncEngine, f: CallFilter, cap: int, *, numbers: frozenset[str] | None) -> int:
    """How many calls match, counting no further than `cap` (a page's "more than 10000" stays cheap)."""
    inner = select(calls.c.id).where(*_where(f, numbers)).limit(cap).subquery()
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(inner))).scalar_one())


async def count_calls(engine: AsyncEngine, f: CallFilter, *, numbers: frozenset[str] | None) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(calls).where(*_where(f, numbers)))).scalar_one())


async def find_call(
    engine: AsyncEngine, uniqueid: str, source: str | None = None, *, numbers: frozenset[str] | None
) -> CallDetail | None:
    """A call and its attempts, by uniqueid and, when given, the Asterisk it came from; only a call to one
    of `numbers` (None: any). Without a source, a uniqueid two Asterisks share is ambiguous: the newest
    call is taken (the one just made, for a lookup right after a call)."""
    q = select(*_LISTED, calls.c.trace).where(calls.c.uniqueid == uniqueid)
    if numbers is not None:
        q = q.where(calls.c.number.in_(sorted(numbers)))
    if source is not None:
        q = q.where(calls.c.source == source)
    async with engine.connect() as conn:
        row = (await conn.execute(q.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(1))).mappings().first()
        if row is None:
            return None
        attempts = await conn.execute(
            select(*[call_attempts.c[name] for name in _ATTEMPT_FIELDS])
            .where(call_attempts.c.call_uniqueid == row["uniqueid"], call_attempts.c.call_source == row["source"])
            .order_by(call_attempts.c.seq)
        )
        return CallDetail(_call(row), row["trace"], tuple(StoredAttempt(**a) for a in attempts.mappings()))


async def call_with_recording(engine: AsyncEngine, names: Sequence[str], *, numbers: frozenset[str] | None) -> StoredCall | None:
    """A call of `numbers` (None: any) whose recording_file is one of `names` (the spellings of one file):
    a recording fetched by path belongs to a tenant only through its call."""
    q = select(*_LISTED).where(calls.c.recording_file.in_(list(names)))
    if numbers is not None:
        q = q.where(calls.c.number.in_(sorted(numbers)))
    async with engine.connect() as conn:
        row = (await conn.execute(q.order_by(calls.c.started_at.desc()).limit(1))).mappings().first()
    return None if row is None else _call(row)
