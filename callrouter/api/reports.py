"""Statistics by day and hour, the loaded plans, and reload."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.api import params
from callrouter.api.context import deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.config.plan import NumberPlan
from callrouter.routing.hours import check_hours
from callrouter.store.stats import number_report

MAX_DAYS = 366


async def stats(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    number = params.number(request.match_info["number"])
    if not scope_of(request).allows(number):
        raise ApiError(404, f"no number {number}")
    config = deps.holder.current
    plan = config.plans.get(number)
    tz = (plan.timezone if plan else None) or config.service.timezone
    today = deps.clock().astimezone(ZoneInfo(tz)).date()
    last = params.day(request.query["to"], "to") if "to" in request.query else today
    first = params.day(request.query["from"], "from") if "from" in request.query else last - timedelta(days=6)
    if last < first:
        raise ApiError(400, "to: must not be before from")
    if (last - first).days >= MAX_DAYS:
        raise ApiError(400, f"from/to: at most {MAX_DAYS} days per request")
    report = await number_report(deps.engine, number, first, last, tz)
    return web.json_response(report.to_json())


def plan_summary(plan: NumberPlan, source: str, open_now: bool) -> dict[str, Any]:
    return {
        "number": plan.number,
        "name": plan.name,
        "file": source,
        "timezone": plan.timezone,
        "open_now": open_now,
        "entry": {"kind": plan.entry.kind, "target": plan.entry.target},
        "menus": sorted(plan.menus),
        "hunt_groups": [
            {
                "name": name,
                "strategy": group.strategy,
                "lines": [
                    {"id": line.id, "name": line.name, "number": line.number, "target": line.target, "enabled": line.enabled}
                    for line in group.lines
                ],
            }
            for name, group in plan.hunt_groups.items()
        ],
        "recording": plan.recording.enabled,
    }


async def plans(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    config = deps.holder.current
    now = deps.clock()
    scope = scope_of(request)
    out = []
    for number, plan in sorted(config.plans.items()):
        if not scope.allows(number):
            continue
        hours = check_hours(plan.schedule, plan.timezone or config.service.timezone, now)
        out.append(plan_summary(plan, config.sources[number], hours.open) | {"version": config.version_of(number)})
    return web.json_response({"plans": out})


async def reload(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    issues = await deps.holder.reload_issues()
    if issues:
        return web.json_response(
            {
                "error": f"reload refused: {len(issues)} problem(s); the running configuration is unchanged",
                "issues": [{"file": i.file, "line": i.line, "message": i.message} for i in issues],
            },
            status=422,
        )
    return web.json_response({"reloaded": True, "plans": len(deps.holder.current.plans)})
