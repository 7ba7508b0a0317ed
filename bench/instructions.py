"""Benchmark: instructions per call, callrouter against the floor, counted by valgrind's callgrind.

`make bench` reads CPU seconds, and on this shared machine they move 2 - 3x between days and by several per
cent between two runs of one sitting: a cut worth 2 % of a call cannot be told from that noise. callgrind
counts the instructions a process executes in user space, which the other core's load does not change, so
two trees can be compared to a fraction of a per cent in one run each. What it leaves out: the kernel's
side of every system call (the server's main thread is about 87 % user time under load, docs/benchmarks.md),
cache misses and branch mispredictions (an instruction is an instruction), and valgrind runs the threads
one at a time. So this says where the instructions go; the floor fraction by CPU time stays `make bench`'s.

Both servers run under `valgrind --tool=callgrind --instr-atstart=no`: nothing is counted while they start
or warm up. Then counting is switched on with `callgrind_control -i on`; first `--idle-seconds` with no
call are counted and dumped (what the timers cost per second), then the calls run (the same calls for
both, the same client, `--concurrency` at once), callrouter's CDRs are awaited in its database, and
`callgrind_control -d` dumps their count. valgrind stretches wall time 20 - 50x, so timer-driven work
weighs more per call here than natively; the report says how much of the count that is. The floor replays
the command lines callrouter sent for the probe call of this run, as in `bench/run.py`.

Run with `make bench-instructions` (`--help` for the sizes); figures to stdout and
bench/instructions-results.json. Needs valgrind (Debian's package; `.ci/run` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable

from run import (  # the same workspace, processes, calls and checks as `make bench`
    ROOT,
    BenchError,
    bench_call,
    calls,
    floor_process,
    run_call,
    server_process,
    wait_for_cdrs,
    workspace,
)
from proclog import run_and_write

VALGRIND_STARTUP_TIMEOUT = 600.0  # seconds: imports run 20 - 50x slower under valgrind, on a loaded machine more
CONTROL_TIMEOUT = 120.0
TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.M)


def callgrind(out_dir: Path, who: str) -> tuple[str, ...]:
    return ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_dir}/callgrind.{who}.%p")


async def control(pid: int, *args: str) -> str:
    """callgrind_control on a running process (it reaches a process blocked in epoll_wait through vgdb)."""
    proc = await asyncio.create_subprocess_exec("callgrind_control", *args, str(pid), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), CONTROL_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        raise BenchError(f"callgrind_control {' '.join(args)} {pid} did not answer within {CONTROL_TIMEOUT:.0f} s") from None
    if proc.returncode:
        raise BenchError(f"callgrind_control {' '.join(args)} {pid} failed ({proc.returncode}): {out.decode(errors='replace')[-400:]}")
    return out.decode(errors="replace")


def dumped_instructions(out_dir: Path, who: str, pid: int, index: int) -> int:
    """Instructions in the `index`-th dump `callgrind_control -d` wrote (each dump counts from the one before).
    valgrind runs the program in its own process, so `%p` in the file name is the pid we started."""
    dump = out_dir / f"callgrind.{who}.{pid}.{index}"
    if not dump.exists():
        raise BenchError(f"no callgrind dump {dump.name} in {out_dir}: {sorted(p.name for p in out_dir.glob('callgrind.*'))}")
    m = TOTALS.search(dump.read_text(errors="replace"))
    if not m:
        raise BenchError(f"no totals line in {dump}")
    return int(m.group(1))


async def counted(pid: int, out_dir: Path, who: str, work: Awaitable[None], idle_seconds: float) -> tuple[int, float, int]:
    """Counting on; `idle_seconds` of no calls, dumped (dump 1), then `work`, dumped (dump 2). Returns the
    idle count, the work's wall seconds and the work's count.

    The idle count is there because valgrind stretches wall time 20 - 50x: what runs on a timer (the loop
    lag sampler, the live-calls and CDR rounds, the batches closed by age) runs as often per second as
    natively, so per call it weighs that many times more in the count than it does in a native run."""
    await control(pid, "-i", "on")
    await control(pid, "-z")  # nothing should be counted yet; a zero makes sure
    await asyncio.sleep(idle_seconds)
    await control(pid, "-d")
    idle = dumped_instructions(out_dir, who, pid, 1)
    started = time.monotonic()
    await work
    seconds = time.monotonic() - started
    await control(pid, "-d")
    await control(pid, "-i", "off")
    return idle, seconds, dumped_instructions(out_dir, who, pid, 2)


async def main(args: argparse.Namespace) -> dict[str, object]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchError("valgrind is not installed (Debian: apt-get install valgrind)")
    tmp = Path(tempfile.mkdtemp(prefix="callrouter-bench-instr-"))
    try:
        cfg = workspace(tmp, fsync=not args.no_fsync)
        db = f"sqlite+aiosqlite:///{tmp}/var/callrouter.db"
        wrapper = callgrind(tmp, "server")
        async with server_process(cfg, tmp, None, args.event_loop, wrapper=wrapper, startup_timeout=VALGRIND_STARTUP_TIMEOUT) as server:
            pid = server.proc.pid
            _, _, failed = await calls(server.port, args.warmup, 8, "warm")
            script = bench_call("probe.0")
            probe = await run_call("127.0.0.1", server.port, script)
            if failed or probe.variables.get("CALLROUTER_RESULT") != "ROUTED":
                raise BenchError(f"{failed} of {args.warmup} warm-up calls failed, probe {probe.error or probe.replies}" + server.log.tail())
            await wait_for_cdrs(db, "warm", args.warmup, server.proc, server.log)

            async def routed() -> None:
                _, _, failed = await calls(server.port, args.calls, args.concurrency, "count")
                await wait_for_cdrs(db, "count", args.calls, server.proc, server.log)
                if failed:
                    raise BenchError(f"{failed} of {args.calls} counted calls were not routed" + server.log.tail())

            r_idle, r_seconds, router = await counted(pid, tmp, "server", routed(), args.idle_seconds)
        async with floor_process(tmp, script.script, probe.lines, args.event_loop, wrapper=callgrind(tmp, "floor"),
                                 startup_timeout=VALGRIND_STARTUP_TIMEOUT) as floor:
            _, _, failed = await calls(floor.port, args.warmup, 8, "floorwarm")
            seen = await run_call("127.0.0.1", floor.port, bench_call("probe.1"))
            if failed or seen.lines != probe.lines:
                raise BenchError(f"the floor did not replay callrouter's call ({failed} warm-up failures)" + floor.log.tail())

            async def replayed() -> None:
                _, _, failed = await calls(floor.port, args.calls, args.concurrency, "floor")
                if failed:
                    raise BenchError(f"{failed} of {args.calls} floor calls failed" + floor.log.tail())

            f_idle, f_seconds, bare = await counted(floor.pid, tmp, "floor", replayed(), args.idle_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "user-space instructions per call under valgrind callgrind (the kernel's side of syscalls not counted)",
        "calls": args.calls, "concurrency": args.concurrency, "warmup": args.warmup, "durable_spool": not args.no_fsync,
        "command_lines": probe.lines,
        "callrouter_instructions_per_call": router / args.calls,
        "floor_instructions_per_call": bare / args.calls,
        # the floor's instructions per call over callrouter's: the instruction-count twin of `make bench`'s fraction
        "fraction_of_floor": bare / router if router else 0.0,
        # what each server counts per wall-second with no call at all, and how long the counted calls took
        # under valgrind: their product is the part of the count that is timers, not calls
        "callrouter_idle_instructions_per_second": r_idle / args.idle_seconds, "callrouter_counted_seconds": r_seconds,
        "floor_idle_instructions_per_second": f_idle / args.idle_seconds, "floor_counted_seconds": f_seconds,
        "load_average_at_end": list(os.getloadavg()),
    }


def report(r: dict) -> None:  # type: ignore[type-arg]
    print(f"instructions per call ({r['calls']} calls, {r['concurrency']} at once, {len(r['command_lines'])} AGI commands; user space, callgrind)")
    print(f"  callrouter {r['callrouter_instructions_per_call'] / 1e6:.3f} M, floor {r['floor_instructions_per_call'] / 1e6:.3f} M")
    for who in ("callrouter", "floor"):
        idle, seconds = r[f"{who}_idle_instructions_per_second"], r[f"{who}_counted_seconds"]
        print(f"  {who} idle: {idle / 1e6:.2f} M per second with no call; the counted calls took {seconds:.1f} s under valgrind, "
              f"so about {idle * seconds / r['calls'] / 1e6:.3f} M per call is timers")
    print(f"callrouter as a fraction of the floor by instructions: {r['fraction_of_floor'] * 100:.1f} % (aim 60 %, long term 90 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500, help="counted calls, for each of the two servers")
    parser.add_argument("--warmup", type=int, default=100, help="calls before counting starts (CPython specialises its bytecode then)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="seconds counted with no call, before the calls")
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "instructions-results.json"))
    args = parser.parse_args()
    if args.calls < 1 or args.warmup < 1 or args.concurrency < 1 or args.idle_seconds <= 0:
        parser.error("--calls, --warmup and --concurrency must be at least 1, and --idle-seconds more than 0")
    run_and_write(main(args), report, args.out)
