"""The overview's figures (概览): how today is going, whom we missed, the minutes package, and what is
happening right now.

* Today: calls, answered, answer rate and talk time per number, each number's local day (its plan's time
  zone), from the statistics sums.
* Missed calls not yet called back: callers missed in the last `MISSED_DAYS` days whom no later answered
  call reached (`store.overview.missed_callers`), each with a link to the call's page.
* The minutes package: minutes used this month against the allowance, days to expiry and the renewal
  warnings that are due (`packages.rules`, the figures of `callrouter usage`).
* Now: calls in progress and busy lines (a line lease of a live router, or a call on it), from the
  `active_calls` table every router writes; the page keeps it current through Server-Sent Events from
  `/console/live/events` (static/live.js), which end when the browser goes or the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web

from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.console.context import PREFIX, ConsoleDeps, console_deps, require
from callrouter.console.i18n import pick_language, translator
from callrouter.console.security import COOKIE, CSP
from callrouter.packages.rules import due_alerts
from callrouter.packages.watcher import usage_of
from callrouter.routing.engine import dial_target
from callrouter.store.live_calls import leased_lines, live_calls
from callrouter.store.memory import ActiveCall
from callrouter.store.overview import DayTotals, MissedCaller, day_totals, missed_callers
from callrouter.store.stats import local_range
from callrouter.store.tenants import READ, Scope
from callrouter.store.web_sessions import load_session

log = logging.getLogger(__name__)

MISSED_DAYS = 7  # missed calls of the last week
MISSED_SHOWN = 50  # callers listed
LINES_SHOWN = 40  # more lines than this (the provider's view): only the busy ones are listed
POLL_SECONDS = 2.0  # how often a live stream looks again
HEARTBEAT_SECONDS = 15.0  # a comment line when nothing changed, so proxies keep the stream and a gone client is noticed
SESSION_CHECK_SECONDS = 15.0  # how often a live stream checks that its session is still valid
BAR_STEP = 5  # the package bar's width goes in steps of 5% (CSS classes live-w0 ... live-w100)

CLOSING = web.AppKey("live_closing", asyncio.Event)  # set when the console stops: every live stream ends


def add_routes(app: web.Application) -> None:
    """The live stream's route, and its end when the server stops (a stream would otherwise hold the stop)."""
    app[CLOSING] = asyncio.Event()
    app.router.add_get("/live/events", events, name="live_events")

    async def close_streams(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(close_streams)


# -- what the scope sees ---------------------------------------------------------------------------


def _plans(config: RoutingConfig, scope: Scope) -> dict[str, NumberPlan]:
    return {n: p for n, p in sorted(config.plans.items()) if scope.allows(n)}


def _numbers(config: RoutingConfig, scope: Scope) -> list[str]:
    """The tenant's numbers (with or without a plan); for the provider, every number with a plan."""
    return sorted(scope.numbers) if scope.numbers is not None else sorted(config.plans)


def _zone(config: RoutingConfig, number: str) -> ZoneInfo:
    plan = config.plans.get(number)
    return ZoneInfo(plan.timezone if plan is not None and plan.timezone else config.service.timezone)


# -- formatting ------------------------------------------------------------------------------------


def talk_time(seconds: int, t: Callable[..., str]) -> str:
    """`1 小时 05 分`, `5 分 12 秒`, `40 秒`: how people say a duration."""
    h, rest = divmod(max(0, seconds), 3600)
    m, s = divmod(rest, 60)
    if h:
        return t("live.hm", h=h, m=f"{m:02d}")
    if m:
        return t("live.ms", m=m, s=f"{s:02d}")
    return t("live.s", s=s)


def elapsed(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:03`."""
    total = max(0, int(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def when(at: datetime, tz: ZoneInfo, today: date, t: Callable[..., str]) -> str:
    """`今天 14:05`, `昨天 09:12`, `11月20日 16:30` in the number's time zone."""
    local = at.astimezone(tz)
    clock = f"{local:%H:%M}"
    if local.date() == today:
        return t("live.today_at", time=clock)
    if local.date() == today - timedelta(days=1):
        return t("live.yesterday_at", time=clock)
    return t("live.date_at", month=local.month, day=local.day, mon=f"{local:%b}", time=clock)


def call_href(uniqueid: str, source: str) -> str:
    """The call's page (the calls page's route `call`)."""
    return f"{PREFIX}/calls/{quote(uniqueid, safe='')}?{urlencode({'source': source})}"


def bar_class(pct: int) -> str:
    """The width class of a bar filled `pct` percent: rounded up to the next step, so a little is visible."""
    step = min(100, max(0, math.ceil(pct / BAR_STEP) * BAR_STEP))
    return f"live-w{step}"


# -- today -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TodayView:
    day: date | None  # None when the numbers' local days differ (several time zones)
    total: DayTotals
    per_number: tuple[DayTotals, ...]  # one per number, for a tenant with several


async def today(deps: ConsoleDeps, config: RoutingConfig, scope: Scope, now: datetime) -> TodayView:
    by_range: dict[tuple[int, int], set[str]] = defaultdict(set)
    days: set[date] = set()
    for number in _numbers(config, scope):
        local_day = now.astimezone(_zone(config, number)).date()
        days.add(local_day)
        by_range[local_range(local_day, local_day, _zone(config, number))].add(number)
    found: dict[str, DayTotals] = {}
    for (lo, hi), numbers in by_range.items():
        found.update(await day_totals(deps.engine, lo, hi, numbers=frozenset(numbers)))
    rows = tuple(found.get(n, DayTotals(n)) for n in _numbers(config, scope))
    total = DayTotals("", sum(r.calls for r in rows), sum(r.answered for r in rows), sum(r.talk_seconds for r in rows))
    return TodayView(days.pop() if len(days) == 1 else None, total, rows)


# -- missed ----------------------------------------------------------------------------------------


def missed_view(callers: list[MissedCaller], config: RoutingConfig, now: datetime, t: Callable[..., str]) -> list[dict[str, Any]]:
    out = []
    for caller in callers[:MISSED_SHOWN]:
        call = caller.last
        tz = _zone(config, call.number)
        what = t(f"live.missed.{call.disposition}", s=call.ring_seconds)
        if call.left_voicemail and call.disposition != "voicemail":
            what = t("live.missed.and_voicemail", what=what)
        out.append({
            "caller": call.caller,
            "name": call.caller_name,
            "number": call.number,
            "when": when(call.started_at, tz, now.astimezone(tz).date(), t),
            "at": call.started_at.astimezone(tz).isoformat(timespec="seconds"),
            "what": what,
            "times": caller.times,
            "href": call_href(call.uniqueid, call.source),
        })
    return out


# -- the package -----------------------------------------------------------------------------------


async def packages(deps: ConsoleDeps, config: RoutingConfig, scope: Scope, now: datetime, t: Callable[..., str]) -> list[dict[str, Any]]:
    out = []
    for number, plan in _plans(config, scope).items():
        if plan.package is None:
            continue
        usage = await usage_of(deps.engine, plan, config.service.timezone, now)
        warnings = []
        for alert in due_alerts(usage, plan.package, plan.notify.company or plan.name):
            if alert.kind == "expired":
                warnings.append(t("live.package.expired", expires=usage.expires.isoformat()))
            elif alert.kind.startswith("expiry_"):
                warnings.append(t("live.package.expires_soon", expires=usage.expires.isoformat(), days=usage.days_left))
            else:
                warnings.append(t("live.package.used_up" if usage.used >= usage.allowance else "live.package.nearly_used",
                                  percent=usage.percent))
        level = "over" if usage.used >= usage.allowance else "warn" if usage.percent >= min(plan.package.warn_at, default=100) else "ok"
        out.append({
            "number": number,
            "used": usage.used,
            "allowance": usage.allowance,
            "left": max(0, usage.allowance - usage.used),
            "percent": usage.percent,
            "bar": bar_class(usage.percent),
            "level": level,
            "month": usage.month,
            "expires": usage.expires.isoformat(),
            "days_left": usage.days_left,
            "warnings": warnings,
        })
    return out


# -- now -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanLine:
    number: str
    line_id: str
    name: str
    key: str  # the dial target: what its lease is taken on


def plan_lines(config: RoutingConfig, plans: dict[str, NumberPlan]) -> list[PlanLine]:
    """Every enabled line of the plans once per number, in the order the plans list them."""
    template = config.service.dialing.template
    seen: dict[tuple[str, str], PlanLine] = {}
    for number, plan in plans.items():
        for group in plan.hunt_groups.values():
            for line in group.lines:
                if line.enabled and (number, line.id) not in seen:
                    seen[(number, line.id)] = PlanLine(number, line.id, line.name or line.id, dial_target(line, template))
    return list(seen.values())


_STATES = frozenset({"ivr", "ringing", "talking"})


async def now_view(deps: ConsoleDeps, scope: Scope, t: Callable[..., str]) -> dict[str, Any]:
    """The calls in progress and the lines in use, as the scope may see them: the live fragment's context."""
    now = deps.now()
    config = deps.holder.current
    plans = _plans(config, scope)
    calls = await live_calls(deps.engine, numbers=scope.numbers, now=now)
    lines = plan_lines(config, plans)
    leases = await leased_lines(deps.engine, [line.key for line in lines], now=now) if lines else {}
    names = {(line.number, line.line_id): line.name for line in lines}
    on_line: dict[tuple[str, str], int] = defaultdict(int)
    for call in calls:
        if call.state in ("ringing", "talking"):
            for line_id in call.line_ids:
                on_line[(call.number, line_id)] += 1
    line_rows: list[dict[str, Any]] = []
    for line in lines:
        count = max(leases.get(line.key, 0), on_line.get((line.number, line.line_id), 0))
        line_rows.append({"number": line.number, "id": line.line_id, "name": line.name, "busy": count > 0, "calls": count})
    busy = sum(row["busy"] for row in line_rows)
    shown_lines = line_rows if len(line_rows) <= LINES_SHOWN else [row for row in line_rows if row["busy"]]
    return {
        "calls": [_call_row(call, config, names, now, t) for call in calls],
        "lines": shown_lines,
        "lines_total": len(line_rows),
        "lines_busy": busy,
        "lines_all_shown": len(shown_lines) == len(line_rows),
        "several_numbers": len({line.number for line in lines} | {c.number for c in calls}) > 1,
        "updated": f"{now.astimezone(ZoneInfo(config.service.timezone)):%H:%M:%S}",
    }


def _call_row(call: ActiveCall, config: RoutingConfig, names: dict[tuple[str, str], str], now: datetime, t: Callable[..., str]) -> dict[str, Any]:
    tz = _zone(config, call.number)
    who = t("live.sep").join(names.get((call.number, i), i) for i in call.line_ids)
    state = call.state if call.state in _STATES else "ivr"
    return {
        "caller": call.caller,
        "number": call.number,
        "started": f"{call.started_at.astimezone(tz):%H:%M:%S}",
        "elapsed": elapsed((now - call.started_at).total_seconds()),
        "state": state,
        "what": t(f"live.state.{state}", line=who) if who or state == "ivr" else t("live.state.on_line"),
    }


# -- the page and the stream -----------------------------------------------------------------------


async def overview_context(request: web.Request, scope: Scope) -> dict[str, Any]:
    """What overview.html shows beyond who is logged in: empty for a scope without READ."""
    if not scope.can(READ):
        return {"live_figures": False}
    deps = console_deps(request)
    t = translator(pick_language(request))
    now = deps.now()
    config = deps.holder.current
    missed = await missed_callers(deps.engine, now - timedelta(days=MISSED_DAYS), now, numbers=scope.numbers)
    return {
        "live_figures": True,
        "today": await today(deps, config, scope, now),
        "missed": missed_view(missed, config, now, t),
        "missed_more": max(0, len(missed) - MISSED_SHOWN),
        "missed_days": MISSED_DAYS,
        "packages": await packages(deps, config, scope, now, t),
        "live": await now_view(deps, scope, t),
        "live_events": f"{PREFIX}/live/events",
        "talk_time": lambda seconds: talk_time(seconds, t),
        "percent": percent,
    }


def render_now(request: web.Request, live: dict[str, Any], lang: str) -> str:
    """The live fragment alone (templates/live_now.html), as the stream sends it."""
    template = aiohttp_jinja2.get_env(request.app).get_template("live_now.html")
    return template.render(t=translator(lang), lang=lang, live=live)


def sse_event(name: str, data: str) -> bytes:
    """One Server-Sent Event; each line of `data` on a `data:` line of its own (the browser joins them with \\n)."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode("utf-8")


class StreamGone(Exception):
    """The browser went away, or the console is stopping."""


async def events(request: web.Request) -> web.StreamResponse:
    """The calls in progress and the busy lines, sent again whenever they change (an SSE stream).

    Scoped like every page: the session's tenant, looked at again every SESSION_CHECK_SECONDS (a session
    that ended, a user disabled or a number moved to another tenant ends or narrows the stream). The stream
    does not keep the session alive: the console's idle timeout still ends it, and the page then reloads
    onto the login form."""
    scope = require(request, READ)
    deps = console_deps(request)
    lang = pick_language(request)
    t = translator(lang)
    token = request.cookies.get(COOKIE, "")
    closing = request.app[CLOSING]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    })
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    last_sent, last_check = "", loop.time()
    quiet_since = loop.time()
    try:
        await _send(request, response, b"retry: 3000\n\n")
        while not closing.is_set():
            if loop.time() - last_check >= SESSION_CHECK_SECONDS:
                last_check = loop.time()
                live = await load_session(deps.engine, token, now=deps.now(), idle=timedelta(seconds=deps.settings.idle_timeout))
                if live is None or live.scope is None or not live.scope.can(READ):
                    await _send(request, response, sse_event("bye", "session"))
                    break
                scope = live.scope
            try:
                html = render_now(request, await now_view(deps, scope, t), lang)
            except Exception as exc:  # the database away: the page keeps what it shows, and the stream tries again
                log.warning("console live view: %s: %s", type(exc).__name__, exc)
                html = last_sent
            if html != last_sent:
                await _send(request, response, sse_event("live", html))
                last_sent, quiet_since = html, loop.time()
            elif loop.time() - quiet_since >= HEARTBEAT_SECONDS:
                await _send(request, response, b": still here\n\n")
                quiet_since = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), POLL_SECONDS)
    except StreamGone:
        log.debug("console live stream: the browser went away")
    return response


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise StreamGone()
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError) as exc:  # reset by the peer; "cannot write to closing transport"
        raise StreamGone() from exc

