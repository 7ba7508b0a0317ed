"""Call statistics per 400 number: what a company staffs by (calls per day, answer rate, talk and ring
time, peak hours, who answers).

Read from the quarter-hour sums the CDR writer keeps (`call_stats`, `line_stats`), so a month of a busy
number is a few thousand rows, not millions of calls. Days and hours are the plan's local ones: the
quarter-hour buckets are cut at local midnight exactly in every time zone.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import call_stats, line_stats


class Rates:
    """Answer rate and average talk of anything that counts `calls`, `answered` and `talk_seconds`: one
    definition for `callrouter stats`, the API and the console's statistics (store/number_stats.py)."""

    calls: int
    answered: int
    talk_seconds: int

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.calls if self.calls else None

    @property
    def average_talk_seconds(self) -> float | None:
        return self.talk_seconds / self.answered if self.answered else None


@dataclass
class Totals(Rates):
    calls: int = 0
    answered: int = 0
    talk_seconds: int = 0
    rung_calls: int = 0
    ring_seconds: int = 0
    dispositions: dict[str, int] = field(default_factory=dict)

    def add(self, disposition: str, calls: int, talk: int, rung: int, ring: int) -> None:
        self.calls += calls
        self.answered += calls if disposition == "answered" else 0
        self.talk_seconds += talk
        self.rung_calls += rung
        self.ring_seconds += ring
        self.dispositions[disposition] = self.dispositions.get(disposition, 0) + calls

    @property
    def average_ring_seconds(self) -> float | None:
        """Ringing heard per call that rang at least one line."""
        return self.ring_seconds / self.rung_calls if self.rung_calls else None

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "answered": self.answered,
            "answer_rate": _round(self.answer_rate, 4),
            "talk_seconds": self.talk_seconds,
            "average_talk_seconds": _round(self.average_talk_seconds, 1),
            "average_ring_seconds": _round(self.average_ring_seconds, 1),
            "dispositions": dict(sorted(self.dispositions.items())),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class LineCounts:
    line_id: str
    attempts: int
    answered: int
    busy: int
    no_answer: int
    other: int
    talk_seconds: int


@dataclass(frozen=True)
class Report:
    number: str
    timezone: str
    first_day: date
    last_day: date
    total: Totals
    days: dict[date, Totals]
    hours: dict[int, Totals]  # local hour of day 0-23, over the whole period
    lines: list[LineCounts]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "timezone": self.timezone,
            "from": self.first_day.isoformat(),
            "to": self.last_day.isoformat(),
            "total": self.total.summary(),
            "days": [{"day": d.isoformat(), **t.summary()} for d, t in sorted(self.days.items())],
            "hours": [{"hour": h, **t.summary()} for h, t in sorted(self.hours.items())],
            "peak_hours": self.peak_hours(),
            "lines": [asdict(line) for line in self.lines],
        }

    def peak_hours(self, top: int = 3) -> list[int]:
        ranked = sorted(((t.calls, -h) for h, t in self.hours.items() if t.calls), reverse=True)
        return [-h for _, h in ranked[:top]]


def local_range(first: date, last: date, tz: ZoneInfo) -> tuple[int, int]:
    """Epoch-second bounds of local days first..last inclusive."""
    lo = datetime.combine(first, time(0), tz).astimezone(timezone.utc)
    hi = datetime.combine(last + timedelta(days=1), time(0), tz).astimezone(timezone.utc)
    return int(lo.timestamp()), int(hi.timestamp())


def fixed_offset(tz: ZoneInfo, lo: int, hi: int) -> int | None:
    """The zone's offset in seconds if it is the same all through [lo, hi) (China: always), else None.

    Offsets change at most a few times a year and hold for months, so checking twice a day finds any change."""
    offsets = {tz.utcoffset(datetime.fromtimestamp(t, timezone.utc)) for t in range(lo, hi, 43_200)}
    offsets.add(tz.utcoffset(datetime.fromtimestamp(hi - 1, timezone.utc)))
    if len(offsets) != 1:
        return None
    (offset,) = offsets
    return int(offset.total_seconds()) if offset is not None else None


_SUMS = (call_stats.c.calls, call_stats.c.billable_seconds, call_stats.c.rung_calls, call_stats.c.ring_seconds)


async def number_report(engine: AsyncEngine, number: str, first: date, last: date, tz_name: str) -> Report:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    tz = ZoneInfo(tz_name)
    lo, hi = local_range(first, last, tz)
    in_range = (call_stats.c.number == number, call_stats.c.bucket >= lo, call_stats.c.bucket < hi)
    offset = fixed_offset(tz, lo, hi)
    total = Totals()
    days: dict[date, Totals] = {}
    hours: dict[int, Totals] = {h: Totals() for h in range(24)}
    async with engine.connect() as conn:
        if offset is not None:
            # The database adds up days and hours itself: two small results, whatever the period.
            local = call_stats.c.bucket + offset
            day, hour = (local // 86_400).label("day"), ((local % 86_400) // 3600).label("hour")
            sums = [func.sum(c) for c in _SUMS]
            by_day = (await conn.execute(select(day, call_stats.c.disposition, *sums).where(*in_range).group_by(day, call_stats.c.disposition))).all()
            by_hour = (await conn.execute(select(hour, call_stats.c.disposition, *sums).where(*in_range).group_by(hour, call_stats.c.disposition))).all()
            for d, disposition, n, talk, rung, ring in by_day:
                values = (disposition, int(n), int(talk), int(rung), int(ring))
                total.add(*values)
                days.setdefault(_EPOCH_DAY + timedelta(days=int(d)), Totals()).add(*values)
            for h, disposition, n, talk, rung, ring in by_hour:
                hours[int(h)].add(disposition, int(n), int(talk), int(rung), int(ring))
        else:
            # A daylight-saving change inside the period: cut each quarter hour into local time here.
            rows = (await conn.execute(select(call_stats.c.bucket, call_stats.c.disposition, *_SUMS).where(*in_range))).all()
            for bucket, disposition, n, talk, rung, ring in rows:
                when = datetime.fromtimestamp(int(bucket), tz)
                values = (disposition, int(n), int(talk), int(rung), int(ring))
                total.add(*values)
                days.setdefault(when.date(), Totals()).add(*values)
                hours[when.hour].add(*values)
        lines_q = (
            select(line_stats.c.line_id, line_stats.c.status, func.sum(line_stats.c.attempts), func.sum(line_stats.c.talk_seconds))
            .where(line_stats.c.number == number, line_stats.c.bucket >= lo, line_stats.c.bucket < hi)
            .group_by(line_stats.c.line_id, line_stats.c.status)
        )
        line_rows = (await conn.execute(lines_q)).all()
    per_line: dict[str, dict[str, int]] = {}
    for line_id, status, n, talk in line_rows:
        counts = per_line.setdefault(line_id, {"attempts": 0, "ANSWER": 0, "BUSY": 0, "NOANSWER": 0, "other": 0, "talk": 0})
        counts["attempts"] += int(n)
        counts[status if status in ("ANSWER", "BUSY", "NOANSWER") else "other"] += int(n)
        counts["talk"] += int(talk or 0)
    lines = [
        LineCounts(line_id, c["attempts"], c["ANSWER"], c["BUSY"], c["NOANSWER"], c["other"], c["talk"])
        for line_id, c in sorted(per_line.items(), key=lambda kv: (-kv[1]["ANSWER"], kv[0]))
    ]
    return Report(number, tz_name, first, last, total, days, hours, lines)


_EPOCH_DAY = date(1970, 1, 1)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    m, s = divmod(int(round(value)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(out)


_DAY_HEADERS = ("day", "calls", "answered", "answer rate", "talk time", "avg talk", "avg ring")


def _day_row(label: str, t: Totals) -> list[str]:
    return [label, str(t.calls), str(t.answered), _pct(t.answer_rate), _secs(t.talk_seconds), _secs(t.average_talk_seconds), _secs(t.average_ring_seconds)]


def format_text(report: Report) -> str:
    days = [_day_row(d.isoformat(), t) for d, t in sorted(report.days.items())]
    days.append(_day_row("total", report.total))
    hours = [[f"{h:02d}:00", str(t.calls), str(t.answered), _pct(t.answer_rate)] for h, t in sorted(report.hours.items()) if t.calls]
    lines = [[c.line_id, str(c.attempts), str(c.answered), str(c.busy), str(c.no_answer), str(c.other), _secs(c.talk_seconds)] for c in report.lines]
    peak = ", ".join(f"{h:02d}:00" for h in report.peak_hours()) or "-"
    parts = [
        f"{report.number}: {report.first_day} to {report.last_day} ({report.timezone})",
        "",
        _table(list(_DAY_HEADERS), days),
        "",
        f"calls by hour of day (peak: {peak})",
        _table(["hour", "calls", "answered", "answer rate"], hours) if hours else "(no calls)",
        "",
        "lines",
        _table(["line", "rung", "answered", "busy", "no answer", "other", "talk time"], lines) if lines else "(no line was rung)",
    ]
    return "\n".join(parts) + "\n"


def format_csv(report: Report) -> str:
    """One row per local day (the shape a spreadsheet wants); the hour and line tables are in json."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "day", "calls", "answered", "answer_rate", "talk_seconds", "average_talk_seconds", "average_ring_seconds"])
    for d, t in sorted(report.days.items()):
        s = t.summary()
        w.writerow([report.number, d.isoformat(), s["calls"], s["answered"], s["answer_rate"], s["talk_seconds"], s["average_talk_seconds"], s["average_ring_seconds"]])
    return buf.getvalue()


def format_json(report: Report) -> str:
    return json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n"
