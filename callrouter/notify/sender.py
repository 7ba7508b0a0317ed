"""The outbox sender inside `serve`: claims due messages, applies quiet hours and the per-caller limit,
sends, and retries with backoff. A gateway outage delays messages; it never loses them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.config.notify import MissedCallNotify
from callrouter.notify.gateway import SendFailed, send_sms, send_webhook
from callrouter.notify.rules import in_quiet_hours, in_turns, quiet_hours_end, retry_delay
from callrouter.store import outbox
from callrouter.store.outbox import Claimed
from callrouter.tasks import Backoff, Periodic, PeriodicPart

log = logging.getLogger(__name__)
RESULTS = ("sent", "retry", "failed", "suppressed", "held")


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "callrouter_notifications", "Outbox messages handled, by kind, channel and result", ["kind", "channel", "result"], registry=registry
        )
        self.pending = Gauge("callrouter_outbox_pending_messages", "Messages waiting in the outbox (due or not)", registry=registry)
        self.send_seconds = Histogram(
            "callrouter_notification_send_seconds", "Time the gateway took to take a message", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=registry
        )
        self.errors = Counter("callrouter_outbox_errors", "Outbox rounds that failed (database away)", registry=registry)


class OutboxSender(PeriodicPart):
    def __init__(
        self,
        engine: AsyncEngine,
        config_source: Callable[[], RoutingConfig],
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
        rng: random.Random,
    ) -> None:
        self.engine = engine
        self._config_source = config_source
        self.metrics = NotifyMetrics(registry)
        self._clock = clock
        self._rng = rng
        self._http: aiohttp.ClientSession | None = None  # opened by the first send
        # The database away is a warning and a backoff: messages wait in it, nothing is lost.
        self.periodic = Periodic(
            "outbox-sender", self._step, lambda: self._config_source().service.notify.poll_interval,
            backoff=Backoff(first=1.0, cap=60.0), on_error=lambda _: self.metrics.errors.inc(),
        )

    async def close(self) -> None:
        """Prompt even mid-send: a message cut off stays leased and is sent again after the lease."""
        await super().close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _step(self) -> bool:
        """A full batch means more are due: the next round runs at once."""
        return await self.round() >= self._config_source().service.notify.batch

    async def round(self) -> int:
        """Claim and handle one batch of due messages; returns how many."""
        config = self._config_source()
        settings = config.service.notify
        if not settings.enabled:
            return 0
        now = self._clock()
        claimed = await outbox.claim(self.engine, now, settings.batch, settings.lease)
        await asyncio.gather(*(self._handle_in_turn(turn, config, now) for turn in in_turns(claimed)))
        self.metrics.pending.set(await outbox.pending(self.engine))
        return len(claimed)

    async def _handle_in_turn(self, turn: list[Claimed], config: RoutingConfig, now: datetime) -> None:
        for message in turn:
            await self.handle(message, config, now)

    async def handle(self, message: Claimed, config: RoutingConfig, now: datetime) -> None:
        plan = config.plans.get(message.number)
        rules = plan.notify if plan is not None else MissedCallNotify()
        result = await self._decide_and_send(message, config, rules, now)
        self.metrics.messages.labels(kind=message.kind, channel=message.channel, result=result).inc()

    async def _decide_and_send(self, message: Claimed, config: RoutingConfig, rules: MissedCallNotify, now: datetime) -> str:
        settings = config.service.notify
        plan = config.plans.get(message.number)
        tz = ZoneInfo((plan.timezone if plan else None) or config.service.timezone)
        if rules.quiet_hours is not None and in_quiet_hours(rules.quiet_hours, now.astimezone(tz)):
            if rules.quiet_hours_action == "drop":
                await outbox.finish(self.engine, message.id, "suppressed", now, "quiet hours (dropped)")
                return "suppressed"
            until = quiet_hours_end(rules.quiet_hours, now.astimezone(tz))
            await outbox.retry_at(self.engine, message.id, until, "held: quiet hours", count_attempt=False)
            return "held"
        if message.kind == "missed_call" and message.caller:
            since = now - timedelta(seconds=rules.per_caller_window)
            if await outbox.sent_recently(self.engine, message.recipient, message.caller, message.kind, since) >= rules.per_caller_limit:
                await outbox.finish(self.engine, message.id, "suppressed", now, f"per-caller limit: {rules.per_caller_limit} per {rules.per_caller_window} s")
                return "suppressed"
        if self._http is None:  # here, not in start(): tests run rounds without the loop
            self._http = aiohttp.ClientSession()
        started = time.perf_counter()
        try:
            if message.channel == "sms":
                if settings.sms is None:
                    raise SendFailed("no SMS gateway configured (notify.sms)")
                await send_sms(self._http, settings.sms, message)
            elif message.channel == "webhook":
                if settings.webhook is None:
                    raise SendFailed("no webhook configured (notify.webhook)")
                await send_webhook(self._http, settings.webhook, message)
            else:
                raise SendFailed(f"unknown channel {message.channel!r}")
        except SendFailed as exc:
            if message.attempts >= settings.max_attempts:
                await outbox.finish(self.engine, message.id, "failed", now, f"gave up after {message.attempts} attempts: {exc}")
                log.error("outbox: message %d to %s failed for good: %s", message.id, message.channel, exc)
                return "failed"
            delay = retry_delay(message.attempts, settings, self._rng)
            await outbox.retry_at(self.engine, message.id, self._clock() + timedelta(seconds=delay), str(exc))
            log.warning("outbox: message %d (%s) not sent: %s; retry in %.0f s", message.id, message.channel, exc, delay)
            return "retry"
        self.metrics.send_seconds.observe(time.perf_counter() - started)
        await outbox.finish(self.engine, message.id, "sent", self._clock())
        return "sent"
