"""Shared routing state on real databases: two routers (two state objects, separate connection pools)
against one database take round-robin turns fairly and never exceed a line's limit together; a crashed
router's line counts expire; a database that is away or slow never stops routing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import make_url

from callrouter.metrics import RouterMetrics
from callrouter.store.db import open_engine
from callrouter.store.routing_state import SqlRoutingState
from tests.harness import arun


def router(url: str, name: str, **kw: object) -> SqlRoutingState:
    return SqlRoutingState(open_engine(make_url(url), connect_timeout=1), RouterMetrics(), instance=name, timeout=5, **kw)  # type: ignore[arg-type]


async def stop(*states: SqlRoutingState) -> None:
    for s in states:
        await s.close()
        await s.engine.dispose()


def test_two_routers_take_round_robin_turns_fairly(db_url: str) -> None:
    async def body() -> None:
        a, b = router(db_url, "a"), router(db_url, "b")
        await a.start()
        await b.start()
        turns = await asyncio.gather(*(s.next_turn("4008001234/sales") for _ in range(150) for s in (a, b)))
        await stop(a, b)
        assert sorted(turns) == list(range(300))  # every turn handed out exactly once
        firsts = Counter(t % 7 for t in turns)  # a 7-line group: who would be offered first
        assert max(firsts.values()) - min(firsts.values()) <= 1

    arun(body(), 60)


def test_two_routers_never_put_more_calls_on_a_line_than_its_limit(db_url: str) -> None:
    async def body() -> None:
        a, b = router(db_url, "a"), router(db_url, "b")
        await a.start()
        await b.start()
        got = await asyncio.gather(*(s.acquire("PJSIP/8001", 3) for _ in range(20) for s in (a, b)))
        assert sum(got) == 3
        assert await a.active("PJSIP/8001") == 3 == await b.active("PJSIP/8001")
        holder = a if a._held else b
        await holder.release("PJSIP/8001")
        assert await b.active("PJSIP/8001") == 2
        assert await b.acquire("PJSIP/8001", 3) and not await a.acquire("PJSIP/8001", 3)
        await stop(a, b)

    arun(body(), 60)


def test_a_crashed_routers_line_counts_expire_and_are_swept(db_url: str) -> None:
    clock = [datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)]

    async def body() -> None:
        crashed = router(db_url, "crashed", lease_ttl=30, clock=lambda: clock[0])
        alive = router(db_url, "alive", lease_ttl=30, clock=lambda: clock[0])
        await crashed.beat()
        await alive.beat()
        assert await crashed.acquire("Local/13800138001@callrouter-lines", 1)
        assert not await alive.acquire("Local/13800138001@callrouter-lines", 1)
        clock[0] += timedelta(seconds=20)
        await alive.beat()  # only the live router keeps beating; the other was kill -9'd
        assert not await alive.acquire("Local/13800138001@callrouter-lines", 1)
        clock[0] += timedelta(seconds=15)  # 35 s since the crashed router's last beat
        await alive.beat()
        assert await alive.acquire("Local/13800138001@callrouter-lines", 1)
        assert await alive.sweep() == 1  # the crashed router's lease row is gone
        await stop(alive)
        await crashed.engine.dispose()

    arun(body(), 60)


def test_a_database_that_is_away_falls_back_to_memory_and_routing_goes_on() -> None:
    async def body() -> None:
        s = SqlRoutingState(open_engine(make_url("postgresql+asyncpg://postgres@127.0.0.1:1/test"), connect_timeout=1), RouterMetrics(), timeout=0.5)
        await s.start()  # the heartbeat cannot register; the router still starts
        assert [await s.next_turn("k") for _ in range(3)] == [0, 1, 2]
        assert await s.acquire("line", 1) and not await s.acquire("line", 1)
        await s.release("line")
        assert await s.acquire("line", 1)
        await s.mark_used("line", 5.0)
        assert await s.last_used(("line", "other")) == {"line": 5.0}
        assert s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") >= 7
        await s.close()
        await s.engine.dispose()

    arun(body(), 60)


def test_least_recent_history_is_shared(db_url: str) -> None:
    async def body() -> None:
        a, b = router(db_url, "a"), router(db_url, "b")
        await a.mark_used("l1", 100.0)
        await b.mark_used("l2", 50.0)
        await a.mark_used("l2", 150.0)
        assert await b.last_used(("l1", "l2", "l3")) == {"l1": 100.0, "l2": 150.0}
        await stop(a, b)

    arun(body())


def test_a_database_that_hangs_costs_a_call_no_more_than_the_time_budget_and_leaves_no_lease(pg_url: str) -> None:
    """A hung database (connections open, no bytes back) is worse than a dead one: each routing-state
    operation must still return at its budget, the pool must recover, and a lease whose insert may have
    landed late must not keep a place on the line."""
    import time

    from sqlalchemy import func, select

    from callrouter.store.schema import line_leases
    from tests.tcpproxy import proxied

    url = make_url(pg_url)

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        engine = open_engine(make_url(via_proxy), connect_timeout=2)
        s = SqlRoutingState(engine, RouterMetrics(), instance="r", timeout=0.3)
        await s.start()
        assert await s.next_turn("g") == 0
        proxy.stall()
        waits = []
        for _ in range(6):  # more than the pool holds at once: hung connections must not starve later calls
            t0 = time.monotonic()
            await s.next_turn("g")
            assert await s.acquire("PJSIP/8001", 10)  # from memory
            waits.append(time.monotonic() - t0)
        assert max(waits) < 2 * 0.3 + 0.5, waits  # two operations, each cut at its 0.3 s budget
        assert s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") == 12
        for _ in range(6):
            await s.release("PJSIP/8001")
        proxy.unstall()
        await proxy.cut()  # the hung connections break; the pool must replace them
        await proxy.restore()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:
            fallbacks = s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total")
            turn = await s.next_turn("g")
            if s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") == fallbacks:
                break  # answered by the database again
            await asyncio.sleep(0.3)
        assert turn >= 1  # the database's own counter
        plain = open_engine(url)
        while loop.time() < deadline:  # late inserts are undone by the background releases
            async with plain.connect() as conn:
                left = (await conn.execute(select(func.count()).select_from(line_leases))).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.3)
        assert left == 0
        await plain.dispose()
        await s.close()
        await engine.dispose()
        await proxy.cut()

    arun(body(), 60)


def test_connections_lost_while_kept_are_replaced_without_a_fallback(pg_url: str) -> None:
    """The state keeps its connections between statements. When the server side goes (a Postgres restart:
    here the proxy cuts every connection), asyncpg takes them back and detaches the handles kept: the next
    operations must get new connections, not fall back to memory (on 86eeee3 each kept handle cost one)."""
    from tests.tcpproxy import proxied

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        engine = open_engine(make_url(via_proxy), connect_timeout=2)
        s = SqlRoutingState(engine, RouterMetrics(), instance="k", timeout=2.0)
        await s.start()
        first = [await s.next_turn("k-group") for _ in range(3)]
        await asyncio.gather(*(s.next_turn("k-group") for _ in range(6)))  # several connections kept
        await proxy.cut()
        await proxy.restore()
        await asyncio.sleep(0.3)  # asyncpg notices the lost connections
        after = [await s.next_turn("k-group") for _ in range(8)]
        assert s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") in (None, 0.0)
        assert after == list(range(first[0] + 9, first[0] + 17))  # the database's own turns, none from memory
        await s.close()
        await engine.dispose()
        await proxy.cut()

    arun(body(), 60)
