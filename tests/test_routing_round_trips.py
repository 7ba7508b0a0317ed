"""Shared routing state on Postgres costs a call one round trip (issue 15), counted, not timed: every
connection goes through a TCP proxy that counts what clients send (asyncpg waits for each answer, so one
send is one round trip). The turn, the lines' health and the first line's lease come in one; the release
and the answered call's report are sent after, together, and the call does not wait for them: it ends
while the database passes no bytes at all."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.metrics import RouterMetrics
from callrouter.routing.health import LineRecord
from callrouter.store.db import open_engine
from callrouter.store.routing_state import SqlRoutingState
from callrouter.store.schema import line_health, line_leases, rr_turns
from tests.harness import arun, running_router
from tests.tcpproxy import TcpProxy, proxied

LINES = (("L1", 2), ("L2", 2), ("L3", 2))


async def turn_sequences(url: str) -> dict[str, int]:
    """The groups' turn sequences and the last turn each handed out."""
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            names = (await conn.execute(text("SELECT relname FROM pg_class WHERE relkind = 'S' AND relname LIKE 'callrouter_turn_%'"))).scalars()
            return {name: int((await conn.execute(text(f'SELECT last_value FROM "{name}"'))).scalar_one()) for name in list(names)}
    finally:
        await engine.dispose()


def counted(proxy: TcpProxy, via_proxy: str, **kw: object) -> SqlRoutingState:
    """The state on one connection (so its statements are prepared once, in the warm-up) through the proxy;
    a budget far longer than any test, so a call that waited for the database could not pass."""
    engine = open_engine(make_url(via_proxy), connect_timeout=2)
    return SqlRoutingState(engine, RouterMetrics(), instance="counted", timeout=30, pool_size=1, **kw)  # type: ignore[arg-type]


async def rows(url: str, table: object) -> int:
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def test_each_operation_on_the_critical_path_is_one_round_trip_and_the_rest_is_sent_after(pg_url: str) -> None:
    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        s = counted(proxy, via_proxy)
        await s.beat()
        await s.start_hunt("g", LINES, True)  # warm-up: connects, prepares the statements
        s.release_soon("L1")
        s.report_soon("L1", "ANSWER", 1.0)
        await s.flush()

        sent = proxy.client_sends
        got = await s.start_hunt("g", LINES, True)
        assert proxy.client_sends - sent == 1  # turn, health and lease: one round trip
        assert (got.turn, got.lease_key, got.taken, got.health) == (1, "L2", True, {})  # the turn starts at L2: leased
        for op in (s.next_turn("g"), s.acquire("L3", 1), s.line_health(("L1", "L2"))):
            sent = proxy.client_sends
            await op
            assert proxy.client_sends - sent == 1
        assert not await s.acquire("L3", 1)  # at its limit, in the same one statement

        sent = proxy.client_sends
        s.release_soon("L2")
        s.release_soon("L3")
        answered = s.report_soon("L2", "ANSWER", 2.0)
        assert proxy.client_sends == sent and not answered.done()  # nothing sent while the call goes on
        await s.flush()
        assert proxy.client_sends - sent == 1  # two releases and the answer: one statement, after
        assert answered.result() == (LineRecord("L2"), LineRecord("L2"))
        assert await rows(pg_url, line_leases) == 0
        await s.close()
        await s.engine.dispose()
        await proxy.cut()

    arun(body(), 60)


def test_a_line_with_a_health_record_is_not_leased_ahead(pg_url: str) -> None:
    """A line that failed may be set aside by the hunt: its lease waits for its Dial."""

    async def body() -> None:
        s = SqlRoutingState(open_engine(make_url(pg_url)), RouterMetrics(), instance="r", timeout=5)
        await s.beat()
        await s.report_line("L1", "CHANUNAVAIL", 10.0)
        got = await s.start_hunt(None, LINES, True)
        assert got.lease_key is None and not got.taken and got.health is not None and got.health["L1"].unavailable == 1
        assert await rows(pg_url, line_leases) == 0
        got = await s.start_hunt("g", LINES, True)  # turn 0 starts at L1 too
        assert got.turn == 0 and got.lease_key is None
        got = await s.start_hunt("g", LINES, False)  # health not asked: the turn's line (L2) is leased
        assert (got.turn, got.lease_key, got.taken, got.health) == (1, "L2", True, None)
        await s.close()
        await s.engine.dispose()

    arun(body(), 60)


def test_a_routed_call_waits_for_the_database_once(pg_url: str) -> None:
    """A whole call through the FastAGI server (sample plan: menu, press 1, the round-robin sales group
    with line health): one round trip before the line rings; the release and the answer's report go out
    after, the call ending while the database is stalled."""

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        s = counted(proxy, via_proxy)
        await s.beat()
        async with running_router(state=s) as router:
            answer = DialScript("ANSWER", 1, 3)
            warm = await run_call("127.0.0.1", router.port, CallScript(uniqueid="warm.1", dtmf=("1",), default_dial=answer))
            assert warm.variables["CALLROUTER_RESULT"] == "ROUTED"
            await s.flush()

            ringing = asyncio.Event()

            class Hold(asyncio.Event):
                async def wait(self) -> bool:  # type: ignore[override]
                    ringing.set()
                    return await super().wait()

            hold = Hold()
            sent = proxy.client_sends
            call = asyncio.create_task(run_call("127.0.0.1", router.port, CallScript(
                uniqueid="counted.1", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 3, hold=hold)), timeout=20))
            await asyncio.wait_for(ringing.wait(), 10)
            assert proxy.client_sends - sent == 1  # turn + health + lease, then the line rings
            assert await rows(pg_url, line_leases) == 1

            proxy.stall()  # from here the database answers nothing: a call that waited for it would hang
            hold.set()
            done = await asyncio.wait_for(call, 10)
            assert done.variables["CALLROUTER_RESULT"] == "ROUTED" and [d.status for d in done.dials] == ["ANSWER"]
            assert router.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") == 0
            await router.settle(2)
            assert router.sink.records[-1].disposition == "answered"
            proxy.unstall()
            await s.flush()
            assert proxy.client_sends - sent == 2  # and one more: the release with the report, after the call
            assert await rows(pg_url, line_leases) == 0
            assert await rows(pg_url, line_health) == 0
            assert await rows(pg_url, rr_turns) == 0  # the turn is a sequence of the group's (migration 0009), no row written
            assert await turn_sequences(pg_url) == {"callrouter_turn_" + hashlib.md5(b"4008001234/sales").hexdigest(): 2}  # warm, counted
        await s.close()
        await s.engine.dispose()
        await proxy.cut()

    arun(body(), 60)


def test_hunts_of_one_group_do_not_wait_for_each_other_and_one_lines_leases_do(pg_url: str) -> None:
    """No convoy on the group's turn (migration 0009): a hunt whose transaction is still open holds no lock
    another hunt of the group needs, unless both lease the same line, which must stay serialised."""

    async def body() -> None:
        dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            await first.execute("INSERT INTO router_instances (instance, started_at, expires_at) VALUES ('r', now(), now() + interval '1 hour')")
            await second.execute("SET lock_timeout = '1s'")  # a wait for the first hunt's locks fails instead of hanging
            take = "SELECT r_turn, r_lease_key, r_taken FROM callrouter_take($1, $2, $3, false, 'r', $4, now()) WHERE r_line_key IS NULL"
            lines, limits = ["A", "B"], [5, 5]
            assert tuple(await first.fetchrow(take, "g", lines, limits, "l0")) == (1, "A", True)  # the group's first hunt makes its turn sequence
            open_hunt = first.transaction()
            await open_hunt.start()  # a hunt not committed yet: it holds what it locked
            assert tuple(await first.fetchrow(take, "g", lines, limits, "l1")) == (2, "B", True)
            assert tuple(await second.fetchrow(take, "g", lines, limits, "l2")) == (3, "A", True)  # did not wait
            with pytest.raises(asyncpg.LockNotAvailableError):  # the same line (turn 4 starts at B): waits for the first
                await second.fetchrow(take, "g", lines, limits, "l3")
            await open_hunt.commit()
            assert tuple(await second.fetchrow(take, "g", lines, limits, "l4")) == (5, "A", True)
            assert await second.fetchval("SELECT count(*) FROM line_leases") == 4  # l0, l1, l2, l4: l3 was rolled back
        finally:
            await first.close()
            await second.close()

    arun(body(), 30)


def test_hunts_that_arrive_while_the_connections_are_busy_share_one_round_trip(pg_url: str) -> None:
    """Group commit for hunt starts (migration 0009): on one connection, the first of ten concurrent hunts
    goes alone and the nine that came meanwhile go together; each still gets its own turn, and a line's
    limit holds inside the batch as between routers."""

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        s = counted(proxy, via_proxy)
        await s.beat()
        await s.start_hunt("warm", (("W", 1),), True)  # connects, prepares
        sent = proxy.client_sends
        got = await asyncio.gather(*(s.start_hunt("g", LINES, True) for _ in range(10)))
        assert proxy.client_sends - sent == 2
        assert sorted(g.turn or 0 for g in got) == list(range(10))
        taken = Counter(g.lease_key for g in got if g.taken)
        assert taken == {"L1": 2, "L2": 2, "L3": 2}  # turns 0-5 lease their line; 6-9 find it full (limit 2)
        assert await rows(pg_url, line_leases) == 7  # and the warm-up's
        await s.close()
        await s.engine.dispose()
        await proxy.cut()

    arun(body(), 60)


def test_batches_of_two_routers_leasing_lines_in_opposite_orders_never_deadlock(pg_url: str) -> None:
    """Each batch locks its lines in one order (the key's hash), so two routers whose batches lease the same
    lines in opposite orders never wait for each other in a circle (Postgres would abort one after
    deadlock_timeout, and its calls would fall back to memory). A third connection holds one line's lock
    meanwhile (a hunt of its own, not committed), so both batches are surely in the middle of their locking at once."""

    async def body() -> None:
        lines = tuple((f"D{i}", 1000) for i in range(8))
        a = SqlRoutingState(open_engine(make_url(pg_url)), RouterMetrics(), instance="a", timeout=10, pool_size=1)
        b = SqlRoutingState(open_engine(make_url(pg_url)), RouterMetrics(), instance="b", timeout=10, pool_size=1)
        await a.beat()
        await b.beat()
        await a.start_hunt("a", lines, False)  # each router's first hunt goes alone, and prepares
        await b.start_hunt("b", lines[::-1], False)
        dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        holder = await asyncpg.connect(dsn)
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT * FROM callrouter_take(NULL, ARRAY['D4'], ARRAY[1000], false, 'a', 'held', now())")  # D4's lock, kept
        # a's turns walk its list (D1, D2, ... D0), b's the other way (D6, D5, ... D7): each batch leases every line
        hunts = asyncio.gather(*(s.start_hunt(name, order, False) for _ in range(16) for s, name, order in ((a, "a", lines), (b, "b", lines[::-1]))))
        await asyncio.sleep(0.5)  # both batches are waiting for D4 now, each holding the lines it locked before
        await hold.commit()
        got = await hunts
        await holder.close()
        assert all(g.taken for g in got)
        for s in (a, b):
            assert s.metrics.registry.get_sample_value("callrouter_state_fallbacks_total") == 0
        assert await rows(pg_url, line_leases) == 35  # 2 first hunts, 32, the holder's
        for s in (a, b):
            await s.close()
            await s.engine.dispose()

    arun(body(), 60)


def test_the_first_calls_after_start_find_their_connections_open_and_prepared(pg_url: str) -> None:
    """start() opens every state connection and prepares the take on each: the first burst of calls pays
    one round trip each, not a connect and asyncpg's type lookups (~50 ms, seen on real calls)."""

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        engine = open_engine(make_url(via_proxy), connect_timeout=2)
        s = SqlRoutingState(engine, RouterMetrics(), instance="r", timeout=30, pool_size=3)
        await s.start()
        await asyncio.sleep(0.2)  # the pool's connections come up together
        sent = proxy.client_sends
        got = await asyncio.gather(*(s.start_hunt(f"g{i}", (("M1", 5), ("M2", 5)), True) for i in range(3)))
        assert proxy.client_sends - sent == 3  # three takes at once on three ready connections: a send each
        assert [g.lease_key for g in got if g.taken] == ["M1"] * 3
        await s.close()
        await s.engine.dispose()
        await proxy.cut()

    arun(body(), 60)
