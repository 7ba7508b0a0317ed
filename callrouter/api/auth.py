"""Bearer-token auth: the token comes from config or CALLROUTER_ADMIN_TOKEN; none means loopback only.

Every route needs the token except the few that probes and Prometheus call (PUBLIC): a route added
later is protected unless someone decides otherwise here."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Mapping

from aiohttp import web

from callrouter.api.errors import Handler, error_response
from callrouter.config.service import Admin

log = logging.getLogger(__name__)
TOKEN_ENV = "CALLROUTER_ADMIN_TOKEN"
PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


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


def auth_middleware(token: str | None) -> web.middleware:  # type: ignore[valid-type]
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and not _public(request):
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.strip().partition(" ")
            # the scheme is case-insensitive (RFC 9110); the token is compared in constant time
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
                challenge = {"WWW-Authenticate": 'Bearer realm="callrouter"'}
                reason = "missing bearer token" if not header else "wrong bearer token"
                return error_response(401, f"{reason}: send Authorization: Bearer <admin token>", challenge)
        return await handler(request)

    return middleware


def _public(request: web.Request) -> bool:
    """By the route matched, not the raw path: an unknown route (404) is not public either."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC
