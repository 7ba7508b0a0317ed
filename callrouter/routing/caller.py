"""Who is calling: caller-ID normalisation, bounded and safe.

Caller ID comes from the caller's network and is hostile: any byte but newline, any length. Routing only
ever looks at the normalised digits; the raw text is kept (bounded) for the record.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrouter.model.phone import normalize_number

ANONYMOUS_IDS = frozenset({"", "unknown", "anonymous", "restricted", "private", "withheld", "unavailable", "blocked"})
MAX_RAW = 64


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller as routing sees it."""

    raw: str  # caller ID as received, cut to MAX_RAW characters
    number: str  # normalised digits ("" when withheld)
    name: str  # caller-ID name or CRM name, cut, "" when none

    @property
    def anonymous(self) -> bool:
        return self.number == ""


def caller_from(callerid: str, calleridname: str = "") -> Caller:
    raw = callerid[:MAX_RAW]
    number = "" if raw.strip().lower() in ANONYMOUS_IDS else normalize_number(raw)
    name = calleridname[:MAX_RAW]
    if name.strip().lower() in ANONYMOUS_IDS:
        name = ""
    return Caller(raw=raw, number=number, name=name)
