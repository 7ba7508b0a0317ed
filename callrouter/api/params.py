"""Query parameters: bounded, validated, each error naming the parameter. Pure: no IO."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import date, datetime, timezone, tzinfo
from typing import Mapping, Sequence

from callrouter.api.errors import ApiError
from callrouter.model.phone import normalize_number
from callrouter.model.record import DISPOSITIONS

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


def dispositions(values: Sequence[str]) -> list[str]:
    """Comma-separated, the parameter given once or several times."""
    wanted = [d.strip() for value in values for d in value.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in DISPOSITIONS]
    if unknown or not wanted:
        raise ApiError(400, f"disposition: one or more of {', '.join(DISPOSITIONS)} (comma-separated)")
    return wanted


def cursor_key(token: str | None) -> bytes:
    """The key that signs cursors: the same on every instance sharing the token, so a cursor survives a
    restart or another instance behind a load balancer; a changed token only asks clients to start again."""
    return hashlib.sha256(b"callrouter admin cursor\0" + (token or "").encode()).digest()


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:12]


def encode_cursor(started_at: datetime, row_id: int, key: bytes) -> str:
    payload = json.dumps([started_at.astimezone(timezone.utc).isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_mac(key, payload) + payload).decode().rstrip("=")


def decode_cursor(value: str, key: bytes) -> tuple[datetime, int]:
    """The position after the last row of the previous page; a cursor this API did not sign is refused."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        mac, payload = raw[:12], raw[12:]
        if len(mac) < 12 or not hmac.compare_digest(mac, _mac(key, payload)):
            raise ValueError
        started, row_id = json.loads(payload)
        at = datetime.fromisoformat(started)
        if at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool) or row_id < 0:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(400, "cursor: not a cursor this API gave out; start again without it") from None
    return at.astimezone(timezone.utc), row_id
