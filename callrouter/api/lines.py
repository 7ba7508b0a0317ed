"""Line health as this router sees it: every line of every plan the request may see (or one number),
working or suspended, and why. The console's number page and overview ("2 of 5 lines working") are
meant to show the same `number_view`."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.api import params
from callrouter.api.context import deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.routing.health import number_view, plan_keys, plan_lines
from callrouter.store.line_health import read_lines


async def status(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    config = deps.holder.current
    scope = scope_of(request)
    plans = [(n, p) for n, p in sorted(config.plans.items()) if scope.allows(n)]
    if "number" in request.query:
        number = params.number(request.query["number"])
        plans = [(n, p) for n, p in plans if n == number]
        if not plans:
            raise ApiError(404, f"no plan routes {number}")  # another tenant's number: the same answer
    template = config.service.dialing.template
    keys = tuple(dict.fromkeys(k for _, plan in plans for k in plan_keys(plan, template)))
    records = await deps.line_health(keys) if deps.line_health is not None else await read_lines(deps.engine, keys)
    now = deps.clock().timestamp()
    out = []
    for _, plan in plans:
        tz = ZoneInfo(plan.timezone or config.service.timezone)
        out.append(number_view(plan, plan_lines(plan, template, records, now), tz, now))
    return web.json_response({"numbers": out})
