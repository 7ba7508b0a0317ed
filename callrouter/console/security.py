"""The console's web security, as middlewares in this order (outermost first):

* headers: CSP (everything is served from here: no inline script or style, no CDN), nosniff,
  Referrer-Policy, no framing, `Cache-Control: no-store` on pages;
* errors: every failure becomes an HTML page in the user's language (never a traceback);
* session: the server-side session named by the `callrouter_session` cookie (HttpOnly, SameSite=Lax,
  Secure behind TLS), its idle time pushed forward;
* login gate: every route but the login page and static files needs a logged-in session;
* CSRF: every unsafe method needs the session's token (form field `csrf` or header `X-CSRF-Token`) and an
  Origin (or Referer) of the console itself; else 403.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from datetime import timedelta
from urllib.parse import quote

from aiohttp import hdrs, web

from callrouter.api.errors import ApiError, Handler
from callrouter.config.service import Console
from callrouter.console.context import CONSOLE, PREFIX, SESSION, render
from callrouter.console.proxies import is_secure, origin_key, own_origin
from callrouter.console.i18n import pick_language, translate
from callrouter.store.web_sessions import load_session, touch

log = logging.getLogger(__name__)

COOKIE = "callrouter_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ROUTES = frozenset({"bare", "login", "login_submit", "static"})  # route names served without a logged-in session
TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often per session
_KEEP_HEADERS = ("Allow", "Retry-After")


class CsrfRefused(web.HTTPForbidden):
    """An unsafe request without the session's CSRF token or from another origin."""


def set_session_cookie(response: web.StreamResponse, request: web.Request, settings: Console, token: str, max_age: int | None) -> None:
    response.set_cookie(COOKIE, token, path=f"{PREFIX}/", httponly=True, samesite="Lax", max_age=max_age,
                        secure=is_secure(request, settings.trusted_proxies))


def clear_session_cookie(response: web.StreamResponse, request: web.Request, settings: Console) -> None:
    response.del_cookie(COOKIE, path=f"{PREFIX}/", httponly=True, samesite="Lax", secure=is_secure(request, settings.trusted_proxies))


def _is_static(request: web.Request) -> bool:
    return request.match_info.route.name == "static"


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects are raised; their headers get the same treatment
        _apply_headers(request, exc)
        raise
    _apply_headers(request, response)
    return response


def _apply_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Frame-Options"] = "DENY"
    headers["Cache-Control"] = "no-cache" if _is_static(request) else "no-store"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTML error pages. A page may raise web.HTTPNotFound etc. or api's ApiError (from api.params checks)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        return _error_page(request, exc.status, "error.403.csrf" if isinstance(exc, CsrfRefused) else None, headers=headers)
    except ApiError as exc:
        return _error_page(request, exc.status, None, detail=exc.message)
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        log.exception("console: %s %s failed (request id %s)", request.method, request.path[:200], request_id)
        return _error_page(request, 500, None, request_id=request_id)


def _error_page(request: web.Request, status: int, key: str | None, *, detail: str | None = None, request_id: str = "",
                headers: dict[str, str] | None = None) -> web.Response:
    lang = pick_language(request)
    known = status if status in (400, 403, 404, 405, 413, 500) else (500 if status >= 500 else 400)
    message = translate(lang, key or f"error.{known}", request_id=request_id) if known == 500 else translate(lang, key or f"error.{known}")
    response = render(request, "error.html", {"status": status, "message": message, "detail": detail,
                                              "csrf_failed": isinstance(key, str)}, status=status)
    response.headers.update(headers or {})
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_static(request):
        return await handler(request)
    token = request.cookies.get(COOKIE)
    if token:
        deps = request.app[CONSOLE]
        now = deps.now()
        live = await load_session(deps.engine, token, now=now, idle=timedelta(seconds=deps.settings.idle_timeout))
        if live is not None:
            request[SESSION] = live
            if now - live.session.last_seen_at >= TOUCH_EVERY:
                await touch(deps.engine, live.session.id, now)
    return await handler(request)


@web.middleware
async def login_gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Safe by default: a route added later needs a login unless it is named in PUBLIC_ROUTES."""
    if request.match_info.route.name in PUBLIC_ROUTES:
        return await handler(request)
    live = request.get(SESSION)
    if live is None or live.scope is None:
        target = f"{PREFIX}/login"
        if request.method in SAFE_METHODS and request.rel_url.path != f"{PREFIX}/":
            target += "?next=" + quote(str(request.rel_url), safe="")
        raise web.HTTPSeeOther(target)
    return await handler(request)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS:
        settings = request.app[CONSOLE].settings
        problem = _origin_problem(request, settings) or await _token_problem(request)
        if problem is not None:
            log.warning("console: refused %s %s from %s: %s", request.method, request.path[:200], request.remote, problem)
            raise CsrfRefused()
    return await handler(request)


def _origin_problem(request: web.Request, settings: Console) -> str | None:
    """Same origin by Origin, else by Referer; a request with neither is refused (browsers send Origin on POST)."""
    expected = own_origin(request, settings.origin, settings.trusted_proxies)
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None:  # `null` (a sandboxed frame, a redirect from elsewhere) is no origin of ours
        given, what = origin_key(origin), "Origin"
    elif request.headers.get(hdrs.REFERER):
        given, what = origin_key(request.headers[hdrs.REFERER]), "Referer"
    else:
        return "neither Origin nor Referer"
    if expected is None or given is None or given != expected:
        return f"{what} is not the console's own origin"
    return None


async def _token_problem(request: web.Request) -> str | None:
    live = request.get(SESSION)
    if live is None:
        return "no session (expired, or cookies are off)"
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not given:
        return "no CSRF token"
    if not hmac.compare_digest(given.encode("utf-8", "replace"), live.session.csrf_token.encode()):
        return "wrong CSRF token"
    return None


MIDDLEWARES = (headers_middleware, errors_middleware, session_middleware, login_gate_middleware, csrf_middleware)
