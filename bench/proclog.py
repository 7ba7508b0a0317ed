"""The log of a process a benchmark starts (`callrouter serve`, `callrouter exporter`), and the bench's error.

Read until the process says it is ready, then drained (so the pipe never fills up) and kept, its last
lines, so that a failure shows what the process said instead of a bare timeout. And how a benchmark ends
(`run_and_write`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Coroutine, Generic, TypeVar

T = TypeVar("T")


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 30.0) -> None:
    """SIGTERM (the process's own orderly stop), then SIGKILL if it has not left within `grace` seconds."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


class BenchError(RuntimeError):
    """The benchmark cannot produce figures; the message says why (with the process's log where there is one)."""


class ProcessLog(Generic[T]):
    """`ready(line)` returns what the bench needs (a port, a start-up time) from the line that says so,
    else None; it may raise BenchError for a line that shows start-up went wrong."""

    def __init__(self, stream: asyncio.StreamReader, who: str, ready: Callable[[str], T | None], keep: int = 200) -> None:
        self.stream, self.who, self.ready = stream, who, ready
        self.lines: deque[str] = deque(maxlen=keep)
        self._drain: asyncio.Task[None] | None = None

    async def line(self) -> str | None:
        raw = await self.stream.readline()
        if not raw:
            return None
        text = raw.decode(errors="replace").rstrip("\n")
        self.lines.append(text)
        return text

    async def wait_ready(self, timeout: float) -> T:
        try:
            return await asyncio.wait_for(self._wait_ready(), timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"the {self.who} was not ready within {timeout:.0f} s" + self.tail()) from None

    async def _wait_ready(self) -> T:
        while (line := await self.line()) is not None:
            found = self.ready(line)
            if found is not None:
                return found
        raise BenchError(f"the {self.who} stopped before it was ready" + self.tail())

    def start_draining(self) -> None:
        async def drain() -> None:
            while await self.line() is not None:
                continue

        self._drain = asyncio.create_task(drain())

    async def stop(self) -> None:
        """After the process has exited: keep what it said last (its shutdown lines)."""
        if self._drain is not None:
            try:
                await asyncio.wait_for(self._drain, 5)
            except asyncio.TimeoutError:
                self.lines.append(f"(log not closed 5 s after the {self.who} exited)")

    def tail(self) -> str:
        return f"\n--- {self.who} log (last lines) ---\n" + ("\n".join(self.lines) or "(nothing)")


def run_and_write(figures: Coroutine[Any, Any, dict[str, Any]], report: Callable[[dict[str, Any]], None], out: str) -> None:
    """A benchmark's end: its figures, reported and written as JSON to `out`; a BenchError exits 1 with its reason."""
    try:
        results = asyncio.run(figures)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
    report(results)
    Path(out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {out}")
