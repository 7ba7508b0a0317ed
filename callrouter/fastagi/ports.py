"""What a call needs from outside the FastAGI edge: shared routing state, a sink for finished records, and
where it tells what is in progress now (`LiveCalls`).

Interfaces only. The database implements them (`store.routing_state`, `store.cdr_writer`, `store.live_calls`), and
`store.memory` holds the in-process versions (one router; tests). The session depends on these, never
on the store, so the call path can be tested with either.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from callrouter.model.record import CallRecord
from callrouter.routing.health import LineRecord
from callrouter.routing.hunt_start import HuntStart


class RoutingState(Protocol):
    """Round-robin positions, how many calls each line carries and each line's health, shared between
    calls (and routers)."""

    # True where an answer takes a round trip (a database): worth asking ahead (HuntAhead); memory answers at once
    remote: bool

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

    async def start_hunt(self, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
        """A hunt's start in one go (one round trip on Postgres): the turn of `turn_key` (if given), the
        health of `lines` (if asked) and a lease on the line the turn starts at (or the first), unless that
        line has a health record. `lines`: (key, limit) in the group's order. The lease, if taken, is
        released like one from `acquire`."""

    def release_soon(self, line_key: str) -> None:
        """`release`, sent without waiting: the call goes on at once; the lease's TTL covers a crash, and
        what is still unsent when the state closes is sent then."""

    def report_soon(self, line_key: str, status: str, when: float) -> asyncio.Future[tuple[LineRecord, LineRecord]]:
        """`report_line`, sent without waiting; applied in order with this router's other reports. The
        future has the store's (before, after) once applied."""


class RecordSink(Protocol):
    """Where finished call records go. A sink must never make a call fail: the session logs and counts
    a sink error and moves on."""

    async def submit(self, record: CallRecord) -> None: ...

    async def close(self) -> None: ...


class LiveCalls(Protocol):
    """Calls in progress, as the console's live view shows them. Told, never asked: each method only notes
    the change and returns at once (the writing happens elsewhere, later), so reporting can neither slow
    a call down nor make it fail. A call is (uniqueid, source), as its CDR is."""

    def call_started(self, uniqueid: str, source: str, number: str, caller: str, at: datetime) -> None: ...

    def call_changed(self, uniqueid: str, source: str, state: str, line_id: str | None = None, *,
                     talking_after: datetime | None = None) -> None:
        """`state` ivr (with the router), ringing (a Dial on `line_id`) or talking. A Dial still running at
        `talking_after` (its ring timeout) has been answered: the state becomes talking then by itself."""

    def call_ended(self, uniqueid: str, source: str) -> None: ...
