"""Routing state in the database, shared by every router process that uses it.

- Round robin: one counter row per group, incremented and read in one statement.
- Line limits: a lease row per call on a line. Taking one first writes the line's guard row (a row lock
  in Postgres, the write lock in SQLite), so two routers cannot both see "one place left" and both take it.
- Line health: one row per line that failed since it last answered (`store.line_health`), changed under
  a row lock, so a failure reported by two routers at once is counted twice, and one of them crosses the
  threshold.
- A lease counts only while its router is alive: each router keeps its `router_instances` row fresh with
  a heartbeat, and leases of a router whose row has expired (crash, kill -9, lost network) stop counting
  and are swept away.

The store must never stop calls: an operation that fails or takes longer than `timeout` is answered
from process memory instead, logged and counted (`callrouter_state_fallbacks_total`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from sqlalchemy import Integer, String, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.metrics import RouterMetrics
from callrouter.routing.health import LineRecord
from callrouter.store import line_health
from callrouter.tasks import Backoff, Periodic, within
from callrouter.store.memory import MemoryRoutingState
from callrouter.store.dialect import increment, upsert_set
from callrouter.store.schema import line_guards, line_leases, line_usage, router_instances, rr_turns

log = logging.getLogger(__name__)
T = TypeVar("T")


def new_instance_id() -> str:
    """Unique per process start, so a restarted router never inherits the leases of its earlier life."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SqlRoutingState:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: RouterMetrics,
        *,
        instance: str | None = None,
        timeout: float = 0.5,
        lease_ttl: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
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
        self._take = line_leases.insert().from_select(
            ["id", "line_key", "instance", "acquired_at"],
            select(bindparam("lease", type_=String), bindparam("line_key", type_=String), bindparam("instance", type_=String), now).where(
                live < bindparam("limit", type_=Integer)
            ),
        )
        self._heartbeat: Periodic | None = None
        self._every = self.lease_ttl.total_seconds() / 3
        self._last_warning = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, heartbeat_every: float | None = None) -> None:
        """Register this router and keep its leases alive. A database that is away now only delays that."""
        try:
            await within(self.beat(), max(self.timeout, 5.0), self._late)
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
        """Stop beating and give back this router's leases and registration."""
        if self._heartbeat is not None:
            await self._heartbeat.close()
        for task in list(self._late):  # background releases: the delete below covers them
            task.cancel()

        async def forget_me() -> None:
            async with self.engine.begin() as conn:
                await conn.execute(delete(line_leases).where(line_leases.c.instance == self.instance))
                await conn.execute(delete(router_instances).where(router_instances.c.instance == self.instance))

        try:
            await within(forget_me(), max(self.timeout, 5.0), self._late)
        except Exception as exc:  # they expire after lease_ttl anyway
            log.warning("could not remove this router's leases on stop (%s); they expire on their own in %s", exc, self.lease_ttl)

    # -- fallback --------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("%s", message)

    async def _within_budget(self, op: Awaitable[T]) -> T:
        return await within(op, self.timeout, self._late)

    async def _shared(self, op: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await self._within_budget(op())
        except Exception as exc:
            self.metrics.store_errors.labels(operation="state").inc()
            self.metrics.state_fallbacks.inc()
            self._warn(f"routing state: {what} answered from this process's memory: {type(exc).__name__}: {exc}")
            return await fallback()

    # -- RoutingState ----------------------------------------------------------------------------

    async def next_turn(self, key: str) -> int:
        async def shared() -> int:
            async with self.single.connect() as conn:
                turn = (await conn.execute(self._turn, {"key": key, "turn": 1})).scalar_one()
            return int(turn) - 1

        return await self._shared(shared, lambda: self.local.next_turn(key), "round-robin turn")

    async def acquire(self, line_key: str, limit: int) -> bool:
        # The lease's id is made here, so a lease whose insert outlived the time budget can still be
        # found and removed: it must not hold a place on the line for a call that went elsewhere.
        lease = uuid.uuid4().hex

        async def shared() -> bool:
            now = self.clock()
            params = {"lease": lease, "line_key": line_key, "instance": self.instance, "now": now, "limit": limit}
            async with self.engine.begin() as conn:
                await conn.execute(self._guard, {"line_key": line_key, "touched_at": now})  # serialises this line
                taken = (await conn.execute(self._take, params)).rowcount
            return bool(taken)

        try:
            taken = await self._within_budget(shared())
        except Exception as exc:
            self.metrics.store_errors.labels(operation="state").inc()
            self.metrics.state_fallbacks.inc()
            self._warn(f"routing state: limit of line {line_key} answered from this process's memory: {type(exc).__name__}: {exc}")
            self._spawn(self._release_later(lease, first_delay=0.0))
            if await self.local.acquire(line_key, limit):
                self._held.setdefault(line_key, []).append(None)
                return True
            return False
        if taken:
            self._held.setdefault(line_key, []).append(lease)
        return taken

    async def release(self, line_key: str) -> None:
        leases = self._held.get(line_key)
        if not leases:
            return
        lease = leases.pop()
        if not leases:
            del self._held[line_key]
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
        return await self._shared(
            lambda: line_health.read_lines(self.engine, line_keys), lambda: self.local.line_health(line_keys), "line health"
        )

    async def report_line(self, line_key: str, status: str, when: float) -> tuple[LineRecord, LineRecord]:
        return await self._shared(
            lambda: line_health.report(self.engine, line_key, status, when), lambda: self.local.report_line(line_key, status, when), "line health"
        )

    async def mark_used(self, line_key: str, when: float) -> None:
        async def shared() -> None:
            async with self.single.connect() as conn:
                await conn.execute(self._usage, {"line_key": line_key, "last_answered": when})

        await self.local.mark_used(line_key, when)
        await self._shared(shared, lambda: self.local.mark_used(line_key, when), "least-recent history")
