"""The one periodic loop: its error policy, backoff, run_once and a stop that does not wait on a hung step."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from sqlalchemy.exc import OperationalError

from callrouter.tasks import Backoff, Periodic
from tests.harness import arun


def test_backoff_doubles_to_its_cap_with_bounded_jitter() -> None:
    rng = random.Random(1)
    b = Backoff(first=1.0, cap=8.0, jitter=0.2)
    delays = [b.delay(n, rng) for n in range(1, 7)]
    for got, base in zip(delays, (1, 2, 4, 8, 8, 8)):
        assert base * 0.8 <= got <= base * 1.2


def test_a_database_error_is_a_warning_and_a_bug_has_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []
    outcomes = iter([OperationalError("SELECT 1", {}, Exception("connection refused")), TypeError("a bug"), None])

    async def step() -> bool:
        exc = next(outcomes)
        if exc is not None:
            raise exc
        return False

    async def body() -> None:
        loop = Periodic("test-loop", step, lambda: 1.0, on_error=errors.append)
        with caplog.at_level(logging.WARNING, logger="callrouter.tasks"):
            assert await loop.run_once() is None and loop.failures == 1
            assert await loop.run_once() is None and loop.failures == 2
            assert await loop.run_once() is False and loop.failures == 0
        db, bug = [r for r in caplog.records if r.name == "callrouter.tasks"]
        assert db.levelno == logging.WARNING and db.exc_info is None and "OperationalError" in db.getMessage()
        assert bug.levelno == logging.ERROR and bug.exc_info is not None and bug.exc_info[0] is TypeError
        assert [type(e) for e in errors] == [OperationalError, TypeError]

    arun(body())


def test_the_loop_goes_on_after_failures_and_runs_a_backlog_at_once() -> None:
    calls: list[str] = []
    script = iter(["fail", "again", "again", "idle"])

    async def step() -> bool:
        what = next(script, "idle")
        calls.append(what)
        if what == "fail":
            raise RuntimeError("boom")
        return what == "again"

    async def body() -> None:
        loop = Periodic("test-loop", step, lambda: 3600.0, backoff=Backoff(first=0.01, cap=0.01))
        loop.start()
        for _ in range(200):
            if calls[-1:] == ["idle"]:
                break
            await asyncio.sleep(0.01)
        await loop.close()
        assert calls == ["fail", "again", "again", "idle"] and not loop.running

    arun(body())


def test_close_does_not_wait_for_a_hung_step_past_its_budget() -> None:
    async def hung() -> bool:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(3600)  # even its cleanup hangs (a rollback against a hung database)
        return False

    async def body() -> None:
        loop = Periodic("hung-loop", hung, lambda: 1.0, stop_budget=0.1)
        loop.start()
        await asyncio.sleep(0.01)
        await asyncio.wait_for(loop.close(), 2)
        assert not loop.running

    arun(body())
