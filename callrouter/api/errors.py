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
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        _not_begun(request, request_id, exc)
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        response = error_response(exc.status, _message(exc), headers)
    except ApiError as exc:
        _not_begun(request, request_id, exc)
        response = error_response(exc.status, exc.message, **exc.extra)
    except Exception as exc:
        _not_begun(request, request_id, exc)
        log.exception("admin API: request %s %s failed (request id %s)", request.method, request.path[:200], request_id)
        response = error_response(500, f"internal error; the server log has the details under request id {request_id}")
    response.headers["X-Request-Id"] = request_id
    return response


def _not_begun(request: web.Request, request_id: str, exc: Exception) -> None:
    """A streamed response (CSV) that has begun cannot become an error response: one would be spliced into
    the other. Re-raised instead, aiohttp cuts the connection, so the client sees an incomplete body."""
    if request.writer.output_size > 0:
        log.error("admin API: %s %s failed after its response began (request id %s); the connection is cut: %r",
                  request.method, request.path[:200], request_id, exc)
        raise exc


def _message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 413:
        return "request body too large"
    return exc.text or exc.reason
