"""Benchmarks of the CDR store on Postgres: ingest rate (batched writer vs one INSERT per row) and the
statistics query over 10 million calls.

Run with `make bench-cdr` (options: `--help`; `--calls`, `--naive-calls` and `--stats-rows` set the sizes).
Uses databases of its own (`--db-name`, default `callrouter_bench` for the statistics and `<name>_ingest`
for the ingest), created and dropped on the server of CALLROUTER_BENCH_PG (default
postgresql://postgres@127.0.0.1:5432/test); `--keep` keeps the statistics database for `--reuse`.
Figures go to stdout and bench/cdr-results.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callrouter.metrics import RouterMetrics  # noqa: E402
from callrouter.model.record import Attempt, CallRecord  # noqa: E402
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry  # noqa: E402
from callrouter.store.cdr_store import CdrStore  # noqa: E402
from callrouter.store.cdr_writer import CdrWriter, WriterSettings  # noqa: E402
from callrouter.store.db import open_engine, upgrade  # noqa: E402
from callrouter.store.schema import call_attempts, calls  # noqa: E402
from callrouter.store.spool import Spool  # noqa: E402
from callrouter.store.stats import number_report  # noqa: E402
from proclog import BenchError  # noqa: E402

SERVER = os.environ.get("CALLROUTER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
DB = "callrouter_bench"  # the 10-million-call statistics database (kept with --keep, for --reuse)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
YEAR_SECONDS = 365 * 86400
WRITER_STALL_TIMEOUT = 30.0  # seconds without the writer's backlog shrinking before the ingest gives up


def db_url(name: str = DB) -> str:
    return make_url(SERVER).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(make_url(SERVER).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_db(name: str = DB) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')
    engine = open_engine(make_url(db_url(name)))
    await upgrade(engine)
    await engine.dispose()


def record(i: int) -> CallRecord:
    """A realistic CDR: IVR path, two hunt attempts, a decision trace of the usual length."""
    started = T0 + timedelta(seconds=i)
    return CallRecord(
        uniqueid=f"1767225600.{i}", number=f"40080{i % 100:05d}", caller=f"139{i % 10**8:08d}", caller_raw=f"+86139{i % 10**8:08d}",
        caller_name="", channel=f"PJSIP/trunk-{i:08x}", started_at=started, ended_at=started + timedelta(seconds=95),
        answered_at=started + timedelta(seconds=12), disposition="answered", reason="answered by li", ivr_path=("main:1",),
        group="sales", strategy="round_robin",
        attempts=(Attempt("zhang", "Local/13800138001@callrouter-lines", "BUSY", 2), Attempt("li", "Local/13800138002@callrouter-lines", "ANSWER", 9, 80)),
        answered_line="li", talk_seconds=80, ring_seconds=11, recording_file=f"/var/spool/asterisk/monitor/callrouter/{i}.wav",
        voicemail_file=None, instance="bench", router_ms=0.3,
        trace=("call to 4008001234 (示例科技) from 13912345678", "blacklist: not listed", "hours: open", "answer", "menu main: pressed 1",
               "hunt group sales: round_robin, 3 lines", "round robin: turn 7, starting at zhang", "line zhang: BUSY", "line li: ANSWER", "result: answered"),
    )


async def drop_db(name: str) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drain(writer: CdrWriter, stall: float = WRITER_STALL_TIMEOUT) -> None:
    """Wait until the writer has stored everything; give up if its backlog stops shrinking."""
    least, since = writer.backlog, time.monotonic()
    while writer.backlog:
        if writer.backlog < least:
            least, since = writer.backlog, time.monotonic()
        elif time.monotonic() - since > stall:
            raise BenchError(f"the CDR writer stored nothing for {stall:.0f} s with {writer.backlog} calls still in its backlog")
        await asyncio.sleep(0.01)


async def ingest(n: int, naive_n: int, batch: int, name: str) -> dict[str, object]:
    """Ingest rates into a database of its own, `name`, dropped afterwards whatever happens."""
    try:
        return await _ingest(n, naive_n, batch, name)
    finally:
        await drop_db(name)


async def _ingest(n: int, naive_n: int, batch: int, name: str) -> dict[str, object]:
    await fresh_db(name)
    url = make_url(db_url(name))
    # The writer as the router runs it: spool with fsync, batches of --batch-size, parsed in memory.
    with tempfile.TemporaryDirectory() as spool_dir:
        engine = open_engine(url)
        writer = CdrWriter(Spool(spool_dir, fsync=True), CdrStore(engine), RouterMetrics(), WriterSettings(batch_size=batch, batch_age=0.2))
        await writer.start()
        records = [record(i) for i in range(n)]
        t0 = time.perf_counter()
        for start in range(0, n, 1000):  # 1,000 calls ending together, as at a busy moment
            await asyncio.gather(*(writer.submit(r) for r in records[start : start + 1000]))
        spooled = time.perf_counter() - t0
        try:
            await drain(writer)
            total = time.perf_counter() - t0
        finally:
            await writer.close()
            await engine.dispose()
    # The store alone (what the database takes, without the spool), same batches.
    await fresh_db(name)
    engine = open_engine(url)
    store = CdrStore(engine)
    batches = [[rows_from_spooled(spool_entry(record(i))[0]) for i in range(s, min(s + batch, n))] for s in range(0, n, batch)]
    t0 = time.perf_counter()
    for b in batches:
        await store.write(b)
    store_only = time.perf_counter() - t0
    # Naive: one INSERT (and one transaction) per call row, and one per attempt row.
    naive_rows = [rows_from_spooled(spool_entry(record(n + i))[0]) for i in range(naive_n)]
    t0 = time.perf_counter()
    for rows in naive_rows:
        async with engine.begin() as conn:
            await conn.execute(insert(calls), rows.call)
        for a in rows.attempts:
            async with engine.begin() as conn:
                await conn.execute(insert(call_attempts), a)
    naive = time.perf_counter() - t0
    async with engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(calls))).scalar_one()
    await engine.dispose()
    if stored != n + naive_n:
        raise BenchError(f"{stored} calls in the ingest database, expected {n} + {naive_n}")
    return {
        "calls": n,
        "calls_stored": stored,
        "batch_size": batch,
        "writer_calls_per_s": round(n / total),
        "writer_rows_per_s": round(n * 3 / total),  # a call row plus its two attempt rows
        "spool_acknowledged_per_s": round(n / spooled),
        "store_only_calls_per_s": round(n / store_only),
        "store_only_rows_per_s": round(n * 3 / store_only),
        "naive_calls": naive_n,
        "naive_calls_per_s": round(naive_n / naive),
        "naive_rows_per_s": round(naive_n * 3 / naive),
    }


GENERATE = """
INSERT INTO calls (uniqueid, number, caller, caller_raw, caller_name, channel, instance, started_at, answered_at, ended_at,
                   duration_seconds, billable_seconds, ring_seconds, disposition, reason, ivr_path, hunt_group, strategy,
                   answered_line, recording_file, voicemail_file, router_ms, trace)
SELECT 'gen.' || g,
       '40080' || lpad((g % 100)::text, 5, '0'),
       '139' || lpad((g % 100000000)::text, 8, '0'), '139' || lpad((g % 100000000)::text, 8, '0'), '', 'PJSIP/trunk', 'bench',
       ts, CASE WHEN g % 10 < 7 THEN ts + interval '10 seconds' END, ts + interval '90 seconds',
       90, CASE WHEN g % 10 < 7 THEN 80 ELSE 0 END, (g % 20), CASE WHEN g % 10 < 7 THEN 'answered' WHEN g % 10 < 9 THEN 'no_answer' ELSE 'busy' END,
       'generated', 'main:1', 'sales', 'round_robin', CASE WHEN g % 10 < 7 THEN 'l' || (g % 5) END, NULL, NULL, 0.3, ''
FROM (SELECT g, timestamptz '2026-01-01 00:00+00' + (g * interval '1 second') * {step} AS ts
      FROM generate_series(1, {n}) AS g) s
"""


def generate_sql(n: int) -> str:
    """n calls spread evenly over 2026 (3.1536 s apart for 10 million), whatever n, so that a small
    run still has calls in every month the statistics query."""
    return GENERATE.format(n=int(n), step=YEAR_SECONDS / int(n))

ROLLUP = """
INSERT INTO call_stats (number, bucket, disposition, calls, billable_seconds, rung_calls, ring_seconds)
SELECT number, (floor(extract(epoch FROM started_at) / 900) * 900)::bigint, disposition,
       count(*), sum(billable_seconds), count(*), sum(ring_seconds)
FROM calls GROUP BY 1, 2, 3
"""

LINE_ROLLUP = """
INSERT INTO line_stats (number, bucket, line_id, status, attempts, ring_seconds, talk_seconds)
SELECT number, (floor(extract(epoch FROM started_at) / 900) * 900)::bigint, answered_line, 'ANSWER',
       count(*), sum(ring_seconds), sum(billable_seconds)
FROM calls WHERE answered_line IS NOT NULL GROUP BY 1, 2, 3
"""

RAW_MONTH = """
SELECT (started_at AT TIME ZONE 'Asia/Shanghai')::date AS day, count(*), count(*) FILTER (WHERE disposition = 'answered'),
       sum(billable_seconds)
FROM calls WHERE number = :number AND started_at >= :lo AND started_at < :hi GROUP BY 1
"""


async def stats(n: int, reuse: bool, repeats: int, name: str, keep: bool) -> dict[str, object]:
    """The statistics queries over n generated calls in the database `name`, dropped afterwards unless `keep`."""
    try:
        return await _stats(n, reuse, repeats, name)
    finally:
        if not keep:
            await drop_db(name)


async def _stats(n: int, reuse: bool, repeats: int, name: str) -> dict[str, object]:
    url = make_url(db_url(name))
    if not reuse:
        await fresh_db(name)
        t0 = time.perf_counter()
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        try:  # plain asyncpg: these statements run for minutes, past the router's own statement timeout
            for sql in (generate_sql(n), ROLLUP, LINE_ROLLUP, "VACUUM ANALYZE"):
                await conn.execute(sql, timeout=None)
        finally:
            await conn.close()
        print(f"  generated {n:,} calls and their statistics sums in {time.perf_counter() - t0:.0f} s", flush=True)
    engine = open_engine(url)
    try:
        return await _queries(engine, repeats)
    finally:
        await engine.dispose()


async def _queries(engine: AsyncEngine, repeats: int) -> dict[str, object]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(calls))).scalar_one()
    timings: dict[str, list[float]] = {"month": [], "year": [], "raw_month": [], "raw_year": []}
    for _ in range(repeats):
        for label, first, last in (("month", date(2026, 6, 1), date(2026, 6, 30)), ("year", date(2026, 1, 1), date(2026, 12, 31))):
            t0 = time.perf_counter()
            report = await number_report(engine, "4008000042", first, last, "Asia/Shanghai")
            timings[label].append((time.perf_counter() - t0) * 1000)
            if report.total.calls <= 0:
                raise BenchError(f"no calls for 4008000042 from {first} to {last} among {rows:,}: too few --stats-rows?")
        for label, lo, days in (("raw_month", datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=8))), 30),
                                ("raw_year", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8))), 365)):
            t0 = time.perf_counter()
            async with engine.connect() as conn:
                await conn.execute(text(RAW_MONTH), {"number": "4008000042", "lo": lo, "hi": lo + timedelta(days=days)})
            timings[label].append((time.perf_counter() - t0) * 1000)
    return {
        "calls_in_table": rows,
        "report_month_ms_median": round(statistics.median(timings["month"]), 1),
        "report_month_ms_max": round(max(timings["month"]), 1),
        "report_year_ms_median": round(statistics.median(timings["year"]), 1),
        "report_year_ms_max": round(max(timings["year"]), 1),
        "raw_scan_month_ms_median": round(statistics.median(timings["raw_month"]), 1),
        "raw_scan_year_ms_median": round(statistics.median(timings["raw_year"]), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000, help="calls for the ingest benchmark")
    parser.add_argument("--naive-calls", type=int, default=3_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="the writer's cdr.batch_size")
    parser.add_argument("--stats-rows", type=int, default=10_000_000, help="calls generated for the statistics queries")
    parser.add_argument("--db-name", default=DB, help="the statistics database; the ingest uses <name>_ingest (both dropped at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the statistics database for a later --reuse")
    parser.add_argument("--reuse", action="store_true", help="reuse the statistics database a previous --keep run left")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-stats", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "cdr-results.json"))
    args = parser.parse_args()
    result: dict[str, object] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if not args.skip_ingest:
        print("CDR ingest into Postgres ...", flush=True)
        result["ingest"] = r = await ingest(args.calls, args.naive_calls, args.batch_size, f"{args.db_name}_ingest")
        print(f"  stored {r['calls_stored']:,} calls ({r['calls']:,} batched + {r['naive_calls']:,} naive)")
        print(f"  writer (spool fsync + batches of {r['batch_size']}): {r['writer_calls_per_s']:,} calls/s = {r['writer_rows_per_s']:,} rows/s")
        print(f"  store alone, batches of {r['batch_size']}: {r['store_only_calls_per_s']:,} calls/s = {r['store_only_rows_per_s']:,} rows/s")
        print(f"  naive, one INSERT per row: {r['naive_calls_per_s']:,} calls/s = {r['naive_rows_per_s']:,} rows/s")
    if not args.skip_stats:
        print(f"statistics over {args.stats_rows:,} calls ...", flush=True)
        result["stats"] = s = await stats(args.stats_rows, args.reuse, args.repeats, args.db_name, args.keep)
        print(f"  calls in the table: {s['calls_in_table']:,}")
        print(f"  one number, a month by day and hour: median {s['report_month_ms_median']} ms (max {s['report_month_ms_max']})")
        print(f"  one number, a year: median {s['report_year_ms_median']} ms (max {s['report_year_ms_max']})")
        print(f"  daily counts straight from the calls table (no sums): month {s['raw_scan_month_ms_median']} ms, year {s['raw_scan_year_ms_median']} ms")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    for part in ("ingest", "stats"):  # a partial run keeps the other part's last figures
        if part not in result and part in previous:
            result[part] = previous[part]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
