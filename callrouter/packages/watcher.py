"""Usage of each number's package from the CDRs, and the warnings queued in the outbox (inside `serve`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.packages.rules import Usage, alert_messages, due_alerts, month_bounds, package_end
from callrouter.store.outbox import enqueue
from callrouter.store.usage import billed_minutes_between
from callrouter.tasks import Backoff, Periodic, PeriodicPart, within

log = logging.getLogger(__name__)


async def usage_of(engine: AsyncEngine, plan: NumberPlan, service_tz: str, now: datetime) -> Usage:
    assert plan.package is not None
    tz = ZoneInfo(plan.timezone or service_tz)
    today = now.astimezone(tz).date()
    start, end = month_bounds(today, tz)
    used = await billed_minutes_between(engine, plan.number, start, end)
    return Usage(plan.number, f"{today:%Y-%m}", plan.package.monthly_minutes, used, plan.package.expires, today)


class PackageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.allowance = Gauge("callrouter_package_minutes_allowance", "Minutes per month in the number's package", ["number"], registry=registry)
        self.used = Gauge("callrouter_package_minutes_used", "Billed minutes used this month", ["number"], registry=registry)
        self.expiry = Gauge("callrouter_package_expiry_timestamp_seconds", "When the number's package ends (midnight after its last day)", ["number"], registry=registry)
        self.alerts = Counter("callrouter_package_alerts", "Package warnings queued, by kind", ["number", "kind"], registry=registry)
        self.errors = Counter("callrouter_package_check_errors", "Package checks that failed (database away)", registry=registry)
        self._numbers: set[str] = set()

    def show(self, usages: list[Usage], ends: dict[str, datetime]) -> None:
        """Set each package's gauges; drop those of numbers that no longer have one (after a reload)."""
        numbers = {u.number for u in usages}
        for gone in self._numbers - numbers:
            for gauge in (self.allowance, self.used, self.expiry):
                gauge.remove(gone)
        self._numbers = numbers
        for u in usages:
            self.allowance.labels(number=u.number).set(u.allowance)
            self.used.labels(number=u.number).set(u.used)
            self.expiry.labels(number=u.number).set(ends[u.number].timestamp())


async def check_packages(engine: AsyncEngine, config: RoutingConfig, now: datetime, metrics: PackageMetrics | None = None) -> list[Usage]:
    """Every package's usage; due warnings queued (each once, whatever runs this and how often)."""
    out = []
    ends: dict[str, datetime] = {}
    notify = config.service.notify
    for plan in config.plans.values():
        if plan.package is None:
            continue
        usage = await usage_of(engine, plan, config.service.timezone, now)
        out.append(usage)
        ends[plan.number] = package_end(plan.package.expires, ZoneInfo(plan.timezone or config.service.timezone))
        if not notify.enabled:
            continue
        for alert in due_alerts(usage, plan.package, plan.notify.company or plan.name):
            queued = await enqueue(engine, alert_messages(plan, [alert], notify.sms is not None, notify.webhook is not None), now)
            if queued:
                log.info("package %s: %s warning queued for %d recipient(s)", plan.number, alert.kind, queued)
                if metrics is not None:
                    metrics.alerts.labels(number=plan.number, kind=alert.kind).inc()
    if metrics is not None:
        metrics.show(out, ends)
    return out


class PackageWatcher(PeriodicPart):
    """Checks every `packages.check_interval` seconds (as configured now) inside `serve`; a failed
    check is counted and simply made again after a backoff (the keys keep every warning once-only)."""

    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], registry: CollectorRegistry, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._config_source = config_source
        self.metrics = PackageMetrics(registry)
        self._clock = clock
        self._late: set[asyncio.Future[Any]] = set()  # a check abandoned because the database hangs
        # The database away or hung is a warning: warnings are late, not lost; retried with a backoff.
        self.periodic = Periodic(
            "package-watcher", self._step, lambda: self._config_source().service.packages.check_interval,
            backoff=Backoff(first=5.0, cap=300.0), on_error=lambda _: self.metrics.errors.inc(),
        )

    async def check(self) -> list[Usage]:
        """One check within its time budget (the interval): a hung database holds neither the loop
        nor close(), which abandons the check in progress instead of awaiting its rollback."""
        config = self._config_source()
        return await within(check_packages(self.engine, config, self._clock(), self.metrics), config.service.packages.check_interval, self._late)

    async def _step(self) -> bool:
        await self.check()
        return False
