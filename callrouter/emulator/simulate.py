"""`callrouter simulate`: place emulated Asterisk calls against a running server and show what happened."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import DIAL_STATUSES, CallScript, CallTranscript, DialScript, HangupAt


def parse_dial(spec: str) -> DialScript:
    """STATUS[:ring[:talk]], e.g. BUSY, ANSWER:5:60."""
    parts = spec.strip().split(":")
    status = parts[0].upper()
    if status not in DIAL_STATUSES or len(parts) > 3:
        raise ValueError(f"{spec!r}: write STATUS[:ring[:talk]] with STATUS one of {', '.join(DIAL_STATUSES)}")
    try:
        ring = int(parts[1]) if len(parts) > 1 else (3 if status == "ANSWER" else 1)
        talk = int(parts[2]) if len(parts) > 2 else 30
    except ValueError:
        raise ValueError(f"{spec!r}: ring and talk seconds must be whole numbers") from None
    return DialScript(status=status, ring_seconds=ring, talk_seconds=talk)


def parse_hangup(spec: str) -> HangupAt:
    """COMMAND[:N[:during|notice_first|after]]."""
    parts = spec.split(":")
    command = parts[0].strip().upper()
    try:
        occurrence = int(parts[1]) if len(parts) > 1 else 1
    except ValueError:
        raise ValueError(f"--hangup {spec!r}: N must be a whole number") from None
    mode = parts[2].strip().lower() if len(parts) > 2 else "during"
    if not command or occurrence < 1 or mode not in ("during", "notice_first", "after"):
        raise ValueError(f"--hangup {spec!r}: write COMMAND[:N[:during|notice_first|after]]")
    return HangupAt(command=command, occurrence=occurrence, mode=mode)  # type: ignore[arg-type]


def build_script(args: argparse.Namespace, index: int) -> CallScript:
    dial = {}
    for spec in args.target:
        target, sep, outcome = spec.rpartition("=")
        if not sep or not target:
            raise ValueError(f"--target {spec!r}: write TARGET=STATUS[:ring[:talk]]")
        dial[target] = parse_dial(outcome)
    digits = tuple(d.strip() for part in args.digits for d in part.split(","))
    return CallScript(
        callerid=args.caller,
        calleridname=args.caller_name,
        dnid=args.number,
        extension=args.number,
        uniqueid=f"{int(time.time())}.{index}",
        channel=f"PJSIP/trunk-{index:08x}",
        dtmf=digits,
        dial=dial,
        default_dial=parse_dial(args.default),
        hangup=parse_hangup(args.hangup) if args.hangup else None,
    )


def show(transcript: CallTranscript) -> None:
    for line, reply in zip(transcript.lines, _replies_per_command(transcript)):
        print(f"  >> {line}")
        for r in reply:
            print(f"  << {r}")
    for d in transcript.dials:
        print(f"  dial {'&'.join(d.targets)} ({d.timeout}s): {d.status}" + (f", answered by {d.answered_target}" if d.answered_target else ""))
    print(f"  AGISTATUS={transcript.agi_status} CALLROUTER_RESULT={transcript.variables.get('CALLROUTER_RESULT', '')}")
    if transcript.error:
        print(f"  error: {transcript.error}")


def _replies_per_command(t: CallTranscript) -> list[list[str]]:
    """Group reply lines by command: a HANGUP line belongs with the reply that follows it."""
    groups: list[list[str]] = []
    current: list[str] = []
    in_usage = False
    for line in t.replies:
        current.append(line)
        if line.startswith("520-"):
            in_usage = True
        elif in_usage:
            if line.startswith("520 "):
                in_usage = False
                groups.append(current)
                current = []
        elif line != "HANGUP":
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    groups += [[] for _ in range(len(t.lines) - len(groups))]
    return groups


async def _run(args: argparse.Namespace) -> int:
    sem = asyncio.Semaphore(max(1, args.concurrency))
    results: list[CallTranscript] = []

    async def one(i: int) -> None:
        async with sem:
            results.append(await run_call(args.host, args.port, build_script(args, i), timeout=args.timeout))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.calls)))
    elapsed = time.perf_counter() - started
    if not args.quiet and results:
        print("call 1:")
        show(results[0])
    outcomes = Counter(t.variables.get("CALLROUTER_RESULT", "") + "/" + (t.dials[-1].status if t.dials else "-") for t in results)
    print(f"{len(results)} calls in {elapsed:.2f}s; result/last dial: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    return 0 if all(t.agi_status != "FAILURE" for t in results) else 1


def simulate_main(args: argparse.Namespace) -> int:
    try:
        build_script(args, 0)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except OSError as exc:
        print(f"cannot reach the router at {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
