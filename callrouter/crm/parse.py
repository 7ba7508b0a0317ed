"""Reading a CRM answer: hostile data until proven otherwise. Pure: no IO."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# C0 and C1 controls, Unicode line/paragraph separators, and bidi overrides (which could make a
# display read something else than it holds).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_NAME = 64
MAX_TAGS = 10
MAX_TAG = 32


class InvalidAnswer(ValueError):
    """The CRM said something we cannot use; the message says what (without echoing the whole body)."""


@dataclass(frozen=True)
class CrmResult:
    source: str  # hit, cached, not_found, timeout, error, invalid, skipped, busy
    name: str = ""
    tags: tuple[str, ...] = ()


def clean_text(text: str, limit: int) -> str:
    """Control characters (line breaks above all) become spaces; then trimmed and cut."""
    return _CONTROL.sub(" ", text).strip()[:limit]


def _field(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def parse_answer(body: bytes, name_field: str, tags_field: str) -> tuple[str, tuple[str, ...]]:
    """(name, tags) from a JSON object; an empty name means the CRM does not know the caller."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidAnswer(f"not JSON ({len(body)} bytes)") from None
    if not isinstance(document, dict):
        raise InvalidAnswer(f"a JSON {type(document).__name__}, not an object")
    name = _field(document, name_field)
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise InvalidAnswer(f"{name_field} is a {type(name).__name__}, not text")
    raw_tags = _field(document, tags_field)
    if raw_tags is None:
        raw_tags = []
    if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
        raise InvalidAnswer(f"{tags_field} is not a list of text")
    tags = tuple(t for t in (clean_text(t, MAX_TAG) for t in raw_tags[:MAX_TAGS]) if t)
    return clean_text(name, MAX_NAME), tags
