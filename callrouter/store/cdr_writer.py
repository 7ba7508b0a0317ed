"""The CDR writer: calls hand over their record and never wait on the database.

submit() returns once the record is durable in the local spool. Group commit: the records that arrive
while one group is being written and synced wait on the event loop and go as the next group, one write
and one fdatasync for all of them, handed to the spool's appender thread once per group. A separate
task moves spooled records into the database in batches (bounded by size and by the
age of the oldest), retrying with backoff while the database is away. Memory stays bounded however long
that lasts: the newest records are also kept parsed in memory up to a limit, older ones are read back
from the spool. On start, whatever an earlier process left in the spool is replayed; the database skips
calls it already has, so nothing is lost and nothing is counted twice.

A record that cannot be made durable (its spool write fails: disk full, I/O error) is not dropped:
submit() raises CdrNotDurable, the record is logged at ERROR with its uniqueid, counted
(`callrouter_cdr_spool_write_errors_total`, `callrouter_cdr_held_records`), held in memory, handed to the
database like any other and spooled again with backoff, until one of the two has it. The database keys
calls by (source, uniqueid), so a record taken both ways is stored once. Only a record still held when
the writer stops (or beyond `held_max`) is left to the log alone: its whole line, at ERROR.

A line that cannot become rows, whatever it raises, is set aside in rejected.jsonl, once. The two tasks
are supervised: one that dies on a bug is logged with its traceback, counted and restarted after a
short backoff; close() always closes the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from callrouter.metrics import RouterMetrics
from callrouter.model.record import CallRecord
from callrouter.store.cdr_rows import CdrRows, rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.rejects import RejectedLines, line_key
from callrouter.store.spool import Appender, Position, Spool, SpooledLine
from callrouter.tasks import within

log = logging.getLogger(__name__)
_RESTART_MIN, _RESTART_MAX = 0.1, 5.0  # seconds before a task that died on a bug is started again


@dataclass(frozen=True)
class WriterSettings:
    batch_size: int = 1000
    batch_age: float = 0.5  # seconds the oldest stored-but-unwritten record may wait for a fuller batch
    memory_records: int = 20_000  # parsed records kept in memory; beyond this they are read back from disk
    retry_min: float = 0.5
    retry_max: float = 30.0
    held_max: int = 100_000  # records whose spool write failed, held in memory; beyond this only logged


class CdrNotDurable(OSError):
    """The record's spool write failed. It is held in memory and still goes to the database."""


@dataclass(frozen=True)
class _Item:
    start: Position | None  # None: not in the spool (its write failed), held in memory
    end: Position | None
    rows: CdrRows | None  # None: the line could not be read as a record
    raw: bytes  # the line without its newline
    error: str = ""


def _item_of(start: Position | None, end: Position | None, raw: bytes, data: Any = None) -> _Item:
    """The rows of one line, or why there are none. Never raises: valid JSON can still fail in odd ways
    (OverflowError from a year-1 date, RecursionError from deep nesting), and one line must not stop the rest."""
    try:
        return _Item(start, end, rows_from_spooled(json.loads(raw) if data is None else data), raw)
    except Exception as exc:  # noqa: BLE001 - whatever a line raises, it is set aside with the reason
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return _Item(start, end, None, raw, reason[:200])


@dataclass(eq=False)
class _Held:
    """A record whose spool write failed."""

    line: bytes
    item: _Item
    uniqueid: str
    stored: bool = False  # the database has it: no need to spool it any more


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
        self._held: list[_Held] = []
        self._cursor = spool.start
        self._backlog = 0
        self._oldest: float | None = None  # monotonic time the backlog last went from empty to not
        self._flush_wanted = asyncio.Event()
        self._data = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._appender: Appender | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._rejected_path = os.path.join(spool.directory, "rejected.jsonl")
        self._rejects = RejectedLines(self._rejected_path)
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Count what an earlier process left behind, then start the spool and database tasks."""
        await asyncio.to_thread(self._rejects.load)
        left = await asyncio.to_thread(self._count_left_over)
        if left:
            log.warning("CDR spool holds %d records from an earlier run; replaying them into the database", left)
            self._add_backlog(left)
        self._appender = Appender(self.spool)
        self._tasks = [
            asyncio.create_task(self._supervised("cdr-spool", self._flusher), name="cdr-spool"),
            asyncio.create_task(self._supervised("cdr-db", self._db_loop), name="cdr-db"),
        ]

    def _count_left_over(self) -> int:
        count, pos = 0, self._cursor
        while True:
            lines = self.spool.read(pos, 4 << 20)
            if not lines:
                return count
            count += len(lines)
            pos = lines[-1].end

    async def _supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run a task to its end; one that dies on a bug is logged, counted and started again, so a bug
        met by one record cannot stop the CDR flow for good. While stopping, it is not restarted."""
        delay = _RESTART_MIN
        while True:
            began = time.monotonic()
            try:
                await body()
                return
            except Exception:
                self.metrics.cdr_task_restarts.labels(task=name).inc()
                if self._closing:
                    log.exception("CDR writer task %s died while stopping; what it had not done stays in the spool", name)
                    return
                if time.monotonic() - began > 60:  # it ran well for a while: not a crash loop
                    delay = _RESTART_MIN
                log.exception("CDR writer task %s died; restarting it in %.1f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX)

    async def close(self, timeout: float = 10.0) -> None:
        """Spool what is pending, give the database `timeout` seconds to take the backlog, then stop.

        Whatever is still spooled stays on disk and is replayed by the next start. The spool is closed
        whatever happened to the tasks."""
        self._closing = True
        self._flush_wanted.set()
        self._data.set()
        try:
            flusher, db = self._tasks or (None, None)
            if flusher is not None:
                await flusher
            if db is not None:
                with contextlib.suppress(TimeoutError):  # the database is away or hangs: what is left stays spooled
                    await within(db, timeout, self._abandoned)
            if self._backlog:
                log.warning("stopping with %d call records not yet in the database; they stay in the spool", self._backlog)
            for held in self._held:
                if not held.stored:
                    self._log_only(held, "still held at stop")
            self._held.clear()
        finally:
            if self._appender is not None:
                self._appender.close()
            self.spool.close(self._cursor if self._backlog == 0 else None)

    @property
    def backlog(self) -> int:
        return self._backlog

    @property
    def held(self) -> int:
        """Records not durable: their spool write failed, and the database does not have them yet."""
        return sum(1 for h in self._held if not h.stored)

    # -- the RecordSink side ---------------------------------------------------------------------

    async def submit(self, record: CallRecord) -> None:
        """Returns when the record is durable on local disk. Raises CdrNotDurable if it could not be
        spooled: the record is then held in memory, still written to the database and spooled again."""
        if self._closing:
            raise RuntimeError("CDR writer is closed")
        data, line = spool_entry(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, data, done))
        self._flush_wanted.set()
        await done

    async def _flusher(self) -> None:
        delay = self.settings.retry_min
        while True:
            if self.held and not self._closing:  # spool the held records again after a while
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_wanted.wait(), delay)
            else:
                await self._flush_wanted.wait()
            self._flush_wanted.clear()
            retry = [h for h in self._held if not h.stored]
            batch, self._pending = self._pending, []
            if batch or retry:
                try:
                    spooled = await self._spool(batch, retry)
                except BaseException as exc:  # a bug: no record is dropped and no submit() left waiting
                    self._hold([b for b in batch if not b[2].done()], exc)
                    raise
                delay = self.settings.retry_min if spooled else min(delay * 2, self.settings.retry_max)
            if self._closing and not self._pending:
                return

    async def _spool(self, batch: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]], retry: list[_Held]) -> bool:
        """Append the held records and the batch in one write and one fdatasync; False if the spool refused it."""
        assert self._appender is not None  # started
        try:
            spans = await self._appender.append([h.line for h in retry] + [line for line, _, _ in batch])
        except Exception as exc:  # the disk refused (full, read-only, I/O error); the spool is as it was
            self.metrics.cdr_spool_write_errors.inc()
            if retry:
                log.error("%d held call records still cannot be spooled (%s); they go to the database meanwhile", len(retry), exc)
            self._hold(batch, exc)
            return False
        spooled = {id(h) for h in retry}
        self._held = [h for h in self._held if id(h) not in spooled]
        items = [replace(h.item, start=start, end=end) for h, (start, end) in zip(retry, spans)]
        items += [_item_of(start, end, line[:-1], data) for (line, data, _), (start, end) in zip(batch, spans[len(retry):])]
        self._recent.extend(items)
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)
        if retry:
            log.info("%d held call records are spooled now", len(retry))
        self._add_backlog(len(items))
        self.metrics.cdr_held.set(self.held)
        self.metrics.cdr_spool_bytes.set(self.spool.bytes_on_disk())
        self._data.set()
        return True

    def _hold(self, batch: list[tuple[bytes, dict[str, Any], asyncio.Future[None]]], exc: BaseException) -> None:
        """Records the spool refused: kept in memory for the database and for the next spool try."""
        for line, data, done in batch:
            item = _item_of(None, None, line[:-1], data)
            uniqueid = item.rows.call["uniqueid"] if item.rows else str(data.get("uniqueid", ""))[:64]
            self._held.append(_Held(line, item, uniqueid))
            log.error("CDR of call %s could not be spooled (%s): held in memory, written to the database and spooled again later", uniqueid, exc)
            if not done.done():
                done.set_exception(CdrNotDurable(f"the CDR spool refused the record ({exc}); it is held in memory and still goes to the database"))
        while len(self._held) > self.settings.held_max:
            self._log_only(self._held.pop(0), f"more than {self.settings.held_max} records held")
        self.metrics.cdr_held.set(self.held)
        self._data.set()  # the database task takes them; the flusher tries to spool them again after a backoff

    def _log_only(self, held: _Held, why: str) -> None:
        """The last resort: the whole record in the log, for an operator to recover."""
        self.metrics.cdr_log_only.inc()
        log.error("CDR of call %s is neither spooled nor stored (%s); the record: %s", held.uniqueid, why, held.line.decode("utf-8", "replace").rstrip())

    def _add_backlog(self, n: int) -> None:
        if self._backlog == 0 and n > 0:
            self._oldest = time.monotonic()
        self._backlog += n
        self.metrics.cdr_backlog.set(self._backlog)

    # -- the database side -----------------------------------------------------------------------

    async def _db_loop(self) -> None:
        s = self.settings
        while True:
            held = [h for h in self._held if not h.stored][: s.batch_size]
            if held:  # not durable: these go first
                if not await self._store_with_retry([h.item for h in held]):
                    return
                for h in held:
                    h.stored = True
                self._held = [h for h in self._held if not h.stored]
                self.metrics.cdr_held.set(self.held)
                continue
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
        self._drop_recent_before(cursor)
        if self._recent and self._recent[0].start == cursor:
            return [self._recent[i] for i in range(min(limit, len(self._recent)))]
        lines = await asyncio.to_thread(self.spool.read, cursor, 1 << 20)
        return [self._parse(line) for line in lines[:limit]]

    def _drop_recent_before(self, pos: Position) -> None:
        while self._recent and (self._recent[0].start is None or self._recent[0].start < pos):
            self._recent.popleft()

    @staticmethod
    def _parse(line: SpooledLine) -> _Item:
        if line.torn:
            return _Item(line.start, line.end, None, line.data, "torn line (the process stopped while writing it)")
        return _item_of(line.start, line.end, line.data)

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
        """Write the good rows; rows the database refuses are found by halving and set aside. Run again
        on every retry: what is already set aside is not written twice."""
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
        """Set the line aside in rejected.jsonl, once; if even that cannot be written, into the log."""
        key = line_key(item.raw)
        try:
            written = await asyncio.to_thread(self._rejects.add, key, error, item.raw)
        except OSError as exc:
            self._rejects.remember(key)
            self.metrics.cdr_log_only.inc()
            log.error("could not write %s (%s); the CDR set aside (%s) is here instead: %s", self._rejected_path, exc, error, item.raw.decode("utf-8", "replace"))
            written = True
        if written:
            log.error("CDR set aside in %s: %s", self._rejected_path, error)
            self.rejected += 1
            self.metrics.cdr_rejected.inc()

    def _advance(self, items: list[_Item]) -> None:
        end = items[-1].end
        assert end is not None  # items read from the spool have their place in it
        self._cursor = end
        self._drop_recent_before(end)
        self._backlog -= len(items)
        if self._backlog > 0:
            self._oldest = time.monotonic()
        self.metrics.cdr_backlog.set(self._backlog)
        if self.spool.release_before(self.spool.normalise(self._cursor)):
            self.metrics.cdr_spool_bytes.set(self.spool.bytes_on_disk())

