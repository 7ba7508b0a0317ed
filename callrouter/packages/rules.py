"""Minutes packages: which warnings are due, and how big a package a company needs. Pure: no IO."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from callrouter.config.package import Package
from callrouter.config.plan import NumberPlan
from callrouter.notify.rules import OutboxMessage, fill


@dataclass(frozen=True)
class Usage:
    number: str
    month: str  # YYYY-MM, the plan's local calendar month
    allowance: int
    used: int  # billed minutes
    expires: date
    today: date

    @property
    def percent(self) -> int:
        return math.floor(self.used * 100 / self.allowance)

    @property
    def days_left(self) -> int:
        return (self.expires - self.today).days


def month_bounds(today: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The local calendar month containing `today`, as UTC instants [start, end)."""
    start = datetime(today.year, today.month, 1, tzinfo=tz)
    end = datetime(today.year + (today.month == 12), today.month % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def package_end(expires: date, tz: ZoneInfo) -> datetime:
    """`expires` is the package's last day: it ends at the local midnight after it."""
    return datetime.combine(expires + timedelta(days=1), time(), tzinfo=tz)


@dataclass(frozen=True)
class Alert:
    kind: str  # usage_80, usage_100, expiry_7d, expiry_3d, expired
    key: str  # once-only: per number and month (usage) or per number and expiry date (expiry)
    text: str


def due_alerts(usage: Usage, package: Package, company: str) -> list[Alert]:
    """The warnings due now. Only the most urgent of each kind: a package found at 100% is not also
    warned at 80% (that moment has passed); the keys still make every warning once-only."""
    alerts: list[Alert] = []
    crossed = [p for p in package.warn_at if usage.used * 100 >= p * usage.allowance]
    if crossed:
        p = max(crossed)
        fields = {"company": company, "number": usage.number, "used": str(usage.used), "allowance": str(usage.allowance),
                  "percent": str(usage.percent), "month": usage.month}
        alerts.append(Alert(f"usage_{p}", f"package:{usage.number}:{usage.month}:{p}", fill(package.usage_template, fields)))
    days = usage.days_left
    if days < 0:
        text = f"【{company}】400号码 {usage.number} 的套餐已于 {usage.expires} 到期，请尽快续费。"
        alerts.append(Alert("expired", f"package:{usage.number}:{usage.expires}:expired", text))
    else:
        near = [d for d in package.expiry_warning_days if days <= d]
        if near:
            d = min(near)
            fields = {"company": company, "number": usage.number, "expires": usage.expires.isoformat(), "days": str(days)}
            alerts.append(Alert(f"expiry_{d}d", f"package:{usage.number}:{usage.expires}:{d}d", fill(package.expiry_template, fields)))
    return alerts


def alert_messages(plan: NumberPlan, alerts: list[Alert], has_sms: bool, has_webhook: bool) -> list[OutboxMessage]:
    package = plan.package
    assert package is not None
    recipients = package.recipients if package.recipients is not None else plan.notify.recipients
    out: list[OutboxMessage] = []
    for alert in alerts:
        payload = {"text": alert.text, "alert": alert.kind, "number": plan.number}
        if has_sms:
            out += [OutboxMessage("package_alert", f"{alert.key}:sms:{r}", "sms", r, plan.number, "", payload) for r in recipients]
        if has_webhook and package.webhook:
            out.append(OutboxMessage("package_alert", f"{alert.key}:webhook", "webhook", "", plan.number, "", payload))
    return out


# -- sizing: which package, and how many agents ----------------------------------------------------

HEADROOM = 1.2  # a month is rarely average: 20% above the expected minutes


@dataclass(frozen=True)
class Sizing:
    billed_minutes_per_month: int
    with_headroom: int
    package: int | None  # the smallest standard size that covers it; None: larger than every size
    peak_hour_calls: float
    traffic_erlangs: float
    agents: int
    service_level: float  # share answered within the target at that many agents


def billed_per_call(minutes_per_call: float) -> float:
    """Each started minute is billed: on average half a minute above the talk time (at least 1 minute)."""
    return max(1.0, minutes_per_call + 0.5)


def erlang_c(agents: int, traffic: float) -> float:
    """Probability that a call has to wait (Erlang C), for `traffic` erlangs offered to `agents` agents."""
    if agents <= traffic:
        return 1.0
    term, total = 1.0, 1.0  # A^k / k!, summed for k < agents
    for k in range(1, agents):
        term *= traffic / k
        total += term
    last = term * traffic / agents * agents / (agents - traffic)
    return last / (total + last)


def service_level(agents: int, traffic: float, handle_seconds: float, target_seconds: float) -> float:
    """Share of calls answered within `target_seconds`."""
    if agents <= traffic:
        return 0.0
    return 1.0 - erlang_c(agents, traffic) * math.exp(-(agents - traffic) * target_seconds / handle_seconds)


def agents_needed(calls_per_hour: float, handle_seconds: float, target_seconds: float = 20.0,
                  target_level: float = 0.8) -> tuple[int, float]:
    """The fewest agents that answer `target_level` of the calls within `target_seconds` (Erlang C), and the
    share they do answer in time: the staffing of one busy hour, for `usage size` and the console's statistics."""
    if calls_per_hour < 0 or handle_seconds <= 0 or target_seconds < 0 or not 0 < target_level < 1:
        raise ValueError("calls per hour >= 0, handle time > 0, target seconds >= 0, target level in (0, 1)")
    traffic = calls_per_hour * handle_seconds / 3600
    agents = max(1, math.floor(traffic) + 1)
    while service_level(agents, traffic, handle_seconds, target_seconds) < target_level:
        agents += 1
    return agents, service_level(agents, traffic, handle_seconds, target_seconds)


def size_package(
    calls_per_day: float,
    minutes_per_call: float,
    working_days: int,
    sizes: tuple[int, ...],
    *,
    answer_rate: float = 0.9,
    peak_share: float = 0.15,
    target_seconds: float = 20.0,
    target_level: float = 0.8,
) -> Sizing:
    """A package from the expected minutes; agents for the busiest hour by Erlang C (e.g. 80% answered in 20 s)."""
    if calls_per_day < 0 or minutes_per_call <= 0 or not 1 <= working_days <= 31 or not 0 < answer_rate <= 1 or not 0 < peak_share <= 1:
        raise ValueError("calls per day >= 0, minutes per call > 0, working days 1-31, answer rate and peak share in (0, 1]")
    minutes = calls_per_day * answer_rate * billed_per_call(minutes_per_call) * working_days
    billed = math.ceil(minutes)
    padded = math.ceil(minutes * HEADROOM)
    package = next((s for s in sizes if s >= padded), None)
    peak_calls = calls_per_day * peak_share
    handle = minutes_per_call * 60
    agents, level = agents_needed(peak_calls, handle, target_seconds, target_level)
    return Sizing(billed, padded, package, peak_calls, peak_calls * handle / 3600, agents, level)
