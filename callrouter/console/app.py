"""The console application, mounted by the admin API at /console/ (callrouter/app.py does the mount).

`build_console_app` registers the routes, the security middlewares (console/security.py), the templates
(aiohttp-jinja2, autoescaped) and the static files. Page builders add a route here with a name (the
name marks the current menu item, console/context.NAV) and a handler that uses console/context.py.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from callrouter.api.context import AdminDeps
from callrouter.config.service import Console
from callrouter.console import auth, pages
from callrouter.console import accounts, audit as audit_pages, blacklist as blacklist_pages, numbers as number_pages
from callrouter.console import live
from callrouter.console import plan_edit
from callrouter.console import plan_prompts, plan_testcall
from callrouter.console import calls as call_pages
from callrouter.console import stats
from callrouter.console.context import CONSOLE, ConsoleDeps
from callrouter.console.passwords import Passwords
from callrouter.console.security import MIDDLEWARES

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"


async def _to_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(request.path + "/")


def build_console_app(deps: AdminDeps, settings: Console, passwords: Passwords | None = None) -> web.Application:
    app = web.Application(middlewares=list(MIDDLEWARES))
    console = ConsoleDeps(deps, settings, passwords or Passwords())
    app[CONSOLE] = console
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value is escaped; nothing in the templates is marked safe
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error in the tests, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.router.add_get("", _to_slash, name="bare")  # /console -> /console/
    app.router.add_get("/", pages.overview, name="overview")
    app.router.add_get("/login", auth.login_form, name="login")
    app.router.add_post("/login", auth.login_submit, name="login_submit")
    app.router.add_post("/logout", auth.logout, name="logout")
    # Each page's routes go in its own block below (the name marks the menu item: console/context.NAV).
    # -- live (overview figures, calls in progress) --
    live.add_routes(app)  # /live/events: the overview's calls in progress, as Server-Sent Events
    # -- calls --
    app.router.add_get("/calls", call_pages.calls_page, name="calls")
    app.router.add_get("/calls.csv", call_pages.calls_export, name="calls_export")
    app.router.add_get("/calls/{uniqueid}", call_pages.call_page, name="call")
    app.router.add_get("/calls/{uniqueid}/recording", call_pages.recording_listen, name="call_recording")
    app.router.add_get("/calls/{uniqueid}/recording/download", call_pages.recording_download, name="call_recording_download")
    # -- stats --
    app.router.add_get("/stats", stats.stats_page, name="stats")
    app.router.add_get("/stats.csv", stats.stats_csv, name="stats_csv")
    # -- blacklist --
    blacklist_resource = app.router.add_resource("/blacklist", name="blacklist")
    blacklist_resource.add_route("GET", blacklist_pages.blacklist_page)
    blacklist_resource.add_route("POST", blacklist_pages.blacklist_add)
    app.router.add_post("/blacklist/remove", blacklist_pages.blacklist_remove, name="blacklist_remove")
    # -- numbers --
    app.router.add_get("/numbers", number_pages.numbers_page, name="numbers")
    app.router.add_get("/numbers/{number}", number_pages.number_page, name="number_plan")
    # -- plan edits (issue 14): numbers/{number}/edit/..., versions, restore --
    plan_edit.add_routes(app)
    # -- prompts and the test call (issue 14): numbers/{number}/prompts..., numbers/{number}/test-call... --
    plan_prompts.add_routes(app)  # also the upload route's larger body cap (BODY_CAPS)
    plan_testcall.add_routes(app)
    # -- audit --
    app.router.add_get("/audit", audit_pages.audit_page, name="audit")
    # -- accounts (tenants, users) --
    tenants_resource = app.router.add_resource("/tenants", name="tenants")
    tenants_resource.add_route("GET", accounts.tenants_page)
    tenants_resource.add_route("POST", accounts.tenant_add)
    app.router.add_post("/tenants/{id}/numbers", accounts.tenant_number_add, name="tenant_number_add")
    app.router.add_post("/tenants/{id}/numbers/remove", accounts.tenant_number_remove, name="tenant_number_remove")
    users_resource = app.router.add_resource("/users", name="users")
    users_resource.add_route("GET", accounts.users_page)
    users_resource.add_route("POST", accounts.user_add)
    app.router.add_post("/users/{id}/role", accounts.user_role, name="user_role")
    app.router.add_post("/users/{id}/disable", accounts.user_disable, name="user_disable")
    app.router.add_post("/users/{id}/enable", accounts.user_enable, name="user_enable")
    app.router.add_post("/users/{id}/revoke", accounts.user_revoke, name="user_revoke")
    app.router.add_static("/static/", STATIC, name="static", follow_symlinks=False)

    async def prepare(_: web.Application) -> None:
        await console.passwords.prepare()  # the dummy hash for unknown users, before the first login

    app.on_startup.append(prepare)
    return app
