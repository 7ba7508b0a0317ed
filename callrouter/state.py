"""Routing state shared between calls: round-robin positions and how many calls each line carries.

An interface and its in-memory implementation. `callrouter.store.routing_state` implements the same
protocol on the database so several router instances share positions and limits.
"""

from __future__ import annotations

from typing import Protocol


class RoutingState(Protocol):
    async def next_turn(self, key: str) -> int:
        """This hunt's turn in a round-robin group: how many hunts of it came before (atomic)."""

    async def acquire(self, line_key: str, limit: int) -> bool:
        """Reserve one call on a line if it is below `limit`; atomic."""

    async def release(self, line_key: str) -> None: ...

    async def active(self, line_key: str) -> int: ...

    async def last_used(self, line_keys: tuple[str, ...]) -> dict[str, float]:
        """When each line last finished an answered call (epoch seconds); unknown lines are left out."""

    async def mark_used(self, line_key: str, when: float) -> None: ...


class MemoryRoutingState:
    """Process-local state: correct for one router instance."""

    def __init__(self) -> None:
        self._turns: dict[str, int] = {}
        self._active: dict[str, int] = {}
        self._used: dict[str, float] = {}

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
