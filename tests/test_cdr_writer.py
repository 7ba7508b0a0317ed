"""The CDR writer against real databases: batches, replay after a crash or an outage (nothing lost, nothing
twice), bounded memory while the database is away, damaged spool lines and refused rows set aside."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Callable

import pytest

from sqlalchemy import text
from sqlalchemy.engine import make_url

from callrouter.metrics import RouterMetrics
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.cdr_writer import CdrWriter, WriterSettings
from callrouter.store.db import open_engine
from callrouter.store.spool import Spool
from tests.cdrs import counts, record
from tests.harness import arun
from tests.tcpproxy import TcpProxy, proxied

FAST = WriterSettings(batch_size=500, batch_age=0.05, retry_min=0.05, retry_max=0.2)
DEAD_PG = "postgresql+asyncpg://postgres@127.0.0.1:1/test"


def writer_for(url: str, spool_dir: Path, settings: WriterSettings = FAST) -> CdrWriter:
    engine = open_engine(make_url(url), connect_timeout=1)
    return CdrWriter(Spool(str(spool_dir), fsync=False), CdrStore(engine), RouterMetrics(), settings)


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for the writer's background task to reach a state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def stop(writer: CdrWriter, timeout: float = 10.0) -> None:
    await writer.close(timeout)
    await writer.store.engine.dispose()


def test_records_are_written_in_batches_and_the_spool_is_cleared(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool")
        await w.start()
        await asyncio.gather(*(w.submit(record(i)) for i in range(1200)))
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert await counts(db_url) == (1200, 2400, 1200)
        assert w.stored == 1200 and w.duplicates == 0 and w.rejected == 0
        assert not list((tmp_path / "spool").glob("*.spool"))

    arun(body(), 60)


def test_a_replayed_spool_adds_nothing_twice(db_url: str, tmp_path: Path) -> None:
    """A router that stored some records and was killed before clearing its spool: the next start
    replays everything, the database keeps one row per call and the statistics count each call once."""

    async def body() -> None:
        dead = writer_for("sqlite+aiosqlite:////nonexistent/dir/x.db" if db_url.startswith("sqlite") else DEAD_PG, tmp_path / "spool")
        await dead.start()
        for i in range(100):
            await dead.submit(record(i))
        await stop(dead, timeout=0.3)  # the database never answered: all 100 stay spooled
        assert len(list((tmp_path / "spool").glob("*.spool"))) == 1
        engine = open_engine(make_url(db_url))
        await CdrStore(engine).write([rows_from_spooled(spool_entry(record(i))[0]) for i in range(30)])
        await engine.dispose()

        w = writer_for(db_url, tmp_path / "spool")
        await w.start()
        assert w.backlog == 100
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert await counts(db_url) == (100, 200, 100)
        assert (w.stored, w.duplicates) == (70, 30)

    arun(body(), 60)


def test_memory_stays_bounded_while_the_database_is_away_and_the_disk_backlog_is_then_written(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        bounded = WriterSettings(batch_size=200, batch_age=0.05, memory_records=50, retry_min=0.05, retry_max=0.1)
        dead = writer_for("sqlite+aiosqlite:////nonexistent/dir/x.db" if db_url.startswith("sqlite") else DEAD_PG, tmp_path / "spool", bounded)
        await dead.start()
        for chunk in range(20):
            await asyncio.gather(*(dead.submit(record(chunk * 100 + i)) for i in range(100)))
        assert dead.backlog == 2000
        assert len(dead._recent) <= 50  # the rest lives only in the spool
        assert dead.spool.bytes_on_disk() > 2000 * 500
        await stop(dead, timeout=0.3)

        w = writer_for(db_url, tmp_path / "spool", bounded)
        await w.start()
        await until(lambda: w.backlog == 0, 60)
        await stop(w)
        assert await counts(db_url) == (2000, 4000, 2000)

    arun(body(), 120)


def test_damaged_spool_lines_are_set_aside_with_the_reason(db_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    good = spool_entry(record(1))[1]
    unknown = json.loads(good)
    unknown.update(uniqueid="x.2", disposition="teleported")
    (spool_dir / "000000000001.spool").write_bytes(
        good + b"not json at all\n" + json.dumps(unknown).encode() + b"\n" + spool_entry(record(3))[1][:40]
    )

    async def body() -> None:
        w = writer_for(db_url, spool_dir)
        await w.start()
        assert w.backlog == 4
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert await counts(db_url) == (1, 2, 1)

    arun(body())
    rejected = [json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()]
    assert [r["error"][:24] for r in rejected] == ["Expecting value: line 1 ", "unknown disposition 'tel", "torn line (the process s"]
    assert rejected[0]["spooled"] == "not json at all"


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_is_stored(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        async with engine.begin() as conn:
            if db_url.startswith("sqlite"):
                await conn.execute(text("CREATE TRIGGER no_666 BEFORE INSERT ON calls WHEN NEW.caller = '666' BEGIN SELECT RAISE(ABORT, 'caller 666 refused'); END"))
            else:
                await conn.execute(text("ALTER TABLE calls ADD CONSTRAINT no_666 CHECK (caller <> '666')"))
        await engine.dispose()
        w = writer_for(db_url, tmp_path / "spool", WriterSettings(batch_size=10, batch_age=10))
        await w.start()
        await asyncio.gather(*(w.submit(record(i, caller="666" if i == 7 else "13912345678")) for i in range(10)))
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert await counts(db_url) == (9, 18, 9)
        assert w.rejected == 1

    arun(body())
    rejected = [json.loads(line) for line in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["error"].startswith("database refused it") and '"caller":"666"' in rejected[0]["spooled"]


def test_the_same_call_twice_in_one_batch_is_counted_once(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool", WriterSettings(batch_size=10, batch_age=10))
        await w.start()
        await asyncio.gather(*(w.submit(record(i % 5)) for i in range(10)))
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert await counts(db_url) == (5, 10, 5)

    arun(body())


async def stored_through_a_proxy(pg_url: str, spool_dir: Path, n: int) -> tuple[TcpProxy, CdrWriter]:
    """A writer whose Postgres is behind a proxy the test can cut or stall, with `n` records stored."""
    proxy, via_proxy = await proxied(pg_url)
    w = writer_for(via_proxy, spool_dir)
    await w.start()
    await asyncio.gather(*(w.submit(record(i)) for i in range(n)))
    await until(lambda: w.stored == n)
    return proxy, w


def test_postgres_going_away_mid_stream_delays_records_but_loses_none(pg_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        proxy, w = await stored_through_a_proxy(pg_url, tmp_path / "spool", 100)
        await proxy.cut()
        await asyncio.gather(*(w.submit(record(i)) for i in range(100, 300)))  # calls do not wait on the database
        await asyncio.sleep(0.5)
        assert w.backlog == 200 and w.stored == 100
        sample = w.metrics.registry.get_sample_value
        assert sample("callrouter_store_errors_total", {"operation": "cdr_write"})
        assert sample("callrouter_cdr_backlog_records") == 200 and sample("callrouter_cdr_spool_bytes") > 200 * 500
        assert sample("callrouter_cdr_stored_total") == 100
        await proxy.restore()
        await until(lambda: w.backlog == 0, 30)
        assert sample("callrouter_cdr_backlog_records") == 0 and sample("callrouter_cdr_stored_total") == 300
        await stop(w)
        await proxy.cut()
        assert await counts(pg_url) == (300, 600, 300)

    arun(body(), 60)


def test_hostile_text_in_a_record_is_stored_cleaned_never_refused(db_url: str, tmp_path: Path) -> None:
    from dataclasses import replace

    from sqlalchemy import select

    from callrouter.store.schema import calls

    hostile = replace(record(1), caller_name="张三\x00\ud800'; DROP TABLE calls; --" + "长" * 200, reason="r\x00" * 300)

    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool")
        await w.start()
        await w.submit(hostile)
        await until(lambda: w.backlog == 0)
        await stop(w)
        engine = open_engine(make_url(db_url))
        async with engine.connect() as conn:
            name, reason = (await conn.execute(select(calls.c.caller_name, calls.c.reason))).one()
        await engine.dispose()
        assert name.startswith("张三?'; DROP TABLE calls; --长") and len(name) == 80
        assert reason == "r" * 200 and w.rejected == 0

    arun(body())


def test_two_writers_can_never_share_one_spool_folder(tmp_path: Path) -> None:
    from callrouter.store.spool import SpoolInUse

    first = Spool(str(tmp_path / "spool"), fsync=False)
    with pytest.raises(SpoolInUse, match=rf"is in use by pid {os.getpid()}: give each router its own cdr.spool_dir"):
        Spool(str(tmp_path / "spool"), fsync=False)
    first.close()
    Spool(str(tmp_path / "spool"), fsync=False).close()  # free again once the first is closed


def test_stopping_while_postgres_hangs_keeps_the_records_and_does_not_hang(pg_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        proxy, w = await stored_through_a_proxy(pg_url, tmp_path / "spool", 10)
        proxy.stall()
        await asyncio.gather(*(w.submit(record(i)) for i in range(10, 40)))  # spooled at once, the database hangs
        t0 = asyncio.get_running_loop().time()
        await w.close(timeout=0.5)
        assert asyncio.get_running_loop().time() - t0 < 3  # not the driver's 30 s command timeout
        await proxy.cut()
        await w.store.engine.dispose()

        again = writer_for(pg_url, tmp_path / "spool")
        await again.start()
        await until(lambda: again.backlog == 0)
        await stop(again)
        assert (await counts(pg_url))[0] == 40

    arun(body(), 60)


# -- one bad line never stops the flow (issue 11 B) -------------------------------------------------

def _spooled(i: int, **changes: object) -> bytes:
    """Record i as spooled, with some fields replaced."""
    data = spool_entry(record(i))[0]
    data.update(changes, uniqueid=f"bad.{i}")
    return json.dumps(data).encode() + b"\n"


BAD_LINES = {
    "overflow date": _spooled(11, started_at="0001-01-01T00:00:00+01:00"),  # OverflowError in astimezone()
    "deep nesting": b"[" * 5000 + b"]" * 5000 + b"\n",  # RecursionError in json.loads
    "huge integer": _spooled(12, ring_seconds=10**400, router_ms=10**400),  # OverflowError in math.isfinite
    "wrong types": _spooled(13, attempts=[{"line_id": ["x"], "target": {}, "status": 3, "ring_seconds": "2"}], ivr_path="1>2"),
}


def test_each_bad_line_is_set_aside_once_and_the_good_records_around_it_are_stored(db_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    lines = [spool_entry(record(0))[1]]
    for n, bad in enumerate(BAD_LINES.values(), start=1):
        lines += [bad, spool_entry(record(n))[1]]
    (spool_dir / "000000000001.spool").write_bytes(b"".join(lines))

    async def body() -> None:
        w = writer_for(db_url, spool_dir)
        await w.start()
        assert w.backlog == 9
        await until(lambda: w.backlog == 0, 10)
        await stop(w)
        assert await counts(db_url) == (5, 10, 5)
        assert (w.stored, w.rejected) == (5, 4)

    arun(body())
    rejected = [json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 4
    assert [r["spooled"].encode() + b"\n" for r in rejected] == list(BAD_LINES.values())


def test_a_record_that_cannot_become_rows_does_not_stop_submit_or_the_flow(db_url: str, tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    ancient = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    bad = replace(record(5), started_at=ancient, ended_at=ancient)

    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool")
        await w.start()
        await asyncio.wait_for(asyncio.gather(*(w.submit(bad if i == 5 else record(i)) for i in range(10))), 5)
        await w.submit(record(10))  # the spool task still runs
        await until(lambda: w.backlog == 0, 10)
        await stop(w)
        assert await counts(db_url) == (10, 20, 10) and w.rejected == 1

    arun(body())


def test_a_bad_line_is_set_aside_once_however_long_the_database_is_away_and_across_a_restart(db_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "000000000001.spool").write_bytes(spool_entry(record(0))[1] + b"not json\n" + BAD_LINES["overflow date"] + spool_entry(record(1))[1])

    async def body() -> None:
        dead = writer_for("sqlite+aiosqlite:////nonexistent/dir/x.db" if db_url.startswith("sqlite") else DEAD_PG, spool_dir)
        await dead.start()
        await asyncio.sleep(1.0)  # retries every 0.05-0.2 s meanwhile
        await stop(dead, timeout=0.3)
        w = writer_for(db_url, spool_dir)
        await w.start()
        await until(lambda: w.backlog == 0, 10)
        await stop(w)
        assert await counts(db_url) == (2, 4, 2)

    arun(body(), 60)
    rejected = [json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 2 and rejected[0]["spooled"] == "not json"
    assert rejected[1]["spooled"].encode() + b"\n" == BAD_LINES["overflow date"]


def test_a_bug_in_the_database_task_is_logged_counted_and_the_task_restarted(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool")
        real = w._next_items
        bugs = [RuntimeError("injected bug")]

        async def buggy(limit: int) -> list:  # type: ignore[type-arg]
            if bugs:
                raise bugs.pop()
            return await real(limit)

        w._next_items = buggy  # type: ignore[method-assign]
        await w.start()
        await asyncio.gather(*(w.submit(record(i)) for i in range(10)))
        await until(lambda: w.backlog == 0, 10)
        restarts = w.metrics.registry.get_sample_value("callrouter_cdr_task_restarts_total", {"task": "cdr-db"})
        await stop(w)
        assert await counts(db_url) == (10, 20, 10)
        assert restarts == 1

    with caplog.at_level("ERROR"):
        arun(body())
    died = [r for r in caplog.records if r.exc_info and "cdr-db" in r.getMessage()]
    assert len(died) == 1 and "injected bug" in str(died[0].exc_info[1])


def test_close_with_a_dead_task_still_closes_the_spool_and_keeps_the_records(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool")

        async def broken(limit: int) -> list:  # type: ignore[type-arg]
            raise RuntimeError("injected bug")

        w._next_items = broken  # type: ignore[method-assign]
        await w.start()
        await asyncio.gather(*(w.submit(record(i)) for i in range(10)))
        await asyncio.sleep(0.2)
        await stop(w, timeout=0.5)  # no exception, and the spool's folder lock is released
        again = writer_for(db_url, tmp_path / "spool")
        await again.start()
        await until(lambda: again.backlog == 0, 10)
        await stop(again)
        assert await counts(db_url) == (10, 20, 10)

    arun(body())


# -- one uniqueid on several Asterisk servers (issue 11 C) --------------------------------------------

def test_the_same_uniqueid_from_two_asterisks_is_two_calls_and_a_replay_adds_nothing(db_url: str, tmp_path: Path) -> None:
    from dataclasses import replace

    from sqlalchemy import select

    from callrouter.model.record import Attempt
    from callrouter.store.schema import call_attempts, calls

    east = replace(record(1), source="asterisk-east", attempts=(Attempt("zhang", "Local/1@l", "BUSY", 2), Attempt("li", "Local/2@l", "ANSWER", 6, 40)))
    west = replace(record(1), source="10.0.0.7", number="4008005678", attempts=(Attempt("wang", "Local/3@l", "NOANSWER", 20),))
    assert east.to_json()["source"] == "asterisk-east"

    async def body() -> None:
        w = writer_for(db_url, tmp_path / "spool", WriterSettings(batch_size=10, batch_age=0.05))
        await w.start()
        await asyncio.gather(w.submit(east), w.submit(west))
        await until(lambda: w.backlog == 0)
        await asyncio.gather(w.submit(east), w.submit(west), w.submit(record(1)))  # replays, and a third source ('')
        await until(lambda: w.backlog == 0)
        await stop(w)
        assert (w.stored, w.duplicates) == (3, 2)
        engine = open_engine(make_url(db_url))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(calls.c.source, calls.c.uniqueid, calls.c.number).order_by(calls.c.source))).all()
            attempts = (
                await conn.execute(
                    select(call_attempts.c.call_source, call_attempts.c.line_id).order_by(call_attempts.c.call_source, call_attempts.c.seq)
                )
            ).all()
        await engine.dispose()
        assert [tuple(r) for r in rows] == [("", "1764000000.1", "4008001234"), ("10.0.0.7", "1764000000.1", "4008005678"), ("asterisk-east", "1764000000.1", "4008001234")]
        assert [tuple(a) for a in attempts] == [("", "zhang"), ("", "li"), ("10.0.0.7", "wang"), ("asterisk-east", "zhang"), ("asterisk-east", "li")]
        assert await counts(db_url) == (3, 5, 3)

    arun(body())


def test_a_call_is_found_by_uniqueid_alone_newest_first_or_by_its_source(db_url: str) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from callrouter.store.calls import find_call

    older = replace(record(1), source="a")
    newer = replace(record(1), source="b", started_at=record(1).started_at + timedelta(hours=1), ended_at=record(1).ended_at + timedelta(hours=1))

    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            await CdrStore(engine).write([rows_from_spooled(spool_entry(r)[0]) for r in (older, newer)])
            found = await find_call(engine, "1764000000.1", numbers=None)
            assert found is not None and found.call.source == "b" and [a.seq for a in found.attempts] == [1, 2]
            assert found.call.started_at == newer.started_at and found.call.started_at.tzinfo is not None  # aware, on SQLite too
            found = await find_call(engine, "1764000000.1", source="a", numbers=None)
            assert found is not None and found.call.source == "a"
            assert await find_call(engine, "1764000000.1", source="c", numbers=None) is None
            assert await find_call(engine, "nope", numbers=None) is None
        finally:
            await engine.dispose()

    arun(body())


def test_missed_call_keys_tell_two_asterisks_apart_and_keep_the_old_key_without_a_source() -> None:
    from callrouter.notify.rules import call_key

    assert call_key({"uniqueid": "1.1", "source": ""}) == call_key({"uniqueid": "1.1"}) == "1.1"  # as before 0003
    assert call_key({"uniqueid": "1.1", "source": "a"}) != call_key({"uniqueid": "1.1", "source": "b"})
    longest = call_key({"uniqueid": "9" * 64, "source": "x" * 80})
    assert len(f"missed:{longest}:sms:") + 64 <= 200  # within outbox.dedupe_key, whatever the recipient


def test_a_batch_over_several_insert_pages_tells_new_calls_from_stored_ones_on_every_page(db_url: str) -> None:
    """SQLite writes 100 rows per INSERT (SQLITE_ROWS_PER_INSERT): the calls already stored, spread over
    every page of a 350-call batch, must still be found by their RETURNING rows, page by page."""
    from callrouter.store.db import SQLITE_ROWS_PER_INSERT

    async def body() -> None:
        engine = open_engine(make_url(db_url))
        if engine.dialect.name == "sqlite":
            assert engine.sync_engine.dialect.insertmanyvalues_page_size == SQLITE_ROWS_PER_INSERT == 100
        store = CdrStore(engine)
        rows = [rows_from_spooled(spool_entry(record(i))[0]) for i in range(350)]
        assert await store.write(rows[::7]) == 50  # on every page of the big batch
        assert await store.write(rows) == 300
        assert await store.write(rows[340:] + rows[:3]) == 0
        await engine.dispose()
        assert await counts(db_url) == (350, 700, 350)

    arun(body())
