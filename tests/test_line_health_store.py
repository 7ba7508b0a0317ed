"""Line health in the store (SQLite and Postgres) and in memory: the same rule applied, concurrent reports
from two routers never lost, every router reading what the others reported."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import make_url

from callrouter.metrics import RouterMetrics
from callrouter.routing.health import LineRecord
from callrouter.store.db import open_engine
from callrouter.store.line_health import read_lines
from callrouter.store.memory import MemoryRoutingState
from callrouter.store.routing_state import SqlRoutingState
from tests.harness import arun

KEY = "Local/13800138001@callrouter-lines"


def router(url: str, name: str) -> SqlRoutingState:
    return SqlRoutingState(open_engine(make_url(url), connect_timeout=1), RouterMetrics(), instance=name, timeout=5)


async def stop(*states: SqlRoutingState) -> None:
    for s in states:
        await s.close()
        await s.engine.dispose()


async def a_line_failing_and_recovering(state: object) -> None:
    report, read = state.report_line, state.line_health  # type: ignore[attr-defined]
    assert await read((KEY,)) == {}
    before, after = await report(KEY, "CHANUNAVAIL", 100.0)
    assert before == LineRecord(KEY) and (after.unavailable, after.since, after.last_failure) == (1, 100.0, 100.0)
    before, after = await report(KEY, "NOANSWER", 160.0)
    assert before.unavailable == 1 and (after.unavailable, after.noanswer, after.since, after.last_failure) == (1, 1, 100.0, 160.0)
    assert (await read((KEY, "other")))[KEY] == after
    assert await report(KEY, "BUSY", 170.0) == (after, after)  # says nothing: nothing written
    assert (await read((KEY,)))[KEY] == after
    before, after = await report(KEY, "ANSWER", 200.0)
    assert after.clean and after.last_status == "ANSWER" and not before.clean
    assert await read((KEY,)) == {}  # a line that works has no record


def test_memory_state_applies_the_rule() -> None:
    arun(a_line_failing_and_recovering(MemoryRoutingState()))


def test_the_database_applies_the_same_rule(db_url: str) -> None:
    async def body() -> None:
        state = router(db_url, "a")
        await state.start()
        try:
            await a_line_failing_and_recovering(state)
            await state.report_line(KEY, "NOANSWER", 300.0)
            assert (await read_lines(state.engine, (KEY,)))[KEY].noanswer == 1  # what `lines status` and the API read
        finally:
            await stop(state)

    arun(body(), 60)


def test_two_routers_reporting_at_once_lose_no_failure(db_url: str) -> None:
    async def body() -> None:
        a, b = router(db_url, "a"), router(db_url, "b")
        await a.start()
        await b.start()
        try:
            changes = await asyncio.gather(*(s.report_line(KEY, "CHANUNAVAIL", 1000.0 + i) for i in range(20) for s in (a, b)))
            assert sorted(before.unavailable for before, _ in changes) == list(range(40))  # each saw the one before it
            crossed = [after for before, after in changes if before.unavailable == 1]
            assert len(crossed) == 1  # one report, on one router, suspends the line: one message
            assert (await b.line_health((KEY,)))[KEY].unavailable == 40 == (await a.line_health((KEY,)))[KEY].unavailable
            assert a.metrics.state_fallbacks._value.get() == 0 and b.metrics.state_fallbacks._value.get() == 0
            await a.report_line(KEY, "ANSWER", 2000.0)
            assert await b.line_health((KEY,)) == {}
        finally:
            await stop(a, b)

    arun(body(), 60)


def test_a_database_that_is_away_is_answered_from_memory() -> None:
    async def body() -> None:
        state = SqlRoutingState(
            open_engine(make_url("postgresql+asyncpg://nobody@127.0.0.1:1/none"), connect_timeout=1), RouterMetrics(), instance="x", timeout=0.5
        )
        try:
            _, after = await state.report_line(KEY, "CHANUNAVAIL", 1.0)
            assert after.unavailable == 1
            assert (await state.line_health((KEY,)))[KEY].unavailable == 1
            assert state.metrics.state_fallbacks._value.get() >= 2
        finally:
            await state.engine.dispose()

    arun(body(), 30)


@pytest.mark.parametrize("status", ["ANSWER", "CANCEL", "FULL"])
def test_nothing_is_written_for_a_line_that_works(db_url: str, status: str) -> None:
    async def body() -> None:
        state = router(db_url, "a")
        try:
            before, after = await state.report_line(KEY, status, 5.0)
            assert before == after == LineRecord(KEY)
            assert await read_lines(state.engine, (KEY,)) == {}
        finally:
            await stop(state)

    arun(body(), 60)
