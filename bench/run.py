"""Benchmark: the FastAGI server in its own process, driven over loopback by the Asterisk emulator.

Measures routed calls per second, the time of one call, the server's CPU per call, and the server's
memory with many calls held open in Dial. Side by side in the same run, the floor (bench/floor.py: a bare
panoramisk FastAGI app sending the very command lines callrouter sent for this call, captured from a real
call of this run) is driven by the same client, pinned like the server, and callrouter's calls per
CPU-second are given as a fraction of the floor's. The two take turns (`--rounds`), so that a change in
the machine's load falls on both. Run with `make bench` (options: `--help`). Figures go to stdout and
bench/results.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from callrouter.emulator.asterisk import run_call  # noqa: E402
from proclog import BenchError, ProcessLog, run_and_write, stop_process  # noqa: E402
from callrouter.emulator.script import CallScript, DialScript  # noqa: E402
from callrouter.store.db import open_engine  # noqa: E402
from callrouter.store.schema import calls as calls_table  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
# The admin API logs its own "listening on" line before the FastAGI server does: only this one counts.
FASTAGI_LINE = re.compile(r"FastAGI listening on [^\s:]+:(\d+)")
READY_LINE = "callrouter ready"
FLOOR_LINE = re.compile(r"floor FastAGI listening on [^\s:]+:(\d+)")
FLOOR_READY = "floor ready"
STARTUP_TIMEOUT = 60.0  # seconds for the server to say it is ready (store, plans, admin API)
PACED_PROMPTS = 3  # the bench call plays greeting, recording notice and menu
CDR_STALL_TIMEOUT = 20.0  # seconds without one more CDR arriving before the bench gives up


def fastagi_ready(port_line: re.Pattern[str] = FASTAGI_LINE, ready_line: str = READY_LINE) -> Callable[[str], int | None]:
    """The FastAGI port, once the server has said it is ready (the port line comes first)."""
    port: int | None = None

    def ready(line: str) -> int | None:
        nonlocal port
        if m := port_line.search(line):
            port = int(m.group(1))
        if ready_line in line:
            if port is None:
                raise BenchError("the server said it was ready but logged no FastAGI port")
            return port
        return None

    return ready


ServerLog = ProcessLog[int]
ADMIN_LINE = re.compile(r"admin API listening on [^\s:]+:(\d+)")
LAG = "callrouter_event_loop_lag_seconds"
STATE_WAIT = "callrouter_state_wait_seconds"
BUCKET = re.compile(r'^(callrouter_[a-z_]+_seconds)_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def server_ready(admin: list[int]) -> Callable[[str], int | None]:
    """fastagi_ready, also noting the admin API's port (its /metrics has the event loop's lag) in `admin`."""
    ready = fastagi_ready()

    def seen(line: str) -> int | None:
        if m := ADMIN_LINE.search(line):
            admin.append(int(m.group(1)))
        return ready(line)

    return seen


async def scrape(admin_port: int | None) -> dict[str, dict[float, float]]:
    """The server's loop-lag and state-wait histograms now (cumulative counts by upper bound); {} without an admin port."""
    if admin_port is None:
        return {}
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
        text = await r.text()
    out: dict[str, dict[float, float]] = {LAG: {}, STATE_WAIT: {}}
    for name, le, n in BUCKET.findall(text):
        if name in out:
            out[name][float(le)] = float(n)
    return out


class Waits:
    """What a pass added to the loop-lag and state-wait histograms."""

    def __init__(self) -> None:
        self.lag, self.state = LagDelta(), LagDelta()

    def add(self, before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> None:
        self.lag.add(before.get(LAG, {}), after.get(LAG, {}))
        self.state.add(before.get(STATE_WAIT, {}), after.get(STATE_WAIT, {}))

    def into(self, figures: dict[str, object]) -> None:
        figures["event_loop_lag"] = self.lag.quantiles_ms()
        if state := self.state.quantiles_ms():  # only a shared store is timed
            figures["state_wait"] = state


class LagDelta:
    """The loop-lag samples of the passes measured (between snapshots), as upper bounds of their buckets."""

    def __init__(self) -> None:
        self.counts: dict[float, float] = {}

    def add(self, before: dict[float, float], after: dict[float, float]) -> None:
        for le, n in after.items():
            self.counts[le] = self.counts.get(le, 0.0) + n - before.get(le, 0.0)

    def quantiles_ms(self) -> dict[str, float]:
        """p50 / p90 / p99 as "at most this many ms" (the bucket's bound); {} if nothing was sampled."""
        total = self.counts.get(float("inf"), 0.0)
        if not total:
            return {}
        bounds = sorted(self.counts)
        out = {"samples": total}
        for q in (50, 90, 99):
            le = next(b for b in bounds if self.counts[b] >= total * q / 100)
            out[f"p{q}_at_most_ms"] = le * 1000
        return out


class CountingEvent(asyncio.Event):
    """A Dial hold that counts the calls parked on it, so the bench knows when all are in Dial."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def wait(self) -> bool:  # type: ignore[override]
        self.waiting += 1
        return await super().wait()


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def server_cpu(pid: int) -> float:
    """The process's CPU and that of its children (the workers of `serve --workers`; none otherwise)."""
    total = process_cpu(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a worker that has just exited
            total += process_cpu(int(child))
    return total


def postgres_cpu(url: str) -> float:
    """CPU of the Postgres backends serving this database (their title names it: `postgres: user db host(port) ...`),
    while they live: the router's pool keeps its connections, so its backends live through a pass."""
    title = f" {make_url(url).database} ".encode()
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_bytes().strip() == b"postgres" and title in (entry / "cmdline").read_bytes():
                    total += process_cpu(int(entry.name))
    return total


def server_mem(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]


def workspace(tmp: Path, fsync: bool = True, database: str | None = None, routing_state: str = "auto") -> Path:
    """The sample config and plan, open around the clock, with room for the held calls."""
    shutil.copytree(ROOT / "dialplans", tmp / "dialplans")
    plan = tmp / "dialplans" / "4008001234.yaml"
    text = plan.read_text()
    text = text[: text.index("schedule:\n")] + text[text.index("after_hours:\n"):]
    # The sales lines stand for call-centre trunks here, so 10,000 calls can be in Dial at once.
    plan.write_text(text.replace('ring_timeout: 20}', 'ring_timeout: 20, max_calls: 5000}'))
    cfg = (ROOT / "config.yaml").read_text()
    cfg = cfg.replace("max_sessions: 2000", "max_sessions: 12000")
    cfg = cfg.replace("routing_state: auto", f"routing_state: {routing_state}")
    if not fsync:
        cfg = cfg.replace("  batch_age: 0.5\n", "  batch_age: 0.5\n  fsync: false\n")
    (tmp / "config.yaml").write_text(cfg)
    done = subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", str(tmp / "config.yaml")],
                          capture_output=True, text=True, env=server_env(database))
    if done.returncode:
        raise BenchError(f"`callrouter db upgrade` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return tmp / "config.yaml"


def server_env(database: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CALLROUTER_DATABASE_URL", None)
    if database:
        env["CALLROUTER_DATABASE_URL"] = database
    return env


async def router_ms(url: str, prefix: str) -> list[float]:
    """The router's own time per call (wall time minus waiting for Asterisk), from the CDRs in the database."""
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(calls_table.c.router_ms).where(calls_table.c.uniqueid.like(prefix + ".%")))
            return [float(v) for v in rows.scalars()]
    finally:
        await engine.dispose()


async def wait_for_cdrs(url: str, prefix: str, n: int, proc: asyncio.subprocess.Process, log: ServerLog,
                        stall: float = CDR_STALL_TIMEOUT) -> list[float]:
    """The CDR writer batches in the background; the figures need all of them in the database. Gives up
    (with the server's log) when the server has died or no further CDR arrived for `stall` seconds."""
    seen, last_progress = -1, time.monotonic()
    while len(values := await router_ms(url, prefix)) < n:
        if proc.returncode is not None:
            raise BenchError(f"the server exited ({proc.returncode}) with {len(values)} of {n} '{prefix}' CDRs written" + log.tail())
        if len(values) > seen:
            seen, last_progress = len(values), time.monotonic()
        elif time.monotonic() - last_progress > stall:
            raise BenchError(f"only {len(values)} of {n} '{prefix}' CDRs reached the database (none more for {stall:.0f} s)" + log.tail())
        await asyncio.sleep(0.2)
    return values


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bench_call(uniqueid: str, prompt_wait: float = 0.0) -> CallScript:
    """The benchmark's call: the caller presses 1, the first line answers. `prompt_wait`: real seconds
    each prompt plays before its reply (the paced pass), else none."""
    return CallScript(uniqueid=uniqueid, dtmf=("1",), default_dial=DialScript("ANSWER", 1, 0), prompt_wait=prompt_wait)


async def calls(port: int, n: int, concurrency: int, prefix: str, first: int = 0, prompt_wait: float = 0.0) -> tuple[float, list[float], int]:
    """n realistic calls (press 1, first line answers), numbered from `first`; returns wall time, per-call times, failures."""
    times: list[float] = []
    failures = 0
    next_index = first

    async def worker(start_after: float) -> None:
        nonlocal failures, next_index
        await asyncio.sleep(start_after)
        while next_index < first + n:
            i = next_index
            next_index += 1
            script = bench_call(f"{prefix}.{i}", prompt_wait)
            started = time.perf_counter()
            t = await run_call("127.0.0.1", port, script)
            times.append(time.perf_counter() - started)
            if t.agi_status == "FAILURE" or t.variables.get("CALLROUTER_RESULT") != "ROUTED":
                failures += 1

    started = time.perf_counter()
    # Paced calls all last about the same (their prompts' playing time): started together they would stay
    # in step, 64 at each prompt at once, and reach the store in bursts no real traffic has. So the workers
    # start spread over one call's prompts (PACED_PROMPTS of them).
    spread = prompt_wait * PACED_PROMPTS / concurrency
    await asyncio.gather(*(worker(i * spread) for i in range(concurrency)))
    return time.perf_counter() - started, times, failures


async def held(port: int, pid: int, n: int) -> dict[str, float]:
    """n calls parked in an answered Dial at once; the server's memory then and after release."""
    hold = CountingEvent()

    def script(i: int) -> CallScript:
        return CallScript(uniqueid=f"held.{i}", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 0, hold=hold))

    before = server_mem(pid)["VmRSS"]
    tasks = []
    for start in range(0, n, 500):
        tasks += [asyncio.create_task(run_call("127.0.0.1", port, script(i), timeout=300)) for i in range(start, min(n, start + 500))]
        while hold.waiting < len(tasks) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.02)
    deadline = time.monotonic() + 120
    while hold.waiting < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    mem = server_mem(pid)
    parked = hold.waiting
    hold.set()
    results = await asyncio.gather(*tasks)
    ok = sum(t.variables.get("CALLROUTER_RESULT") == "ROUTED" for t in results)
    await asyncio.sleep(0.5)
    return {
        "held_calls": parked,
        "rss_before_mb": before / 1024,
        "rss_held_mb": mem["VmRSS"] / 1024,
        "rss_peak_mb": mem["VmHWM"] / 1024,
        "kb_per_held_call": (mem["VmRSS"] - before) / max(1, parked),
        "completed_ok_after_release": ok,
        "rss_after_release_mb": server_mem(pid)["VmRSS"] / 1024,
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = Path(tempfile.mkdtemp(prefix="callrouter-bench-"))
    try:
        cfg = workspace(tmp, fsync=not args.no_fsync, database=args.database, routing_state=args.routing_state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    db = args.database or f"sqlite+aiosqlite:///{tmp}/var/callrouter.db"
    workers = ("--workers", str(args.workers)) if args.workers else ()
    try:
        async with server_process(cfg, tmp, args.database, args.event_loop, workers) as server:
            try:
                return await measure(args, server.proc, server.port, db, server.log, tmp, server.admin_port if not args.workers else None)
            except (OSError, asyncio.TimeoutError) as exc:  # a call could not connect or hung: say why, with the server's side
                raise BenchError(f"{type(exc).__name__}: {exc}" + server.log.tail()) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Server:
    """`callrouter serve`, running and ready."""

    proc: asyncio.subprocess.Process
    port: int
    admin_port: int | None
    log: ServerLog


@contextlib.asynccontextmanager
async def server_process(cfg: Path, tmp: Path, database: str | None, event_loop: str, extra: tuple[str, ...] = (),
                         wrapper: tuple[str, ...] = (), startup_timeout: float = STARTUP_TIMEOUT) -> AsyncIterator[Server]:
    """`wrapper`: a command the server runs under (bench/instructions.py: valgrind)."""
    proc = await asyncio.create_subprocess_exec(
        *wrapper, sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0",
        "--event-loop", event_loop, *extra, stderr=asyncio.subprocess.PIPE, cwd=str(tmp), env=server_env(database),
    )
    assert proc.stderr is not None
    admin: list[int] = []
    log = ServerLog(proc.stderr, "server", server_ready(admin))
    try:
        port = await log.wait_ready(startup_timeout)
        log.start_draining()
        yield Server(proc, port, admin[0] if admin else None, log)
    finally:
        await stop_process(proc)
        await log.stop()


@dataclass
class Floor:
    """The bare panoramisk app (bench/floor.py), running."""

    pid: int
    port: int
    log: ProcessLog[int]


@contextlib.asynccontextmanager
async def floor_process(tmp: Path, script: str, lines: list[str], event_loop: str, wrapper: tuple[str, ...] = (),
                        startup_timeout: float = STARTUP_TIMEOUT) -> AsyncIterator[Floor]:
    """`wrapper`: a command the floor runs under (bench/instructions.py: valgrind); its pid is then the wrapper's."""
    spec = tmp / "floor-lines.json"
    spec.write_text(json.dumps({"script": script, "lines": lines}, ensure_ascii=False, indent=1) + "\n")
    proc = await asyncio.create_subprocess_exec(
        *wrapper, sys.executable, str(ROOT / "bench" / "floor.py"), "--lines", str(spec), "--event-loop", event_loop,
        stderr=asyncio.subprocess.PIPE, cwd=str(tmp),
    )
    assert proc.stderr is not None
    log: ProcessLog[int] = ProcessLog(proc.stderr, "floor", fastagi_ready(FLOOR_LINE, FLOOR_READY))
    try:
        port = await log.wait_ready(startup_timeout)
        log.start_draining()
        yield Floor(proc.pid, port, log)
    finally:
        await stop_process(proc)
        await log.stop()


def pin(server_pid: int) -> bool:
    """The server on core 0, this process (the client) on core 1."""
    if len(os.sched_getaffinity(0)) < 2:
        return False
    os.sched_setaffinity(server_pid, {0})
    os.sched_setaffinity(0, {1})
    return True


async def measure(args: argparse.Namespace, proc: asyncio.subprocess.Process, port: int, db: str, log: ServerLog, tmp: Path,
                  admin_port: int | None) -> dict[str, object]:
    """The passes against a running server (and the floor beside it); every figure comes from here."""
    pinned = pin(proc.pid) if not args.workers else False  # --workers N: the workers and the client share the cores
    _, _, warm_failures = await calls(port, args.warmup, 8, "warm")
    if warm_failures:
        raise BenchError(f"{warm_failures} of {args.warmup} warm-up calls were not routed (is port {port} the FastAGI server?)" + log.tail())
    script = bench_call("probe.0")
    probe = await run_call("127.0.0.1", port, script)  # what callrouter says for this call, today
    if probe.variables.get("CALLROUTER_RESULT") != "ROUTED":
        raise BenchError(f"the probe call was not routed: {probe.error or probe.replies}" + log.tail())
    if args.no_floor:
        return await passes(args, proc, port, db, log, None, probe.lines, pinned, admin_port)
    async with floor_process(tmp, script.script, probe.lines, args.event_loop) as floor:
        if pinned:
            os.sched_setaffinity(floor.pid, {0})  # the server's core; the client stays on the other
        _, _, floor_failures = await calls(floor.port, args.warmup, 8, "floorwarm")
        seen = await run_call("127.0.0.1", floor.port, bench_call("probe.1"))
        if floor_failures or seen.lines != probe.lines:
            raise BenchError(f"the floor did not replay callrouter's call ({floor_failures} warm-up failures; sent {seen.lines}, callrouter sent {probe.lines})" + floor.log.tail())
        return await passes(args, proc, port, db, log, floor, probe.lines, pinned, admin_port)


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def passes(args: argparse.Namespace, proc: asyncio.subprocess.Process, port: int, db: str, log: ServerLog,
                 floor: Floor | None, lines: list[str], pinned: bool, admin_port: int | None) -> dict[str, object]:
    # Throughput: callrouter and the floor take turns, `rounds` times, the same calls each. callrouter's
    # CPU of a turn runs until its turn's CDRs are in the database (the whole pipeline, the last batch too).
    cr_wall = cr_cpu = fl_wall = fl_cpu = 0.0
    cr_times: list[float] = []
    fl_times: list[float] = []
    failures = fl_failures = done = 0
    pg_cpu = client_cpu = 0.0
    lag = Waits()
    for n in split(args.calls, max(1, args.rounds)):
        lag0 = await scrape(admin_port)
        cpu0, pg0 = server_cpu(proc.pid), postgres_cpu(args.database) if args.database else 0.0
        own0 = time.process_time()
        wall, times, failed = await calls(port, n, args.concurrency, "tput", done)
        client_cpu += time.process_time() - own0
        lag.add(lag0, await scrape(admin_port))
        server_ms = await wait_for_cdrs(db, "tput", done + n, proc, log)
        cr_cpu += server_cpu(proc.pid) - cpu0
        pg_cpu += postgres_cpu(args.database) - pg0 if args.database else 0.0
        cr_wall, failures = cr_wall + wall, failures + failed
        cr_times += times
        if floor is not None:
            cpu0 = server_cpu(floor.pid)
            wall, times, failed = await calls(floor.port, n, args.concurrency, "floor", done)
            fl_cpu += server_cpu(floor.pid) - cpu0
            fl_wall, fl_failures = fl_wall + wall, fl_failures + failed
            fl_times += times
        done += n
    throughput = {
        "calls": args.calls, "concurrency": args.concurrency, "rounds": max(1, args.rounds), "failures": failures, "wall_s": cr_wall,
        "calls_per_s": (args.calls - failures) / cr_wall,
        "server_cpu_ms_per_call": cr_cpu / args.calls * 1000,
        "server_cpu_utilisation": cr_cpu / cr_wall,
        "server_calls_per_cpu_second": args.calls / cr_cpu if cr_cpu else float("inf"),
        "call_ms_p50": percentile(cr_times, 50) * 1000, "call_ms_p99": percentile(cr_times, 99) * 1000,
    }
    if args.workers:
        throughput["workers"] = args.workers
        throughput["client_cpu_ms_per_call"] = client_cpu / args.calls * 1000  # the emulator: one process, one core at most
    if args.database:  # the shared routing state's other half: the database's CPU (on the same cores here)
        throughput["postgres_cpu_ms_per_call"] = pg_cpu / args.calls * 1000
    throughput.update(completed=args.calls - failures, cdrs=len(server_ms), router_ms_p50=percentile(server_ms, 50), router_ms_p99=percentile(server_ms, 99))
    # what every non-Asterisk wait of a call is longer by (callrouter/loop_lag.py), and the waits on a shared store
    lag.into(throughput)
    cpu0 = server_cpu(proc.pid)
    lag, lag0 = Waits(), await scrape(admin_port)
    lwall, ltimes, lfail = await calls(port, args.latency_calls, 1, "lat")
    lag.add(lag0, await scrape(admin_port))
    lcpu = server_cpu(proc.pid) - cpu0
    latency = {
        "calls": args.latency_calls, "failures": lfail,
        "call_ms_p50": percentile(ltimes, 50) * 1000, "call_ms_p90": percentile(ltimes, 90) * 1000,
        "call_ms_p99": percentile(ltimes, 99) * 1000, "call_ms_max": max(ltimes) * 1000,
        "call_ms_mean": statistics.fmean(ltimes) * 1000,
        "server_cpu_ms_per_call": lcpu / args.latency_calls * 1000,
    }
    lag.into(latency)
    await asyncio.sleep(0.5)
    server_ms = await wait_for_cdrs(db, "lat", args.latency_calls, proc, log)
    latency.update(completed=args.latency_calls - lfail, cdrs=len(server_ms), router_ms_p50=percentile(server_ms, 50), router_ms_p99=percentile(server_ms, 99), router_ms_max=max(server_ms))
    vs_floor: dict[str, object] = {}
    if floor is not None:
        cpu0 = server_cpu(floor.pid)
        _, fl_ltimes, fl_lfail = await calls(floor.port, args.latency_calls, 1, "floorlat")
        fl_lcpu = server_cpu(floor.pid) - cpu0
        vs_floor = {
            "what": "a bare panoramisk FastAGI app (bench/floor.py) sending the same command lines, driven by the same client",
            "command_lines": lines,
            "calls": args.calls, "failures": fl_failures, "completed": args.calls - fl_failures, "wall_s": fl_wall,
            "calls_per_s": (args.calls - fl_failures) / fl_wall,
            "server_cpu_ms_per_call": fl_cpu / args.calls * 1000,
            "server_cpu_utilisation": fl_cpu / fl_wall,
            "server_calls_per_cpu_second": args.calls / fl_cpu if fl_cpu else float("inf"),
            "call_ms_p50": percentile(fl_times, 50) * 1000, "call_ms_p99": percentile(fl_times, 99) * 1000,
            "one_at_a_time": {"calls": args.latency_calls, "failures": fl_lfail, "call_ms_p50": percentile(fl_ltimes, 50) * 1000,
                              "call_ms_p99": percentile(fl_ltimes, 99) * 1000, "server_cpu_ms_per_call": fl_lcpu / args.latency_calls * 1000},
            # callrouter's calls per CPU-second as a fraction of the floor's (aim >= 0.60, long term 0.90)
            "fraction_of_floor": fl_cpu / cr_cpu if cr_cpu else 0.0,
        }
    memory = await held(port, proc.pid, args.held) if args.held else {}
    # after the held calls, whose "before" figure is then the same process history as in earlier runs
    paced = await paced_pass(args, proc, port, db, log, admin_port) if args.paced_calls else {}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "?"),
            "cores": os.cpu_count(), "python": platform.python_version(), "pinned_server_to_one_core": pinned,
            "server_event_loop": args.event_loop, "load_average_at_end": list(os.getloadavg()),
        },
        "scenario": f"sample plan, open; caller presses 1; first round-robin line answers ({len(lines)} AGI commands per call)",
        "durable_spool": not args.no_fsync,
        "throughput": throughput, "latency_concurrency_1": latency, "paced": paced, "floor": vs_floor, "held_calls": memory,
    }


async def paced_pass(args: argparse.Namespace, proc: asyncio.subprocess.Process, port: int, db: str, log: ServerLog,
                     admin_port: int | None) -> dict[str, object]:
    """`concurrency` calls in progress at once, each prompt playing `prompt_ms` of real time as on an Asterisk:
    many calls at once without the closed loop's saturation, which is how a router runs in production.
    The router's own time here is its work plus its waits on the store, not a queue behind other calls."""
    cpu0 = server_cpu(proc.pid)
    lag, lag0 = Waits(), await scrape(admin_port)
    wall, _, failed = await calls(port, args.paced_calls, args.concurrency, "paced", prompt_wait=args.prompt_ms / 1000)
    lag.add(lag0, await scrape(admin_port))
    cpu = server_cpu(proc.pid) - cpu0
    server_ms = await wait_for_cdrs(db, "paced", args.paced_calls, proc, log)
    paced: dict[str, object] = {
        "calls": args.paced_calls, "concurrency": args.concurrency, "prompt_ms": args.prompt_ms, "failures": failed,
        "calls_per_s": (args.paced_calls - failed) / wall, "server_cpu_utilisation": cpu / wall,
        "server_cpu_ms_per_call": cpu / args.paced_calls * 1000,
        "cdrs": len(server_ms), "router_ms_p50": percentile(server_ms, 50), "router_ms_p99": percentile(server_ms, 99),
        "router_ms_max": max(server_ms),
    }
    lag.into(paced)
    return paced


def state_wait(q: dict[str, float]) -> str:
    return (f"waited for the shared routing state at a hunt's start p50 <= {q['p50_at_most_ms']:g} ms, p90 <= {q['p90_at_most_ms']:g} ms, "
            f"p99 <= {q['p99_at_most_ms']:g} ms (callrouter_state_wait_seconds)")


def report(r: dict) -> None:  # type: ignore[type-arg]
    t, lat, mem, fl = r["throughput"], r["latency_concurrency_1"], r["held_calls"], r["floor"]
    print(f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, Python {r['machine']['python']}, server pinned to one core: {r['machine']['pinned_server_to_one_core']}")
    print(f"scenario: {r['scenario']}")
    print(f"throughput ({t['calls']} calls, {t['concurrency']} at once): {t['calls_per_s']:.0f} routed calls/s, completed {t['completed']}, failures {t['failures']}, CDRs {t['cdrs']}")
    print(f"  server CPU {t['server_cpu_ms_per_call']:.3f} ms/call -> {t['server_calls_per_cpu_second']:.0f} calls per CPU-second; server core busy {t['server_cpu_utilisation']:.0%}")
    print(f"  call time seen by Asterisk p50 {t['call_ms_p50']:.2f} ms, p99 {t['call_ms_p99']:.2f} ms (queueing included)")
    print(f"  router's own time per call p50 {t['router_ms_p50']:.3f} ms, p99 {t['router_ms_p99']:.3f} ms")
    if t.get("event_loop_lag"):
        print(f"  server event loop late (a 50 ms timer) p50 <= {t['event_loop_lag']['p50_at_most_ms']:g} ms, p90 <= {t['event_loop_lag']['p90_at_most_ms']:g} ms, "
              f"p99 <= {t['event_loop_lag']['p99_at_most_ms']:g} ms: every wait not on Asterisk is longer by this")
    if t.get("state_wait"):
        print(f"  {state_wait(t['state_wait'])}")
    if "postgres_cpu_ms_per_call" in t:
        print(f"  Postgres CPU {t['postgres_cpu_ms_per_call']:.3f} ms/call" + (
            f"; {t['workers']} worker(s), not pinned; the client's CPU {t['client_cpu_ms_per_call']:.3f} ms/call" if "workers" in t else ""))
    if fl:
        print(f"floor (bare panoramisk, the same {len(fl['command_lines'])} command lines; {t['rounds']} turns each): {fl['calls_per_s']:.0f} calls/s, completed {fl['completed']}, failures {fl['failures']}")
        print(f"  server CPU {fl['server_cpu_ms_per_call']:.3f} ms/call -> {fl['server_calls_per_cpu_second']:.0f} calls per CPU-second; one at a time seen by Asterisk p50 {fl['one_at_a_time']['call_ms_p50']:.3f} ms, p99 {fl['one_at_a_time']['call_ms_p99']:.3f} ms, server CPU {fl['one_at_a_time']['server_cpu_ms_per_call']:.3f} ms/call")
        print(f"callrouter per CPU-second as a fraction of the floor: {fl['fraction_of_floor'] * 100:.0f} % (aim 60 %, long term 90 %)")
    if p := r.get("paced"):
        print(f"paced ({p['calls']} calls, {p['concurrency']} at once, each prompt playing {p['prompt_ms']:g} ms): {p['calls_per_s']:.0f} calls/s, "
              f"failures {p['failures']}, CDRs {p['cdrs']}; server core busy {p['server_cpu_utilisation']:.0%}, CPU {p['server_cpu_ms_per_call']:.3f} ms/call")
        print(f"  router's own time per call p50 {p['router_ms_p50']:.3f} ms, p99 {p['router_ms_p99']:.3f} ms, max {p['router_ms_max']:.3f} ms"
              + (f"; event loop late p99 <= {p['event_loop_lag']['p99_at_most_ms']:g} ms" if p.get("event_loop_lag") else ""))
        if p.get("state_wait"):
            print(f"  {state_wait(p['state_wait'])}")
    print(f"one call at a time ({lat['calls']} calls): completed {lat['completed']}, failures {lat['failures']}, CDRs {lat['cdrs']}")
    print(f"  seen by Asterisk p50 {lat['call_ms_p50']:.3f} ms, p99 {lat['call_ms_p99']:.3f} ms, max {lat['call_ms_max']:.1f} ms; server CPU {lat['server_cpu_ms_per_call']:.3f} ms/call")
    print(f"  router's own time per call p50 {lat['router_ms_p50']:.3f} ms, p99 {lat['router_ms_p99']:.3f} ms, max {lat['router_ms_max']:.3f} ms")
    if lat.get("event_loop_lag"):
        print(f"  server event loop late p50 <= {lat['event_loop_lag']['p50_at_most_ms']:g} ms, p99 <= {lat['event_loop_lag']['p99_at_most_ms']:g} ms")
    if lat.get("state_wait"):
        print(f"  {state_wait(lat['state_wait'])}")
    if mem:
        print(f"held calls: {mem['held_calls']:.0f} in Dial at once: server RSS {mem['rss_held_mb']:.0f} MB (before {mem['rss_before_mb']:.0f} MB, {mem['kb_per_held_call']:.1f} kB per call, peak {mem['rss_peak_mb']:.0f} MB); {mem['completed_ok_after_release']:.0f} completed after release")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000, help="calls of the throughput pass (callrouter's; the floor gets as many)")
    parser.add_argument("--rounds", type=int, default=4, help="turns callrouter and the floor take in the throughput pass, calls/rounds each")
    parser.add_argument("--warmup", type=int, default=300, help="calls before the measured passes (any failure stops the bench)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-calls", type=int, default=2000, help="calls of the one-at-a-time pass")
    parser.add_argument("--paced-calls", type=int, default=2000, help="calls of the paced pass: --concurrency at once, "
                        "each prompt playing --prompt-ms of real time (0 to skip)")
    parser.add_argument("--prompt-ms", type=float, default=100.0, help="real playing time of each prompt in the paced pass")
    parser.add_argument("--held", type=int, default=10000, help="calls held open in Dial (0 to skip)")
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto", help="the server's event loop (the floor's too)")
    parser.add_argument("--no-fsync", action="store_true", help="cdr.fsync false: to see what durable spooling costs")
    parser.add_argument("--no-floor", action="store_true", help="without the bare panoramisk app beside callrouter")
    parser.add_argument("--routing-state", choices=["auto", "local", "shared"], default="auto",
                        help="store.routing_state of the server (auto: shared with --database, else local)")
    parser.add_argument("--workers", type=int, help="serve --workers N (needs --database); server and client then share "
                        "the cores unpinned, also for 1, so 1 and 2 are measured alike (docs/benchmarks.md)")
    parser.add_argument("--database", help="an empty Postgres database URL: CDRs there and routing state shared through it")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args()
    if args.paced_calls < 0 or args.prompt_ms < 0:
        parser.error("--paced-calls and --prompt-ms cannot be negative")
    run_and_write(main(args), report, args.out)
