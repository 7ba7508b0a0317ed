"""What the shared routing state answers at the start of a hunt, in one round trip (issue 15).

The session asks once, before the hunt orders its lines: the round-robin turn (if the group takes turns),
the lines' health (if the plan watches it) and a lease on the line the hunt will most likely ring first
(the one the turn starts at, or the first). The session keeps the answer and uses the lease when the
Dial is for that line; a lease the hunt does not use is given back. Pure data: no IO here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from callrouter.routing.health import LineRecord


@dataclass(frozen=True, slots=True)
class HuntStart:
    keys: tuple[str, ...]  # the lines asked about, in the hunt's order before health arranges them
    turn: int | None = None  # hunts of the group before this one; None when no turn was taken
    health: Mapping[str, LineRecord] | None = field(default=None, compare=False)  # None: not read
    lease_key: str | None = None  # the line a lease was asked for (None: none asked)
    taken: bool = False  # the lease was taken (False with a lease_key: the line was at its limit)

    def health_of(self, keys: tuple[str, ...]) -> dict[str, LineRecord] | None:
        """These lines' records, if this answer read all of them; else None (ask the store)."""
        if self.health is None or not set(keys) <= set(self.keys):
            return None
        return {k: self.health[k] for k in keys if k in self.health}
