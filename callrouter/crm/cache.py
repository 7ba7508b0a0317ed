"""Names already asked for, with a time to live: bounded, oldest-used dropped first. Pure: the time is passed in.

Keyed by the request that was made (the client uses the rendered URL), never by the caller alone."""

from __future__ import annotations

from collections import OrderedDict

from callrouter.crm.parse import CrmResult


class TtlCache:
    def __init__(self, size: int, ttl: float, negative_ttl: float) -> None:
        self.size, self.ttl, self.negative_ttl = size, ttl, negative_ttl
        self._entries: OrderedDict[str, tuple[float, CrmResult]] = OrderedDict()

    def get(self, key: str, now: float) -> CrmResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: str, result: CrmResult, now: float) -> None:
        """Found names live `ttl`, "not known" lives `negative_ttl`; failures are not cached."""
        if result.source == "hit":
            life = self.ttl
        elif result.source == "not_found":
            life = self.negative_ttl
        else:
            return
        self._entries[key] = (now + life, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
