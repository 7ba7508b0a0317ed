"""JSON from outside (admin API bodies, SMS gateway replies), parsed within bounds.

Python's json module recurses once per nesting level (a few kilobytes of `[` raise RecursionError) and
refuses integers over 4,300 digits with a bare ValueError. Callers want one exception with a message they
can show, so the depth is measured before parsing and numbers are checked as they are read. Pure: no IO.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # arrays and objects inside one another; nothing we read needs more than a few
MAX_DIGITS = 100  # characters in one number

_SPECIAL = re.compile(r'[\[\]{}"\\]')


class JsonRefused(ValueError):
    """The text is not JSON we accept; the message says why, for an error answer or a log line."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings not counted. One pass over the
    characters that matter (a regex over strings would be quadratic on many unclosed quotes)."""
    depth = deepest = 0
    in_string = False
    skip = -1  # the character after a backslash inside a string
    for match in _SPECIAL.finditer(text):
        at, char = match.start(), match.group()
        if at == skip:
            continue
        if in_string:
            if char == "\\":
                skip = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH, max_digits: int = MAX_DIGITS) -> Any:
    """json.loads, but every way the input can be hostile is a JsonRefused with a readable message."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused(f"malformed JSON: not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if nesting_depth(text) > max_depth:
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels")

    def parse_int(digits: str) -> int:
        if len(digits) > max_digits:
            raise JsonRefused(f"JSON number with more than {max_digits} digits")
        return int(digits)

    def parse_float(digits: str) -> float:
        if len(digits) > max_digits:
            raise JsonRefused(f"JSON number with more than {max_digits} digits")
        value = float(digits)
        if not math.isfinite(value):
            raise JsonRefused(f"JSON number out of range: {digits[:40]}")
        return value

    def parse_constant(name: str) -> Any:
        raise JsonRefused(f"malformed JSON: {name} is not JSON")

    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except JsonRefused:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # a limit of the json module we did not foresee
        raise JsonRefused(f"malformed JSON: {type(exc).__name__}") from None
