"""What a console page handler needs, in one place: the deps, the scope, permissions, rendering, the audit log.

A page handler does:

    scope = require(request, READ)              # the logged-in user's Scope (403 without the permission)
    deps = console_deps(request)                # engine, config holder, clock, settings
    rows = await search_calls(deps.engine, f, 50, numbers=scope.numbers)
    await audit(request, "calls_export", "calls.csv", after={...})
    return render(request, "calls.html", {"rows": rows})

Another tenant's number or row must answer `not_found()`, never 403 and never its data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api.context import AdminDeps
from callrouter.config.holder import ConfigHolder
from callrouter.config.service import Console
from callrouter.console.i18n import LANG_COOKIE, LANGS, pick_language, translator
from callrouter.console.passwords import Passwords
from callrouter.console.proxies import client_address
from callrouter.store.audit import AuditEvent, record
from callrouter.store.tenants import PROVIDER, READ, USERS, Scope
from callrouter.store.web_sessions import LiveSession

PREFIX = "/console"


@dataclass(frozen=True)
class ConsoleDeps:
    admin: AdminDeps  # engine, config holder, blacklist store, clock: shared with the API
    settings: Console
    passwords: Passwords

    @property
    def engine(self) -> AsyncEngine:
        return self.admin.engine

    @property
    def holder(self) -> ConfigHolder:
        return self.admin.holder

    def now(self) -> datetime:
        return self.admin.clock()


CONSOLE = web.AppKey("console", ConsoleDeps)
SESSION = web.RequestKey("console_session", LiveSession)  # set by the session middleware when the cookie is valid


@dataclass(frozen=True)
class NavItem:
    name: str  # the route name, to mark the current page
    path: str
    label_key: str
    permission: str | None  # None: every logged-in user


# The menu, in order. Page builders register a route under `name` at `path`.
NAV: tuple[NavItem, ...] = (
    NavItem("overview", f"{PREFIX}/", "nav.overview", None),
    NavItem("calls", f"{PREFIX}/calls", "nav.calls", READ),
    NavItem("stats", f"{PREFIX}/stats", "nav.stats", READ),
    NavItem("blacklist", f"{PREFIX}/blacklist", "nav.blacklist", READ),
    NavItem("numbers", f"{PREFIX}/numbers", "nav.numbers", READ),
    NavItem("audit", f"{PREFIX}/audit", "nav.audit", READ),
    NavItem("tenants", f"{PREFIX}/tenants", "nav.tenants", PROVIDER),
    NavItem("users", f"{PREFIX}/users", "nav.users", USERS),
)


def console_deps(request: web.Request) -> ConsoleDeps:
    return request.app[CONSOLE]


def session_of(request: web.Request) -> LiveSession | None:
    live: LiveSession | None = request.get(SESSION)
    return live


def scope_of(request: web.Request) -> Scope:
    """The logged-in user's scope. The login gate has run, so every page but login has one."""
    live = session_of(request)
    if live is None or live.scope is None:
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    return live.scope


def require(request: web.Request, permission: str) -> Scope:
    """The scope, if it has `permission`; else 403 (a permission is not another tenant's data)."""
    scope = scope_of(request)
    if not scope.can(permission):
        raise web.HTTPForbidden()
    return scope


def not_found() -> web.HTTPNotFound:
    """What another tenant's number, call, recording or entry answers: the same as one that does not exist."""
    return web.HTTPNotFound()


def see_other(location: str) -> web.Response:
    """303 to `location` (after a form post), as a response that cookies can be set on."""
    return web.Response(status=303, headers={"Location": location})


def address_of(request: web.Request) -> str:
    """The client's address (through trusted proxies), for the audit log and login limits."""
    return client_address(request, console_deps(request).settings.trusted_proxies)


async def audit(request: web.Request, action: str, target: str, *,
                before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
                for_tenant: int | None = None) -> None:
    """Append to the audit log as the logged-in user, from the client's address.

    `for_tenant`: the tenant a provider's action concerns (a user or blacklist entry of that company), so
    the company sees it in its own log; a tenant's user always writes to its own tenant."""
    deps = console_deps(request)
    scope = scope_of(request)
    event = AuditEvent.by(scope, address_of(request), action, target, before, after)
    if scope.is_provider and for_tenant is not None:
        event = dataclasses.replace(event, tenant_id=for_tenant)
    await record(deps.engine, event, now=deps.now())


def nav_items(scope: Scope | None, lang: str, current: str | None) -> list[dict[str, Any]]:
    if scope is None:
        return []
    t = translator(lang)
    return [
        {"href": item.path, "label": t(item.label_key), "current": item.name == current}
        for item in NAV
        if item.permission is None or scope.can(item.permission)
    ]


def render(request: web.Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200) -> web.Response:
    """A page from `templates/`, with what base.html needs (t, lang, scope, csrf, nav); `context` may override.

    Remembers `?lang=` in a cookie, and pages are never cached (Cache-Control: no-store, set for every page)."""
    lang = pick_language(request)
    live = session_of(request)
    scope = live.scope if live is not None else None
    route_name = request.match_info.route.name
    other = "en" if lang == "zh" else "zh"
    base: dict[str, Any] = {
        "t": translator(lang),
        "lang": lang,
        "scope": scope,
        "csrf": live.session.csrf_token if live is not None else "",
        "nav": nav_items(scope, lang, route_name),
        "other_lang_href": str(request.rel_url.update_query(lang=other)),
        "prefix": PREFIX,
    }
    response = aiohttp_jinja2.render_template(template, request, {**base, **(context or {})}, status=status)
    asked = request.query.get("lang")
    if asked in LANGS and request.cookies.get(LANG_COOKIE) != asked:
        response.set_cookie(LANG_COOKIE, str(asked), max_age=365 * 86400, path=f"{PREFIX}/", httponly=True, samesite="Lax")
    return response
