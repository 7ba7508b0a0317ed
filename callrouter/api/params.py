"""Query parameters: bounded, validated, each error naming the parameter. Pure: no IO."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import date, datetime, timezone, tzinfo
from typing import Mapping

from callrouter.api.errors import ApiError
from callrouter.phone import normalize_number
from callrouter.routing.record import DISPOSITIONS

MAX_VALUE = 200  # characters in one query value
MAX_PARAMS = 20
_DIGITS = re.compile(r"[0-9]{3,20}\Z")
_CALLER = re.compile(r"\+?[0-9][0-9 \-]{0,31}\Z")


def check_query(query: Mapping[str, str]) -> None:
    if len(query) > MAX_PARAMS:
        raise ApiError(400, f"too many query parameters (at most {MAX_PARAMS})")
    for name, value in query.items():
        if len(name) > 40:
            raise ApiError(400, "query parameter name too long")
        if len(value) > MAX_VALUE:
            raise ApiError(400, f"{name[:40]}: value too long (at most {MAX_VALUE} characters)")


def number(value: str, name: str = "number") -> str:
    if not _DIGITS.match(value):
        raise ApiError(400, f"{name}: a 400 number is 3 to 20 digits")
    return value


def caller(value: str, name: str = "caller") -> str:
    if not _CALLER.match(value) or not normalize_number(value):
        raise ApiError(400, f"{name}: a phone number is digits, optionally with a leading +")
    return normalize_number(value)


def when(value: str, name: str, tz: tzinfo) -> datetime:
    """ISO 8601; a time without a zone is in the service's time zone; a bare date is its local midnight."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name}: use ISO 8601, e.g. 2026-11-24T09:00 or 2026-11-24T09:00+08:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name}: use a date like 2026-11-24") from None


def integer(value: str, name: str, low: int, high: int) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ApiError(400, f"{name}: a whole number from {low} to {high}")
    n = int(value)
    if not low <= n <= high:
        raise ApiError(400, f"{name}: a whole number from {low} to {high}")
    return n


def dispositions(value: str) -> list[str]:
    wanted = [d.strip() for d in value.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in DISPOSITIONS]
    if unknown or not wanted:
        raise ApiError(400, f"disposition: one or more of {', '.join(DISPOSITIONS)} (comma-separated)")
    return wanted


def encode_cursor(started_at: datetime, row_id: int) -> str:
    raw = json.dumps([started_at.astimezone(timezone.utc).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, int]:
    """The position after the last row of the previous page; anything else is refused."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        started, row_id = json.loads(raw)
        at = datetime.fromisoformat(started)
        if at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool) or row_id < 0:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(400, "cursor: not a cursor this API gave out; start again without it") from None
    return at.astimezone(timezone.utc), row_id
