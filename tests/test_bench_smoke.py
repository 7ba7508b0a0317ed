"""Smoke runs of the benchmarks at a tiny size, so that `make bench*` cannot silently rot again.

Each benchmark runs as a subprocess, as `make` runs it, and must exit 0 and report its figures: the figure
names present, numeric, and the counts adding up (calls completed == calls requested, CDRs stored ==
calls written). Timings are never asserted: on a shared machine they are noise. The Postgres benchmarks
use scratch databases of their own, which must be gone afterwards; with CI=true and no Postgres they fail,
elsewhere they skip (tests/databases.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import asyncpg
import pytest

from tests.ci import missing
from tests.databases import PG_SERVER, _admin, _admin_dsn, postgres_or_skip

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NUMBER = r"(-?\d[\d,]*(?:\.\d+)?|inf)"


def run_bench(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 110) -> str:
    """Run bench/<script> and return its stdout; a failure shows everything it printed."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("CALLROUTER_DATABASE_URL", None)
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT), env=full_env)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    return done.stdout


def figure(text: str, pattern: str) -> float:
    """The number a report line gives, `pattern` with NUMBER where it stands."""
    m = re.search(pattern.replace("NUMBER", NUMBER), text)
    assert m, f"no {pattern!r} in the report:\n{text}"
    return float(m.group(1).replace(",", ""))


def numeric(figures: dict[str, object], *names: str) -> None:
    """Each name is present and a real number (not a bool, not NaN); the values themselves are not judged."""
    for name in names:
        assert name in figures, f"{name} missing from {sorted(figures)}"
        value = figures[name]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value), f"{name} = {value!r}"


@pytest.fixture
def scratch_db_name() -> Iterator[str]:
    """A database name no one else uses; asserts afterwards that the benchmark dropped what it created."""
    postgres_or_skip()
    name = f"callrouter_smoke_{uuid.uuid4().hex[:10]}"
    yield name
    left = asyncio.run(_databases_like(name))
    for db in left:  # clean up for the next run even when the assertion below fails
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    assert not left, f"the benchmark left databases behind: {left}"


async def _databases_like(prefix: str) -> list[str]:
    conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%")
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


def test_router_bench_small(tmp_path: Path) -> None:
    calls, latency, held = 50, 20, 20
    out = tmp_path / "results.json"
    text = run_bench("run.py", "--calls", str(calls), "--concurrency", "8", "--latency-calls", str(latency), "--held", str(held),
                     "--warmup", "10", "--paced-calls", "16", "--prompt-ms", "20", "--out", str(out))
    assert figure(text, rf"throughput \({calls} calls, 8 at once\): NUMBER routed calls/s") >= 0
    assert figure(text, r"throughput .*completed NUMBER") == calls
    assert figure(text, r"throughput .*failures NUMBER") == 0
    assert figure(text, r"throughput .*CDRs NUMBER") == calls
    figure(text, r"server CPU NUMBER ms/call")
    figure(text, r"router's own time per call p50 NUMBER ms")
    assert figure(text, rf"one call at a time \({latency} calls\): completed NUMBER") == latency
    assert figure(text, r"paced \(16 calls, 8 at once, each prompt playing 20 ms\): NUMBER calls/s") > 0
    assert figure(text, r"paced .*failures NUMBER") == 0 and figure(text, r"paced .*CDRs NUMBER") == 16
    assert figure(text, r"held calls: NUMBER in Dial at once") == held
    assert figure(text, r"NUMBER completed after release") == held
    # The floor beside it: the same calls through a bare panoramisk app replaying callrouter's own lines.
    assert figure(text, r"floor \(bare panoramisk, the same NUMBER command lines") >= 5
    assert figure(text, r"floor .*completed NUMBER") == calls
    assert figure(text, r"floor .*failures NUMBER") == 0
    figure(text, r"callrouter per CPU-second as a fraction of the floor: NUMBER %")
    r = json.loads(out.read_text())
    fl = r["floor"]
    numeric(fl, "calls_per_s", "server_cpu_ms_per_call", "server_calls_per_cpu_second", "fraction_of_floor", "call_ms_p50")
    assert (fl["calls"], fl["completed"], fl["failures"], fl["one_at_a_time"]["failures"]) == (calls, calls, 0, 0)
    assert fl["command_lines"][0] == "ANSWER" and any(line.startswith('EXEC "Dial"') for line in fl["command_lines"])
    numeric(r["throughput"], "calls_per_s", "server_cpu_ms_per_call", "server_calls_per_cpu_second", "call_ms_p50", "call_ms_p99",
            "router_ms_p50", "router_ms_p99")
    assert (r["throughput"]["completed"], r["throughput"]["cdrs"], r["throughput"]["failures"]) == (calls, calls, 0)
    numeric(r["latency_concurrency_1"], "call_ms_p50", "call_ms_p99", "server_cpu_ms_per_call", "router_ms_p50", "router_ms_p99")
    assert (r["latency_concurrency_1"]["completed"], r["latency_concurrency_1"]["cdrs"]) == (latency, latency)
    numeric(r["paced"], "calls_per_s", "server_cpu_ms_per_call", "router_ms_p50", "router_ms_p99")
    assert (r["paced"]["calls"], r["paced"]["cdrs"], r["paced"]["failures"]) == (16, 16, 0)
    numeric(r["held_calls"], "rss_before_mb", "rss_held_mb", "kb_per_held_call")
    assert r["held_calls"]["held_calls"] == held and r["held_calls"]["completed_ok_after_release"] == held


def test_router_bench_shared_state_two_workers_small(tmp_path: Path) -> None:
    """The production shape of the bench: CDRs in Postgres, routing state shared through it, two workers."""
    from tests.databases import empty_postgres

    calls, latency = 40, 10
    out = tmp_path / "results.json"
    for url in empty_postgres():
        text = run_bench("run.py", "--calls", str(calls), "--concurrency", "8", "--latency-calls", str(latency), "--held", "0",
                         "--warmup", "10", "--no-floor", "--paced-calls", "0", "--database", url, "--routing-state", "shared", "--workers", "2",
                         "--out", str(out), timeout=170)
        assert figure(text, r"throughput .*completed NUMBER") == calls
        assert figure(text, r"throughput .*failures NUMBER") == 0
        assert figure(text, r"throughput .*CDRs NUMBER") == calls
        figure(text, r"server CPU NUMBER ms/call")
        assert figure(text, rf"one call at a time \({latency} calls\): completed NUMBER") == latency
        r = json.loads(out.read_text())
        assert (r["throughput"]["completed"], r["throughput"]["cdrs"], r["throughput"]["failures"]) == (calls, calls, 0)
        numeric(r["throughput"], "server_cpu_ms_per_call", "router_ms_p50", "router_ms_p99", "client_cpu_ms_per_call")
        assert r["throughput"]["workers"] == 2


def test_cdr_path_bench_small(tmp_path: Path) -> None:
    records = 200
    out = tmp_path / "cdr-path-results.json"
    text = run_bench("cdr_path.py", "--records", str(records), "--at-once", "1", "16", "--out", str(out))
    assert figure(text, r"1 at once: NUMBER records") == records
    assert figure(text, r"1 at once: .*stored NUMBER") == records
    assert figure(text, r"16 at once: .*stored NUMBER") == records
    assert figure(text, r"1 at once: .*wall per record, NUMBER fdatasyncs") == records  # one at a time: one sync each
    figure(text, r"16 at once: .*CPU NUMBER us per record")
    r = json.loads(out.read_text())
    for run in r["runs"]:
        numeric(run, "cpu_us_per_record", "submit_wall_us_per_record", "records_per_fdatasync", "sqlite_heap_mb", "sqlite_heap_peak_mb")
        assert run["stored"] == records and 1 <= run["fdatasyncs"] <= records
        assert 0 < run["sqlite_heap_mb"] <= run["sqlite_heap_peak_mb"]  # read from the library sqlite3 uses


def test_cdr_bench_small(tmp_path: Path, scratch_db_name: str) -> None:
    calls, naive, rows = 2000, 100, 2000
    out = tmp_path / "cdr-results.json"
    text = run_bench("cdr.py", "--calls", str(calls), "--naive-calls", str(naive), "--stats-rows", str(rows), "--repeats", "2",
                     "--db-name", scratch_db_name, "--out", str(out), env={"CALLROUTER_BENCH_PG": PG_SERVER})
    assert figure(text, r"stored NUMBER calls") == calls + naive
    figure(text, r"writer \(spool fsync \+ batches of 1000\): NUMBER calls/s")
    figure(text, r"store alone, batches of 1000: NUMBER calls/s")
    figure(text, r"naive, one INSERT per row: NUMBER calls/s")
    assert figure(text, r"calls in the table: NUMBER") == rows
    figure(text, r"a month by day and hour: median NUMBER ms")
    figure(text, r"a year: median NUMBER ms")
    r = json.loads(out.read_text())
    numeric(r["ingest"], "writer_rows_per_s", "store_only_rows_per_s", "naive_rows_per_s")
    assert r["ingest"]["calls_stored"] == calls + naive
    numeric(r["stats"], "report_month_ms_median", "report_year_ms_median", "raw_scan_month_ms_median", "raw_scan_year_ms_median")
    assert r["stats"]["calls_in_table"] == rows


def test_exporter_bench_small(tmp_path: Path, scratch_db_name: str) -> None:
    calls, follow = 2000, 2000
    out = tmp_path / "exporter-results.json"
    text = run_bench("exporter.py", "--calls", str(calls), "--scrapes", "20", "--follow", str(follow), "--db-name", scratch_db_name,
                     "--out", str(out), env={"CALLROUTER_BENCH_PG": PG_SERVER})
    printed = json.loads(text[text.index("{"):])  # the figures, after the progress lines
    assert printed == json.loads(out.read_text())
    numeric(printed, "baseline_s", "process_start_to_ready_s", "scrape_ms_median", "scrape_ms_p99", "scrape_ms_max", "series",
            "rss_mb_after_baseline", "write_calls_per_s", "follow_calls_per_s", "scrape_ms_median_while_writing")
    assert printed["series"] > 0
    assert printed["calls_counted_at_start"] == calls
    assert printed["calls_counted_after_follow"] == calls + follow


def test_instructions_bench_small(tmp_path: Path) -> None:
    """The instruction count under callgrind: both servers counted, figures present. Needs valgrind, which
    CI installs (.ci/run); elsewhere without it the test skips, on CI it fails."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        missing("valgrind is not installed (apt-get install -y valgrind)", "the benchmark smoke tests")
    out = tmp_path / "instructions.json"
    text = run_bench("instructions.py", "--calls", "20", "--warmup", "10", "--concurrency", "4", "--idle-seconds", "2", "--out", str(out), timeout=600)
    r = json.loads(out.read_text())
    numeric(r, "callrouter_instructions_per_call", "floor_instructions_per_call", "fraction_of_floor",
            "callrouter_idle_instructions_per_second", "floor_idle_instructions_per_second", "callrouter_counted_seconds")
    assert r["calls"] == 20 and r["command_lines"], r
    # Counted around the calls only: a call is a few million instructions, the start of either server some
    # billions (imports), so a count that took in the start would be hundreds of millions per call here.
    assert 0 < r["floor_instructions_per_call"] < r["callrouter_instructions_per_call"] < 50e6, r
    assert figure(text, r"callrouter NUMBER M, floor") > 0
    assert "fraction of the floor by instructions" in text
    assert figure(text, r"callrouter idle: NUMBER M per second") > 0  # the timers of a server with no call


@pytest.mark.parametrize("bad", [["--calls", "0"], ["--idle-seconds", "0"], ["--concurrency", "-1"]])
def test_instructions_bench_refuses_sizes_it_cannot_divide_by(bad: list[str]) -> None:
    """Refused before valgrind starts, with the reason, instead of a ZeroDivisionError after minutes."""
    done = subprocess.run([sys.executable, str(BENCH / "instructions.py"), *bad], capture_output=True, text=True, timeout=60,
                          cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "must be at least 1" in done.stderr, done.stderr

