"""What the console's overview reads about stored calls: today's totals per number, and the callers we
missed and have not reached since.

Both are bounded: today's totals come from the quarter-hour sums (`call_stats`), a handful of rows per
number; missed calls are one range of `calls(number, started_at)` (a week at most, and a row limit), each
checked against the caller's later calls through `calls(caller, started_at)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.notify import MISSED_DEFAULT
from callrouter.store.schema import call_stats, calls, tenant_numbers

# What counts as a missed call here: the same as for the missed-call SMS (config.notify), "abandoned" only
# when the caller hung up while a line rang (not while choosing in the menu).
MISSED = MISSED_DEFAULT


@dataclass(frozen=True)
class DayTotals:
    """One number's calls over a span (today), from the statistics sums."""

    number: str
    calls: int = 0
    answered: int = 0
    talk_seconds: int = 0

    @property
    def missed(self) -> int:
        return self.calls - self.answered

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None


async def day_totals(engine: AsyncEngine, lo: int, hi: int, *, numbers: frozenset[str] | None) -> dict[str, DayTotals]:
    """Calls, answered calls and talk time per number between epoch seconds [lo, hi) (quarter-hour aligned:
    local midnights are). Numbers without calls are left out; `numbers` None: every number."""
    answered = func.sum(case((call_stats.c.disposition == "answered", call_stats.c.calls), else_=0))
    q = (
        select(call_stats.c.number, func.sum(call_stats.c.calls), answered, func.sum(call_stats.c.billable_seconds))
        .where(call_stats.c.bucket >= lo, call_stats.c.bucket < hi)
        .group_by(call_stats.c.number)
    )
    if numbers is not None:
        if not numbers:
            return {}
        q = q.where(call_stats.c.number.in_(sorted(numbers)))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return {n: DayTotals(n, int(c or 0), int(a or 0), int(t or 0)) for n, c, a, t in rows}


@dataclass(frozen=True)
class MissedCall:
    uniqueid: str
    source: str
    number: str
    caller: str
    caller_name: str
    started_at: datetime
    disposition: str
    ring_seconds: int
    left_voicemail: bool


@dataclass(frozen=True)
class MissedCaller:
    """A caller whose missed calls no later answered call followed: the newest missed call, and how many."""

    last: MissedCall
    times: int  # missed calls of this caller in the window (as far as the row limit reached)
    numbers: tuple[str, ...]  # the 400 numbers they called, newest first

    @property
    def caller(self) -> str:
        return self.last.caller


def _utc(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


async def missed_callers(
    engine: AsyncEngine, since: datetime, until: datetime, *, numbers: frozenset[str] | None, limit: int = 500
) -> list[MissedCaller]:
    """Callers missed in [since, until) whom no later answered call to the same company reached, newest first.

    "The same company": any number of `numbers` for a tenant's scope; for the provider (`numbers` None),
    the numbers of the tenant that owns the number called (or that number alone, if no tenant owns it).
    Withheld callers ('') cannot be called back and are left out. At most `limit` missed calls are read."""
    later = calls.alias("later")
    same_company: ColumnElement[bool]
    if numbers is not None:
        if not numbers:
            return []
        scope = calls.c.number.in_(sorted(numbers))
        # The same number or another of the company's: said so, the planner looks the caller up in
        # calls(caller, started_at) (a few rows) rather than every later call to the numbers.
        same_company = or_(later.c.number == calls.c.number, later.c.number.in_(sorted(numbers)))
    else:
        mine, siblings = tenant_numbers.alias("mine"), tenant_numbers.alias("siblings")
        company = (
            select(siblings.c.number)
            .select_from(mine.join(siblings, mine.c.tenant_id == siblings.c.tenant_id))
            .where(mine.c.number == calls.c.number)
            .correlate(calls)  # the outer call's number, two levels up (auto-correlation looks one level only)
        )
        scope = None
        same_company = or_(later.c.number == calls.c.number, later.c.number.in_(company.scalar_subquery()))
    reached_later = exists().where(
        later.c.caller == calls.c.caller, later.c.started_at > calls.c.started_at, later.c.disposition == "answered", same_company
    )
    missed = or_(
        calls.c.disposition.in_([d for d in MISSED if d != "abandoned"]),
        and_(calls.c.disposition == "abandoned", calls.c.ring_seconds > 0),
    )
    q = (
        select(
            calls.c.uniqueid, calls.c.source, calls.c.number, calls.c.caller, calls.c.caller_name, calls.c.started_at,
            calls.c.disposition, calls.c.ring_seconds, calls.c.voicemail_file,
        )
        .where(calls.c.started_at >= since, calls.c.started_at < until, calls.c.caller != "", missed, ~reached_later)
        .order_by(calls.c.started_at.desc(), calls.c.id.desc())
        .limit(limit)
    )
    if scope is not None:
        q = q.where(scope)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    grouped: dict[str, tuple[MissedCall, int, list[str]]] = {}
    for row in rows:
        call = MissedCall(
            row.uniqueid, row.source, row.number, row.caller, row.caller_name, _utc(row.started_at), row.disposition,
            int(row.ring_seconds), row.voicemail_file is not None,
        )
        first, times, called = grouped.get(call.caller, (call, 0, []))
        if call.number not in called:
            called.append(call.number)
        grouped[call.caller] = (first, times + 1, called)
    return [MissedCaller(first, times, tuple(called)) for first, times, called in grouped.values()]
