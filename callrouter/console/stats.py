"""The statistics page (统计): how busy one 400 number is, how well its calls are answered, and how many
agents its busiest hour needs.

Everything comes from the quarter-hour sums (store/number_stats.py), so a year of a busy number is as quick
as a week. The charts are drawn by static/stats.js from the numbers in a JSON block of the page; the same
numbers are in a table under each chart, and the weekday x hour heatmap is itself a table.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping

from callrouter.config.loader import RoutingConfig
from callrouter.console.context import audit, console_deps, not_found, render, require
from callrouter.console.i18n import pick_language, translator
from callrouter.packages.rules import agents_needed, service_level
from callrouter.store.number_stats import LineSums, NumberStatistics, Sums, number_statistics
from callrouter.store.tenants import READ, Scope, list_tenants

MAX_DAYS = 366  # as the API's /api/stats
QUICK_RANGES = (7, 30, 90, 365)
TARGET_SECONDS = 20  # the usual call-centre target: 80% of calls answered within 20 seconds
TARGET_LEVEL = 0.8
LOW_RATE = 0.8  # a heatmap cell below this answer rate is marked
HEAT_LEVELS = 5
OPTIONAL_LINE_COLUMNS = ("busy", "no_answer", "unreachable", "caller_hung_up", "full")

Translate = Callable[..., str]


@dataclass(frozen=True)
class Query:
    """What the form asked for, checked: errors are keyed by the form field they belong next to."""

    number: str
    first_text: str
    last_text: str
    first: date | None
    last: date | None
    errors: Mapping[str, str]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())[:20]


def timezone_of(config: RoutingConfig, number: str) -> str:
    plan = config.plans.get(number)
    return (plan.timezone if plan is not None and plan.timezone else None) or config.service.timezone


async def number_choices(request: web.Request, scope: Scope) -> list[tuple[str, str]]:
    """(number, plan name) of the numbers this user may pick: the tenant's own, or every known one for the provider."""
    deps = console_deps(request)
    config = deps.holder.current
    if scope.numbers is None:
        known = set(config.plans) | {n for tenant in await list_tenants(deps.engine) for n in tenant.numbers}
    else:
        known = set(scope.numbers)
    return [(n, config.plans[n].name if n in config.plans else "") for n in sorted(known)]


def read_query(query: MultiMapping[str], number: str, today: date, t: Translate) -> Query:
    first_text = query.get("from", "").strip() or (today - timedelta(days=6)).isoformat()
    last_text = query.get("to", "").strip() or today.isoformat()
    errors: dict[str, str] = {}
    first = last = None
    try:
        first = date.fromisoformat(first_text)
    except ValueError:
        errors["from"] = t("stats.error.date")
    try:
        last = date.fromisoformat(last_text)
    except ValueError:
        errors["to"] = t("stats.error.date")
    if first is not None and last is not None:
        if last < first:
            errors["to"] = t("stats.error.order")
        elif (last - first).days + 1 > MAX_DAYS:
            errors["from"] = t("stats.error.too_long", max=MAX_DAYS, days=(last - first).days + 1)
    return Query(number, first_text[:20], last_text[:20], first, last, errors)


async def _asked(request: web.Request, scope: Scope) -> tuple[list[tuple[str, str]], str]:
    """The choices and the number asked for (the first choice by default); another tenant's number is 404."""
    choices = await number_choices(request, scope)
    if "number" not in request.query:
        return choices, choices[0][0] if choices else ""
    number = _digits(request.query["number"])
    if not number or not scope.allows(number):
        raise not_found()
    return choices, number


# -- formatting ---------------------------------------------------------------------------------------


def duration(t: Translate, seconds: float | None) -> str:
    if seconds is None:
        return t("stats.none")
    total = int(round(seconds))
    if total < 60:
        return t("stats.secs", s=total)
    if total < 3600:
        return t("stats.mins", m=total // 60, s=total % 60)
    return t("stats.hours", h=total // 3600, m=total % 3600 // 60)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def zone_name(t: Translate, tz: str) -> str:
    """"北京时间" for China's zone (what a manager calls it), else the IANA name."""
    return t("stats.zone.china") if tz in ("Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "PRC") else tz


def _hour(h: int) -> str:
    return f"{h:02d}:00–{(h + 1) % 24:02d}:00"


def _number_text(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")


def _sums_view(t: Translate, s: Sums) -> dict[str, Any]:
    return {
        "calls": s.calls, "answered": s.answered, "missed": s.calls - s.answered,
        "rate": percent(s.answer_rate), "rate_value": "" if s.answer_rate is None else f"{s.answer_rate:.4f}",
        "talk": duration(t, s.talk_seconds), "talk_seconds": s.talk_seconds,
        "avg": duration(t, s.average_talk_seconds),
        "avg_seconds": "" if s.average_talk_seconds is None else f"{s.average_talk_seconds:.1f}",
    }


# -- the page's parts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Staffing:
    weekday: int
    hour: int
    weekdays_in_period: int
    calls: int  # agent calls in that weekday-hour over the period
    per_hour: float
    handle_seconds: float | None
    agents: int | None
    reached: float | None
    fewer_reached: float | None


def staffing(stats: NumberStatistics) -> Staffing | None:
    """The busiest weekday-hour (most calls for agents per occurrence), and the agents it needs by Erlang C."""
    cells = [
        (stats.week[wd][h].agent_calls / stats.weekday_counts[wd], -(wd * 24 + h), wd, h)
        for wd in range(7) for h in range(24) if stats.weekday_counts[wd] and stats.week[wd][h].agent_calls
    ]
    if not cells:
        return None
    per_hour, _, wd, h = max(cells)
    handle = stats.total.average_talk_seconds
    agents = reached = fewer = None
    if handle is not None and handle > 0:
        agents, reached = agents_needed(per_hour, handle, TARGET_SECONDS, TARGET_LEVEL)
        fewer = service_level(agents - 1, per_hour * handle / 3600, handle, TARGET_SECONDS) if agents > 1 else None
    return Staffing(wd, h, stats.weekday_counts[wd], stats.week[wd][h].agent_calls, per_hour, handle, agents, reached, fewer)


def staffing_view(t: Translate, stats: NumberStatistics) -> dict[str, Any]:
    s = staffing(stats)
    out: dict[str, Any] = {"agents": None, "hour": "", "sentence": "", "level": "", "problem": "", "peak": ""}
    if stats.busiest_hour is not None:
        when, sums = stats.busiest_hour
        out["peak"] = t("stats.staffing.peak", day=f"{when.date().isoformat()} {t(f'stats.wdshort.{when.weekday()}')}",
                        hour=_hour(when.hour), calls=sums.calls, answered=sums.answered)
    if s is None:
        out["problem"] = t("stats.staffing.no_calls")
        return out
    if s.agents is None or s.reached is None:
        out["problem"] = t("stats.staffing.no_talk")
        return out
    weekday = t(f"stats.wd.{s.weekday}")
    out["agents"] = s.agents
    out["sentence"] = t("stats.staffing.sentence", weekday=weekday, hour=_hour(s.hour), count=s.weekdays_in_period, calls=s.calls,
                        per_hour=_number_text(s.per_hour), talk=duration(t, s.handle_seconds), seconds=TARGET_SECONDS,
                        level=round(TARGET_LEVEL * 100), agents=s.agents)
    out["hour"] = t("stats.staffing.when", weekday=weekday, hour=_hour(s.hour))
    out["level"] = t("stats.staffing.level", agents=s.agents, seconds=TARGET_SECONDS, reached=math.floor(s.reached * 100))
    if s.fewer_reached is not None:
        out["level"] += t("stats.staffing.fewer", fewer=s.agents - 1, fewer_reached=math.floor(s.fewer_reached * 100))
    else:
        out["level"] += t("stats.staffing.stop")
    return out


def heat_view(t: Translate, stats: NumberStatistics) -> dict[str, Any]:
    """The heatmap's rows (hours) and cells (weekdays); hours before the first call and after the last are left out."""
    busy_hours = [h for h in range(24) if any(stats.week[wd][h].calls for wd in range(7))]
    if not busy_hours:
        return {"rows": [], "trimmed": False}
    top = max(stats.week[wd][h].calls for wd in range(7) for h in range(24))
    rows = []
    for h in range(busy_hours[0], busy_hours[-1] + 1):
        cells = []
        for wd in range(7):
            s = stats.week[wd][h]
            level = math.ceil(HEAT_LEVELS * s.calls / top) if s.calls else 0
            low = s.answer_rate is not None and s.answer_rate < LOW_RATE
            cells.append({
                "calls": s.calls, "answered": s.answered, "rate": f"{s.answer_rate * 100:.0f}%" if s.answer_rate is not None else "",
                "cls": f"heat-{level}" + (" rate-low" if low else ""),
                "title": t("stats.heat.cell", weekday=t(f"stats.wd.{wd}"), hour=_hour(h), calls=s.calls, answered=s.answered,
                           rate=percent(s.answer_rate)),
            })
        rows.append({"hour": f"{h:02d}:00", "range": _hour(h), "cells": cells})
    return {"rows": rows, "trimmed": len(rows) < 24}


def line_names(config: RoutingConfig, number: str) -> dict[str, str]:
    plan = config.plans.get(number)
    names: dict[str, str] = {}
    if plan is not None:
        for group in plan.hunt_groups.values():
            for line in group.lines:
                names.setdefault(line.id, line.name or "")
    return names


def lines_view(t: Translate, lines: tuple[LineSums, ...], names: Mapping[str, str], answered_calls: int) -> list[dict[str, Any]]:
    answers = sum(line.answered for line in lines) or answered_calls
    out = []
    for line in lines:
        share = line.answered / answers if answers else 0.0
        out.append({
            "id": line.line_id, "name": names.get(line.line_id, ""), "rung": line.rung, "answered": line.answered,
            "rate": percent(line.answer_rate), "share": percent(share) if answers else "—", "bar": f"w-{round(share * 20) * 5}",
            "busy": line.busy, "no_answer": line.no_answer, "unreachable": line.unreachable, "caller_hung_up": line.caller_hung_up,
            "full": line.full, "talk": duration(t, line.talk_seconds), "talk_seconds": line.talk_seconds,
            "avg": duration(t, line.average_talk_seconds),
        })
    return out


def chart_data(t: Translate, stats: NumberStatistics) -> dict[str, Any]:
    """What static/stats.js draws: one value per day, in the page's language."""
    days = stats.days
    return {
        "labels": [d.strftime("%m-%d") for d, _ in days],
        "calls": [s.calls for _, s in days],
        "answered": [s.answered for _, s in days],
        "rate": [None if s.answer_rate is None else round(s.answer_rate * 100, 1) for _, s in days],
        "talk": [round(s.talk_seconds / 60, 1) for _, s in days],
        "avg": [None if s.average_talk_seconds is None else round(s.average_talk_seconds / 60, 2) for _, s in days],
        "names": {key: t(f"stats.chart.{key}") for key in ("day", "calls", "answered", "rate", "talk", "avg")},
    }


def quick_links(number: str, today: date) -> list[dict[str, str]]:
    return [
        {"key": f"stats.quick.{n}", "from": (today - timedelta(days=n - 1)).isoformat(), "to": today.isoformat(), "number": number}
        for n in QUICK_RANGES
    ]


def page_context(t: Translate, stats: NumberStatistics, config: RoutingConfig) -> dict[str, Any]:
    one_year = stats.first_day.year == stats.last_day.year  # the year is in the period line above the tables
    days = [{"iso": d.isoformat(), "label": f"{d.strftime('%m-%d') if one_year else d.isoformat()} {t(f'stats.wdshort.{d.weekday()}')}",
             **_sums_view(t, s)} for d, s in stats.days]
    return {
        "total": _sums_view(t, stats.total),
        "days": days,
        "staffing": staffing_view(t, stats),
        "heat": heat_view(t, stats),
        "weekdays": [t(f"stats.wdshort.{wd}") for wd in range(7)],
        "lines": lines_view(t, stats.lines, line_names(config, stats.number), stats.total.answered),
        # the rarer outcomes get a column only when some line had them
        "line_columns": [key for key in OPTIONAL_LINE_COLUMNS if any(getattr(line, key) for line in stats.lines)],
        "chart": chart_data(t, stats),
        "period": t("stats.period", number=stats.number, first=stats.first_day.isoformat(), last=stats.last_day.isoformat(),
                    days=len(stats.days), timezone=zone_name(t, stats.timezone)),
    }


# -- handlers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    choices: list[tuple[str, str]]
    query: Query
    today: date  # in the number's time zone
    stats: NumberStatistics | None  # None when the form has errors or there is no number
    config: RoutingConfig


async def _load(request: web.Request) -> Loaded:
    scope = require(request, READ)
    deps = console_deps(request)
    choices, number = await _asked(request, scope)
    config = deps.holder.current
    tz = timezone_of(config, number) if number else config.service.timezone
    today = deps.now().astimezone(ZoneInfo(tz)).date()
    q = read_query(request.query, number, today, translator(pick_language(request)))
    stats = None
    if number and not q.errors and q.first is not None and q.last is not None:
        stats = await number_statistics(deps.engine, number, q.first, q.last, tz, numbers=scope.numbers)
        if stats is None:
            raise not_found()
    return Loaded(choices, q, today, stats, config)


async def stats_page(request: web.Request) -> web.StreamResponse:
    loaded = await _load(request)
    q = loaded.query
    t = translator(pick_language(request))
    context: dict[str, Any] = {
        "choices": loaded.choices, "q": q, "stats": loaded.stats, "quick": quick_links(q.number, loaded.today),
        "low_rate": round(LOW_RATE * 100),
    }
    if loaded.stats is not None:
        context.update(page_context(t, loaded.stats, loaded.config))
    return render(request, "stats.html", context, status=400 if q.errors else 200)


async def stats_csv(request: web.Request) -> web.StreamResponse:
    """The daily table as CSV, for a spreadsheet; every export is in the audit log."""
    loaded = await _load(request)
    stats = loaded.stats
    if stats is None:
        raise web.HTTPBadRequest(text="; ".join(loaded.query.errors.values()) or "no number")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "day", "calls", "answered", "answer_rate", "talk_seconds", "average_talk_seconds"])
    for d, s in stats.days:
        w.writerow([stats.number, d.isoformat(), s.calls, s.answered, "" if s.answer_rate is None else f"{s.answer_rate:.4f}",
                    s.talk_seconds, "" if s.average_talk_seconds is None else f"{s.average_talk_seconds:.1f}"])
    await audit(request, "stats_export", f"stats/{stats.number}",
                after={"number": stats.number, "from": stats.first_day.isoformat(), "to": stats.last_day.isoformat(), "rows": len(stats.days)})
    name = f"stats-{stats.number}-{stats.first_day.isoformat()}-{stats.last_day.isoformat()}.csv"
    # With a byte-order mark, so that Excel reads the file as UTF-8.
    return web.Response(body=buf.getvalue().encode("utf-8-sig"),
                        headers={"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="{name}"'})
