"""Blacklist matching: exact numbers, prefixes, withheld callers; per number and global."""

from __future__ import annotations

from callrouter.config.plan import Blacklist
from callrouter.routing.caller import Caller


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
