"""The exporter's loop: load the baseline once, then poll for rows it has not seen."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Metric, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.config.service import Exporter
from callrouter.exporter.collector import CdrCollector
from callrouter.exporter.cursor import IdCursor
from callrouter.exporter.source import load_baseline
from callrouter.exporter.totals import CdrTotals
from callrouter.store.cdr_feed import read_attempts, read_rows
from callrouter.tasks import Backoff, Periodic, PeriodicPart

log = logging.getLogger(__name__)


def zones_of(config: RoutingConfig) -> dict[str, list[str]]:
    """Time zone -> the numbers whose plans use it."""
    zones: dict[str, list[str]] = {}
    for number, plan in config.plans.items():
        zones.setdefault(plan.timezone or config.service.timezone, []).append(number)
    return zones


class CdrExporter(PeriodicPart):
    """Follows `calls` for a registry Prometheus scrapes; a scrape never touches the database."""

    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._config_source = config_source
        self._clock = clock
        self._totals: CdrTotals | None = None
        self._zones_config: RoutingConfig | None = None
        self._cursor: IdCursor | None = None
        self.last_success = 0.0  # monotonic time of the last good poll
        self.registry = CollectorRegistry()
        r = self.registry
        self.rows_read = Counter("callrouter_exporter_rows_read", "CDR rows the exporter has counted", registry=r)
        self.poll_errors = Counter("callrouter_exporter_poll_errors", "Baseline loads and polls that failed", registry=r)
        self.periodic = Periodic(
            "cdr-exporter", self._step, lambda: self._settings().poll_interval,
            backoff=Backoff(first=0.5, cap=30.0), on_error=lambda _: self.poll_errors.inc(),
        )
        self.last_poll = Gauge(
            "callrouter_exporter_last_poll_success_timestamp_seconds", "When the exporter last read the database successfully", registry=r
        )
        self.lag = Gauge("callrouter_exporter_lag_seconds", "Seconds since the served values were last brought up to date", registry=r)
        self.lag.set_function(self._lag)
        self.pending_gaps = Gauge("callrouter_exporter_pending_gaps", "Row ids below the newest one still looked for", registry=r)
        self.pending_gaps.set_function(lambda: len(self._cursor.gaps) if self._cursor else 0)
        self.gaps_expired = Counter(
            "callrouter_exporter_gaps_expired", "Missing row ids given up on after gap_horizon (burnt or rolled-back ids)", registry=r
        )
        self.baseline_seconds = Gauge("callrouter_exporter_baseline_seconds", "How long loading the totals at start took", registry=r)
        # The CDR families are rendered after each poll that changed them (and each new minute, for the
        # day/month gauges), not at scrape time: thousands of series cost milliseconds of Python.
        self.cdr_registry = CollectorRegistry()
        self.cdr_registry.register(CdrCollector(lambda: self._totals, clock))
        self._cdr_text = b""
        self._counted = 0  # rows counted since start: a change means the text must be rendered again
        self._rendered_at: tuple[int, int] = (-1, -1)  # (rows counted, minute) the text reflects

    def exposition(self) -> bytes:
        """What a scrape serves: the exporter's own health, live, and the CDR families as last rendered."""
        return generate_latest(self.registry) + self._cdr_text

    def families(self) -> list[Metric]:
        return [*self.registry.collect(), *self.cdr_registry.collect()]

    def render(self) -> None:
        """Re-render the CDR families if rows were counted or the minute changed since the last time."""
        key = (self._counted, int(self._clock().timestamp() // 60))
        if key != self._rendered_at or not self._cdr_text:
            self._cdr_text = generate_latest(self.cdr_registry)
            self._rendered_at = key

    @property
    def ready(self) -> bool:
        return self._totals is not None

    def not_ready_reason(self) -> str | None:
        """For /readyz: None when the served values are current."""
        if self._totals is None:
            return "CDR exporter: loading totals from the database"
        stale = max(10.0, 10 * self._settings().poll_interval)
        if time.monotonic() - self.last_success > stale:
            return f"CDR exporter: no successful poll for more than {stale:g} s"
        return None

    def _settings(self) -> Exporter:
        return self._config_source().service.exporter

    def _lag(self) -> float:
        return time.monotonic() - self.last_success if self.last_success else 0.0

    async def _step(self) -> bool:
        """The baseline first (a database down at start: not ready, retried); then poll at once."""
        if self._totals is None:
            await self.load()
            return True
        return await self.poll()

    async def load(self) -> None:
        """The baseline: absolute totals at one snapshot, then follow from its newest id."""
        config = self._config_source()
        started = time.monotonic()
        totals = CdrTotals(self._timezone_of)
        base = await load_baseline(self.engine, totals, zones_of(config), config.service.timezone, self._clock())
        cursor = IdCursor(horizon=config.service.exporter.gap_horizon)
        cursor.start_after(base.max_id, base.recent_ids, base.max_id - 20_000, time.monotonic())
        self._zones_config = config
        self._cursor, self._totals = cursor, totals
        self.render()
        self.baseline_seconds.set(time.monotonic() - started)
        self._succeeded()
        log.info("CDR exporter: totals loaded up to call id %d in %.2f s", base.max_id, time.monotonic() - started)

    async def poll(self) -> bool:
        """Count rows not seen yet; True when a full batch came back (more are waiting)."""
        totals, cursor = self._totals, self._cursor
        assert totals is not None and cursor is not None
        config = self._config_source()
        if config is not self._zones_config:  # a reload may have moved a number to another zone
            totals.forget_zones()
            self._zones_config = config
        limit = config.service.exporter.batch_rows
        new, found = await read_rows(self.engine, cursor.position, limit, cursor.gaps)
        now = time.monotonic()
        by_id = {row.id: row for row in (*new, *found)}
        attempts = await read_attempts(self.engine, sorted(by_id)) if by_id else []  # read all before counting any
        fresh = cursor.accept(by_id, now)
        if fresh:
            wall = self._clock()
            for n, i in enumerate(fresh, 1):
                totals.add_call(by_id[i], wall)
                if n % 500 == 0:
                    await asyncio.sleep(0)  # catching up must not hold a scrape for long
            counted = set(fresh)
            totals.add_attempts((number, status) for call_id, number, status in attempts if call_id in counted)
            self.rows_read.inc(len(fresh))
            self._counted += len(fresh)
        expired = cursor.expire(now)
        if expired:
            self.gaps_expired.inc(expired)
        self._succeeded()
        self.render()
        return len(new) >= limit

    def _succeeded(self) -> None:
        self.last_success = time.monotonic()
        self.last_poll.set(self._clock().timestamp())

    def _timezone_of(self, number: str) -> str:
        config = self._config_source()
        plan = config.plans.get(number)
        return (plan.timezone if plan is not None else None) or config.service.timezone
