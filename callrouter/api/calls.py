"""Call records: search (keyset pages), CSV export (streamed), one call with its attempts."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api import params
from callrouter.api.context import CURSOR_KEY, deps_of
from callrouter.api.errors import ApiError
from callrouter.store.cdr_store import find_call
from callrouter.store.schema import calls

log = logging.getLogger(__name__)
EXPORT_PAGE = 1000  # rows per query of a CSV export
LIST_COLUMNS = (
    "id", "uniqueid", "source", "number", "caller", "caller_raw", "caller_name", "started_at", "answered_at", "ended_at",
    "duration_seconds", "billable_seconds", "ring_seconds", "disposition", "reason", "ivr_path", "hunt_group",
    "strategy", "answered_line", "recording_file", "recording_purged_at", "voicemail_file", "instance", "router_ms",
)
_SELECT = [calls.c[name] for name in LIST_COLUMNS]
_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class CallFilter:
    number: str | None = None
    caller: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    dispositions: tuple[str, ...] = ()

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.number:
            clauses.append(calls.c.number == self.number)
        if self.caller:
            clauses.append(calls.c.caller == self.caller)
        if self.since:
            clauses.append(calls.c.started_at >= self.since)
        if self.until:
            clauses.append(calls.c.started_at < self.until)
        if self.dispositions:
            clauses.append(calls.c.disposition.in_(self.dispositions))
        return clauses


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


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return value


def call_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = {name: _json_value(row[name]) for name in LIST_COLUMNS}
    out["ivr_path"] = [p for p in (row["ivr_path"] or "").split(">") if p]
    return out


def _page(f: CallFilter, limit: int, after: tuple[datetime, int] | None) -> Select[Any]:
    q = select(*_SELECT).where(*f.where())
    if after is not None:
        at, row_id = after
        q = q.where(or_(calls.c.started_at < at, and_(calls.c.started_at == at, calls.c.id < row_id)))
    return q.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(limit)


def _started(row: Mapping[str, Any]) -> datetime:
    at: datetime = row["started_at"]
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


async def search(request: web.Request) -> web.Response:
    deps, settings = deps_of(request)
    query = request.query
    f = parse_filter(query, ZoneInfo(deps.holder.current.service.timezone))
    limit = params.integer(query["limit"], "limit", 1, settings.max_page_size) if "limit" in query else settings.page_size
    key = request.app[CURSOR_KEY]
    after = params.decode_cursor(query["cursor"], key) if "cursor" in query else None
    async with deps.engine.connect() as conn:
        rows = [r._mapping for r in (await conn.execute(_page(f, limit + 1, after))).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = params.encode_cursor(_started(rows[-1]), rows[-1]["id"], key) if more else None
    return web.json_response({"calls": [call_json(r) for r in rows], "next_cursor": next_cursor})


def csv_cell(value: Any) -> str:
    """A spreadsheet must never run a caller's text as a formula."""
    text = "" if value is None else str(_json_value(value))
    return "'" + text if text.startswith(_CSV_RISKY) else text


async def export_csv(request: web.Request) -> web.StreamResponse:
    deps, settings = deps_of(request)
    f = parse_filter(request.query, ZoneInfo(deps.holder.current.service.timezone))
    async with deps.engine.connect() as conn:
        count = int((await conn.execute(select(func.count()).select_from(calls).where(*f.where()))).scalar_one())
    if count > settings.export_max_rows:
        raise ApiError(413, f"{count} calls match; one export holds at most {settings.export_max_rows}: narrow the time range", matching=count)
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": 'attachment; filename="calls.csv"'}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await _stream_rows(response, deps.engine, f)
    except _ClientGone:  # nothing to answer and no failure of ours; aiohttp closes the connection
        log.info("admin API: CSV export abandoned by the client %s", request.remote)
        return response
    await response.write_eof()
    return response


class _ClientGone(Exception):
    """The client closed the connection during an export (told apart from a database connection reset)."""


async def _stream_rows(response: web.StreamResponse, engine: AsyncEngine, f: CallFilter) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LIST_COLUMNS)
    after: tuple[datetime, int] | None = None
    while True:  # keyset pages: memory stays flat whatever the export's size
        async with engine.connect() as conn:
            rows = [r._mapping for r in (await conn.execute(_page(f, EXPORT_PAGE, after))).all()]
        for row in rows:
            writer.writerow([csv_cell(row[name]) for name in LIST_COLUMNS])
        try:
            await response.write(buffer.getvalue().encode("utf-8"))
        except ConnectionResetError:
            raise _ClientGone from None
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < EXPORT_PAGE:
            return
        after = (_started(rows[-1]), rows[-1]["id"])


async def load_call(request: web.Request) -> dict[str, Any]:
    """By uniqueid; `?source=` picks the Asterisk when two share a uniqueid, else the newest call is taken."""
    deps, _ = deps_of(request)
    uniqueid = request.match_info["uniqueid"]
    if len(uniqueid) > 64:
        raise ApiError(400, "uniqueid: at most 64 characters")
    source = request.query.get("source")
    if source is not None and len(source) > 80:
        raise ApiError(400, "source: at most 80 characters")
    async with deps.engine.connect() as conn:
        found = await find_call(conn, uniqueid, source)
    if found is None:
        raise ApiError(404, f"no call with uniqueid {uniqueid[:64]!r}" + (f" from source {source[:80]!r}" if source is not None else ""))
    row, attempts = found
    out = call_json(row)
    out["trace"] = row["trace"].split("\n") if row["trace"] else []
    out["attempts"] = [{k: a[k] for k in ("seq", "line_id", "target", "status", "ring_seconds", "talk_seconds")} for a in attempts]
    return out


async def one_call(request: web.Request) -> web.Response:
    return web.json_response(await load_call(request))
