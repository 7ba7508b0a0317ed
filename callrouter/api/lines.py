"""Line health as this router sees it: every line of every plan the request may see (or one number),
working or suspended, and why. The console's number page and overview ("2 of 5 lines working") are
meant to show the same `number_view`."""

from __future__ import annotations

from aiohttp import web

from callrouter.api import params
from callrouter.api.context import deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.routing.health import number_views, plans_keys
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
    keys = plans_keys([p for _, p in plans], template)
    records = await deps.line_health(keys) if deps.line_health is not None else await read_lines(deps.engine, keys)
    views = number_views([p for _, p in plans], template, records, deps.clock().timestamp(), config.service.timezone)
    return web.json_response({"numbers": views})
