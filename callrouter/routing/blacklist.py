"""Blacklist matching: exact numbers, prefixes, withheld callers; per number, global, and runtime entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from callrouter.config.plan import Blacklist
from callrouter.routing.caller import Caller

GLOBAL_SCOPE = "*"  # a runtime entry for every 400 number
PREFIX_MARK = "*"  # a runtime entry ending in it is a prefix: "0755*"


@dataclass(frozen=True)
class RuntimeBlacklist:
    """Numbers refused per scope ('*' = every 400 number), normalised like callers are; "0755*" is a prefix."""

    by_scope: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def for_number(self, number: str) -> Blacklist:
        entries = self.by_scope.get(GLOBAL_SCOPE, frozenset()) | self.by_scope.get(number, frozenset())
        if not entries:
            return _EMPTY
        prefixes = tuple(sorted(e[:-1] for e in entries if e.endswith(PREFIX_MARK)))
        return Blacklist(numbers=frozenset(e for e in entries if not e.endswith(PREFIX_MARK)), prefixes=prefixes)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_scope.values())


_EMPTY = Blacklist()


def blacklist_match(caller: Caller, *lists: tuple[str, Blacklist]) -> tuple[str, str] | None:
    """(label of the list, reason) for a refused caller, or None. Lists are checked in the order given."""
    for label, bl in lists:
        if caller.anonymous:
            if bl.anonymous:
                return label, f"{label} blacklist refuses withheld caller IDs"
            continue
        if caller.number in bl.numbers:
            return label, f"{label} blacklist: number {caller.number}"
        for prefix in bl.prefixes:
            if caller.number.startswith(prefix.replace("+", "00", 1)):
                return label, f"{label} blacklist: prefix {prefix}"
    return None
