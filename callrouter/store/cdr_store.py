"""Writing a batch of CDRs: calls, their attempts and the statistics sums, in one transaction.

Idempotent: a call already stored (the same uniqueid from the same Asterisk, `source`) is skipped
together with its attempts and its share of the statistics, so replaying a spool after a crash or an
outage never counts a call twice. The same uniqueid from another Asterisk is another call.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.cdr_rows import CdrRows, stats_deltas
from callrouter.store.db import require_current_schema
from callrouter.store.dialect import insert_ignore, upsert_add
from callrouter.store.outbox import OutboxMessage, enqueue
from callrouter.store.schema import call_attempts, call_stats, calls, line_stats

log = logging.getLogger(__name__)
CallsHook = Callable[[Sequence[Mapping[str, Any]]], Sequence[OutboxMessage]]
_CALL_SUMS = ("calls", "billable_seconds", "rung_calls", "ring_seconds")
_LINE_SUMS = ("attempts", "ring_seconds", "talk_seconds")


class CdrStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema_checked: bool = True,
        messages: CallsHook | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self._clock = clock
        self.messages = messages  # what newly stored calls cause (missed-call SMS), queued in the same transaction
        self.schema_checked = schema_checked  # False when the database was down at start: check before writing
        dialect = engine.dialect.name
        self._insert_calls = insert_ignore(calls, dialect, ["uniqueid", "source"]).returning(calls.c.uniqueid, calls.c.source)
        self._insert_attempts = insert_ignore(call_attempts, dialect, ["call_uniqueid", "call_source", "seq"])
        self._add_call_stats = upsert_add(call_stats, dialect, ["number", "bucket", "disposition"], _CALL_SUMS)
        self._add_line_stats = upsert_add(line_stats, dialect, ["number", "bucket", "line_id", "status"], _LINE_SUMS)

    async def write(self, batch: Sequence[CdrRows]) -> int:
        """Store the batch; returns how many calls were new (the rest were already there)."""
        first: dict[tuple[str, str], CdrRows] = {}
        for rows in batch:  # a call twice in one batch (a replay meeting its original) counts once
            first.setdefault(_key(rows), rows)
        batch = list(first.values())
        if not batch:
            return 0
        if not self.schema_checked:
            await require_current_schema(self.engine, self.engine.url)  # StoreError: the writer retries later
            self.schema_checked = True
        async with self.engine.begin() as conn:
            result = await conn.execute(self._insert_calls, [rows.call for rows in batch])
            inserted = {(uniqueid, source) for uniqueid, source in result.all()}
            new = [rows for rows in batch if _key(rows) in inserted]
            attempts = [a for rows in new for a in rows.attempts]
            if attempts:
                await conn.execute(self._insert_attempts, attempts)
            call_sums, line_sums = stats_deltas(new)
            if call_sums:
                await conn.execute(self._add_call_stats, call_sums)
            if line_sums:
                await conn.execute(self._add_line_stats, line_sums)
            if new and self.messages is not None:
                await enqueue(conn, self._messages_for([rows.call for rows in new]), self._clock())
        return len(new)

    def _messages_for(self, new_calls: Sequence[Mapping[str, Any]]) -> Sequence[OutboxMessage]:
        """A bug in deciding messages must not hold CDRs back: the calls are stored, the failure logged."""
        assert self.messages is not None
        try:
            return self.messages(new_calls)
        except Exception:
            log.exception("could not decide the notifications of %d calls; the calls are stored without them", len(new_calls))
            return []


def _key(rows: CdrRows) -> tuple[str, str]:
    return rows.call["uniqueid"], rows.call["source"]

