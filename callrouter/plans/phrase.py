"""Sentences made where no page is (plan diffs, impact of a change), said later in the reader's language.

A `Phrase` is a words key of the console's table (console/words/plan_changes.py and the numbers page's
words) and its values; a value is plain text, another Phrase, or a `Joined` list. `say(t)` renders it with
a page's translator, so the same change reads "周六 营业时间 10:00-16:00 → 休息" or "Sat hours: 10:00-16:00
→ closed", and the pure code that found the change needs no language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

T = Callable[..., str]


@dataclass(frozen=True)
class Phrase:
    key: str
    values: tuple[tuple[str, "Part"], ...] = ()

    @classmethod
    def of(cls, key: str, /, **values: "Part") -> "Phrase":
        return cls(key, tuple(values.items()))

    def say(self, t: T) -> str:
        return t(self.key, **{name: say(value, t) for name, value in self.values}) if self.values else t(self.key)

    def value(self, name: str) -> "Part | None":
        """One value by name (tests and templates that want a part, not the sentence)."""
        return next((v for k, v in self.values if k == name), None)


@dataclass(frozen=True)
class Joined:
    """Parts said one after another with a separator from the words table (default: 、 or , )."""

    parts: tuple["Part", ...]
    sep: str = "numbers.sep.list"

    def say(self, t: T) -> str:
        return t(self.sep).join(say(part, t) for part in self.parts)


Part = Union[str, Phrase, Joined]


def say(part: Part, t: T) -> str:
    return part if isinstance(part, str) else part.say(t)


def keys_of(part: Part) -> set[str]:
    """Every words key a part uses (tests check each exists in both languages)."""
    if isinstance(part, str):
        return set()
    if isinstance(part, Joined):
        return {part.sep}.union(*(keys_of(p) for p in part.parts))
    return {part.key}.union(*(keys_of(v) for _, v in part.values))
