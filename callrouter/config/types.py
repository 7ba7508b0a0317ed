"""Validated scalar types shared by the service config and the routing plans.

Everything that can end up inside an AGI command or a Dial string is checked here against a strict
character set: quoting keeps a value inside one AGI argument, but `,` `&` `(` `)` `|` would still change
what Dial or MixMonitor does with it.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict



class Frozen(BaseModel):
    """Base for config objects: immutable, and unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_PROMPT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-./]{0,127}\Z")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}\Z")
_PHONE = re.compile(r"\+?[0-9]{3,20}\Z")
_DIAL_TARGET = re.compile(r"[A-Za-z][A-Za-z0-9]{1,15}/[A-Za-z0-9_\-.@:+/]{1,120}\Z")
_DIGITS_KEY = re.compile(r"[0-9*#]{1,20}\Z")
_DIAL_STATUSES = frozenset({"BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION"})


def _text(value: Any) -> Any:
    """Numbers written without quotes in YAML become text (phone numbers, digit keys)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


def _prompt(value: str) -> str:
    if not _PROMPT.match(value) or ".." in value or "//" in value:
        raise ValueError(
            f"{value!r} is not a valid prompt name (letters, digits, _ - . / only; no '..'; "
            "relative to the prompts folder, without extension)"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, _ and -, at most 64)")
    return value


def _phone(value: str) -> str:
    if not _PHONE.match(value):
        raise ValueError(f"{value!r} is not a phone number (digits, optional leading +, 3 to 20 digits)")
    return value


def _dial_target(value: str) -> str:
    if not _DIAL_TARGET.match(value):
        raise ValueError(
            f"{value!r} is not a valid dial target: write TECH/resource, e.g. PJSIP/13800138000@trunk "
            "(no spaces, commas, '&', parentheses or '$')"
        )
    return value


def _digits_key(value: str) -> str:
    if not _DIGITS_KEY.match(value):
        raise ValueError(f"{value!r} is not a DTMF key (0-9, * and #)")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from None
    return value


def _dial_status(value: str) -> str:
    if value not in _DIAL_STATUSES:
        raise ValueError(f"{value!r} is not a failover status; use {sorted(_DIAL_STATUSES)}")
    return value


def _clock(value: str) -> time:
    m = re.fullmatch(r"([01][0-9]|2[0-4]):([0-5][0-9])", value)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    if m.group(1) == "24":
        return time.max
    return time(int(m.group(1)), int(m.group(2)))


def parse_range(value: Any) -> tuple[time, time]:
    """`"09:00-18:00"` into (start, end); 24:00 closes the day. Overnight ranges must be split by day."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError(f"{value!r} is not a time range like 09:00-18:00")
    start_s, end_s = (part.strip() for part in value.split("-"))
    start, end = _clock(start_s), _clock(end_s)
    if start == time.max:
        raise ValueError(f"{value!r}: a range cannot start at 24:00")
    if end <= start:
        raise ValueError(f"{value!r}: the end must be after the start (split overnight hours across two days)")
    return start, end


PromptName = Annotated[str, AfterValidator(_prompt)]
Name = Annotated[str, AfterValidator(_name)]
PhoneNumber = Annotated[str, BeforeValidator(_text), AfterValidator(_phone)]
DialTarget = Annotated[str, AfterValidator(_dial_target)]
DigitsKey = Annotated[str, BeforeValidator(_text), AfterValidator(_digits_key)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
FailoverStatus = Annotated[str, AfterValidator(_dial_status)]
TimeRange = Annotated[tuple[time, time], BeforeValidator(parse_range)]
PhoneText = Annotated[str, BeforeValidator(_text)]
