"""In-process implementations of the FastAGI ports: correct for one router process, and for tests.

`store.routing_state`, `store.cdr_writer` and `store.live_calls` implement the same ports on the database,
for several routers and for durable CDRs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Coroutine, Protocol, TypeVar

from callrouter.model.record import CallRecord
from callrouter.routing.health import LineRecord, apply_outcome
from callrouter.routing.hunt_start import HuntStart

T = TypeVar("T")


class MemoryRoutingState:
    """Process-local state: correct for one router instance."""

    remote = False  # answers at once (fastagi.ports.RoutingState)

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

    async def start_hunt(self, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
        return await hunt_start_by_parts(self, turn_key, lines, health)

    def release_soon(self, line_key: str) -> None:
        _settled(self.release(line_key))

    def report_soon(self, line_key: str, status: str, when: float) -> asyncio.Future[tuple[LineRecord, LineRecord]]:
        done: asyncio.Future[tuple[LineRecord, LineRecord]] = asyncio.get_running_loop().create_future()
        done.set_result(_settled(self.report_line(line_key, status, when)))
        return done


def _settled(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (the in-memory operations), without a task."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an in-memory routing-state operation suspended")


class PartsState(Protocol):
    async def next_turn(self, key: str) -> int: ...
    async def line_health(self, line_keys: tuple[str, ...]) -> dict[str, LineRecord]: ...
    async def acquire(self, line_key: str, limit: int) -> bool: ...


async def hunt_start_by_parts(state: PartsState, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
    """A hunt's start from the single operations, one after the other (memory, SQLite): the same answer
    the one-round-trip function gives on Postgres (migration 0008). The line leased is the one the turn
    starts at (rotate_for_turn), or the first; only if it has no health record."""
    keys = tuple(k for k, _ in lines)
    turn = await state.next_turn(turn_key) if turn_key is not None else None
    records = await state.line_health(keys) if health and keys else ({} if health else None)
    if not lines:
        return HuntStart(keys, turn, records)
    key, limit = lines[(turn or 0) % len(lines)]
    if records and key in records:
        return HuntStart(keys, turn, records)
    return HuntStart(keys, turn, records, key, await state.acquire(key, limit))


class MemorySink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def submit(self, record: CallRecord) -> None:
        self.records.append(record)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call in progress, as the `active_calls` table holds it."""

    instance: str  # the router that has it
    uniqueid: str
    source: str
    number: str
    caller: str
    started_at: datetime
    state: str  # ivr, ringing, talking
    line_id: str | None  # the line(s) of the Dial in progress, ids joined by ','
    updated_at: datetime

    @property
    def line_ids(self) -> tuple[str, ...]:
        return tuple(i for i in (self.line_id or "").split(",") if i)

    def moved(self, state: str, line_id: str | None, updated_at: datetime) -> ActiveCall:
        """The same call in another state (not dataclasses.replace: twice a call, at several times the cost)."""
        return ActiveCall(instance=self.instance, uniqueid=self.uniqueid, source=self.source, number=self.number, caller=self.caller,
                          started_at=self.started_at, state=state, line_id=line_id, updated_at=updated_at)


LINE_ID_LENGTH = 200  # the column's width


def joined_line_ids(line_id: str | None) -> str | None:
    """Line ids as stored: whole ids only, as many as fit the column."""
    if not line_id:
        return None
    kept: list[str] = []
    for part in line_id.split(","):
        if part and len(",".join([*kept, part])) <= LINE_ID_LENGTH:
            kept.append(part)
    return ",".join(kept) or None


class MemoryLiveCalls:
    """The calls in progress on this router, in process memory (one router; tests; and the book-keeping
    that `store.live_calls.SqlLiveCalls` writes to the database)."""

    def __init__(self, instance: str = "", clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.instance, self.clock = instance, clock
        self._calls: dict[tuple[str, str], ActiveCall] = {}
        self._answered_by: dict[tuple[str, str], datetime] = {}  # a Dial still running then was answered

    def call_started(self, uniqueid: str, source: str, number: str, caller: str, at: datetime) -> None:
        key = (uniqueid, source)
        self._calls[key] = ActiveCall(self.instance, uniqueid, source, number, caller, at, "ivr", None, at)
        self._answered_by.pop(key, None)
        self.touched(key)

    def call_changed(self, uniqueid: str, source: str, state: str, line_id: str | None = None, *,
                     talking_after: datetime | None = None) -> None:
        key = (uniqueid, source)
        current = self._calls.get(key)
        if current is None:
            return
        self._calls[key] = current.moved(state, joined_line_ids(line_id), self.clock())
        if talking_after is not None and state == "ringing":
            self._answered_by[key] = talking_after
        else:
            self._answered_by.pop(key, None)
        self.touched(key)

    def call_ended(self, uniqueid: str, source: str) -> None:
        key = (uniqueid, source)
        self._answered_by.pop(key, None)
        if self._calls.pop(key, None) is not None:
            self.touched(key)

    def promote(self, now: datetime) -> None:
        """Dials that outlasted their ring timeout were answered: their calls are talking now."""
        for key, when in list(self._answered_by.items()):
            if now >= when:
                del self._answered_by[key]
                current = self._calls.get(key)
                if current is not None and current.state == "ringing":
                    self._calls[key] = current.moved("talking", current.line_id, when)
                    self.touched(key)

    def calls(self, now: datetime | None = None) -> list[ActiveCall]:
        """This router's calls in progress, oldest first."""
        self.promote(now or self.clock())
        return sorted(self._calls.values(), key=lambda c: (c.started_at, c.uniqueid))

    def touched(self, key: tuple[str, str]) -> None:
        """A call changed (started, moved on, ended): the database version writes it."""
