"""The CDR writer: calls hand over their record and never wait on the database.

submit() returns once the record is durable in the local spool (records arriving together share one
fsync). A separate task moves spooled records into the database in batches (bounded by size and by the
age of the oldest), retrying with backoff while the database is away. Memory stays bounded however long
that lasts: the newest records are also kept parsed in memory up to a limit, older ones are read back
from the spool. On start, whatever an earlier process left in the spool is replayed; the database skips
calls it already has, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from callrouter.metrics import RouterMetrics
from callrouter.routing.record import CallRecord
from callrouter.store.cdr_rows import BadRecord, CdrRows, rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.spool import Position, Spool, SpooledLine
from callrouter.tasks import within

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterSettings:
    batch_size: int = 1000
    batch_age: float = 0.5  # seconds the oldest stored-but-unwritten record may wait for a fuller batch
    memory_records: int = 20_000  # parsed records kept in memory; beyond this they are read back from disk
    retry_min: float = 0.5
    retry_max: float = 30.0


@dataclass(frozen=True)
class _Item:
    start: Position
    end: Position
    rows: CdrRows | None  # None: the line could not be read as a record
    raw: bytes
    error: str = ""


def is_record_problem(exc: BaseException) -> bool:
    """A constraint or value the database (or its driver) refuses for these rows, as opposed to the
    database being away. Only these set a record aside; anything else is retried."""
    if isinstance(exc, (IntegrityError, DataError)):
        return not exc.connection_invalidated
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError) and isinstance(exc.orig, (ValueError, TypeError))


class CdrWriter:
    def __init__(self, spool: Spool, store: CdrStore, metrics: RouterMetrics, settings: WriterSettings = WriterSettings()) -> None:
        self.spool, self.store, self.metrics, self.settings = spool, store, metrics, settings
        self._pending: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]] = []
        self._recent: deque[_Item] = deque(maxlen=settings.memory_records)
        self._cursor = spool.start
        self._backlog = 0
        self._oldest: float | None = None  # monotonic time the backlog last went from empty to not
        self._flush_wanted = asyncio.Event()
        self._data = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._rejected_path = os.path.join(spool.directory, "rejected.jsonl")
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Count what an earlier process left behind, then start the spool and database tasks."""
        left = await asyncio.to_thread(self._count_left_over)
        if left:
            log.warning("CDR spool holds %d records from an earlier run; replaying them into the database", left)
            self._add_backlog(left)
        self._tasks = [asyncio.create_task(self._flusher(), name="cdr-spool"), asyncio.create_task(self._db_loop(), name="cdr-db")]

    def _count_left_over(self) -> int:
        count, pos = 0, self._cursor
        while True:
            lines = self.spool.read(pos, 4 << 20)
            if not lines:
                return count
            count += len(lines)
            pos = lines[-1].end

    async def close(self, timeout: float = 10.0) -> None:
        """Spool what is pending, give the database `timeout` seconds to take the backlog, then stop.

        Whatever is still spooled stays on disk and is replayed by the next start."""
        self._closing = True
        self._flush_wanted.set()
        self._data.set()
        flusher, db = self._tasks or (None, None)
        if flusher is not None:
            await flusher
        if db is not None:
            with contextlib.suppress(TimeoutError):  # the database is away or hangs: what is left stays spooled
                await within(db, timeout, self._abandoned)
        if self._backlog:
            log.warning("stopping with %d call records not yet in the database; they stay in the spool", self._backlog)
        stored_to = self._cursor if self._backlog == 0 else None
        self.spool.close(stored_to)

    @property
    def backlog(self) -> int:
        return self._backlog

    # -- the RecordSink side ---------------------------------------------------------------------

    async def submit(self, record: CallRecord) -> None:
        """Returns when the record is durable on local disk; raises if it could not be spooled."""
        if self._closing:
            raise RuntimeError("CDR writer is closed")
        data, line = spool_entry(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, data, done))
        self._flush_wanted.set()
        await done

    async def _flusher(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._spool(batch)
            if self._closing and not self._pending:
                return

    async def _spool(self, batch: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            spans = await asyncio.to_thread(self.spool.append, [line for line, _, _ in batch])
        except OSError as exc:
            # The disk refused (full, read-only). The records go to the log so an operator can still recover them.
            for line, _, done in batch:
                log.error("CDR spool write failed (%s); record: %s", exc, line.decode("utf-8", "replace").rstrip())
                if not done.done():
                    done.set_exception(exc)
            return
        for (line, data, done), (start, end) in zip(batch, spans):
            try:
                item = _Item(start, end, rows_from_spooled(data), line)
            except BadRecord as exc:
                item = _Item(start, end, None, line, str(exc))
            self._recent.append(item)
            if not done.done():
                done.set_result(None)
        self._add_backlog(len(batch))
        self.metrics.cdr_spool_bytes.set(self.spool.bytes_on_disk())
        self._data.set()

    def _add_backlog(self, n: int) -> None:
        if self._backlog == 0 and n > 0:
            self._oldest = time.monotonic()
        self._backlog += n
        self.metrics.cdr_backlog.set(self._backlog)

    # -- the database side -----------------------------------------------------------------------

    async def _db_loop(self) -> None:
        s = self.settings
        while True:
            if self._backlog == 0:
                if self._closing:
                    return
                self._data.clear()
                await self._data.wait()
                continue
            age = time.monotonic() - (self._oldest or 0.0)
            if self._backlog < s.batch_size and age < s.batch_age and not self._closing:
                self._data.clear()
                with contextlib.suppress(TimeoutError):  # the oldest record has waited long enough: write what there is
                    await asyncio.wait_for(self._data.wait(), s.batch_age - age)
                continue
            items = await self._next_items(s.batch_size)
            if not items:  # counted but not readable yet; cannot happen with a consistent backlog
                log.error("CDR backlog says %d records but the spool has none after %s", self._backlog, self._cursor)
                self._backlog = 0
                continue
            if not await self._store_with_retry(items):
                return  # closing while the database is away: the spool keeps the rest
            self._advance(items)

    async def _next_items(self, limit: int) -> list[_Item]:
        cursor = self.spool.normalise(self._cursor)
        while self._recent and self._recent[0].start < cursor:
            self._recent.popleft()
        if self._recent and self._recent[0].start == cursor:
            return [self._recent[i] for i in range(min(limit, len(self._recent)))]
        lines = await asyncio.to_thread(self.spool.read, cursor, 1 << 20)
        return [self._parse(line) for line in lines[:limit]]

    @staticmethod
    def _parse(line: SpooledLine) -> _Item:
        if line.torn:
            return _Item(line.start, line.end, None, line.data, "torn line (the process stopped while writing it)")
        try:
            return _Item(line.start, line.end, rows_from_spooled(json.loads(line.data)), line.data)
        except (ValueError, UnicodeDecodeError) as exc:  # BadRecord and JSONDecodeError are ValueErrors
            return _Item(line.start, line.end, None, line.data, str(exc)[:200])

    async def _store_with_retry(self, items: list[_Item]) -> bool:
        delay = self.settings.retry_min
        failures = 0
        while True:
            try:
                await self._store(items)
                if failures:
                    log.info("CDR database writes work again after %d failed tries", failures)
                return True
            except Exception as exc:  # anything else is the database being away: keep the records, retry
                failures += 1
                self.metrics.store_errors.labels(operation="cdr_write").inc()
                if failures == 1 or failures % 10 == 0:
                    log.warning("CDR database write failed (try %d, %d records spooled): %s", failures, self._backlog, exc)
                if self._closing:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)

    async def _store(self, items: list[_Item]) -> None:
        """Write the good rows; rows the database refuses are found by halving and set aside."""
        for item in items:
            if item.rows is None:
                await self._reject(item, item.error)
        good = [item for item in items if item.rows is not None]
        await self._store_rows(good)

    async def _store_rows(self, items: list[_Item]) -> None:
        if not items:
            return
        try:
            new = await self.store.write([item.rows for item in items if item.rows is not None])
        except Exception as exc:
            if not is_record_problem(exc):
                raise
            if len(items) == 1:
                await self._reject(items[0], f"database refused it: {str(exc).splitlines()[0][:200]}")
                return
            half = len(items) // 2
            await self._store_rows(items[:half])
            await self._store_rows(items[half:])
            return
        self.stored += new
        self.duplicates += len(items) - new
        self.metrics.cdr_stored.inc(new)
        self.metrics.cdr_duplicates.inc(len(items) - new)

    async def _reject(self, item: _Item, error: str) -> None:
        log.error("CDR set aside in %s: %s", self._rejected_path, error)
        entry = json.dumps({"error": error, "spooled": item.raw.decode("utf-8", "replace").rstrip("\n")}, ensure_ascii=False)
        await asyncio.to_thread(_append_durably, self._rejected_path, entry.encode("utf-8") + b"\n")
        self.rejected += 1
        self.metrics.cdr_rejected.inc()

    def _advance(self, items: list[_Item]) -> None:
        self._cursor = items[-1].end
        while self._recent and self._recent[0].start < self._cursor:
            self._recent.popleft()
        self._backlog -= len(items)
        if self._backlog > 0:
            self._oldest = time.monotonic()
        self.metrics.cdr_backlog.set(self._backlog)
        if self.spool.release_before(self.spool.normalise(self._cursor)):
            self.metrics.cdr_spool_bytes.set(self.spool.bytes_on_disk())


def _append_durably(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
