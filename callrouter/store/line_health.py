"""Line health rows: read many at once, and apply one Dial outcome atomically.

The rule that changes a record is `routing.health.apply_outcome`; this module only makes it atomic
across routers. A failure: the row is locked (inserted first if new, so two routers cannot both create
it) and read, the rule applied, and the result written, in one transaction. An answer: the row is
deleted, returning what it held, in one statement. A line that works has no row, so the usual answered
call costs one DELETE that finds nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.routing.health import LineRecord, apply_outcome, counts
from callrouter.store.dialect import insert_ignore, upsert_set
from callrouter.store.schema import line_health

_COLUMNS = (
    line_health.c.line_key, line_health.c.unavailable, line_health.c.noanswer, line_health.c.since,
    line_health.c.last_failure, line_health.c.last_status, line_health.c.updated_at,
)


def _record(row: Any) -> LineRecord:
    """A row of `_COLUMNS` as the routing layer's record."""
    return LineRecord(
        key=row.line_key, unavailable=int(row.unavailable), noanswer=int(row.noanswer),
        since=None if row.since is None else float(row.since),
        last_failure=None if row.last_failure is None else float(row.last_failure),
        last_status=row.last_status, updated_at=float(row.updated_at),
    )


def _values(record: LineRecord) -> dict[str, Any]:
    return {
        "unavailable": record.unavailable, "noanswer": record.noanswer, "since": record.since,
        "last_failure": record.last_failure, "last_status": record.last_status[:16], "updated_at": record.updated_at,
    }


async def read_lines(engine: AsyncEngine, keys: Sequence[str]) -> dict[str, LineRecord]:
    """The records of these lines; lines that work (no row) are left out."""
    if not keys:
        return {}
    query = select(*_COLUMNS).where(line_health.c.line_key.in_(list(dict.fromkeys(keys))))
    async with engine.connect() as conn:
        return {row.line_key: _record(row) for row in (await conn.execute(query)).all()}


async def report(engine: AsyncEngine, key: str, status: str, at: float) -> tuple[LineRecord, LineRecord]:
    """Apply one outcome to a line; (before, after). A line that answers again loses its row; a status that
    counts for nothing, or a clean line answering, writes nothing."""
    fresh = LineRecord(key)
    if not counts(status):
        current = (await read_lines(engine, (key,))).get(key, fresh)
        return current, current
    if status == "ANSWER":  # every answered call: one statement, and nothing to write for a line that works
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            gone = (await conn.execute(delete(line_health).where(line_health.c.line_key == key).returning(*_COLUMNS))).first()
        before = fresh if gone is None else _record(gone)
        return before, apply_outcome(before, status, at)
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        # The row is inserted first if new, so the lock below covers a line's first failure too.
        await conn.execute(insert_ignore(line_health, dialect, ["line_key"]), {"line_key": key, **_values(fresh)})
        row = (await conn.execute(select(*_COLUMNS).where(line_health.c.line_key == key).with_for_update())).first()
        before = fresh if row is None else _record(row)
        after = apply_outcome(before, status, at)
        if after != before:
            # An upsert, not an update: an answer on another router may have deleted the row since our insert.
            write = upsert_set(line_health, dialect, ["line_key"], list(_values(after)))
            await conn.execute(write, {"line_key": key, **_values(after)})
    return before, after
