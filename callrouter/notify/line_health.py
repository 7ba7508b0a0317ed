"""Lines that fail, told to people: the manager's message when a line is suspended and when it works
again, and each line's state as a metric.

`line_health_messages` (pure) decides from one reported outcome, for every plan that dials the line,
whether it crossed the plan's threshold (down) or ended an episode by answering (up). Each message's
once-only key names the number, the line and the episode (when its first failure was), so routers that
see the same crossing, or a replay, queue it once; quiet hours and the SMS/webhook channels are the
outbox sender's, as for every message. `LineHealthAlerts` is what the session calls after a report;
`LineHealthMonitor` keeps `callrouter_line_state` current for every router's view of the shared state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Literal, Mapping, Sequence
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.notify.rules import fill
from callrouter.routing.health import (
    LineChange,
    LineRecord,
    PlanLine,
    clock,
    line_state,
    plan_keys,
    plan_lines,
    problem,
    shown_number,
    tripped,
    why,
)
from callrouter.store.outbox import OutboxMessage, enqueue
from callrouter.tasks import Backoff, Periodic, PeriodicPart, within

log = logging.getLogger(__name__)
STATES = ("healthy", "suspended", "half_open")
_WORSE = {"healthy": 0, "half_open": 1, "suspended": 2}
ReadHealth = Callable[[tuple[str, ...]], Awaitable[Mapping[str, LineRecord]]]
Event = Literal["down", "up"]


def event_for(change: LineChange, plan: NumberPlan) -> Event | None:
    """down: this outcome put the line past the plan's threshold; up: an answer ended such an episode."""
    settings = plan.line_health
    if not settings.enabled or not settings.notify:
        return None
    was, now = tripped(change.before, settings), tripped(change.after, settings)
    if was is None and now is not None:
        return "down"
    if was is not None and change.after.clean:
        return "up"
    return None


def _names(lines: Sequence[PlanLine]) -> str:
    names = [pl.line.name or pl.line.id for pl in lines]
    if not names:
        return "no other line (every line rings as configured)"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _episode_key(plan: NumberPlan, line: PlanLine, episode: float | None, event: Event) -> str:
    line_id = line.line.id if len(line.line.id) <= 40 else hashlib.sha256(line.line.id.encode()).hexdigest()[:16]
    return f"line:{plan.number}:{line_id}:{int(episode or 0)}:{event}"


def line_health_messages(
    change: LineChange, plans: Mapping[str, NumberPlan], service: ServiceConfig, records: Mapping[str, LineRecord]
) -> list[OutboxMessage]:
    """The messages one reported outcome causes. `records`: the other lines' health, for where calls go now."""
    notify = service.notify
    if not notify.enabled or (notify.sms is None and notify.webhook is None):
        return []
    key = change.after.key
    current = {**records, key: change.after}
    out: list[OutboxMessage] = []
    for plan in plans.values():
        event = event_for(change, plan)
        if event is None:
            continue
        tz = ZoneInfo(plan.timezone or service.timezone)
        lines = plan_lines(plan, service.dialing.template, current, change.at)
        for pl in (pl for pl in lines if pl.key == key):
            episode = change.after if event == "down" else change.before
            state = line_state(episode, plan.line_health, change.at)
            others = [o for o in lines if o.key != key and set(o.groups) & set(pl.groups) and o.state.working]
            fields = {
                "company": plan.notify.company or plan.name,
                "number": shown_number(plan.number),
                "line": pl.line.name or pl.line.id,
                "phone": pl.phone,
                "problem": problem(state),
                "since": clock(episode.since or change.at, tz, change.at),
                "others": _names(others),
                "time": clock(change.at, tz, change.at),
            }
            template = plan.line_health.down_template if event == "down" else plan.line_health.up_template
            payload = {"text": fill(template, fields), "event": event, "number": plan.number, "line": pl.line.id, "state": state.state}
            once = _episode_key(plan, pl, episode.since, event)
            if notify.sms is not None:
                out += [OutboxMessage("line_health", f"{once}:sms:{r}", "sms", r, plan.number, "", payload) for r in plan.notify.recipients]
            if plan.notify.webhook and notify.webhook is not None:
                out.append(OutboxMessage("line_health", f"{once}:webhook", "webhook", "", plan.number, "", payload))
    return out


class LineHealthAlerts:
    """Queues the manager's messages when a reported outcome suspends or restores a line (the session calls
    `changed` after each report). Within a small budget: a call never waits long for the outbox."""

    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], read: ReadHealth, *, budget: float = 2.0) -> None:
        self.engine, self._config_source, self._read, self.budget = engine, config_source, read, budget
        self._late: set[asyncio.Future[Any]] = set()

    async def changed(self, change: LineChange) -> None:
        config = self._config_source()
        template = config.service.dialing.template
        plans = [p for p in config.plans.values() if event_for(change, p) is not None and change.after.key in plan_keys(p, template)]
        if plans:
            await within(self._queue(change, config, plans), self.budget, self._late)

    async def _queue(self, change: LineChange, config: RoutingConfig, plans: list[NumberPlan]) -> None:
        template = config.service.dialing.template
        keys = tuple(dict.fromkeys(k for plan in plans for k in plan_keys(plan, template)))
        records = await self._read(keys)
        messages = line_health_messages(change, {p.number: p for p in plans}, config.service, records)
        queued = await enqueue(self.engine, messages, datetime.fromtimestamp(change.at, timezone.utc))
        for plan in plans:
            event = event_for(change, plan)
            tz = ZoneInfo(plan.timezone or config.service.timezone)
            state = line_state(change.after if event == "down" else change.before, plan.line_health, change.at)
            ids = ", ".join(sorted({pl.line.id for pl in plan_lines(plan, template, records, change.at) if pl.key == change.after.key}))
            what = f"suspended: {why(state, tz, change.at)}" if event == "down" else f"works again (it was {problem(state)})"
            told = sum(m.number == plan.number for m in messages)
            log.info("line %s of %s %s; %d message(s) for the manager", ids, plan.number, what, told)
        if queued < len(messages):
            log.debug("%d of %d line-health messages were queued already (another router, or a replay)", len(messages) - queued, len(messages))


class LineHealthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "callrouter_line_state", "1 for the line's current health state (healthy, suspended, half_open), else 0",
            ["number", "line", "state"], registry=registry,
        )
        self.working = Gauge("callrouter_lines_working", "Lines of the number rung in their place (healthy or half-open)", ["number"], registry=registry)
        self.lines = Gauge("callrouter_lines", "Enabled lines of the number", ["number"], registry=registry)
        self.errors = Counter("callrouter_line_health_read_errors", "Line-health reads for the metrics that failed", registry=registry)
        self._shown: set[tuple[str, str]] = set()
        self._numbers: set[str] = set()

    def show(self, lines: Sequence[PlanLine]) -> None:
        """Set every line's state; drop lines and numbers no longer configured (after a reload)."""
        worst: dict[tuple[str, str], str] = {}
        for pl in lines:  # a line id twice in a plan (two targets): the worse state shows
            label = (pl.number, pl.line.id)
            if _WORSE[pl.state.state] >= _WORSE[worst.get(label, "healthy")]:
                worst[label] = pl.state.state
        for number, line in self._shown - set(worst):
            for state in STATES:
                self.state.remove(number, line, state)
        self._shown = set(worst)
        for (number, line), current in worst.items():
            for state in STATES:
                self.state.labels(number=number, line=line, state=state).set(1 if state == current else 0)
        numbers = {pl.number for pl in lines}
        for gone in self._numbers - numbers:
            self.working.remove(gone)
            self.lines.remove(gone)
        self._numbers = numbers
        for number in numbers:
            mine = [state for (n, _), state in worst.items() if n == number]
            self.lines.labels(number=number).set(len(mine))
            self.working.labels(number=number).set(sum(state != "suspended" for state in mine))


class LineHealthMonitor(PeriodicPart):
    """Reads every plan's lines from the shared state every `every` seconds and shows them as metrics (the
    state changes with time too: a cool-down ends without any call)."""

    def __init__(
        self, read: ReadHealth, config_source: Callable[[], RoutingConfig], registry: CollectorRegistry, clock: Callable[[], datetime],
        *, every: float = 15.0,
    ) -> None:
        self._read, self._config_source, self._clock = read, config_source, clock
        self.metrics = LineHealthMetrics(registry)
        self.periodic = Periodic(
            "line-health-metrics", self._step, lambda: every, backoff=Backoff(first=every, cap=max(every, 60.0)),
            on_error=lambda _: self.metrics.errors.inc(),
        )

    async def _step(self) -> bool:
        config = self._config_source()
        template = config.service.dialing.template
        keys = tuple(dict.fromkeys(k for plan in config.plans.values() for k in plan_keys(plan, template)))
        records = await self._read(keys)
        now = self._clock().timestamp()
        self.metrics.show([pl for plan in config.plans.values() for pl in plan_lines(plan, template, records, now)])
        return False
