"""Call records: search (keyset pages), CSV export (streamed), one call with its attempts."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api import params
from callrouter.api.context import CURSOR_KEY, audit, deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.store.call_export import csv_chunks, filter_json
from callrouter.store.calls import CALL_FIELDS, CallFilter, StoredCall, count_calls, find_call, search_calls
from callrouter.store.tenants import Scope

log = logging.getLogger(__name__)
LIST_COLUMNS = CALL_FIELDS  # the keys of a listed call and the CSV columns (store/call_export.py), in this order


def parse_filter(query: MultiMapping[str], tz: ZoneInfo) -> CallFilter:
    since = params.when(query["from"], "from", tz) if "from" in query else None
    until = params.when(query["to"], "to", tz) if "to" in query else None
    if since and until and until <= since:
        raise ApiError(400, "to: must be after from")
    return CallFilter(
        number=params.number(query["number"]) if "number" in query else None,
        caller=params.caller(query["caller"]) if "caller" in query else None,
        since=since,
        until=until,
        dispositions=tuple(params.dispositions(query.getall("disposition"))) if "disposition" in query else (),
    )


def scoped_filter(request: web.Request, tz: ZoneInfo) -> tuple[CallFilter, Scope]:
    """The query's filter and the request's scope; a number outside the scope is 404, like one never seen."""
    scope = scope_of(request)
    f = parse_filter(request.query, tz)
    if f.number is not None and not scope.allows(f.number):
        raise ApiError(404, f"no number {f.number}")
    return f, scope


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return value


def call_json(call: StoredCall) -> dict[str, Any]:
    out = {name: _json_value(getattr(call, name)) for name in LIST_COLUMNS}
    out["ivr_path"] = [p for p in (call.ivr_path or "").split(">") if p]
    return out


async def search(request: web.Request) -> web.Response:
    deps, settings = deps_of(request)
    query = request.query
    f, scope = scoped_filter(request, ZoneInfo(deps.holder.current.service.timezone))
    limit = params.integer(query["limit"], "limit", 1, settings.max_page_size) if "limit" in query else settings.page_size
    key = request.app[CURSOR_KEY]
    after = params.decode_cursor(query["cursor"], key) if "cursor" in query else None
    rows = await search_calls(deps.engine, f, limit + 1, after, numbers=scope.numbers)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = params.encode_cursor(rows[-1].started_at, rows[-1].id, key) if more else None
    return web.json_response({"calls": [call_json(r) for r in rows], "next_cursor": next_cursor})


async def export_csv(request: web.Request) -> web.StreamResponse:
    deps, settings = deps_of(request)
    f, scope = scoped_filter(request, ZoneInfo(deps.holder.current.service.timezone))
    count = await count_calls(deps.engine, f, numbers=scope.numbers)
    if count > settings.export_max_rows:
        raise ApiError(413, f"{count} calls match; one export holds at most {settings.export_max_rows}: narrow the time range", matching=count)
    await audit(request, "calls_export", "calls.csv", after={"filter": filter_json(f), "rows": count})
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": 'attachment; filename="calls.csv"'}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await _stream_rows(response, deps.engine, f, scope.numbers)
    except _ClientGone:  # nothing to answer and no failure of ours; aiohttp closes the connection
        log.info("admin API: CSV export abandoned by the client %s", request.remote)
        return response
    await response.write_eof()
    return response


class _ClientGone(Exception):
    """The client closed the connection during an export (told apart from a database connection reset)."""


async def _stream_rows(response: web.StreamResponse, engine: AsyncEngine, f: CallFilter, numbers: frozenset[str] | None) -> None:
    async for chunk in csv_chunks(engine, f, numbers=numbers):  # keyset pages: memory stays flat whatever the export's size
        try:
            await response.write(chunk)
        except ConnectionResetError:
            raise _ClientGone from None


async def load_call(request: web.Request) -> dict[str, Any]:
    """By uniqueid; `?source=` picks the Asterisk when two share a uniqueid, else the newest call is taken."""
    deps, _ = deps_of(request)
    uniqueid = request.match_info["uniqueid"]
    if len(uniqueid) > 64:
        raise ApiError(400, "uniqueid: at most 64 characters")
    source = request.query.get("source")
    if source is not None and len(source) > 80:
        raise ApiError(400, "source: at most 80 characters")
    found = await find_call(deps.engine, uniqueid, source, numbers=scope_of(request).numbers)
    if found is None:
        raise ApiError(404, f"no call with uniqueid {uniqueid[:64]!r}" + (f" from source {source[:80]!r}" if source is not None else ""))
    out = call_json(found.call)
    out["trace"] = found.trace.split("\n") if found.trace else []
    out["attempts"] = [asdict(a) for a in found.attempts]
    return out


async def one_call(request: web.Request) -> web.Response:
    return web.json_response(await load_call(request))
