"""Routing state in the database, shared by every router process that uses it.

- Round robin: one counter per group, incremented and read in one statement (on Postgres a sequence of
  the group's, which holds no lock until commit: hunts of one group do not queue behind each other; on
  SQLite a row).
- Line limits: a lease row per call on a line. Taking one first locks the line (on Postgres an advisory
  lock held until commit, on SQLite the write lock its guard row's write takes), so two routers cannot
  both see "one place left" and both take it.
- Line health: one row per line that failed since it last answered (`store.line_health`), changed under
  a row lock, so a failure reported by two routers at once is counted twice, and one of them crosses the
  threshold.
- A lease counts only while its router is alive: each router keeps its `router_instances` row fresh with
  a heartbeat, and leases of a router whose row has expired (crash, kill -9, lost network) stop counting
  and are swept away.

The store must never stop calls: an operation that fails or takes longer than `timeout` is answered
from process memory instead, logged and counted (`callrouter_state_fallbacks_total`).

On Postgres (issue 15) a call waits for the database once: `start_hunt` takes the turn, reads the lines'
health and leases the line the turn starts at in one function call (migrations 0008, 0009), through a
small asyncpg pool of its own with the statement prepared once per connection (SQLAlchemy's layer cost
more CPU than the query). `acquire`, `next_turn` and `line_health` use the same function, one round trip
each. A take goes out at once while one of the pool's connections is free; the takes that arrive while all
are busy go together in the next statement (`callrouter_take_many`), so under load the calls of a router
share round trips instead of queueing for connections. Releases and answered-call reports are not waited
for: `release_soon` and `report_soon` queue them, and one sender sends what has queued in one statement,
in order; a failure report (which decides what the next call sees) queues behind them and is waited for.
`close` sends what is left; a crash leaves leases that stop counting after `lease_ttl`. SQLite runs the
same operations one statement at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar

import asyncpg
from sqlalchemy import Integer, String, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.metrics import RouterMetrics
from callrouter.routing.health import LineRecord, apply_outcome
from callrouter.routing.hunt_start import HuntStart
from callrouter.store import line_health
from callrouter.store.db import StoreError, postgres_connect_args
from callrouter.tasks import GOODBYE_BUDGET, Backoff, Periodic, within
from callrouter.store.memory import MemoryRoutingState, hunt_start_by_parts
from callrouter.store.dialect import increment, upsert_set
from callrouter.store.schema import line_guards, line_leases, line_usage, router_instances, rr_turns

log = logging.getLogger(__name__)
T = TypeVar("T")


def new_instance_id() -> str:
    """Unique per process start, so a restarted router never inherits the leases of its earlier life."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


TAKE_MANY = "SELECT * FROM callrouter_take_many($1, $2, $3, $4, $5, $6, $7, $8)"  # migration 0009
BATCH_MOST = 256  # hunts per statement
WARM_UP_LINE = "callrouter-warm-up"  # no line is called this: the connections' first take asks about it
# What a sender batch does: the leases given back and the lines that answered (a line that works has no
# health row, so the usual batch deletes leases and finds no health row), in one statement.
RELEASE_AND_ANSWER = """
WITH gone AS (DELETE FROM line_leases WHERE id = ANY ($1::text[]))
DELETE FROM line_health WHERE line_key = ANY ($2::text[])
RETURNING line_key, unavailable, noanswer, since, last_failure, last_status, updated_at
"""


@dataclass(slots=True)
class _Take:
    """A hunt start waiting for its batch; `done` gets its answer."""

    turn_key: str | None
    keys: Sequence[str]
    limits: Sequence[int | None]
    health: bool
    lease: str | None
    done: asyncio.Future[HuntStart]


@dataclass
class _Report:
    """A line outcome waiting for the sender; `done` gets the store's (before, after)."""

    key: str
    status: str
    when: float
    done: asyncio.Future[tuple[LineRecord, LineRecord]]

    @property
    def batched(self) -> bool:
        """An answer only deletes the line's row: it goes with the releases. A failure is applied alone,
        under the row's lock (store.line_health.report)."""
        return self.status == "ANSWER"


def _record(row: Any, p: str = "") -> LineRecord:
    """A health row from asyncpg (RELEASE_AND_ANSWER's, or `callrouter_take`'s with p="r_")."""
    since, last = row[p + "since"], row[p + "last_failure"]
    return LineRecord(
        key=row[p + "line_key"], unavailable=int(row[p + "unavailable"]), noanswer=int(row[p + "noanswer"]),
        since=None if since is None else float(since), last_failure=None if last is None else float(last),
        last_status=row[p + "last_status"], updated_at=float(row[p + "updated_at"]),
    )


def _settle(done: asyncio.Future[T], value: T) -> None:
    if not done.done():  # nobody cancels these, but a loop being closed may have
        done.set_result(value)


def _usable(conn: asyncpg.Connection) -> bool:
    """Whether a kept connection can still take a statement. When its server connection is lost, asyncpg
    takes it back into the pool and detaches our handle: even `is_closed()` then raises InterfaceError
    (seen on a Postgres restart, docs/asterisk-verification.md, session 14)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _keep(conn: asyncpg.Connection) -> None:
    """Connections go back to the pool as they are: the state opens no transaction, sets nothing and
    listens to nothing, so asyncpg's reset (a round trip per use) has nothing to undo."""


class SqlRoutingState:
    remote = True  # every answer is a round trip to the database: worth asking ahead (fastagi.ports.RoutingState)

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: RouterMetrics,
        *,
        instance: str | None = None,
        timeout: float = 0.5,
        lease_ttl: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
        pool_size: int = 4,
    ) -> None:
        self.engine, self.metrics, self.timeout, self.clock = engine, metrics, timeout, clock
        # One statement needs no transaction around it: autocommit saves the BEGIN and COMMIT round trips.
        self.single = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.instance = instance or new_instance_id()
        self.lease_ttl = timedelta(seconds=lease_ttl)
        self.local = MemoryRoutingState()
        self._held: dict[str, list[str | None]] = {}  # line key -> lease ids (None: taken from local memory)
        self._late: set[asyncio.Future[Any]] = set()  # operations past their time budget, finishing in the background
        d = engine.dialect.name
        self._turn = increment(rr_turns, d, "key", "turn")
        self._guard = upsert_set(line_guards, d, ["line_key"], ["touched_at"])
        self._usage = upsert_set(line_usage, d, ["line_key"], ["last_answered"])
        self._register = upsert_set(router_instances, d, ["instance"], ["expires_at"])
        # A lease is taken only while fewer than `limit` live leases (of routers still beating) hold the line.
        now = bindparam("now", type_=line_leases.c.acquired_at.type)
        live = (
            select(func.count())
            .select_from(line_leases.join(router_instances, line_leases.c.instance == router_instances.c.instance))
            .where(line_leases.c.line_key == bindparam("line_key", type_=String), router_instances.c.expires_at >= now)
            .scalar_subquery()
        )
        self._take_lease = line_leases.insert().from_select(
            ["id", "line_key", "instance", "acquired_at"],
            select(bindparam("lease", type_=String), bindparam("line_key", type_=String), bindparam("instance", type_=String), now).where(
                live < bindparam("limit", type_=Integer)
            ),
        )
        self._heartbeat: Periodic | None = None
        self._every = self.lease_ttl.total_seconds() / 3
        self._last_warning = 0.0
        # Postgres through asyncpg: one round trip per operation (module docstring).
        self.fast = d == "postgresql" and engine.dialect.driver == "asyncpg"
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Connections taken from the pool once and kept between statements (_on_connection): asyncpg's
        # acquire and release cost a task (shield) and a timeout each, 7 % of a shared call's CPU.
        self._kept: list[asyncpg.Connection] = []
        self._queue: deque[str | _Report] = deque()  # lease ids to delete and reports, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._closing = False
        self._takes: list[_Take] = []  # hunt starts waiting for a free connection: the next batch
        self._batches = 0  # batches in flight (at most pool_size)
        self._batch_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, heartbeat_every: float | None = None) -> None:
        """Register this router and keep its leases alive. A database that is away now only delays that."""
        try:
            await within(self.beat(), max(self.timeout, 5.0), self._late)
            if self.fast:  # the state's connections open and prepared before the first call, not during it
                await within(self._connections(), max(self.timeout, 5.0), self._late)
        except Exception as exc:
            self.metrics.store_errors.labels(operation="state").inc()
            self._warn(f"routing state: cannot register this router yet ({exc}); using memory until the database answers")
        every = heartbeat_every if heartbeat_every is not None else self.lease_ttl.total_seconds() / 3
        self._every = every
        # A failed beat is retried at the same pace: the leases' TTL, not a growing backoff, is the limit.
        self._heartbeat = Periodic(
            "state-heartbeat", self._beat_and_sweep, lambda: every, backoff=Backoff(first=every, cap=every),
            on_error=lambda exc: self.metrics.store_errors.labels(operation="state").inc(),
        )
        self._heartbeat.start(delay=every)

    async def beat(self) -> None:
        now = self.clock()
        async with self.single.connect() as conn:
            await conn.execute(self._register, {"instance": self.instance, "started_at": now, "expires_at": now + self.lease_ttl})

    async def sweep(self) -> int:
        """Remove leases and registrations of routers that stopped beating; returns leases removed."""
        now = self.clock()
        dead = select(router_instances.c.instance).where(router_instances.c.expires_at < now)
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(line_leases).where(line_leases.c.instance.in_(dead)))
            await conn.execute(delete(router_instances).where(router_instances.c.expires_at < now))
        return int(result.rowcount or 0)

    async def _beat_and_sweep(self) -> bool:
        """One heartbeat: keep this router's leases alive, release those of routers that stopped."""
        budget = max(self._every, self.timeout)
        await within(self.beat(), budget, self._late)
        swept = await within(self.sweep(), budget, self._late)
        if swept:
            log.warning("released %d line leases left by routers that stopped", swept)
        return False

    async def close(self) -> None:
        """Stop beating, send what is queued, and give back this router's leases and registration."""
        if self._heartbeat is not None:
            await self._heartbeat.close()
        self._closing = True
        queued, self._takes = self._takes, []
        for take in queued:  # hunts still waiting for a connection: routed from memory (start_hunt's fallback)
            if not take.done.done():
                take.done.set_exception(StoreError("the routing state is closing"))
        try:
            await within(self.flush(), GOODBYE_BUDGET, self._late)
        except Exception as exc:  # the delete below covers the leases; reports still queued are lost, and said so
            log.warning("routing state: %d queued operations not sent on stop (%s)", len(self._queue), exc)
        if self._sender is not None:
            self._sender.cancel()
        for task in list(self._late):  # background releases: the delete below covers them
            task.cancel()

        async def forget_me() -> None:
            async with self.engine.begin() as conn:
                await conn.execute(delete(line_leases).where(line_leases.c.instance == self.instance))
                await conn.execute(delete(router_instances).where(router_instances.c.instance == self.instance))

        try:
            await within(forget_me(), GOODBYE_BUDGET, self._late)
        except Exception as exc:  # they expire after lease_ttl anyway
            log.warning("could not remove this router's leases on stop (%s); they expire on their own in %s", exc, self.lease_ttl)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            kept, self._kept = self._kept, []
            try:
                for conn in kept:  # the pool's close waits for every connection out of it
                    await within(pool.release(conn), 2.0, self._late)
                await within(pool.close(), 2.0, self._late)
            except Exception:
                pool.terminate()

    # -- fallback --------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("%s", message)

    async def _within_budget(self, op: Awaitable[T]) -> T:
        return await within(op, self.timeout, self._late)

    def _fell_back(self, what: str, exc: BaseException) -> None:
        self.metrics.store_errors.labels(operation="state").inc()
        self.metrics.state_fallbacks.inc()
        self._warn(f"routing state: {what} answered from this process's memory: {type(exc).__name__}: {exc}")

    async def _shared(self, op: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await self._within_budget(op())
        except Exception as exc:
            self._fell_back(what, exc)
            return await fallback()

    # -- Postgres through asyncpg ----------------------------------------------------------------

    async def _connections(self) -> asyncpg.Pool:
        """The state's own small asyncpg pool (made on first use; connections opened as needed)."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    url = self.engine.url
                    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
                    args = postgres_connect_args(url)
                    # Turns and leases are not worth a WAL flush per call: a commit that waits for the
                    # flush holds the line's lock until the disk answers, and every hunt of the line
                    # queues behind it. A Postgres crash may lose the last
                    # moment's turns and leases: a line may then carry more calls than its limit until
                    # those calls end, as when a router is cut off for longer than lease_ttl.
                    args["server_settings"] = {**args["server_settings"], "synchronous_commit": "off"}
                    # Every connection open from the start and kept (no idle timeout), each with the take
                    # prepared (init): a call that got a fresh one waited ~50 ms for the connect and
                    # asyncpg's type lookups of the statement's arrays (seen on real calls in a burst).
                    # pool_size for the batches of takes and one for the sender (at most one statement at a
                    # time), so a connection is always there for whoever finds none kept (_on_connection).
                    self._pool = await asyncpg.create_pool(
                        dsn, min_size=self.pool_size + 1, max_size=self.pool_size + 1, max_inactive_connection_lifetime=0, reset=_keep,
                        init=self._prepare, **args,
                    )
        return self._pool

    async def _on_connection(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`use` on one of the state's connections: one kept from an earlier statement, else one from the
        pool, kept afterwards. One that failed (or was cancelled mid-statement) goes back to the pool, which
        closes it if broken and opens a new one when next asked; one that closed meanwhile likewise."""
        conn: asyncpg.Connection | None = None
        while self._kept and conn is None:
            conn = self._kept.pop()
            if not _usable(conn):
                self._give_back(conn)
                conn = None
        if conn is None:
            conn = await (await self._connections()).acquire()
        try:
            result = await use(conn)
        except BaseException:
            self._give_back(conn)
            raise
        self._kept.append(conn)
        return result

    def _give_back(self, conn: asyncpg.Connection) -> None:
        if self._pool is None:
            conn.terminate()
        else:
            self._spawn(self._pool.release(conn))

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        """The statement and its types cached on this connection before a call needs it, and the function's
        own queries planned: a hunt of one line with a limit of 0 reads health, locks, counts and leases
        nothing (an empty take left the first real one at 3 - 4 ms in Postgres, seen on real calls)."""
        await conn.fetch(TAKE_MANY, [None], [1], [True], ["warm-up"], [WARM_UP_LINE], [0], self.instance, self.clock())

    def _take(self, turn_key: str | None, keys: Sequence[str], limits: Sequence[int | None], health: bool, lease: str | None) -> asyncio.Future[HuntStart]:
        """One round trip: sent at once while a connection is free, else in the next batch (migration 0009).
        The answer's own future, not a coroutine: waited on within the budget without a task of its own, and
        a caller past its budget cancels only its own answer."""
        take = _Take(turn_key, keys, limits, health, lease, asyncio.get_running_loop().create_future())
        self._takes.append(take)
        if self._batches < self.pool_size:
            self._send_batch()
        return take.done

    def _send_batch(self) -> None:
        batch, self._takes = self._takes[:BATCH_MOST], self._takes[BATCH_MOST:]
        self._batches += 1
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_batch(self, batch: list[_Take]) -> None:
        try:
            # a hung database must not keep the batch's place: past the callers' budget it is abandoned
            answers = await within(self._take_many(batch), self.timeout, self._late)
        except BaseException as exc:  # each caller falls back on its own (start_hunt, acquire, ...)
            failure = exc if isinstance(exc, Exception) else StoreError("the routing state is closing")
            for take in batch:
                if not take.done.done():
                    take.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            for take, answer in zip(batch, answers):
                if not take.done.done():
                    take.done.set_result(answer)
                elif answer.taken and take.lease is not None:  # its caller gave up waiting and routed from memory
                    self._send(take.lease)
        finally:
            self._batches -= 1
            if self._takes and not self._closing:
                self._send_batch()

    async def _take_many(self, batch: Sequence[_Take]) -> list[HuntStart]:
        """One call of `callrouter_take_many` for the batch's hunts."""
        firsts: list[int] = []
        keys: list[str] = []
        limits: list[int | None] = []
        for take in batch:
            firsts.append(len(keys) + 1)
            keys.extend(take.keys)
            limits.extend(take.limits)
        turns, healths, leases = [t.turn_key for t in batch], [t.health for t in batch], [t.lease for t in batch]
        rows = await self._on_connection(lambda conn: conn.fetch(TAKE_MANY, turns, firsts, healths, leases, keys, limits, self.instance, self.clock()))
        records: list[dict[str, LineRecord]] = [{} for _ in batch]
        heads: list[Any] = [None] * len(batch)
        for row in rows:
            hunt = row["r_hunt"] - 1
            if row["r_line_key"] is None:
                heads[hunt] = row
            else:
                records[hunt][row["r_line_key"]] = _record(row, "r_")
        answers = []
        for take, head, health in zip(batch, heads, records):
            assert head is not None  # the function always ends each hunt with its summary row
            turn = None if head["r_turn"] is None else int(head["r_turn"]) - 1
            answers.append(HuntStart(tuple(take.keys), turn, health if take.health else None, head["r_lease_key"], bool(head["r_taken"])))
        return answers

    # -- RoutingState ----------------------------------------------------------------------------

    async def start_hunt(self, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
        if not self.fast:
            return await hunt_start_by_parts(self, turn_key, lines, health)
        lease = uuid.uuid4().hex  # made here, so a late insert can be found and removed (as in acquire)
        try:
            got = await self._within_budget(self._take(turn_key, [k for k, _ in lines], [n for _, n in lines], health, lease))
        except Exception as exc:
            self._fell_back("hunt start", exc)
            self._spawn(self._release_later(lease, first_delay=0.0))
            got = await hunt_start_by_parts(self.local, turn_key, lines, health)
            if got.taken and got.lease_key is not None:
                self._held.setdefault(got.lease_key, []).append(None)
            return got
        if got.taken and got.lease_key is not None:
            self._held.setdefault(got.lease_key, []).append(lease)
        return got

    async def next_turn(self, key: str) -> int:
        async def shared() -> int:
            if self.fast:
                return (await self._take(key, (), (), False, None)).turn or 0
            async with self.single.connect() as conn:
                turn = (await conn.execute(self._turn, {"key": key, "turn": 1})).scalar_one()
            return int(turn) - 1

        return await self._shared(shared, lambda: self.local.next_turn(key), "round-robin turn")

    async def acquire(self, line_key: str, limit: int) -> bool:
        # The lease's id is made here, so a lease whose insert outlived the time budget can still be
        # found and removed: it must not hold a place on the line for a call that went elsewhere.
        lease = uuid.uuid4().hex

        async def shared() -> bool:
            if self.fast:
                return (await self._take(None, (line_key,), (limit,), False, lease)).taken
            now = self.clock()
            params = {"lease": lease, "line_key": line_key, "instance": self.instance, "now": now, "limit": limit}
            async with self.engine.begin() as conn:
                await conn.execute(self._guard, {"line_key": line_key, "touched_at": now})  # serialises this line
                taken = (await conn.execute(self._take_lease, params)).rowcount
            return bool(taken)

        try:
            taken = await self._within_budget(shared())
        except Exception as exc:
            self._fell_back(f"limit of line {line_key}", exc)
            self._spawn(self._release_later(lease, first_delay=0.0))
            if await self.local.acquire(line_key, limit):
                self._held.setdefault(line_key, []).append(None)
                return True
            return False
        if taken:
            self._held.setdefault(line_key, []).append(lease)
        return taken

    def _next_lease(self, line_key: str) -> tuple[bool, str | None]:
        """(held, lease): one of this router's leases on the line, forgotten here; None for a place taken
        from memory."""
        leases = self._held.get(line_key)
        if not leases:
            return False, None
        lease = leases.pop()
        if not leases:
            del self._held[line_key]
        return True, lease

    async def release(self, line_key: str) -> None:
        """Give a lease back and wait until it is gone (`release_soon` does not wait)."""
        held, lease = self._next_lease(line_key)
        if not held:
            return
        if lease is None:
            await self.local.release(line_key)
            return
        try:
            await self._within_budget(self._delete_lease(lease))
        except Exception:
            # Until it is gone the lease holds a place on the line; leases of a stopped router expire.
            self.metrics.store_errors.labels(operation="state").inc()
            log.warning("could not release lease %s on %s; retrying in the background", lease, line_key)
            self._spawn(self._release_later(lease))

    def release_soon(self, line_key: str) -> None:
        held, lease = self._next_lease(line_key)
        if not held:
            return
        if lease is None:
            self.local.release_soon(line_key)
        else:
            self._send(lease)

    def report_soon(self, line_key: str, status: str, when: float) -> asyncio.Future[tuple[LineRecord, LineRecord]]:
        report = _Report(line_key, status, when, asyncio.get_running_loop().create_future())
        self._send(report)
        return report.done

    async def report_line(self, line_key: str, status: str, when: float) -> tuple[LineRecord, LineRecord]:
        """Applied in order behind what this router has queued; waited for (within the time budget)."""
        done = self.report_soon(line_key, status, when)
        try:
            return await self._within_budget(asyncio.shield(done))
        except Exception as exc:  # it is still applied when the database answers
            self._fell_back("line health", exc)
            return await self.local.report_line(line_key, status, when)

    async def _delete_lease(self, lease: str) -> None:
        async with self.single.connect() as conn:
            await conn.execute(delete(line_leases).where(line_leases.c.id == lease))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _release_later(self, lease: str, first_delay: float = 1.0) -> None:
        for delay in (first_delay, 2, 5, 10, 30, 60, 120):
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(30):
                    await self._delete_lease(lease)
                return
            except Exception:
                self.metrics.store_errors.labels(operation="state").inc()
        log.error("lease %s could not be released; it stays until this router stops", lease)

    # -- the sender: what the call does not wait for -----------------------------------------------

    def _send(self, item: str | _Report) -> None:
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._sending())

    async def flush(self) -> None:
        """Wait until everything queued so far has been sent (or given up on)."""
        await self._idle.wait()

    async def _sending(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    await self._send_next()
                except Exception:  # a bug here must not stop the releases behind it
                    log.exception("routing state: the sender failed")
            self._idle.set()

    async def _send_next(self) -> None:
        """The next report that is applied alone, or every release and answer queued before it, in one go."""
        first = self._queue[0]
        if isinstance(first, _Report) and not first.batched:
            self._queue.popleft()
            _settle(first.done, await self._shared(
                lambda: line_health.report(self.engine, first.key, first.status, first.when),
                lambda: self.local.report_line(first.key, first.status, first.when), "line health",
            ))
            return
        leases: list[str] = []
        answers: list[_Report] = []
        while self._queue and not (isinstance(self._queue[0], _Report) and not self._queue[0].batched):
            item = self._queue.popleft()
            if isinstance(item, _Report):
                answers.append(item)
            else:
                leases.append(item)
        try:
            rows = await within(self._release_and_answer(leases, answers), max(self.timeout, 2.0), self._late)
        except Exception as exc:
            for lease in leases:  # until then each holds a place on its line
                self._spawn(self._release_later(lease))
            for report in answers:
                self._fell_back("line health", exc)
                _settle(report.done, await self.local.report_line(report.key, report.status, report.when))
            return
        for report in answers:
            before = rows.pop(report.key, None) or LineRecord(report.key)
            _settle(report.done, (before, apply_outcome(before, report.status, report.when)))

    async def _release_and_answer(self, leases: list[str], answers: list[_Report]) -> dict[str, LineRecord]:
        """Delete the leases and the answered lines' health rows; the rows that were there, by line."""
        if not self.fast:
            for lease in leases:
                await self._delete_lease(lease)
            found: dict[str, LineRecord] = {}
            for report in answers:
                before, _ = await line_health.report(self.engine, report.key, report.status, report.when)
                if not before.clean:
                    found.setdefault(report.key, before)
            return found
        lines = list(dict.fromkeys(r.key for r in answers))
        rows = await self._on_connection(lambda conn: conn.fetch(RELEASE_AND_ANSWER, leases, lines))
        return {row["line_key"]: _record(row) for row in rows}

    async def active(self, line_key: str) -> int:
        now = self.clock()
        query = (
            select(func.count())
            .select_from(line_leases.join(router_instances, line_leases.c.instance == router_instances.c.instance))
            .where(line_leases.c.line_key == line_key, router_instances.c.expires_at >= now)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def last_used(self, line_keys: tuple[str, ...]) -> dict[str, float]:
        async def shared() -> dict[str, float]:
            query = select(line_usage.c.line_key, line_usage.c.last_answered).where(line_usage.c.line_key.in_(line_keys))
            async with self.engine.connect() as conn:
                return {k: float(v) for k, v in (await conn.execute(query)).all()}

        return await self._shared(shared, lambda: self.local.last_used(line_keys), "least-recent history")

    async def line_health(self, line_keys: tuple[str, ...]) -> dict[str, LineRecord]:
        async def shared() -> dict[str, LineRecord]:
            if self.fast:
                return dict((await self._take(None, line_keys, [None] * len(line_keys), True, None)).health or {})
            return await line_health.read_lines(self.engine, line_keys)

        return await self._shared(shared, lambda: self.local.line_health(line_keys), "line health")

    async def mark_used(self, line_key: str, when: float) -> None:
        async def shared() -> None:
            async with self.single.connect() as conn:
                await conn.execute(self._usage, {"line_key": line_key, "last_answered": when})

        await self.local.mark_used(line_key, when)
        await self._shared(shared, lambda: self.local.mark_used(line_key, when), "least-recent history")
