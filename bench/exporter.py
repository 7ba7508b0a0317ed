"""Benchmark of the CDR exporter on Postgres with 10 million calls: start-up (baseline) time, scrape time
over real HTTP, rows followed per second while CDRs are being written, and memory.

Run with `make bench-exporter` (options: `--help`; `--calls`, `--scrapes` and `--follow` set the sizes).
The exporter runs as a real `callrouter exporter` process; the calls are generated with set-based SQL into
a database of its own (`--db-name`, default `callrouter_bench_exporter`, on CALLROUTER_BENCH_PG, default
postgresql://postgres@127.0.0.1:5432/test), dropped at the end unless `--keep`. Figures go to stdout and
bench/exporter-results.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import aiohttp
import asyncpg
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cdr import LINE_ROLLUP, ROLLUP, SERVER, admin, generate_sql, record  # noqa: E402
from proclog import BenchError, ProcessLog, stop_process  # noqa: E402

from callrouter.store.cdr_rows import rows_from_spooled, spool_entry  # noqa: E402
from callrouter.store.cdr_store import CdrStore  # noqa: E402
from callrouter.store.db import open_engine, upgrade  # noqa: E402

DB = "callrouter_bench_exporter"
READY_TIMEOUT = 600.0  # seconds for the exporter to load its baseline (about 5 s for 10 million calls)
FOLLOW_STALL_TIMEOUT = 30.0  # seconds without the exporter counting one more row before the bench gives up


def url(name: str) -> str:
    return make_url(SERVER).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


def exporter_ready() -> Callable[[str], tuple[int, float] | None]:
    """The exporter's HTTP port and how long its baseline took, once it has logged both."""
    port = 0

    def ready(line: str) -> tuple[int, float] | None:
        nonlocal port
        if m := re.search(r"serving /metrics on [^\s:]+:(\d+)", line):
            port = int(m.group(1))
        if m := re.search(r"totals loaded up to call id \d+ in ([\d.]+) s", line):
            if not port:
                raise BenchError("the exporter loaded its baseline but logged no port")
            return port, float(m.group(1))
        return None

    return ready


ExporterLog = ProcessLog[tuple[int, float]]


async def generate(n: int, name: str) -> float:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')
    engine = open_engine(make_url(url(name)))
    await upgrade(engine)
    await engine.dispose()
    t0 = time.perf_counter()
    conn = await asyncpg.connect(make_url(url(name)).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        for sql in (generate_sql(n), ROLLUP, LINE_ROLLUP, "VACUUM ANALYZE"):
            await conn.execute(sql, timeout=None)
    finally:
        await conn.close()
    return time.perf_counter() - t0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def scrape(http: aiohttp.ClientSession, base: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    async with http.get(base + "/metrics") as r:
        text = await r.text()
        assert r.status == 200
    return (time.perf_counter() - t0) * 1000, text


def rows_read(text: str) -> float:
    m = re.search(r"^callrouter_exporter_rows_read_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def calls_counted(text: str) -> int:
    """All calls the exposition counts (callrouter_cdr_calls_total over every number and disposition)."""
    return int(sum(float(v) for v in re.findall(r"^callrouter_cdr_calls_total\{[^}]*\} (\S+)$", text, re.M)))


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Generate (unless --reuse), measure, and drop the database at the end (unless --keep), whatever happens."""
    try:
        if not args.reuse:
            print(f"generating {args.calls:,} calls ...", flush=True)
            print(f"  done in {await generate(args.calls, args.db_name):.0f} s", flush=True)
        return await measure(args)
    finally:
        if not args.keep:
            await admin(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


async def measure(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="callrouter-bench-exporter-"))
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["store"]["url"] = url(args.db_name)
    doc["dialplans_dir"] = str(ROOT / "dialplans")
    doc["exporter"] = {"port": 0, "poll_interval": 0.2}
    (work / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CALLROUTER_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter", "exporter", "--config", str(work / "config.yaml"), "--port", "0",
        stderr=asyncio.subprocess.PIPE, env=env,
    )
    assert proc.stderr is not None
    log = ExporterLog(proc.stderr, "exporter", exporter_ready())
    started = time.perf_counter()
    engine = open_engine(make_url(url(args.db_name)))
    try:
        port, baseline = await log.wait_ready(READY_TIMEOUT)
        log.start_draining()
        ready_after = time.perf_counter() - started
        base = f"http://127.0.0.1:{port}"
        result: dict[str, object] = {"calls_in_table": args.calls, "baseline_s": baseline, "process_start_to_ready_s": round(ready_after, 2)}
        async with aiohttp.ClientSession() as http:
            await scrape(http, base)
            times = [(await scrape(http, base))[0] for _ in range(args.scrapes)]
            _, text = await scrape(http, base)
            result.update(
                calls_counted_at_start=calls_counted(text),
                scrape_ms_median=round(statistics.median(times), 2),
                scrape_ms_p99=round(sorted(times)[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))], 2),
                scrape_ms_max=round(max(times), 2),
                exposition_bytes=len(text),
                series=sum(1 for line in text.splitlines() if line and not line.startswith("#")),
                rss_mb_after_baseline=round(rss_mb(proc.pid), 1),
            )
            # Follow: write new calls in batches of 1,000 (as the CDR writer does) and time until all are counted.
            store = CdrStore(engine)
            before = rows_read(text)
            t0 = time.perf_counter()
            during: list[float] = []
            for start in range(0, args.follow, 1000):
                await store.write([rows_from_spooled(spool_entry(record(20_000_000 + i))[0]) for i in range(start, min(start + 1000, args.follow))])
                during.append((await scrape(http, base))[0])
            written = time.perf_counter() - t0
            text = await follow_until(http, base, before + args.follow, proc, log)
            followed = time.perf_counter() - t0
            result.update(
                calls_counted_after_follow=calls_counted(text),
                follow_calls=args.follow,
                write_calls_per_s=round(args.follow / written),
                followed_within_s_of_last_write=round(followed - written, 2),
                follow_calls_per_s=round(args.follow / followed),
                scrape_ms_median_while_writing=round(statistics.median(during), 2),
                rss_mb_after_follow=round(rss_mb(proc.pid), 1),
            )
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:  # the exporter went away or hung: with its side
        raise BenchError(f"{type(exc).__name__}: {exc}" + log.tail()) from exc
    finally:
        await engine.dispose()
        await stop_process(proc)
        await log.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


async def follow_until(http: aiohttp.ClientSession, base: str, rows: float, proc: asyncio.subprocess.Process, log: ExporterLog,
                       stall: float = FOLLOW_STALL_TIMEOUT) -> str:
    """Scrape until the exporter has counted `rows` rows; give up when it died or stopped counting."""
    seen, since = -1.0, time.monotonic()
    while (now := rows_read(text := (await scrape(http, base))[1])) < rows:
        if proc.returncode is not None:
            raise BenchError(f"the exporter exited ({proc.returncode}) having counted {now:.0f} of {rows:.0f} rows" + log.tail())
        if now > seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > stall:
            raise BenchError(f"the exporter counted {now:.0f} of {rows:.0f} rows and nothing more for {stall:.0f} s" + log.tail())
        await asyncio.sleep(0.01)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000_000, help="calls generated before the exporter starts")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed after the baseline")
    parser.add_argument("--follow", type=int, default=50_000, help="new calls written while the exporter follows")
    parser.add_argument("--reuse", action="store_true", help="use the database a previous --keep run left")
    parser.add_argument("--keep", action="store_true", help="keep the generated database for --reuse")
    parser.add_argument("--db-name", default=DB, help="the database generated (and dropped at the end unless --keep)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "exporter-results.json"))
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
