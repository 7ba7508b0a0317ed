"""One 400 number's statistics as the console's statistics page shows them: every local day of the period,
the week as weekday x hour, the single busiest hour, and each line's outcomes.

Read only from the quarter-hour sums (`call_stats`, `line_stats`, kept by the CDR writer), never from
`calls`: a year of a busy number is at most 35,136 quarter hours per disposition, whatever the number of
calls. Days and hours are cut at the plan's local midnight (store/stats.py explains why that is exact).
Two queries: the calls per local hour and disposition (at most 8,784 hours a year), and the lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import call_stats, line_stats
from callrouter.store.stats import Rates, fixed_offset, local_range

# Calls that never wanted an agent: staffing is sized without them.
NOT_FOR_AGENTS = frozenset({"after_hours", "blacklisted"})
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Sums(Rates):
    """Calls of one day, hour or cell. `talk_seconds` is the billable talk of all of them."""

    calls: int = 0
    answered: int = 0
    talk_seconds: int = 0
    agent_calls: int = 0  # calls that wanted an agent (not after hours, not blacklisted)

    def __add__(self, other: Sums) -> Sums:
        return Sums(self.calls + other.calls, self.answered + other.answered, self.talk_seconds + other.talk_seconds,
                    self.agent_calls + other.agent_calls)



def _sums(disposition: str, calls: int, talk: int) -> Sums:
    return Sums(calls, calls if disposition == "answered" else 0, talk, 0 if disposition in NOT_FOR_AGENTS else calls)


@dataclass(frozen=True)
class LineSums:
    """What happened each time a line was tried (line_stats statuses, Asterisk's DIALSTATUS)."""

    line_id: str
    rung: int  # tries that rang it (everything but FULL)
    answered: int
    busy: int
    no_answer: int
    unreachable: int  # CHANUNAVAIL, CONGESTION: switched off, no signal, a broken trunk
    caller_hung_up: int  # CANCEL: the caller gave up while it rang
    full: int  # skipped: already on its max_calls
    other: int
    talk_seconds: int

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.rung if self.rung else None

    @property
    def average_talk_seconds(self) -> float | None:
        return self.talk_seconds / self.answered if self.answered else None


@dataclass(frozen=True)
class NumberStatistics:
    number: str
    timezone: str
    first_day: date
    last_day: date
    total: Sums
    days: tuple[tuple[date, Sums], ...]  # every local day of the period in order, days without calls too
    week: tuple[tuple[Sums, ...], ...]  # week[weekday][hour]: Monday is 0, summed over the period
    weekday_counts: tuple[int, ...]  # how many Mondays, Tuesdays, ... the period has
    busiest_hour: tuple[datetime, Sums] | None  # the single local hour with the most calls (naive local time)
    lines: tuple[LineSums, ...]  # most answers first


def weekday_counts(first: date, last: date) -> tuple[int, ...]:
    weeks, rest = divmod((last - first).days + 1, 7)
    counts = [weeks] * 7
    for i in range(rest):
        counts[(first.weekday() + i) % 7] += 1
    return tuple(counts)


_LINE_COLUMNS = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer", "CHANUNAVAIL": "unreachable",
                 "CONGESTION": "unreachable", "CANCEL": "caller_hung_up", "FULL": "full"}


async def number_statistics(engine: AsyncEngine, number: str, first: date, last: date, tz_name: str, *,
                            numbers: frozenset[str] | None) -> NumberStatistics | None:
    """The statistics of `number` for local days first..last, or None when `number` is not in `numbers`
    (another tenant's: the caller answers 404). `numbers` None is the provider's: every number."""
    if numbers is not None and number not in numbers:
        return None
    if last < first:
        raise ValueError(f"{last} is before {first}")
    tz = ZoneInfo(tz_name)
    lo, hi = local_range(first, last, tz)
    offset = fixed_offset(tz, lo, hi)
    in_range = (call_stats.c.number == number, call_stats.c.bucket >= lo, call_stats.c.bucket < hi)
    talk, n = func.sum(call_stats.c.billable_seconds), func.sum(call_stats.c.calls)
    hours: dict[datetime, Sums] = {}
    async with engine.connect() as conn:
        if offset is not None:
            # The database adds up each local hour: at most 24 rows a day per disposition.
            hour = ((call_stats.c.bucket + offset) // 3600).label("hour")
            rows = (await conn.execute(select(hour, call_stats.c.disposition, n, talk).where(*in_range)
                                       .group_by(hour, call_stats.c.disposition))).all()
            for h, disposition, calls, seconds in rows:
                when = _EPOCH + timedelta(hours=int(h))
                hours[when] = hours.get(when, Sums()) + _sums(disposition, int(calls), int(seconds))
        else:
            # A daylight-saving change inside the period: each quarter hour is put in its local hour here.
            q = select(call_stats.c.bucket, call_stats.c.disposition, call_stats.c.calls, call_stats.c.billable_seconds).where(*in_range)
            for bucket, disposition, calls, seconds in (await conn.execute(q)).all():
                when = datetime.fromtimestamp(int(bucket), tz).replace(minute=0, second=0, microsecond=0, tzinfo=None)
                hours[when] = hours.get(when, Sums()) + _sums(disposition, int(calls), int(seconds))
        line_q = (
            select(line_stats.c.line_id, line_stats.c.status, func.sum(line_stats.c.attempts), func.sum(line_stats.c.talk_seconds))
            .where(line_stats.c.number == number, line_stats.c.bucket >= lo, line_stats.c.bucket < hi)
            .group_by(line_stats.c.line_id, line_stats.c.status)
        )
        line_rows = (await conn.execute(line_q)).all()
    by_day: dict[date, Sums] = {}
    grid = [[Sums() for _ in range(24)] for _ in range(7)]
    for when, sums in hours.items():
        by_day[when.date()] = by_day.get(when.date(), Sums()) + sums
        grid[when.weekday()][when.hour] += sums
    days = tuple((first + timedelta(days=i), by_day.get(first + timedelta(days=i), Sums())) for i in range((last - first).days + 1))
    total = sum((s for _, s in days), Sums())
    busiest = max(((when, s) for when, s in sorted(hours.items()) if s.calls), key=lambda item: item[1].calls, default=None)
    return NumberStatistics(number, tz_name, first, last, total, days, tuple(tuple(row) for row in grid),
                            weekday_counts(first, last), busiest, _lines(line_rows))


def _lines(rows: Iterable[Any]) -> tuple[LineSums, ...]:
    per_line: dict[str, dict[str, int]] = {}
    for line_id, status, attempts, talk in rows:
        c = per_line.setdefault(line_id, dict.fromkeys(("answered", "busy", "no_answer", "unreachable", "caller_hung_up", "full", "other", "talk"), 0))
        c[_LINE_COLUMNS.get(status, "other")] += int(attempts)
        c["talk"] += int(talk or 0)
    out = [
        LineSums(line_id, sum(v for k, v in c.items() if k not in ("full", "talk")), c["answered"], c["busy"], c["no_answer"],
                 c["unreachable"], c["caller_hung_up"], c["full"], c["other"], c["talk"])
        for line_id, c in per_line.items()
    ]
    return tuple(sorted(out, key=lambda line: (-line.answered, -line.rung, line.line_id)))
