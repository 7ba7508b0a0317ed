"""Group commit in the CDR spool: records that arrive together share one write and one fdatasync, and
each submit() still returns only once its own bytes are on disk; a failed group fails every record in it
and leaves the segment as it was; a `kill -9` in the middle of concurrent appends loses no acknowledged
record. Real files, a real SQLite database, a real child process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from callrouter.metrics import RouterMetrics
from callrouter.store import spool as spool_module
from callrouter.store.cdr_store import CdrStore
from callrouter.store.cdr_writer import CdrNotDurable, CdrWriter, WriterSettings
from callrouter.store.db import open_engine
from callrouter.store.spool import Spool
from tests.cdrs import counts, record
from tests.databases import fresh_sqlite
from tests.harness import arun
from tests.test_cdr_writer import until

ROOT = Path(__file__).resolve().parent.parent
FAST = WriterSettings(batch_size=500, batch_age=0.05, retry_min=0.05, retry_max=0.2)


def segment_lines(spool_dir: Path, segment: int = 1) -> list[bytes]:
    return (spool_dir / f"{segment:012d}.spool").read_bytes().splitlines()


def test_concurrent_records_share_writes_and_fdatasyncs_and_each_returns_after_its_own_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_sqlite(str(tmp_path / "cdr.db"))
    spool_dir = tmp_path / "spool"
    synced: list[int] = []  # the segment's size at each fdatasync: every byte below it is on disk
    writes: list[int] = []
    real_write_all = spool_module._write_all

    def counting_write_all(fd: int, data: bytes) -> None:
        writes.append(len(data))
        real_write_all(fd, data)

    def slow_datasync(fd: int) -> None:
        time.sleep(0.004)  # a disk that takes its time: records pile up meanwhile
        os.fdatasync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(spool_module, "_write_all", counting_write_all)
    n_tasks, per_task = 40, 10

    async def body() -> None:
        engine = open_engine(make_url(url))
        w = CdrWriter(Spool(str(spool_dir), datasync=slow_datasync), CdrStore(engine), RouterMetrics(), FAST)
        await w.start()
        late: list[str] = []

        async def caller(t: int) -> None:
            for k in range(per_task):
                i = t * per_task + k
                await w.submit(record(i))
                # Returned: this record's whole line must be below the last synced size.
                data = (spool_dir / "000000000001.spool").read_bytes()[: synced[-1] if synced else 0]
                if f'"uniqueid":"1764000000.{i}"'.encode() not in data:
                    late.append(str(i))
                await asyncio.sleep(0)

        await asyncio.gather(*(caller(t) for t in range(n_tasks)))
        assert not late, f"submit() returned before these records were synced: {late[:10]}"
        await until(lambda: w.backlog == 0)
        await w.close()
        await engine.dispose()

    arun(body(), 60)
    n = n_tasks * per_task
    assert len(synced) < n / 4, f"{len(synced)} fdatasyncs for {n} records: no group commit"
    assert len(writes) == len(synced)  # one write per fdatasync: each group is one write
    assert sum(writes) == synced[-1]  # the writes hold every record, once
    assert asyncio.run(counts(url)) == (n, 2 * n, n)


def test_a_failed_fdatasync_fails_its_whole_group_and_leaves_the_segment_as_it_was(tmp_path: Path) -> None:
    url = fresh_sqlite(str(tmp_path / "cdr.db"))
    spool_dir = tmp_path / "spool"
    fail = {"next": False}

    def datasync(fd: int) -> None:
        if fail["next"]:
            fail["next"] = False
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    async def body() -> None:
        engine = open_engine(make_url(url))
        metrics = RouterMetrics()
        w = CdrWriter(Spool(str(spool_dir), datasync=datasync), CdrStore(engine), metrics, FAST)
        await w.start()
        for i in range(5):
            await w.submit(record(i))
        before = (spool_dir / "000000000001.spool").read_bytes()
        fail["next"] = True
        results = await asyncio.gather(*(w.submit(record(i)) for i in range(5, 25)), return_exceptions=True)
        assert all(isinstance(r, CdrNotDurable) for r in results), results  # one group, failed as a whole
        assert (spool_dir / "000000000001.spool").read_bytes() == before  # cut back: no byte of the group stays
        assert metrics.registry.get_sample_value("callrouter_cdr_spool_write_errors_total") == 1
        await until(lambda: w.held == 0 and w.backlog == 0)
        respooled = [json.loads(line)["uniqueid"] for line in segment_lines(spool_dir, 2)] if (spool_dir / "000000000002.spool").exists() else []
        await w.close()
        await engine.dispose()
        # Held, stored and spooled again (into a new segment, after the one that refused a write), in one group.
        assert not respooled or sorted(respooled) == sorted(f"1764000000.{i}" for i in range(5, 25))

    arun(body(), 60)
    assert asyncio.run(counts(url)) == (25, 50, 25)


# Submits records from many tasks at once with real fdatasync and prints each uniqueid as its submit()
# returns; the parent kills it with SIGKILL in the middle. The database is unreachable: all stays spooled.
_CONCURRENT_CHILD = r"""
import asyncio, itertools, sys
from sqlalchemy.engine import make_url
from callrouter.metrics import RouterMetrics
from callrouter.store.cdr_store import CdrStore
from callrouter.store.cdr_writer import CdrWriter, WriterSettings
from callrouter.store.db import open_engine
from callrouter.store.spool import Spool
from tests.cdrs import record

spool_dir = sys.argv[1]
numbers = itertools.count()

async def main() -> None:
    engine = open_engine(make_url("sqlite+aiosqlite:////nonexistent/dir/x.db"))
    w = CdrWriter(Spool(spool_dir, fsync=True), CdrStore(engine), RouterMetrics(), WriterSettings(retry_min=0.05, retry_max=0.2))
    await w.start()
    print("started", flush=True)

    async def caller() -> None:
        while True:
            i = next(numbers)
            await w.submit(record(i))
            sys.stdout.write(f"ok {i}\n")
            sys.stdout.flush()

    await asyncio.gather(*(caller() for _ in range(32)))

asyncio.run(main())
"""


def test_kill_9_during_concurrent_appends_loses_no_acknowledged_record(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CONCURRENT_CHILD, str(spool_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=str(ROOT))
    acknowledged: set[str] = set()
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        for line in child.stdout:
            if line.startswith("ok "):
                acknowledged.add(f"1764000000.{line.split()[1]}")
            if len(acknowledged) >= 400 or time.monotonic() > deadline:
                break
        child.send_signal(signal.SIGKILL)  # in the middle of appends: 32 callers are waiting on their group
        child.wait(10)
        for line in child.stdout:  # acknowledgements already written before the kill count too
            if line.startswith("ok "):
                acknowledged.add(f"1764000000.{line.split()[1]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert len(acknowledged) >= 400, (child.stderr.read() if child.stderr else "")[-2000:]

    spool = Spool(str(spool_dir), fsync=False)  # as the next start opens it
    try:
        found: set[str] = set()
        torn = 0
        pos = spool.start
        while lines := spool.read(pos, 4 << 20):
            for line in lines:
                if line.torn:
                    torn += 1
                else:
                    found.add(json.loads(line.data)["uniqueid"])  # every whole line is a whole record
            pos = lines[-1].end
        assert torn <= 1  # at worst the line being written at the kill
        assert acknowledged <= found, f"acknowledged but not in the spool: {sorted(acknowledged - found)[:10]}"
    finally:
        spool.close()
