"""租户 Tenants and 用户 Users: the provider's companies and their numbers; each company's accounts.

Provider staff see every tenant with its numbers and account count, add tenants, and assign or unassign
numbers. Owners (and provider staff, for any company) see the company's users with their roles and
recording permissions, add a user with a first password, change a role, disable or enable a user, and
log a user out everywhere. The same store functions as `callrouter tenants` / `callrouter users`, and
every change is audited with the values before and after (in the company's log when the provider acts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.console.context import PREFIX, audit, console_deps, not_found, render, require, see_other
from callrouter.console.i18n import pick_language, translator
from callrouter.console.passwords import password_problem
from callrouter.store.tenants import (
    PROVIDER, PROVIDER_ROLE, TENANT_ROLES, USERS, AccountError, Scope, Tenant, User, add_number, add_tenant, add_user,
    check_number, check_username, get_tenant, get_user, list_tenants, list_users, number_owner, remove_number,
    set_disabled, set_role,
)
from callrouter.store.web_sessions import revoke_user_sessions

log = logging.getLogger(__name__)
T = Callable[..., str]
TENANTS = f"{PREFIX}/tenants"
USERS_PAGE = f"{PREFIX}/users"
MAX_FIELD = 200
MAX_PASSWORD = 1024


def _field(post: Any, name: str, limit: int = MAX_FIELD) -> str:
    value = post.get(name, "")
    return value.strip()[:limit + 1] if isinstance(value, str) else ""


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        raise not_found()
    return int(text)


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(console_deps(request).holder.current.service.timezone)


# -- tenants (provider staff) -----------------------------------------------------------------------


@dataclass(frozen=True)
class NumberCell:
    number: str
    planned: bool  # a plan routes it


@dataclass(frozen=True)
class TenantRow:
    id: int
    name: str
    numbers: tuple[NumberCell, ...]
    users: int
    created: str


async def _tenants_page(request: web.Request, *, error: str | None = None, form_name: str = "", error_tenant: int | None = None,
                        status: int = 200) -> web.Response:
    deps = console_deps(request)
    zone = _zone(request)
    plans = deps.holder.current.plans
    tenants = await list_tenants(deps.engine)
    counts: dict[int, int] = {}
    for user in await list_users(deps.engine, tenant_id=None):
        if user.tenant_id is not None:
            counts[user.tenant_id] = counts.get(user.tenant_id, 0) + 1
    rows = [TenantRow(x.id, x.name, tuple(NumberCell(n, n in plans) for n in sorted(x.numbers)), counts.get(x.id, 0),
                      x.created_at.astimezone(zone).strftime("%Y-%m-%d")) for x in tenants]
    owned = {n for x in tenants for n in x.numbers}
    done = request.query.get("done")
    return render(request, "tenants.html", {
        "rows": rows, "unowned": sorted(n for n in plans if n not in owned), "error": error, "error_tenant": error_tenant,
        "form_name": form_name, "done": done if done in ("added", "assigned", "unassigned") else None,
        "done_name": request.query.get("name", "")[:120],
    }, status=status)


async def tenants_page(request: web.Request) -> web.StreamResponse:
    require(request, PROVIDER)
    return await _tenants_page(request)


async def tenant_add(request: web.Request) -> web.StreamResponse:
    require(request, PROVIDER)
    deps = console_deps(request)
    t = translator(pick_language(request))
    name = _field(await request.post(), "name", 121)
    if not 1 <= len(name) <= 120 or not name.isprintable():
        return await _tenants_page(request, error=t("accounts.tenants.error.name"), form_name=name, status=422)
    try:
        tenant = await add_tenant(deps.engine, name, now=deps.now())
    except AccountError:
        return await _tenants_page(request, error=t("accounts.tenants.error.taken"), form_name=name, status=422)
    await audit(request, "tenant_add", tenant.name, after={"name": tenant.name}, for_tenant=tenant.id)
    return see_other(f"{TENANTS}?" + urlencode({"done": "added", "name": tenant.name}))


async def _tenant(request: web.Request) -> Tenant:
    tenant = await get_tenant(console_deps(request).engine, _id(request))
    if tenant is None:
        raise not_found()
    return tenant


async def tenant_number_add(request: web.Request) -> web.StreamResponse:
    require(request, PROVIDER)
    deps = console_deps(request)
    t = translator(pick_language(request))
    tenant = await _tenant(request)
    number = _field(await request.post(), "number", 21).replace("-", "").replace(" ", "")
    try:
        check_number(number)
    except AccountError:
        return await _tenants_page(request, error=t("accounts.tenants.error.number"), error_tenant=tenant.id, status=422)
    owner = await number_owner(deps.engine, number)
    if owner is not None and owner != tenant.id:
        return await _tenants_page(request, error=t("accounts.tenants.error.owned"), error_tenant=tenant.id, status=422)
    try:
        await add_number(deps.engine, tenant.id, number, now=deps.now())
    except AccountError:
        return await _tenants_page(request, error=t("accounts.tenants.error.owned"), error_tenant=tenant.id, status=422)
    if owner is None:
        await audit(request, "tenant_number_add", number, after={"tenant": tenant.name, "number": number}, for_tenant=tenant.id)
    return see_other(f"{TENANTS}?done=assigned")


async def tenant_number_remove(request: web.Request) -> web.StreamResponse:
    require(request, PROVIDER)
    deps = console_deps(request)
    tenant = await _tenant(request)
    number = _field(await request.post(), "number", 21)
    if number not in tenant.numbers or not await remove_number(deps.engine, tenant.id, number):
        raise not_found()
    await audit(request, "tenant_number_remove", number, before={"tenant": tenant.name, "number": number}, for_tenant=tenant.id)
    return see_other(f"{TENANTS}?done=unassigned")


# -- users (owners for their company, provider staff for any) ----------------------------------------


@dataclass(frozen=True)
class UserRow:
    id: int
    username: str
    tenant: str
    role: str
    is_provider: bool
    can_listen: bool
    can_download: bool
    disabled: bool
    last_login: str | None
    is_you: bool
    permissions_text: str  # 收听、下载 (or that there are none)


def _tenant_filter(request: web.Request, scope: Scope) -> int | None:
    """The company whose users are shown: the owner's own; for the provider `?tenant=` (None: everyone)."""
    if not scope.is_provider:
        return scope.tenant_id
    text = request.query.get("tenant", "")
    return int(text) if text.isdigit() and len(text) < 18 else None


async def _users_page(request: web.Request, scope: Scope, *, tenant_id: int | None, error: str | None = None,
                      form: dict[str, str] | None = None, status: int = 200) -> web.Response:
    deps = console_deps(request)
    zone = _zone(request)
    tenants = await list_tenants(deps.engine) if scope.is_provider else []
    if scope.is_provider and tenant_id is not None and all(x.id != tenant_id for x in tenants):
        raise not_found()
    users = await list_users(deps.engine, tenant_id=tenant_id)
    t = translator(pick_language(request))
    rows = [UserRow(u.id, u.username, u.tenant_name or "", u.role, u.role == PROVIDER_ROLE, u.can_listen, u.can_download,
                    u.disabled_at is not None,
                    u.last_login_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if u.last_login_at else None,
                    u.id == scope.user_id, _permissions_text(u, t)) for u in users]
    done = request.query.get("done")
    return render(request, "users.html", {
        "rows": rows, "tenants": [(x.id, x.name) for x in tenants], "tenant_id": tenant_id,
        "roles": TENANT_ROLES, "error": error,
        "form": form or {"username": "", "role": "viewer", "listen": "on", "download": "", "tenant": str(tenant_id or "")},
        "done": done if done in ("added", "changed", "disabled", "enabled", "revoked") else None,
        "done_name": request.query.get("name", "")[:80], "done_count": request.query.get("count", "0")[:6],
        "back_query": urlencode({"tenant": tenant_id}) if scope.is_provider and tenant_id is not None else "",
    }, status=status)


def _permissions_text(user: User, t: T) -> str:
    granted = [t(f"accounts.users.perm.{p}") for p, on in (("listen", user.can_listen), ("download", user.can_download)) if on]
    return t("numbers.sep.list").join(granted) or t("accounts.users.perm.none")


async def users_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, USERS)
    return await _users_page(request, scope, tenant_id=_tenant_filter(request, scope))


def _back(scope: Scope, tenant_id: int | None, **done: str) -> web.Response:
    query: dict[str, Any] = {}
    if scope.is_provider and tenant_id is not None:
        query["tenant"] = tenant_id
    query.update(done)
    return see_other(f"{USERS_PAGE}?{urlencode(query)}")


async def user_add(request: web.Request) -> web.StreamResponse:
    scope = require(request, USERS)
    deps = console_deps(request)
    t = translator(pick_language(request))
    post = await request.post()
    password = post.get("password", "")
    password = password[:MAX_PASSWORD + 1] if isinstance(password, str) else ""
    form = {"username": _field(post, "username", 81), "role": _field(post, "role"), "tenant": _field(post, "tenant", 19),
            "listen": "on" if post.get("listen") else "", "download": "on" if post.get("download") else ""}
    tenant_id = scope.tenant_id
    if scope.is_provider:
        tenant_id = int(form["tenant"]) if form["tenant"].isdigit() else None
    shown_tenant = _tenant_filter(request, scope) if scope.is_provider else tenant_id

    async def refuse(key: str) -> web.Response:
        return await _users_page(request, scope, tenant_id=shown_tenant, error=t(key), form=form, status=422)

    if tenant_id is None or (scope.is_provider and await get_tenant(deps.engine, tenant_id) is None):
        return await refuse("accounts.users.error.tenant")
    try:
        username = check_username(form["username"])
    except AccountError:
        return await refuse("accounts.users.error.username")
    if form["role"] not in TENANT_ROLES:
        return await refuse("accounts.users.error.role")
    if password_problem(password) is not None:
        return await refuse("accounts.users.error.password")
    hashed = await deps.passwords.hash(password)
    try:
        user = await add_user(deps.engine, username, hashed, form["role"], tenant_id, can_listen=bool(form["listen"]),
                              can_download=bool(form["download"]), now=deps.now())
    except AccountError:
        return await refuse("accounts.users.error.taken")
    await audit(request, "user_add", user.username, after=user.audit_json(), for_tenant=user.tenant_id)
    log.info("console: %s added the user %s", scope.username, user.username)
    return _back(scope, shown_tenant, done="added", name=user.username)


async def _target(request: web.Request, scope: Scope) -> User:
    """The user named in the path, if this scope manages it; another company's user answers 404."""
    user = await get_user(console_deps(request).engine, _id(request))
    if user is None or (not scope.is_provider and user.tenant_id != scope.tenant_id):
        raise not_found()
    return user


async def _refuse_self(request: web.Request, scope: Scope, user: User) -> web.Response | None:
    if user.id != scope.user_id:
        return None
    t = translator(pick_language(request))
    return await _users_page(request, scope, tenant_id=_tenant_filter(request, scope) if scope.is_provider else scope.tenant_id,
                             error=t("accounts.users.error.self"), status=422)


async def user_role(request: web.Request) -> web.StreamResponse:
    scope = require(request, USERS)
    user = await _target(request, scope)
    t = translator(pick_language(request))
    refused = await _refuse_self(request, scope, user)
    if refused is not None:
        return refused
    post = await request.post()
    role = _field(post, "role")
    shown = user.tenant_id if scope.is_provider else scope.tenant_id
    if user.role == PROVIDER_ROLE:
        return await _users_page(request, scope, tenant_id=None, error=t("accounts.users.error.provider_role"), status=422)
    if role not in TENANT_ROLES:
        return await _users_page(request, scope, tenant_id=shown, error=t("accounts.users.error.role"), status=422)
    changed = await set_role(console_deps(request).engine, user, role, can_listen=bool(post.get("listen")),
                             can_download=bool(post.get("download")))
    await audit(request, "user_role", user.username, before=user.audit_json(), after=changed.audit_json(), for_tenant=user.tenant_id)
    return _back(scope, shown, done="changed")


async def _set_disabled(request: web.Request, disable: bool) -> web.StreamResponse:
    scope = require(request, USERS)
    deps = console_deps(request)
    user = await _target(request, scope)
    refused = await _refuse_self(request, scope, user)
    if refused is not None:
        return refused
    now = deps.now()
    await set_disabled(deps.engine, user.id, now if disable else None)
    if disable:
        await revoke_user_sessions(deps.engine, user.id, now)  # logged out at once, on every device
    changed = await get_user(deps.engine, user.id)
    assert changed is not None
    await audit(request, "user_disable" if disable else "user_enable", user.username, before=user.audit_json(),
                after=changed.audit_json(), for_tenant=user.tenant_id)
    return _back(scope, user.tenant_id if scope.is_provider else scope.tenant_id, done="disabled" if disable else "enabled")


async def user_disable(request: web.Request) -> web.StreamResponse:
    return await _set_disabled(request, True)


async def user_enable(request: web.Request) -> web.StreamResponse:
    return await _set_disabled(request, False)


async def user_revoke(request: web.Request) -> web.StreamResponse:
    scope = require(request, USERS)
    deps = console_deps(request)
    user = await _target(request, scope)
    refused = await _refuse_self(request, scope, user)
    if refused is not None:
        return refused
    ended = await revoke_user_sessions(deps.engine, user.id, deps.now())
    await audit(request, "user_revoke_sessions", user.username, after={"sessions_ended": ended}, for_tenant=user.tenant_id)
    return _back(scope, user.tenant_id if scope.is_provider else scope.tenant_id, done="revoked", count=str(ended))
