"""The sums the exporter serves, updated one CDR row at a time. Pure: no IO, the time is passed in.

Counters and histograms are totals over every call in the database (the baseline loads them, rows read
later add to them), so they are the same from any exporter and across restarts. "Today" and "this month"
are the local day and calendar month of each number's time zone; a call counts in them when it *started*
in that period, as the statistics and the minutes packages count it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from callrouter.model.billing import billed_minutes
from callrouter.store.cdr_feed import CallRow

TALK_BUCKETS = (15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
RING_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last slot is +Inf) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bucket_index(self.bounds, value)] += count
        self.total += value * count

    def add_bucket(self, index: int, count: int, total: float) -> None:
        self.counts[index] += count
        self.total += total

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """The first bucket whose upper bound is >= value (Prometheus `le`), len(bounds) for +Inf."""
    return bisect_left(bounds, value)


def _le(bound: float) -> str:
    return str(int(bound)) + ".0" if bound == int(bound) else repr(bound)


@dataclass
class Period:
    """One number's counts for one local day (or month)."""

    key: tuple[int, ...]
    calls: int = 0
    answered: int = 0
    billed_minutes: int = 0
    talk_seconds: int = 0


class CdrTotals:
    def __init__(self, timezone_of: Callable[[str], str]) -> None:
        self._timezone_of = timezone_of
        self._zones: dict[str, ZoneInfo] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.talk: dict[str, Histogram] = {}
        self.ring: dict[str, Histogram] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.today: dict[str, Period] = {}
        self.month: dict[str, Period] = {}

    def zone(self, number: str) -> ZoneInfo:
        tz = self._zones.get(number)
        if tz is None:
            tz = self._zones[number] = ZoneInfo(self._timezone_of(number))
        return tz

    def forget_zones(self) -> None:
        """After a config reload a number may have moved zone."""
        self._zones.clear()

    def day_key(self, number: str, when: datetime) -> tuple[int, ...]:
        d = when.astimezone(self.zone(number)).date()
        return (d.year, d.month, d.day)

    def month_key(self, number: str, when: datetime) -> tuple[int, ...]:
        d = when.astimezone(self.zone(number)).date()
        return (d.year, d.month)

    # -- rows read from the database ------------------------------------------------------------
    def add_call(self, row: CallRow, now: datetime) -> None:
        key = (row.number, row.disposition)
        self.calls[key] = self.calls.get(key, 0) + 1
        answered = row.disposition == "answered"
        if answered:
            self.talk.setdefault(row.number, Histogram(TALK_BUCKETS)).observe(row.billable_seconds)
        if row.ring_seconds > 0:
            self.ring.setdefault(row.number, Histogram(RING_BUCKETS)).observe(row.ring_seconds)
        for table, key_of in ((self.today, self.day_key), (self.month, self.month_key)):
            current = key_of(row.number, now)
            if key_of(row.number, row.started_at) != current:
                continue  # a late record of an earlier day: in the totals, not in today's gauges
            period = table.get(row.number)
            if period is None or period.key != current:
                period = table[row.number] = Period(current)
            period.calls += 1
            if answered:
                period.answered += 1
                period.billed_minutes += billed_minutes(row.billable_seconds)
                period.talk_seconds += row.billable_seconds

    def add_attempts(self, number_status: Iterable[tuple[str, str]]) -> None:
        for key in number_status:
            self.attempts[key] = self.attempts.get(key, 0) + 1

    # -- what a scrape shows --------------------------------------------------------------------
    def current(self, table: dict[str, Period], number: str, now: datetime) -> Period:
        """The period's counts, or zeros once the number's local day (month) has moved on."""
        key_of = self.day_key if table is self.today else self.month_key
        key = key_of(number, now)
        period = table.get(number)
        return period if period is not None and period.key == key else Period(key)

    def numbers(self) -> set[str]:
        return {n for n, _ in self.calls} | set(self.today) | set(self.month)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)
