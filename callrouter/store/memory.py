"""In-process implementations of the FastAGI ports: correct for one router process, and for tests.

`store.routing_state` and `store.cdr_writer` implement the same ports on the database, for several
routers and for durable CDRs.
"""

from __future__ import annotations

from callrouter.model.record import CallRecord
from callrouter.routing.health import LineRecord, apply_outcome


class MemoryRoutingState:
    """Process-local state: correct for one router instance."""

    def __init__(self) -> None:
        self._turns: dict[str, int] = {}
        self._active: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._health: dict[str, LineRecord] = {}  # only lines that failed since they last answered

    async def next_turn(self, key: str) -> int:
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return turn

    async def acquire(self, line_key: str, limit: int) -> bool:
        current = self._active.get(line_key, 0)
        if current >= limit:
            return False
        self._active[line_key] = current + 1
        return True

    async def release(self, line_key: str) -> None:
        current = self._active.get(line_key, 0)
        if current <= 1:
            self._active.pop(line_key, None)
        else:
            self._active[line_key] = current - 1

    async def active(self, line_key: str) -> int:
        return self._active.get(line_key, 0)

    async def last_used(self, line_keys: tuple[str, ...]) -> dict[str, float]:
        return {k: self._used[k] for k in line_keys if k in self._used}

    async def mark_used(self, line_key: str, when: float) -> None:
        self._used[line_key] = when

    async def line_health(self, line_keys: tuple[str, ...]) -> dict[str, LineRecord]:
        return {k: self._health[k] for k in line_keys if k in self._health}

    async def report_line(self, line_key: str, status: str, when: float) -> tuple[LineRecord, LineRecord]:
        before = self._health.get(line_key) or LineRecord(line_key)
        after = apply_outcome(before, status, when)
        if after.clean:
            self._health.pop(line_key, None)
        else:
            self._health[line_key] = after
        return before, after


class MemorySink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def submit(self, record: CallRecord) -> None:
        self.records.append(record)

    async def close(self) -> None:
        return None
