"""Which `calls` rows are still to be read: a cursor on the id, and the ids skipped below it. Pure: no IO.

Ids come from a sequence. A transaction that took a low id can commit after one that took a higher id,
so a poll may see id 12 before id 11 exists; and ON CONFLICT DO NOTHING burns ids that never appear.
An id missing below the cursor is a *gap*: looked for on every poll until it turns up (counted then) or
`horizon` seconds have passed (a rolled-back insert or a burnt id; forgotten). No row is counted twice:
an id is counted when it leaves the unseen set (above the cursor, or in the gaps) and never again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable


class IdCursor:
    def __init__(self, position: int = 0, *, horizon: float = 300.0, max_gaps: int = 100_000) -> None:
        self.position = position  # every id <= position has been counted or is a gap
        self.horizon = horizon
        self.max_gaps = max_gaps
        self._gaps: OrderedDict[int, float] = OrderedDict()  # id -> when first missed (oldest first)
        self.expired = 0  # gaps given up on: burnt ids, rolled-back inserts, or a transaction slower than horizon
        self.dropped = 0  # gaps forgotten because too many were pending

    @property
    def gaps(self) -> list[int]:
        return list(self._gaps)

    def start_after(self, position: int, present: Iterable[int], window_start: int, now: float) -> None:
        """Begin at a snapshot: ids in (window_start, position] not in `present` were not yet visible then."""
        seen = set(present)
        self.position = position
        for missing in range(max(window_start, 0) + 1, position + 1):
            if missing not in seen:
                self._add_gap(missing, now)

    def accept(self, ids: Iterable[int], now: float) -> list[int]:
        """Ids a poll returned (above the cursor or from the gaps); returns those to count, each once."""
        fresh: list[int] = []
        for i in sorted(set(ids)):
            if i in self._gaps:
                del self._gaps[i]
                fresh.append(i)
            elif i > self.position:
                first = max(self.position + 1, i - self.max_gaps)  # a jump of millions (burnt ids) stays bounded
                self.dropped += first - (self.position + 1)
                for missing in range(first, i):
                    self._add_gap(missing, now)
                self.position = i
                fresh.append(i)
        return fresh

    def expire(self, now: float) -> int:
        """Forget gaps older than the horizon; returns how many."""
        gone = 0
        while self._gaps:
            oldest, since = next(iter(self._gaps.items()))
            if now - since < self.horizon:
                break
            del self._gaps[oldest]
            gone += 1
        self.expired += gone
        return gone

    def _add_gap(self, missing: int, now: float) -> None:
        self._gaps[missing] = now
        while len(self._gaps) > self.max_gaps:
            self._gaps.popitem(last=False)
            self.dropped += 1
