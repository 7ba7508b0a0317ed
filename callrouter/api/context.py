"""What handlers need, kept on the aiohttp application under typed keys (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.service import Admin
from callrouter.config.holder import ConfigHolder
from callrouter.routing.health import LineRecord
from callrouter.store.audit import AuditEvent, record
from callrouter.store.blacklist import BlacklistStore
from callrouter.store.tenants import Scope


def _always_ready() -> str | None:
    return None


@dataclass(frozen=True)
class AdminDeps:
    holder: ConfigHolder
    engine: AsyncEngine
    blacklist: BlacklistStore
    refresh_blacklist: Callable[[], Awaitable[None]]  # this instance applies a change at once; others within store.blacklist_refresh
    metrics: Sequence[Callable[[], bytes]]  # exposition sources served together by GET /metrics
    clock: Callable[[], datetime]
    extra_ready: Callable[[], str | None] = _always_ready  # a reason when not ready (e.g. exporter loading)
    # Line health as this router sees it (its routing state: the database when shared, else its memory);
    # None: read from the database.
    line_health: Callable[[tuple[str, ...]], Awaitable[Mapping[str, LineRecord]]] | None = None


DEPS = web.AppKey("deps", AdminDeps)
SETTINGS = web.AppKey("settings", Admin)
PENDING = web.AppKey("pending", set)  # probes abandoned past their budget, referenced until they end
CURSOR_KEY = web.AppKey("cursor_key", bytes)  # signs page cursors (params.cursor_key)
SCOPE = web.RequestKey("scope", Scope)  # set by auth_middleware from the token: what this request may see


def deps_of(request: web.Request) -> tuple[AdminDeps, Admin]:
    return request.app[DEPS], request.app[SETTINGS]


def scope_of(request: web.Request) -> Scope:
    """The scope auth_middleware found for the request's token (every /api route has one)."""
    return request[SCOPE]


async def audit(request: web.Request, action: str, target: str, *, before: dict[str, object] | None = None,
                after: dict[str, object] | None = None) -> None:
    """Append to the audit log as the request's token, from its address."""
    deps = request.app[DEPS]
    event = AuditEvent.by(scope_of(request), request.remote or "", action, target, before, after)
    await record(deps.engine, event, now=deps.clock())
