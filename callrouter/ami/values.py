"""Values that go into AMI packets: one check, so no value can carry a second header or packet."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[^\r\n\x00]{0,256}\Z")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}\Z")
_CALLER = re.compile(r"\+?[0-9]{3,20}\Z")


def ami_value(value: str, what: str) -> str:
    """A header value: no CR, LF or NUL (they would end the header or the packet), bounded."""
    if not _SAFE.match(value):
        raise ValueError(f"{what}: line breaks and NUL are not allowed (at most 256 characters)")
    return value


def ami_name(name: str) -> str:
    """A header name: a word (a colon or a line break in it would forge another header)."""
    if not _NAME.match(name):
        raise ValueError(f"AMI header name {name[:40]!r}: letters, digits, '_' and '-'")
    return name


def caller_number(value: str) -> str:
    if not _CALLER.match(value):
        raise ValueError(f"--from {value[:40]!r}: a phone number, digits with an optional leading +")
    return value

