"""Building the admin API application and serving it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from callrouter.api import blacklist, calls, health, lines, plans, recordings, reports
from callrouter.api.auth import auth_middleware, browser_guard, check_bind, exempt_apps
from callrouter.api.context import CURSOR_KEY, DEPS, PENDING, SETTINGS, AdminDeps
from callrouter.api.errors import ApiError, Handler, error_response, errors_middleware
from callrouter.api.openapi import document
from callrouter.api.params import check_query, cursor_key
from callrouter.config.service import Admin
from callrouter.store.api_tokens import scope_of_token
from callrouter.store.tenants import Scope

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024

ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("GET", "/healthz", health.healthz),
    ("GET", "/readyz", health.readyz),
    ("GET", "/metrics", health.metrics),
    ("GET", "/api/calls", calls.search),
    ("GET", "/api/calls.csv", calls.export_csv),
    ("GET", "/api/calls/{uniqueid}", calls.one_call),
    ("GET", "/api/calls/{uniqueid}/recording", recordings.by_call),
    ("GET", "/api/recordings/{path:.+}", recordings.by_path),
    ("GET", "/api/blacklist", blacklist.list_entries),
    ("POST", "/api/blacklist", blacklist.add_entry),
    ("DELETE", "/api/blacklist/{scope}/{caller}", blacklist.remove_entry),
    ("GET", "/api/stats/{number}", reports.stats),
    ("GET", "/api/plans", reports.plans),
    ("GET", "/api/plans/{number}/versions", plans.history),
    ("GET", "/api/plans/{number}/versions/{version}", plans.one_version),
    ("PUT", "/api/plans/{number}", plans.save),
    ("POST", "/api/plans/{number}/restore/{version}", plans.restore),
    ("GET", "/api/lines", lines.status),
    ("POST", "/api/reload", reports.reload),
]


@dataclass(frozen=True)
class BodyCap:
    """A larger body for one POST route of a mounted app (the console's prompt upload), and that app's own
    refusal page for a body over it. Every other route keeps MAX_BODY."""

    max_bytes: int
    refuse: Callable[[web.Request], web.StreamResponse]


# route name -> its cap, set by a mounted app on itself (console/app.py), read by body_limit_middleware
BODY_CAPS = web.AppKey("body_caps", Mapping[str, BodyCap])


def body_cap(request: web.Request) -> BodyCap | None:
    """The cap the innermost app that routed this POST declared for its route, if any."""
    route = request.match_info.route
    if request.method != "POST" or route.method != "POST" or route.name is None:
        return None
    apps = request.match_info.apps
    caps = apps[-1].get(BODY_CAPS) if apps else None
    return caps.get(route.name) if caps else None


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """MAX_BODY on every route, before its handler runs: aiohttp's client_max_size only bites when a handler
    reads the body, so a route that ignores it (reload) would act on a 2 MB request. A declared length over
    the cap is refused unread; a chunked body is read (counted as it arrives) and kept for the handler.

    A route with a BodyCap gets its larger cap instead: over it by declared length, refused unread (with
    the mounted app's page); within it, the handler reads the body itself (aiohttp stops at the cap)."""
    cap = body_cap(request)
    if cap is not None:
        if request.content_length is not None and request.content_length > cap.max_bytes:
            log.warning("admin API: refused %s %s: body over %d bytes", request.method, request.path[:200], cap.max_bytes)
            match = request.match_info
            outer, match.current_app = match.current_app, match.apps[-1]  # the mounted app's templates and settings
            try:
                response = cap.refuse(request)
            finally:
                match.current_app = outer
            response.force_close()
            return response
        return await handler(request.clone(client_max_size=cap.max_bytes))
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _too_large(request)
    if request.body_exists:
        try:
            await request.read()  # cached: the handler's read() gets these bytes
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request)
    return await handler(request)


def _too_large(request: web.Request) -> web.StreamResponse:
    log.warning("admin API: refused %s %s: body over %d bytes", request.method, request.path[:200], MAX_BODY)
    response = error_response(413, f"request body too large (at most {MAX_BODY // 1024} KiB)")
    response.force_close()  # the rest of the body is drained, not parsed as a next request
    return response


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        query = request.query
    except UnicodeDecodeError:
        raise ApiError(400, "query string is not valid UTF-8") from None
    check_query(query)
    return await handler(request)


def build_admin_app(
    deps: AdminDeps, settings: Admin, token: str | None, mounts: Mapping[str, web.Application] | None = None
) -> web.Application:
    """The API; `mounts` are sub-applications (prefix -> app) that authenticate their own users (the console)."""
    mounted = dict(mounts or {})
    exempt = exempt_apps(list(mounted.values()))

    async def tenant_token(secret: str) -> Scope | None:
        return await scope_of_token(deps.engine, secret, now=deps.clock())

    middlewares = [errors_middleware, browser_guard(token, settings.host, exempt), auth_middleware(token, tenant_token, exempt),
                   body_limit_middleware, limits_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[DEPS] = deps
    app[SETTINGS] = settings
    app[PENDING] = set()
    app[CURSOR_KEY] = cursor_key(token)
    spec = document()

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(spec)

    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/openapi.json", openapi)
    for prefix, sub in mounted.items():
        app.add_subapp(prefix, sub)
    return app


class AdminServer:
    """The API on its own port; stops promptly (a download in progress is cut after a short grace)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, token: str | None) -> None:
        check_bind(host, token)
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    @property
    def port(self) -> int:
        assert self._runner is not None
        address: Any = self._runner.addresses[0]
        return int(address[1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await asyncio.shield(runner.cleanup())
