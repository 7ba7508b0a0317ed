"""A call search as CSV, shared by the admin API (`GET /api/calls.csv`) and the console's export.

The rows come in keyset pages (store/calls.py), so memory stays flat however large the export; each
chunk is the UTF-8 bytes of one page of rows. A cell a spreadsheet would run as a formula is defused.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.calls import CALL_FIELDS, CallFilter, search_calls

CSV_COLUMNS = CALL_FIELDS  # the header row, in this order (the API's listing uses the same keys)
EXPORT_PAGE = 1000  # rows per query of an export
_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")


def iso_utc(value: Any) -> Any:
    """A datetime as ISO 8601 in UTC (naive ones are UTC); anything else unchanged."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return value


def csv_cell(value: Any) -> str:
    """A spreadsheet must never run a caller's text as a formula."""
    text = "" if value is None else str(iso_utc(value))
    return "'" + text if text.startswith(_CSV_RISKY) else text


def filter_json(f: CallFilter) -> dict[str, Any]:
    """A filter as the audit log records it."""
    return {"number": f.number, "caller": f.caller, "from": iso_utc(f.since), "to": iso_utc(f.until),
            "disposition": list(f.dispositions)}


async def csv_chunks(engine: AsyncEngine, f: CallFilter, *, numbers: frozenset[str] | None,
                     page: int = EXPORT_PAGE) -> AsyncIterator[bytes]:
    """The header and every matching call of `numbers` (None: any), newest first, one chunk per page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    after: tuple[datetime, int] | None = None
    while True:
        rows = await search_calls(engine, f, page, after, numbers=numbers)
        for row in rows:
            writer.writerow([csv_cell(getattr(row, name)) for name in CSV_COLUMNS])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < page:
            return
        after = (rows[-1].started_at, rows[-1].id)
