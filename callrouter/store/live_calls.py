"""Calls in progress, shared by every router through the `active_calls` table, and what the console reads of it.

Each router writes only its own calls' rows. The session tells `SqlLiveCalls` of a change and goes on
(`fastagi.ports.LiveCalls`); the change is noted in memory and written a moment later by a background
loop, so a slow or absent database never touches a call. What the loop could not write is written again
whole once the database answers: the process's memory is the truth for its own calls, the table a copy.

A row counts only while its router's `router_instances` row is fresh, as a line lease does
(`store.routing_state`): the calls of a router that crashed stop showing after `lease_ttl`, and are swept.
When the routing state is not shared (SQLite, one router), nothing else keeps this router's row fresh,
so this loop beats it itself (`heartbeat=True`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.metrics import RouterMetrics
from callrouter.store.dialect import upsert_set
from callrouter.store.memory import ActiveCall, MemoryLiveCalls
from callrouter.store.schema import active_calls, line_leases, router_instances
from callrouter.tasks import GOODBYE_BUDGET, Backoff, Periodic, within

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # changed calls not yet written; beyond this (a long outage) the next write is a whole one
_COLUMNS = ("instance", "uniqueid", "source", "number", "caller", "started_at", "state", "line_id", "updated_at")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _row(call: ActiveCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in _COLUMNS}


class SqlLiveCalls(MemoryLiveCalls):
    """This router's calls in progress, copied to `active_calls` in the background."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: RouterMetrics | None = None,
        *,
        instance: str,
        lease_ttl: float = 30.0,
        heartbeat: bool = False,
        clock: Callable[[], datetime] = utc_now,
        every: float = 0.25,
        budget: float = 5.0,
    ) -> None:
        super().__init__(instance, clock)
        self.engine, self.metrics = engine, metrics
        self.lease_ttl = timedelta(seconds=lease_ttl)
        self.heartbeat = heartbeat
        self.budget = budget
        self._pending: set[tuple[str, str]] = set()  # calls changed since they were last written
        # Calls whose row this loop wrote and has not deleted: only these need a DELETE. A call that starts
        # and ends between two rounds (a caller who hangs up in the greeting, a blacklisted number) never
        # touches the table, and a new call's first row is a bare INSERT.
        self._in_table: set[tuple[str, str]] = set()
        self._whole = False  # rewrite all of this router's rows (after a failure, an overflow, and every lease_ttl)
        self._beat_every = lease_ttl / 3
        self._next_beat = 0.0  # monotonic
        self._last_whole = time.monotonic()
        self._late: set[asyncio.Future[Any]] = set()
        self._register = upsert_set(router_instances, engine.dialect.name, ["instance"], ["expires_at"])
        self.periodic = Periodic(
            "live-calls", self.step, lambda: every, backoff=Backoff(first=0.5, cap=10.0), on_error=self._count_error,
        )

    def _count_error(self, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.store_errors.labels(operation="live_calls").inc()

    # -- the port: note and return ---------------------------------------------------------------

    def touched(self, key: tuple[str, str]) -> None:
        self._pending.add(key)
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()
            self._whole = True

    # -- the loop --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.periodic.start()

    async def step(self) -> bool:
        """One round: the heartbeat and sweep when due, then whatever changed since the last round."""
        now = self.clock()
        self.promote(now)
        if time.monotonic() >= self._next_beat:
            if self.heartbeat:
                await within(self.beat(now), self.budget, self._late)
            await within(self.sweep(now), self.budget, self._late)
            self._next_beat = time.monotonic() + self._beat_every
            if time.monotonic() - self._last_whole >= self.lease_ttl.total_seconds():
                self._whole = True  # heals rows another router swept while this one could not beat
        if self._whole or self._pending:
            await self.write()
        return False

    async def write(self) -> None:
        whole, keys = self._whole, self._pending
        self._whole, self._pending = False, set()
        written = list(self._calls) if whole else [k for k in keys if k in self._calls]
        gone = set() if whole else keys & self._in_table  # whole: every row of this router goes first
        if not whole and not gone and not written:
            return
        try:
            await within(self._write(whole, gone, [_row(self._calls[k]) for k in written]), self.budget, self._late)
        except BaseException:
            self._whole = True  # what did not land is written whole next time (bounded: the calls in progress)
            raise
        if whole:
            self._in_table = set(written)
            self._last_whole = time.monotonic()
        else:
            self._in_table -= gone
            self._in_table.update(written)

    async def _write(self, whole: bool, keys: set[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
        t = active_calls.c
        async with self.engine.begin() as conn:
            if whole:
                await conn.execute(delete(active_calls).where(t.instance == self.instance))
            elif keys:
                await conn.execute(
                    delete(active_calls).where(t.instance == self.instance, t.uniqueid == bindparam("b_uniqueid"), t.source == bindparam("b_source")),
                    [{"b_uniqueid": u, "b_source": s} for u, s in keys],
                )
            if rows:
                await conn.execute(active_calls.insert(), rows)

    async def beat(self, now: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self._register, {"instance": self.instance, "started_at": now, "expires_at": now + self.lease_ttl})

    async def sweep(self, now: datetime) -> int:
        """Remove the rows of routers that stopped beating; returns how many."""
        fresh = select(router_instances.c.instance).where(router_instances.c.expires_at >= now)
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(active_calls).where(active_calls.c.instance.not_in(fresh)))
            if self.heartbeat:  # no shared routing state sweeps registrations here: those that hold no lease go
                await conn.execute(
                    delete(router_instances).where(
                        router_instances.c.expires_at < now, router_instances.c.instance.not_in(select(line_leases.c.instance))
                    )
                )
        return int(result.rowcount or 0)

    async def close(self) -> None:
        """Stop the loop and remove this router's rows (those of a router that stops without this expire)."""
        await self.periodic.close()
        for task in list(self._late):
            task.cancel()

        async def forget_me() -> None:
            async with self.engine.begin() as conn:
                await conn.execute(delete(active_calls).where(active_calls.c.instance == self.instance))
                if self.heartbeat:
                    await conn.execute(
                        delete(router_instances).where(
                            router_instances.c.instance == self.instance, router_instances.c.instance.not_in(select(line_leases.c.instance))
                        )
                    )

        try:
            await within(forget_me(), min(self.budget, GOODBYE_BUDGET), self._late)
        except Exception as exc:
            log.warning("could not remove this router's calls in progress on stop (%s); they stop counting in %s", exc, self.lease_ttl)


# -- what the console reads ------------------------------------------------------------------------


async def live_calls(engine: AsyncEngine, *, numbers: frozenset[str] | None, now: datetime, limit: int = 500) -> list[ActiveCall]:
    """Calls in progress to `numbers` (None: any) on routers still beating, oldest first, at most `limit`."""
    if numbers is not None and not numbers:
        return []
    t = active_calls.c
    q = (
        select(*[t[name] for name in _COLUMNS])
        .select_from(active_calls.join(router_instances, t.instance == router_instances.c.instance))
        .where(router_instances.c.expires_at >= now)
        .order_by(t.started_at, t.uniqueid)
        .limit(limit)
    )
    if numbers is not None:
        q = q.where(t.number.in_(sorted(numbers)))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).mappings().all()
    return [
        ActiveCall(
            row["instance"], row["uniqueid"], row["source"], row["number"], row["caller"], _aware(row["started_at"]),
            row["state"], row["line_id"], _aware(row["updated_at"]),
        )
        for row in rows
    ]


async def leased_lines(engine: AsyncEngine, keys: Sequence[str], *, now: datetime) -> dict[str, int]:
    """Calls on each line (by its key, the dial target) by leases of routers still beating; lines with
    none are left out. The keys are those of the plans a scope may see: a lease names no number."""
    wanted = list(dict.fromkeys(keys))
    out: dict[str, int] = {}
    async with engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            q = (
                select(line_leases.c.line_key, func.count())
                .select_from(line_leases.join(router_instances, line_leases.c.instance == router_instances.c.instance))
                .where(line_leases.c.line_key.in_(wanted[i:i + 500]), router_instances.c.expires_at >= now)
                .group_by(line_leases.c.line_key)
            )
            out.update({k: int(n) for k, n in (await conn.execute(q)).all()})
    return out
