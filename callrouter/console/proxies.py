"""Who the client is and how it reached us, believing X-Forwarded-* only from the configured proxies.

Behind a TLS reverse proxy the router sees plain HTTP from the proxy's address: the proxy's
`X-Forwarded-Proto: https` makes the session cookie Secure, its `X-Forwarded-For` names the client (for
the audit log and the per-address login limit). From any other address these headers are ignored, or a
client could pick its own address and dodge the limit.
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

from aiohttp import hdrs, web
from yarl import URL

from callrouter.config.service import IpNetwork


def _trusted(address: str, proxies: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(request: web.Request, proxies: Sequence[IpNetwork]) -> str:
    """The peer's address; through trusted proxies, the nearest X-Forwarded-For hop that is not one of them."""
    remote = request.remote or ""
    if not proxies or not _trusted(remote, proxies):
        return remote
    hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a garbled header: stay with what we know
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else remote


def is_secure(request: web.Request, proxies: Sequence[IpNetwork]) -> bool:
    """TLS to us, or TLS to a trusted proxy that says so."""
    if request.secure:
        return True
    if not proxies or not _trusted(request.remote or "", proxies):
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[-1].strip().lower() == "https"


def origin_key(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default ports filled in; None when it is not http(s)."""
    try:
        url = URL(value.strip())
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    try:
        port = url.port
    except ValueError:
        return None
    return url.scheme, url.host.lower(), int(port or (443 if url.scheme == "https" else 80))


def own_origin(request: web.Request, configured: str | None, proxies: Sequence[IpNetwork]) -> tuple[str, str, int] | None:
    """Where the console's pages come from: the configured origin, else the request's scheme and Host."""
    if configured:
        return origin_key(configured)
    host = request.headers.get(hdrs.HOST)
    if not host:
        return None
    return origin_key(("https" if is_secure(request, proxies) else "http") + "://" + host)
