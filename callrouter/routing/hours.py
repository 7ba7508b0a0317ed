"""Business hours: open or closed at a given instant, in the plan's own time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

from callrouter.config.plan import Schedule


@dataclass(frozen=True, slots=True)
class HoursDecision:
    open: bool
    reason: str  # for the trace: which rule decided


def _within(ranges: tuple[tuple[time, time], ...], at: time) -> bool:
    return any(start <= at < end or (end == time.max and at >= start) for start, end in ranges)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def check_hours(schedule: Schedule, timezone: str, now: datetime) -> HoursDecision:
    """Special days override holidays, which override the weekly hours. `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(ZoneInfo(timezone))
    day, at = local.date(), local.time().replace(tzinfo=None)
    # Not strftime (f"{local:%Y-%m-%d %a %H:%M}"): this is on every call, at twice strftime's speed;
    # %a in the C locale, which the router never changes.
    stamp = f"{day.isoformat()} {_WEEKDAYS[local.weekday()]} {local.hour:02d}:{local.minute:02d} {timezone}"
    if day in schedule.special_days:
        ranges = schedule.special_days[day]
        is_open = _within(ranges, at)
        return HoursDecision(is_open, f"{stamp}: special day, {'open' if is_open else 'closed'}")
    if day in schedule.holidays:
        return HoursDecision(False, f"{stamp}: holiday, closed")
    if schedule.weekly is None:
        return HoursDecision(True, f"{stamp}: no weekly hours, open around the clock")
    ranges = schedule.weekly.for_weekday(local.weekday())
    is_open = _within(ranges, at)
    return HoursDecision(is_open, f"{stamp}: {'open' if is_open else 'closed'} (hours {_shown(ranges)})")


@lru_cache(maxsize=256)  # a plan's own few weekly ranges: formatting them on every call was 1 % of its CPU
def _shown(ranges: tuple[tuple[time, time], ...]) -> str:
    return ", ".join(f"{s:%H:%M}-{'24:00' if e == time.max else format(e, '%H:%M')}" for s, e in ranges) or "closed all day"
