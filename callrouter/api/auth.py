"""Bearer-token auth: the token comes from config or CALLROUTER_ADMIN_TOKEN; none means loopback only.

Every route needs the token except the few that probes and Prometheus call (PUBLIC): a route added
later is protected unless someone decides otherwise here.

Without a token, "loopback only" is not enough: a page the operator's browser visits can reach loopback
too, by DNS rebinding (its own name pointed at 127.0.0.1: the Host header gives it away) or by a plain
cross-site form POST (the Origin header gives it away). So a token-less API serves only requests
addressed to a loopback name and not sent from a foreign page (browser_guard).

Besides the admin token (the provider's: every number), a tenant's API token (`callrouter tokens add`)
gives a scope of that tenant's numbers: `read` for GET, `write` also for the blacklist and plan routes. Routes of a
mounted application that authenticates its own users (the console) are left to it (`exempt`)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from typing import Awaitable, Callable, Collection, Mapping

from aiohttp import hdrs, web

from callrouter.api.context import SCOPE
from callrouter.api.errors import Handler, error_response
from callrouter.config.service import Admin
from callrouter.store.api_tokens import admin_token_scope
from callrouter.store.tenants import BLACKLIST, PLANS, PROVIDER, READ, Scope

TokenScopes = Callable[[str], Awaitable[Scope | None]]  # a tenant token's scope, or None

log = logging.getLogger(__name__)
TOKEN_ENV = "CALLROUTER_ADMIN_TOKEN"
PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[^\[\]:/@\s]+))(?::(?P<port>[0-9]{1,5}))?")


class AdminConfigError(Exception):
    """The API cannot start as configured."""


def admin_token(settings: Admin, environ: Mapping[str, str]) -> str | None:
    token = environ.get(TOKEN_ENV) or settings.token
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        raise AdminConfigError(f"{TOKEN_ENV}: the admin token must be at least 16 printable ASCII characters without spaces")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise AdminConfigError(
            f"admin API on {host}: set admin.token in config.yaml or {TOKEN_ENV} before listening on a non-loopback address"
        )
    if token is None:
        log.warning("admin API: no token configured; /api is open to anyone who can reach %s (loopback)", host)


def _authority(value: str, default_port: int) -> tuple[str, int] | None:
    """(host, port) of a Host header or an Origin's authority, lower-cased and unbracketed; None if malformed."""
    match = _AUTHORITY.fullmatch(value.strip().lower())
    if match is None:
        return None
    host = match.group("v6") or match.group("name")
    return host, int(match.group("port")) if match.group("port") else default_port


def _origin_authority(origin: str) -> tuple[str, int] | None:
    """The (host, port) a browser page came from: `scheme://host[:port]` and nothing else; `null` is None."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    ports = {"http": 80, "https": 443}
    if not sep or scheme not in ports or "/" in rest or "@" in rest:
        return None
    return _authority(rest, ports[scheme])


def exempt_apps(apps: Collection[web.Application]) -> Callable[[web.Request], bool]:
    """Whether the request was routed into one of `apps` (by the route matched, so no path spelling can
    reach an /api handler this way; a 404 inside a mount is the mount's)."""

    def exempt(request: web.Request) -> bool:
        return any(app in apps for app in request.match_info.apps)

    return exempt


def _never(_: web.Request) -> bool:
    return False


def browser_guard(token: str | None, listen_host: str, exempt: Callable[[web.Request], bool] = _never) -> web.middleware:  # type: ignore[valid-type]
    """Without a token: 403 for a non-loopback Host (DNS rebinding) and for an Origin other than the
    address itself (a page elsewhere posting a form or a fetch). With a token the token protects, and a
    reverse proxy may use any name. The console checks Origin and CSRF tokens itself (`exempt`)."""
    own = listen_host.strip("[]").lower()

    def allowed_host(host: str) -> bool:
        return is_loopback(host) or host == own

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None or exempt(request):
            return await handler(request)
        raw_host = request.headers.get(hdrs.HOST)
        target = _authority(raw_host, 80) if raw_host is not None else None
        if raw_host is not None and (target is None or not allowed_host(target[0])):
            log.warning("admin API: refused %s %s: Host %r is not a loopback name (no token; DNS rebinding?)",
                        request.method, request.path[:200], raw_host[:100])
            return error_response(403, "Host is not a loopback name: without an admin token the API answers only "
                                       "requests to localhost, 127.0.0.0/8 or [::1] (set admin.token to serve other names)")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            source = _origin_authority(origin)
            same = source is not None and allowed_host(source[0]) and (target is None or source == target)
            if not same:
                log.warning("admin API: refused %s %s: Origin %r is a foreign page (no token; cross-site request?)",
                            request.method, request.path[:200], origin[:100])
                return error_response(403, "Origin is a foreign page: without an admin token the API refuses requests "
                                           "that browser pages from other origins send")
        return await handler(request)

    return middleware


def auth_middleware(token: str | None, tenant_tokens: TokenScopes, exempt: Callable[[web.Request], bool] = _never) -> web.middleware:  # type: ignore[valid-type]
    """The request's scope from its bearer token: the admin token (or none configured, on loopback) is the
    provider's; a tenant token its tenant's. A scope's permissions decide the methods it may use."""
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request) or _public(request):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.strip().partition(" ")
        given = given.strip()
        scope: Scope | None = None
        # the scheme is case-insensitive (RFC 9110); the admin token is compared in constant time
        if scheme.lower() == "bearer" and given:
            if expected is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected):
                scope = admin_token_scope()
            else:
                scope = await tenant_tokens(given)
        if scope is None and expected is None:
            scope = admin_token_scope()  # no admin token configured: loopback only, as the provider
        if scope is None:
            challenge = {"WWW-Authenticate": 'Bearer realm="callrouter"'}
            reason = "missing bearer token" if not header else "wrong bearer token"
            return error_response(401, f"{reason}: send Authorization: Bearer <admin token or tenant API token>", challenge)
        needed = required_permission(request)
        if not scope.can(needed):
            log.warning("admin API: refused %s %s to %s: needs %s", request.method, request.path[:200], scope.username, needed)
            return error_response(403, _refusal(needed))
        request[SCOPE] = scope
        return await handler(request)

    return middleware


def required_permission(request: web.Request) -> str:
    """GET reads; the blacklist routes change entries; anything else that changes state is the provider's."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return READ
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical.startswith("/api/blacklist"):
        return BLACKLIST
    if resource is not None and resource.canonical.startswith("/api/plans/"):
        return PLANS  # a tenant's write token changes its own numbers' plans
    return PROVIDER


def _refusal(needed: str) -> str:
    if needed == BLACKLIST:
        return "this token may only read: blacklist changes need a token with write scope"
    if needed == PLANS:
        return "this token may only read: plan changes need a token with write scope"
    if needed == PROVIDER:
        return "only the provider's admin token may do this"
    return "this token may not read"


def _public(request: web.Request) -> bool:
    """By the route matched, not the raw path: an unknown route (404) is not public either."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC
