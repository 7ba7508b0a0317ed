"""Every error the API gives is JSON with a clear message and the right status; nothing leaks a traceback."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


_KEEP_HEADERS = ("WWW-Authenticate", "Allow")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = uuid.uuid4().hex[:12]
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        response = error_response(exc.status, _message(exc), headers)
    except Exception:
        log.exception("admin API: request %s %s failed (request id %s)", request.method, request.path[:200], request_id)
        response = error_response(500, f"internal error; the server log has the details under request id {request_id}")
    response.headers["X-Request-Id"] = request_id
    return response


def _message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body too large"
    return exc.text or exc.reason
