"""Benchmark: the CDR path alone, in this process: submit() -> spool (write + fdatasync, group commit) ->
rows -> the SQLite store, with a number of calls handing over records at once.

Reports CPU per record (this process, all threads: the spool's appender thread and SQLite's too), the
wall time submit() waits, and how many records each fdatasync carried. `make bench` measures the same
path inside the whole server; this one shows what the path itself costs and how group commit shares the
syncs as more calls end at once. Figures go to stdout and bench/cdr-path-results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from callrouter.metrics import RouterMetrics  # noqa: E402
from callrouter.store.cdr_store import CdrStore  # noqa: E402
from callrouter.store.cdr_writer import CdrWriter, WriterSettings  # noqa: E402
from callrouter.store.db import open_engine, upgrade  # noqa: E402
from callrouter.store.spool import Spool  # noqa: E402
from tests.cdrs import counts, record  # noqa: E402


def sqlite_library() -> ctypes.CDLL | None:
    """The SQLite library Python's sqlite3 uses (the same one once loaded), to read its own heap; None
    where it is linked in statically or not found."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return lib


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one(tmp: Path, n: int, at_once: int, fsync: bool) -> dict[str, float]:
    url = f"sqlite+aiosqlite:///{tmp}/cdr-{at_once}.db"
    engine = open_engine(make_url(url))
    await upgrade(engine)
    syncs = 0

    real_datasync = os.fdatasync

    def datasync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real_datasync(fd)

    try:
        spool = Spool(str(tmp / f"spool-{at_once}"), fsync=fsync, datasync=datasync)
    except TypeError:  # a spool from before 2026-12-01 (no datasync argument), run side by side with this bench
        os.fdatasync = datasync  # type: ignore[assignment]  # it calls os.fdatasync at each sync
        spool = Spool(str(tmp / f"spool-{at_once}"), fsync=fsync)
    writer = CdrWriter(spool, CdrStore(engine), RouterMetrics(), WriterSettings())
    await writer.start()
    sqlite = sqlite_library()
    if sqlite is not None:
        sqlite.sqlite3_memory_highwater(1)  # the peak of this run only
    records = iter([record(i) for i in range(n)])

    async def caller() -> None:
        for r in records:
            await writer.submit(r)

    wall0, cpu0 = time.perf_counter(), cpu()
    await asyncio.gather(*(caller() for _ in range(at_once)))
    submitted = time.perf_counter() - wall0
    while writer.backlog:
        await asyncio.sleep(0.01)
    used = cpu() - cpu0
    # SQLite's own heap (page cache, prepared statements) with the writer's connection still open: what a
    # server keeps after a burst of CDRs, besides the Python objects.
    heap = (sqlite.sqlite3_memory_used() / 2**20, sqlite.sqlite3_memory_highwater(0) / 2**20) if sqlite is not None else (-1.0, -1.0)
    await writer.close()
    os.fdatasync = real_datasync
    stored = (await counts(url))[0]
    await engine.dispose()
    return {
        "records": n, "at_once": at_once, "stored": stored, "cpu_us_per_record": used / n * 1e6,
        "submit_wall_us_per_record": submitted / n * 1e6, "fdatasyncs": syncs, "records_per_fdatasync": n / syncs if syncs else 0.0,
        "sqlite_heap_mb": heap[0], "sqlite_heap_peak_mb": heap[1],
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="callrouter-cdr-path-"))
    try:
        runs = [await one(tmp, args.records, c, not args.no_fsync) for c in args.at_once]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"fsync": not args.no_fsync, "load_average_at_end": list(os.getloadavg()), "runs": runs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000, help="records per run")
    parser.add_argument("--at-once", type=int, nargs="+", default=[1, 8, 64], help="calls handing over records at the same time, one run each")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "cdr-path-results.json"))
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        results = asyncio.run(main(args))
    else:
        results = uvloop.run(main(args))
    for r in results["runs"]:  # type: ignore[attr-defined]
        print(f"{r['at_once']} at once: {r['records']} records, stored {r['stored']}: CPU {r['cpu_us_per_record']:.1f} us per record, "
              f"submit() {r['submit_wall_us_per_record']:.0f} us wall per record, {r['fdatasyncs']} fdatasyncs ({r['records_per_fdatasync']:.1f} records each); "
              f"SQLite's heap {r['sqlite_heap_mb']:.1f} MB (peak {r['sqlite_heap_peak_mb']:.1f} MB)")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
