"""Usage of each number's package from the CDRs, and the warnings queued in the outbox (inside `serve`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.billing import billed_minutes_sql
from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.notify.outbox import enqueue
from callrouter.packages.rules import Usage, alert_messages, due_alerts, month_bounds
from callrouter.store.schema import calls
from callrouter.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def billed_minutes_between(engine: AsyncEngine, number: str, start: datetime, end: datetime) -> int:
    """One indexed range query on calls(number, started_at)."""
    q = select(func.coalesce(func.sum(billed_minutes_sql(calls.c.billable_seconds)), 0)).where(
        calls.c.number == number, calls.c.started_at >= start, calls.c.started_at < end, calls.c.disposition == "answered"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


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
        self.expiry = Gauge("callrouter_package_expiry_timestamp_seconds", "When the number's package expires", ["number"], registry=registry)
        self.alerts = Counter("callrouter_package_alerts", "Package warnings queued, by kind", ["number", "kind"], registry=registry)
        self.errors = Counter("callrouter_package_check_errors", "Package checks that failed (database away)", registry=registry)


async def check_packages(engine: AsyncEngine, config: RoutingConfig, now: datetime, metrics: PackageMetrics | None = None) -> list[Usage]:
    """Every package's usage; due warnings queued (each once, whatever runs this and how often)."""
    out = []
    notify = config.service.notify
    for plan in config.plans.values():
        if plan.package is None:
            continue
        usage = await usage_of(engine, plan, config.service.timezone, now)
        out.append(usage)
        if metrics is not None:
            metrics.allowance.labels(number=plan.number).set(usage.allowance)
            metrics.used.labels(number=plan.number).set(usage.used)
            expires = datetime(usage.expires.year, usage.expires.month, usage.expires.day, tzinfo=ZoneInfo(plan.timezone or config.service.timezone))
            metrics.expiry.labels(number=plan.number).set(expires.timestamp())
        if not notify.enabled:
            continue
        for alert in due_alerts(usage, plan.package, plan.notify.company or plan.name):
            queued = await enqueue(engine, alert_messages(plan, [alert], notify.sms is not None, notify.webhook is not None), now)
            if queued:
                log.info("package %s: %s warning queued for %d recipient(s)", plan.number, alert.kind, queued)
                if metrics is not None:
                    metrics.alerts.labels(number=plan.number, kind=alert.kind).inc()
    return out


class PackageWatcher:
    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], registry: CollectorRegistry, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._config_source = config_source
        self.metrics = PackageMetrics(registry)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="package-watcher")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            config = self._config_source()
            try:
                await check_packages(self.engine, config, self._clock(), self.metrics)
            except Exception as exc:  # the database away: warnings are late, not lost (checked again next round)
                self.metrics.errors.inc()
                log.warning("package check failed: %s", exc)
            await asyncio.sleep(config.service.packages.check_interval)
