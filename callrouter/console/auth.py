"""Logging in and out of the console.

GET /console/login makes a pre-login session (its cookie carries the form's CSRF token). POST checks
the login limits first (failures per username and per address over `login_window`, in the database so
every router agrees: 429 with Retry-After, even for the right password), then the password (argon2id in
a thread; an unknown user costs the same), then deletes the pre-login session and makes a new one: the
session id changes at login. Logins, failed logins and logouts are audited.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from callrouter.console.context import PREFIX, address_of, audit, console_deps, render, scope_of, see_other, session_of
from callrouter.console.i18n import pick_language, translate
from callrouter.console.security import clear_session_cookie, set_session_cookie
from callrouter.store.audit import AuditEvent, record
from callrouter.store.tenants import find_user, normalize_username, record_login, set_password_hash
from callrouter.store.web_sessions import (
    FailureCounts, add_failure, clear_failures, count_failures, create_session, delete_session, revoke_session,
)

log = logging.getLogger(__name__)
PRE_LOGIN_LIFETIME = timedelta(hours=2)
MAX_PASSWORD = 1024


def safe_next(value: object) -> str:
    """Where to go after login: a console path only (never another site: no open redirect)."""
    if not isinstance(value, str) or len(value) > 500 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return f"{PREFIX}/"  # a control character (CR LF) would break the Location header: never reflected
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(f"{PREFIX}/") or "\\" in value or value.startswith("//"):
        return f"{PREFIX}/"
    return value


def _user_agent(request: web.Request) -> str:
    return request.headers.get("User-Agent", "")[:200]


async def login_form(request: web.Request) -> web.StreamResponse:
    live = session_of(request)
    next_path = safe_next(request.query.get("next"))
    if live is not None and live.scope is not None:
        raise web.HTTPSeeOther(next_path)
    return await _form(request, next_path, None, 200)


async def _form(request: web.Request, next_path: str, error: str | None, status: int) -> web.StreamResponse:
    """The login form, with a pre-login session if the request has none."""
    deps = console_deps(request)
    live = session_of(request)
    token = None
    if live is not None:
        csrf = live.session.csrf_token
    else:
        lifetime = min(PRE_LOGIN_LIFETIME, timedelta(seconds=deps.settings.session_lifetime))
        token, session = await create_session(deps.engine, user_id=None, now=deps.now(), lifetime=lifetime,
                                              address=address_of(request), user_agent=_user_agent(request))
        csrf = session.csrf_token
    response = render(request, "login.html", {"csrf": csrf, "next": next_path, "error": error}, status=status)
    if token is not None:
        set_session_cookie(response, request, deps.settings, token, None)
    return response


def retry_after(counts: FailureCounts, now: datetime, window: timedelta, per_user: int, per_address: int) -> int | None:
    """Seconds until another attempt is allowed, or None when it is allowed now. Pure."""
    waits = []
    if counts.by_user >= per_user and counts.oldest_by_user is not None:
        waits.append(counts.oldest_by_user + window - now)
    if counts.by_address >= per_address and counts.oldest_by_address is not None:
        waits.append(counts.oldest_by_address + window - now)
    if not waits:
        return None
    return max(1, math.ceil(max(waits).total_seconds()))


async def login_submit(request: web.Request) -> web.StreamResponse:
    deps = console_deps(request)
    settings = deps.settings
    form = await request.post()
    username = normalize_username(str(form.get("username", "")))[:80]
    password = str(form.get("password", ""))[:MAX_PASSWORD]
    next_path = safe_next(form.get("next"))
    address = address_of(request)
    now = deps.now()
    lang = pick_language(request)
    window = timedelta(seconds=settings.login_window)

    counts = await count_failures(deps.engine, username, address, now - window)
    wait = retry_after(counts, now, window, settings.login_failures_per_user, settings.login_failures_per_address)
    if wait is not None:
        log.warning("console: login for %r from %s refused for %d s: too many failures", username[:80], address, wait)
        response = await _form(request, next_path, translate(lang, "login.too_many", minutes=math.ceil(wait / 60)), 429)
        response.headers["Retry-After"] = str(wait)
        return response

    found = await find_user(deps.engine, username) if username else None
    matches = await deps.passwords.verify(found.password_hash if found else None, password)
    if found is None or not matches or found.user.disabled_at is not None:
        reason = "no such user" if found is None else ("wrong password" if not matches else "user disabled")
        await add_failure(deps.engine, username, address, now, keep=max(window, timedelta(days=1)))
        user = found.user if found else None
        await record(deps.engine, AuditEvent(
            "login_failed", username, user.tenant_id if user else None, user.id if user else None, username, address,
            after={"reason": reason}), now=now)
        log.info("console: failed login for %r from %s (%s)", username[:80], address, reason)
        return await _form(request, next_path, translate(lang, "login.failed"), 401)

    user = found.user
    if deps.passwords.needs_rehash(found.password_hash):
        await set_password_hash(deps.engine, user.id, await deps.passwords.hash(password))
    await clear_failures(deps.engine, username)
    old = session_of(request)
    if old is not None:
        await delete_session(deps.engine, old.session.id)  # the pre-login id is never valid again
    token, _ = await create_session(deps.engine, user_id=user.id, now=now, lifetime=timedelta(seconds=settings.session_lifetime),
                                    address=address, user_agent=_user_agent(request))
    await record_login(deps.engine, user.id, now)
    await record(deps.engine, AuditEvent("login", user.username, user.tenant_id, user.id, user.username, address), now=now)
    log.info("console: %s logged in from %s", user.username, address)
    response = see_other(next_path)
    set_session_cookie(response, request, settings, token, int(settings.session_lifetime))
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    deps = console_deps(request)
    scope = scope_of(request)
    live = session_of(request)
    assert live is not None
    await revoke_session(deps.engine, live.session.id, deps.now())
    await audit(request, "logout", scope.username)
    response = see_other(f"{PREFIX}/login")
    clear_session_cookie(response, request, deps.settings)
    return response
