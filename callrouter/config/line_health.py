"""A plan's line-health settings: when a failing line is suspended, for how long, and what the manager is told."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from callrouter.config.types import Frozen

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
DOWN_FIELDS = frozenset({"company", "number", "line", "phone", "problem", "since", "others"})
UP_FIELDS = frozenset({"company", "number", "line", "phone", "problem", "since", "time"})


def _seconds(value: Any) -> Any:
    """`900`, `"15m"`, `"1h30m"`, `"90s"`: a duration in seconds (YAML keeps `15m` as text)."""
    if isinstance(value, bool):
        raise ValueError("a duration: seconds, or text like 15m, 1h30m, 90s")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return float(text)
        m = _DURATION.match(text)
        if text and m:
            hours, minutes, secs = (int(g or 0) for g in m.groups())
            return float(hours * 3600 + minutes * 60 + secs)
    raise ValueError(f"{value!r} is not a duration: write seconds, or text like 15m, 1h30m, 90s")


Seconds = Annotated[float, BeforeValidator(_seconds)]


def _check(template: str, allowed: frozenset[str]) -> str:
    unknown = set(re.findall(r"\{([^{}]*)\}", template)) - allowed
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {', '.join('{' + f + '}' for f in sorted(allowed))}")
    return template


class LineHealth(Frozen):
    """Lines that keep failing are set aside for a while, so callers stop waiting out their ring timeout.

    Counted since the line last answered: CHANUNAVAIL and CONGESTION (`unavailable_after` of them), and
    NOANSWER (`noanswer_after`); BUSY, a caller who hung up while it rang, and a line at its limit count
    for nothing. A suspended line is skipped (or tried last) until `cooldown` after its last failure,
    then tried again; one answered call brings it back. When every line of a group is suspended, they
    all ring as configured."""

    enabled: bool = True
    mode: Literal["skip", "last"] = "skip"
    unavailable_after: int = Field(default=2, ge=1, le=100)
    noanswer_after: int = Field(default=4, ge=1, le=100)
    cooldown: Seconds = Field(default=900.0, ge=10, le=86_400)
    notify: bool = True  # tell the plan's notify recipients when a line is suspended and when it works again
    down_template: str = Field(
        default="【{company}】{number} line {line} ({phone}) {problem} since {since}, calls go to {others}", max_length=500
    )
    up_template: str = Field(default="【{company}】{number} line {line} ({phone}) works again since {time} ({problem} since {since})", max_length=500)

    @field_validator("down_template")
    @classmethod
    def _down(cls, value: str) -> str:
        return _check(value, DOWN_FIELDS)

    @field_validator("up_template")
    @classmethod
    def _up(cls, value: str) -> str:
        return _check(value, UP_FIELDS)
