"""How late the event loop runs a timer: the router's CPU backlog, as a call feels it.

Everything a call awaits other than Asterisk (a database round trip, a CRM lookup) is resumed only when
the loop gets to it, so on a busy router every such wait is longer by the loop's lag. The sampler
sleeps `every` seconds and records how much later than asked it woke up (`callrouter_event_loop_lag_
seconds`); a lag that grows with traffic says the router needs another core (`serve --workers`).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram


class LoopLagSampler:
    """One timer every `every` seconds; its lateness goes into the histogram."""

    def __init__(self, histogram: Histogram, every: float = 0.05) -> None:
        self.histogram, self.every = histogram, every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:  # monotonic, not loop.time(): uvloop's clock is cached per loop iteration
            asked = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            self.histogram.observe(max(0.0, time.monotonic() - asked))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
