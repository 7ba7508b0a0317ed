"""The one periodic loop: its error policy, backoff, run_once and a stop that does not wait on a hung step."""

from __future__ import annotations

import asyncio
import logging
import random

from datetime import datetime
from typing import Any, Callable

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.exporter.service import CdrExporter
from callrouter.metrics import RouterMetrics
from callrouter.notify.sender import OutboxSender
from callrouter.packages.watcher import PackageWatcher
from callrouter.retention.purge import RetentionPurger
from callrouter.store.blacklist import BlacklistFollower, BlacklistStore
from callrouter.store.db import open_engine
from callrouter.tasks import Backoff, Periodic, PeriodicPart, within
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


async def _hung() -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(3600)  # its cleanup hangs too


def test_a_step_waiting_within_a_budget_is_abandoned_at_close_not_awaited() -> None:
    keep: set[asyncio.Future[Any]] = set()

    async def step() -> bool:
        await within(_hung(), 3600, keep)
        return False

    async def body() -> None:
        loop = Periodic("hung-loop", step, lambda: 1.0, stop_budget=3600)
        loop.start()
        await asyncio.sleep(0.01)
        await asyncio.wait_for(loop.close(), 2)  # prompt with no help from stop_budget
        (abandoned,) = keep  # cancelled, still unwinding, and referenced until it ends
        abandoned.cancel()  # its cleanup gives up too
        await asyncio.sleep(0.01)
        assert not keep

    arun(body())


def test_a_start_delay_puts_the_first_step_off() -> None:
    ran: list[float] = []

    async def step() -> bool:
        ran.append(asyncio.get_running_loop().time())
        return False

    async def body() -> None:
        loop = Periodic("late-loop", step, lambda: 3600.0)
        started = asyncio.get_running_loop().time()
        loop.start(delay=0.3)
        await asyncio.sleep(0.05)
        assert ran == []
        while not ran:
            await asyncio.sleep(0.01)
        await loop.close()
        assert ran[0] - started >= 0.3

    arun(body())


def test_an_interval_that_cannot_be_read_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    steps: list[int] = []

    async def step() -> bool:
        steps.append(1)
        return False

    async def body() -> None:
        loop = Periodic("bad-interval", step, _bug, backoff=Backoff(first=0.01, cap=0.01))
        with caplog.at_level(logging.ERROR, logger="callrouter.tasks"):
            loop.start()
            while len(steps) < 3:
                await asyncio.sleep(0.01)
            await loop.close()
        assert any(r.exc_info is not None and "cannot read its interval" in r.getMessage() for r in caplog.records)

    arun(body())


# -- every background loop of the router is a Periodic, with its policy ---------------------------

def _bug() -> Any:
    raise TypeError("a bug")


def _build(name: str, engine: AsyncEngine) -> tuple[PeriodicPart, Callable[[], float | None]]:
    """The loop called `name`, with a bug in its first line of work; and its failure counter, if it has one."""
    config: Callable[[], RoutingConfig] = _bug
    clock: Callable[[], datetime] = _bug
    registry = CollectorRegistry()
    if name == "outbox-sender":
        return OutboxSender(engine, config, registry, clock, random.Random(1)), lambda: registry.get_sample_value("callrouter_outbox_errors_total")
    if name == "cdr-exporter":
        exporter = CdrExporter(engine, config, clock)
        return exporter, lambda: exporter.registry.get_sample_value("callrouter_exporter_poll_errors_total")
    if name == "package-watcher":
        return PackageWatcher(engine, config, registry, clock), lambda: registry.get_sample_value("callrouter_package_check_errors_total")
    if name == "recording-retention":
        return RetentionPurger(engine, config, registry, clock), lambda: None
    metrics = RouterMetrics()
    follower = BlacklistFollower(BlacklistStore(engine), metrics, clock, every=0.05)
    return follower, lambda: metrics.registry.get_sample_value("callrouter_store_errors_total", {"operation": "blacklist"})


@pytest.mark.parametrize("name", ["outbox-sender", "cdr-exporter", "package-watcher", "recording-retention", "blacklist-follower"])
def test_every_loop_logs_a_bug_with_its_traceback_counts_it_and_goes_on(name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        engine = open_engine(make_url("sqlite+aiosqlite:///:memory:"))  # never reached: the bug comes first
        loop, counted = _build(name, engine)

        def bugs() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "callrouter.tasks" and r.exc_info is not None and r.exc_info[0] is TypeError]

        try:
            with caplog.at_level(logging.WARNING, logger="callrouter.tasks"):
                await loop.start()  # the first step runs at once (the blacklist follower's inside start())
                deadline = asyncio.get_running_loop().time() + 5
                while not bugs():
                    assert asyncio.get_running_loop().time() < deadline, "the first step never ran"
                    await asyncio.sleep(0.01)
                assert loop.periodic.running  # the loop goes on after the bug
                assert await loop.run_once() is None
        finally:
            await asyncio.wait_for(loop.close(), 5)
            await engine.dispose()
        found = bugs()
        assert len(found) >= 2 and all(r.levelno == logging.ERROR and name in r.getMessage() for r in found)
        assert counted() in (None, len(found))

    arun(body())
