"""The promise of the CDR issue, end to end with real processes: Postgres goes away during calls, the router
is killed with SIGKILL, Postgres comes back, the router restarts: every call has exactly one row.

Also: a runtime blacklist entry added with the CLI reaches the running routers' calls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.schema import calls
from tests.cdrs import counts
from tests.harness import arun
from tests.tcpproxy import proxied
from tests.test_process import ROOT, ServerProcess, workspace

ANSWER = DialScript("ANSWER", 1, 3)


async def start(cfg: Path, db_url: str, timeout: float = 20) -> tuple[ServerProcess, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLROUTER_DATABASE_URL": db_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0",
        stderr=asyncio.subprocess.PIPE, cwd=str(cfg.parent), env=env,
    )
    server = ServerProcess(proc)
    port = int((await server.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)", timeout=timeout)).group(1))
    return server, port


async def place(port: int, ids: range, caller: str = "13912345678") -> list[str]:
    results = await asyncio.gather(
        *(run_call("127.0.0.1", port, CallScript(uniqueid=f"1764000000.{i}", callerid=caller, dtmf=("1",), default_dial=ANSWER), timeout=30) for i in ids)
    )
    return [t.variables.get("CALLROUTER_RESULT", "") for t in results]


async def wait_rows(url: str, n: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await counts(url))[0] < n:
        assert loop.time() < deadline, f"only {(await counts(url))[0]} of {n} calls reached the database"
        await asyncio.sleep(0.2)


def test_postgres_outage_and_kill_9_lose_no_cdr_and_duplicate_none(pg_url: str, tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    url = make_url(pg_url)

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        server, port = await start(cfg, via_proxy)
        try:
            await server.wait_for(r"\(routing state shared\)")  # auto: Postgres means several routers may share it
            assert await place(port, range(0, 20)) == ["ROUTED"] * 20
            await wait_rows(pg_url, 20)
            await proxy.cut()  # Postgres gone: calls go on, records wait in the spool
            assert await place(port, range(20, 50)) == ["ROUTED"] * 30
            await asyncio.sleep(0.5)
            assert (await counts(pg_url))[0] == 20
        finally:
            server.proc.send_signal(signal.SIGKILL)
            await server.proc.wait()
            await server._reader
        spooled = list((tmp_path / "var" / "cdr-spool").glob("*.spool"))
        assert spooled, "the killed router left its spool behind"

        await proxy.restore()
        server, port = await start(cfg, via_proxy)
        try:
            await server.wait_for(r"CDR spool holds 50 records from an earlier run")  # the 20 stored ones are replayed too
            await wait_rows(pg_url, 50)
            assert await place(port, range(50, 55)) == ["ROUTED"] * 5
            await wait_rows(pg_url, 55)
        finally:
            server.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(server.proc.wait(), 20) == 0
            await server._reader
            await proxy.cut()
        n_calls, _, n_counted = await counts(pg_url)
        assert (n_calls, n_counted) == (55, 55)  # one row per call, each counted once in the statistics
        engine = open_engine(url)
        async with engine.connect() as conn:
            ids = set((await conn.execute(select(calls.c.uniqueid))).scalars())
            dispositions = (await conn.execute(select(calls.c.disposition, func.count()).group_by(calls.c.disposition))).all()
        await engine.dispose()
        assert ids == {f"1764000000.{i}" for i in range(55)}
        # 3 sales lines of one call each and 50 callers at once: the rest go to voicemail, as the plan says.
        assert {d for d, _ in dispositions} <= {"answered", "voicemail"} and sum(n for _, n in dispositions) == 55
        assert not list((tmp_path / "var" / "cdr-spool").glob("*.spool"))

    arun(body(), 120)


def test_a_blacklist_entry_added_with_the_cli_reaches_a_running_router(pg_url: str, tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    text = cfg.read_text().replace("blacklist_refresh: 5", "blacklist_refresh: 0.5")
    cfg.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def body() -> None:
        server, port = await start(cfg, pg_url)
        try:
            assert await place(port, range(0, 1), caller="13955556666") == ["ROUTED"]
            added = subprocess.run(
                [sys.executable, "-m", "callrouter", "blacklist", "add", "+86 139 5555 6666", "--scope", "4008001234",
                 "--reason", "abusive", "--config", str(cfg), "--url", pg_url],
                capture_output=True, text=True, env=env,
            )
            assert added.returncode == 0 and "blocked 13955556666 on 4008001234" in added.stdout, added.stderr
            await asyncio.sleep(1.5)
            t = await run_call("127.0.0.1", port, CallScript(uniqueid="1764000000.1", callerid="013955556666", dtmf=("1",), default_dial=ANSWER))
            assert t.dials == []  # refused before any line rang
            await wait_rows(pg_url, 2)
        finally:
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.proc.wait(), 20)
            await server._reader
        engine = open_engine(make_url(pg_url))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(calls.c.uniqueid, calls.c.disposition, calls.c.reason).order_by(calls.c.uniqueid))).all()
        await engine.dispose()
        assert [tuple(r[:2]) for r in rows] == [("1764000000.0", "answered"), ("1764000000.1", "blacklisted")]

    arun(body(), 90)


def test_a_hung_postgres_neither_stops_calls_nor_the_router_and_loses_no_cdr(pg_url: str, tmp_path: Path) -> None:
    """Connections open, no bytes back: the worst outage. Calls still route (on memory, within the state
    budget), SIGTERM still stops the router promptly, and the next start stores every CDR."""
    cfg = workspace(tmp_path)
    cfg.write_text(cfg.read_text().replace("  batch_age: 0.5\n", "  batch_age: 0.5\n  close_timeout: 1\n"))

    async def body() -> None:
        proxy, via_proxy = await proxied(pg_url)
        server, port = await start(cfg, via_proxy)
        try:
            assert await place(port, range(0, 5)) == ["ROUTED"] * 5
            await wait_rows(pg_url, 5)
            proxy.stall()
            assert await place(port, range(5, 25)) == ["ROUTED"] * 20
            t0 = asyncio.get_running_loop().time()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.proc.wait(), 30)
            stopped_in = asyncio.get_running_loop().time() - t0
        finally:
            if server.proc.returncode is None:
                server.proc.kill()
                await server.proc.wait()
            await server._reader
        assert stopped_in < 15, f"stopping took {stopped_in:.1f} s with the database hung"
        assert any("stopping with 20 call records not yet in the database; they stay in the spool" in line for line in server.log), server.log[-5:]
        await proxy.cut()
        server, _ = await start(cfg, pg_url)
        try:
            await wait_rows(pg_url, 25)
        finally:
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.proc.wait(), 20)
            await server._reader
        n_calls, _, n_counted = await counts(pg_url)
        assert (n_calls, n_counted) == (25, 25)

    arun(body(), 120)


# A writer in a process whose files may not grow past `limit` bytes until the first write fails (a full
# disk that an operator then frees): prints which submits succeeded and which raised. `order` "at once"
# submits all twelve concurrently: they go as one group commit, which the full disk refuses as a whole.
_DISK_FULL_CHILD = r"""
import asyncio, json, os, resource, signal, sys
from sqlalchemy.engine import make_url
from callrouter.metrics import RouterMetrics
from callrouter.store.cdr_store import CdrStore
from callrouter.store.cdr_writer import CdrWriter, WriterSettings
from callrouter.store.db import open_engine
from callrouter.store.spool import Spool
from tests.cdrs import record

url, spool_dir, limit, mode, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

async def main() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that write() fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    engine = open_engine(make_url(url), connect_timeout=1)
    metrics = RouterMetrics()
    settings = WriterSettings(batch_size=500, batch_age=0.05, memory_records=0, retry_min=0.05, retry_max=0.2)
    w = CdrWriter(Spool(spool_dir, fsync=False, segment_bytes=limit), CdrStore(engine), metrics, settings)
    await w.start()
    ok, failed = [], []

    async def one(i):
        try:
            await w.submit(record(i))
            ok.append(i)
        except OSError:
            failed.append(i)
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # room again

    if order == "at once":
        await asyncio.gather(*(one(i) for i in range(12)))
    else:
        for i in range(12):
            await one(i)
    errors = metrics.registry.get_sample_value("callrouter_cdr_spool_write_errors_total")
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors}), flush=True)
    if mode == "killed":
        await asyncio.sleep(0.3)
        os._exit(0)  # as kill -9: whatever the database does not have yet stays in the spool
    await w.close(10)
    await engine.dispose()

asyncio.run(main())
"""


async def stored_ids(url: str) -> set[str]:
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(calls.c.uniqueid))).scalars())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("order", ["one by one", "at once"])
@pytest.mark.parametrize("mode", ["stored", "killed"])
def test_a_failed_spool_write_loses_no_acknowledged_record_and_stores_none_twice(pg_url: str, tmp_path: Path, mode: str, order: str) -> None:
    """Disk full in the middle of a record: the segment is left as it was, the record is kept in memory
    and retried; every record whose submit() returned is stored once, also after a restart replay."""
    import json

    from callrouter.metrics import RouterMetrics
    from callrouter.store.cdr_store import CdrStore
    from callrouter.store.cdr_writer import CdrWriter, WriterSettings
    from callrouter.store.spool import Spool

    spool_dir = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_CHILD, pg_url, str(spool_dir), "4000", mode, order],
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=60,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    seen = json.loads(child.stdout.splitlines()[-1])
    assert seen["failed"] and seen["errors"] and seen["errors"] >= 1, seen  # the write failure did happen, and is counted
    acknowledged = {f"1764000000.{i}" for i in seen["ok"]}
    raised = {f"1764000000.{i}" for i in seen["failed"]}

    async def check(after_replay: bool) -> None:
        ids = await stored_ids(pg_url)
        assert acknowledged <= ids, f"acknowledged but never stored: {sorted(acknowledged - ids)}"
        if mode == "stored" or after_replay:  # kept in memory, respooled once the disk had room: stored too
            assert ids == acknowledged | raised
        n_calls, n_attempts, n_counted = await counts(pg_url)
        assert (n_attempts, n_counted) == (2 * n_calls, n_calls)  # each call once, with its attempts, counted once

    async def body() -> None:
        if mode == "stored":
            await check(False)
        engine = open_engine(make_url(pg_url))
        w = CdrWriter(Spool(str(spool_dir), fsync=False), CdrStore(engine), RouterMetrics(), WriterSettings(batch_age=0.05))
        await w.start()  # the restart: replays what the spool holds
        for _ in range(200):
            if w.backlog == 0:
                break
            await asyncio.sleep(0.05)
        await w.close()
        await engine.dispose()
        await check(True)

    arun(body(), 60)
    assert not (spool_dir / "rejected.jsonl").exists()  # no torn or shifted line was ever read back
