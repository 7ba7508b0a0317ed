"""What a call needs from outside the FastAGI edge: shared routing state and a sink for finished records.

Interfaces only. The database implements both (`store.routing_state`, `store.cdr_writer`), and
`store.memory` holds the in-process versions (one router; tests). The session depends on these, never
on the store, so the call path can be tested with either.
"""

from __future__ import annotations

from typing import Protocol

from callrouter.model.record import CallRecord
from callrouter.routing.health import LineRecord


class RoutingState(Protocol):
    """Round-robin positions, how many calls each line carries and each line's health, shared between
    calls (and routers)."""

    async def next_turn(self, key: str) -> int:
        """This hunt's turn in a round-robin group: how many hunts of it came before (atomic)."""

    async def acquire(self, line_key: str, limit: int) -> bool:
        """Reserve one call on a line if it is below `limit`; atomic."""

    async def release(self, line_key: str) -> None: ...

    async def active(self, line_key: str) -> int: ...

    async def last_used(self, line_keys: tuple[str, ...]) -> dict[str, float]:
        """When each line last finished an answered call (epoch seconds); unknown lines are left out."""

    async def mark_used(self, line_key: str, when: float) -> None: ...

    async def line_health(self, line_keys: tuple[str, ...]) -> dict[str, LineRecord]:
        """The health records of these lines; lines that work (no failure since they last answered) are left out."""

    async def report_line(self, line_key: str, status: str, when: float) -> tuple[LineRecord, LineRecord]:
        """Apply one Dial outcome to a line's record (routing.health.apply_outcome), atomically; (before, after)."""


class RecordSink(Protocol):
    """Where finished call records go. A sink must never make a call fail: the session logs and counts
    a sink error and moves on."""

    async def submit(self, record: CallRecord) -> None: ...

    async def close(self) -> None: ...
