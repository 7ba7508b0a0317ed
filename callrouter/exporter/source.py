"""The exporter's start: absolute totals from one snapshot of the store (`store/cdr_feed.py`), then only
rows it has not seen (`cdr_feed.read_rows`, `read_attempts`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.exporter.totals import RING_BUCKETS, TALK_BUCKETS, CdrTotals, Histogram, Period, local_midnight
from callrouter.store.cdr_feed import Window, snapshot


@dataclass(frozen=True)
class Baseline:
    totals: CdrTotals
    max_id: int
    recent_ids: list[int]  # ids present in (max_id - GAP_WINDOW, max_id]


async def load_baseline(engine: AsyncEngine, totals: CdrTotals, zones: Mapping[str, Sequence[str]], default_zone: str, now: datetime) -> Baseline:
    """Absolute totals from one snapshot, so counters are the database's truth at the snapshot's max id.

    zones: time zone -> the configured numbers in it; numbers in no plan count in `default_zone`.
    Today's and this month's counts are asked per time zone: one indexed range query each."""
    elsewhere = tuple(n for zone, numbers in zones.items() if zone != default_zone for n in numbers)
    periods: list[tuple[dict[str, Period], tuple[int, ...]]] = []
    windows: list[Window] = []
    for zone in set(zones) | {default_zone}:
        tz = ZoneInfo(zone)
        local = now.astimezone(tz).date()
        for table, first in ((totals.month, date(local.year, local.month, 1)), (totals.today, local)):
            since = local_midnight(first, tz)
            windows.append(Window(since, elsewhere, exclude=True) if zone == default_zone else Window(since, tuple(zones[zone])))
            periods.append((table, (first.year, first.month) if table is totals.month else (first.year, first.month, first.day)))
    snap = await snapshot(engine, TALK_BUCKETS, RING_BUCKETS, windows)
    totals.calls.update(snap.calls)
    totals.attempts.update(snap.attempts)
    for buckets, histograms, bounds in ((snap.talk, totals.talk, TALK_BUCKETS), (snap.ring, totals.ring, RING_BUCKETS)):
        for b in buckets:
            histograms.setdefault(b.number, Histogram(bounds)).add_bucket(b.bucket, b.count, b.total)
    for (table, key), counts in zip(periods, snap.windows):
        for c in counts:
            table[c.number] = Period(key, c.calls, c.answered, c.billed_minutes, c.talk_seconds)
    return Baseline(totals, snap.max_id, list(snap.recent_ids))
