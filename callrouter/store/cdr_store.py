"""Writing a batch of CDRs: calls, their attempts and the statistics sums, in one transaction.

Idempotent: a call whose Asterisk uniqueid is already stored is skipped together with its attempts and
its share of the statistics, so replaying a spool after a crash or an outage never counts a call twice.
"""

from __future__ import annotations

from typing import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.cdr_rows import CdrRows, stats_deltas
from callrouter.store.db import require_current_schema
from callrouter.store.dialect import insert_ignore, upsert_add
from callrouter.store.schema import call_attempts, call_stats, calls, line_stats

_CALL_SUMS = ("calls", "billable_seconds", "rung_calls", "ring_seconds")
_LINE_SUMS = ("attempts", "ring_seconds", "talk_seconds")


class CdrStore:
    def __init__(self, engine: AsyncEngine, *, schema_checked: bool = True) -> None:
        self.engine = engine
        self.schema_checked = schema_checked  # False when the database was down at start: check before writing
        dialect = engine.dialect.name
        self._insert_calls = insert_ignore(calls, dialect, ["uniqueid"]).returning(calls.c.uniqueid)
        self._insert_attempts = insert_ignore(call_attempts, dialect, ["call_uniqueid", "seq"])
        self._add_call_stats = upsert_add(call_stats, dialect, ["number", "bucket", "disposition"], _CALL_SUMS)
        self._add_line_stats = upsert_add(line_stats, dialect, ["number", "bucket", "line_id", "status"], _LINE_SUMS)

    async def write(self, batch: Sequence[CdrRows]) -> int:
        """Store the batch; returns how many calls were new (the rest were already there)."""
        first: dict[str, CdrRows] = {}
        for rows in batch:  # a uniqueid twice in one batch (a replay meeting its original) counts once
            first.setdefault(rows.call["uniqueid"], rows)
        batch = list(first.values())
        if not batch:
            return 0
        if not self.schema_checked:
            await require_current_schema(self.engine, self.engine.url)  # StoreError: the writer retries later
            self.schema_checked = True
        async with self.engine.begin() as conn:
            result = await conn.execute(self._insert_calls, [rows.call for rows in batch])
            inserted = set(result.scalars().all())
            new = [rows for rows in batch if rows.call["uniqueid"] in inserted]
            attempts = [a for rows in new for a in rows.attempts]
            if attempts:
                await conn.execute(self._insert_attempts, attempts)
            call_sums, line_sums = stats_deltas(new)
            if call_sums:
                await conn.execute(self._add_call_stats, call_sums)
            if line_sums:
                await conn.execute(self._add_line_stats, line_sums)
        return len(new)
