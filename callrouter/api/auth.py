"""Bearer-token auth on /api: the token comes from config or CALLROUTER_ADMIN_TOKEN; none means loopback only."""

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
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                challenge = {"WWW-Authenticate": 'Bearer realm="callrouter"'}
                reason = "missing bearer token" if not given else "wrong bearer token"
                return error_response(401, f"{reason}: send Authorization: Bearer <admin token>", challenge)
        return await handler(request)

    return middleware
