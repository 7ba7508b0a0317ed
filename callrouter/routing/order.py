"""Answer order across a hunt group's lines: sequential, round-robin, random, weighted, least recent."""

from __future__ import annotations

import random
from typing import Mapping, Sequence, TypeVar

from callrouter.config.plan import Line

T = TypeVar("T")


def rotate_for_turn(lines: Sequence[T], turn: int) -> list[T]:
    """Round-robin: the n-th hunt of a group starts at line n (mod the number of lines), then goes on in order."""
    if not lines:
        return []
    start = turn % len(lines)
    return list(lines[start:]) + list(lines[:start])


def weighted_order(lines: Sequence[Line], rng: random.Random) -> list[Line]:
    """A random order where a line of weight w comes first w times as often as a line of weight 1.

    Efraimidis-Spirakis sampling without replacement: sort by u ** (1 / w) with u uniform in (0, 1].
    """
    keyed = [((1.0 - rng.random()) ** (1.0 / line.weight), i) for i, line in enumerate(lines)]
    keyed.sort(reverse=True)
    return [lines[i] for _, i in keyed]


def random_order(lines: Sequence[Line], rng: random.Random) -> list[Line]:
    out = list(lines)
    rng.shuffle(out)
    return out


def least_recent_order(lines: Sequence[Line], keys: Sequence[str], last_used: Mapping[str, float]) -> list[Line]:
    """The line whose last answered call ended longest ago first; never-used lines first, in listed order."""
    ranked = sorted(range(len(lines)), key=lambda i: (last_used.get(keys[i], float("-inf")), i))
    return [lines[i] for i in ranked]
