"""A number's monthly minutes package (套餐) and its renewal warnings (续费提醒)."""

from __future__ import annotations

import re
from datetime import date

from pydantic import Field, field_validator

from callrouter.config.types import Frozen, PhoneNumber

_USAGE_FIELDS = {"company", "number", "used", "allowance", "percent", "month"}
_EXPIRY_FIELDS = {"company", "number", "expires", "days"}


def _check(template: str, allowed: set[str]) -> str:
    unknown = set(re.findall(r"\{([^{}]*)\}", template)) - allowed
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {', '.join('{' + f + '}' for f in sorted(allowed))}")
    return template


class Package(Frozen):
    monthly_minutes: int = Field(ge=1, le=100_000_000)  # billed minutes per calendar month (the plan's time zone)
    expires: date
    recipients: tuple[PhoneNumber, ...] | None = None  # default: the plan's notify.recipients
    webhook: bool = False
    warn_at: tuple[int, ...] = (80, 100)  # percent of the allowance; each warned once a month
    expiry_warning_days: tuple[int, ...] = (7, 3)  # days before `expires`; each warned once
    usage_template: str = Field(default="【{company}】400号码 {number} 本月已用 {used}/{allowance} 分钟（{percent}%），请及时续费。", max_length=500)
    expiry_template: str = Field(default="【{company}】400号码 {number} 的套餐将于 {expires} 到期（还剩 {days} 天），请及时续费。", max_length=500)

    @field_validator("warn_at")
    @classmethod
    def _percent(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not all(1 <= p <= 1000 for p in value):
            raise ValueError("percentages from 1 to 1000")
        return tuple(sorted(set(value)))

    @field_validator("expiry_warning_days")
    @classmethod
    def _days(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not all(0 <= d <= 366 for d in value):
            raise ValueError("days from 0 to 366")
        return tuple(sorted(set(value)))

    @field_validator("usage_template")
    @classmethod
    def _usage(cls, value: str) -> str:
        return _check(value, _USAGE_FIELDS)

    @field_validator("expiry_template")
    @classmethod
    def _expiry(cls, value: str) -> str:
        return _check(value, _EXPIRY_FIELDS)


class Packages(Frozen):
    """Service-wide: how often usage is checked, and the package sizes `callrouter usage size` chooses from."""

    check_interval: float = Field(default=300.0, ge=5, le=86_400)
    sizes: tuple[int, ...] = (500, 1000, 2000, 3000, 5000, 10_000, 20_000, 50_000, 100_000)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or not all(s > 0 for s in value):
            raise ValueError("at least one package size, all positive")
        return tuple(sorted(set(value)))
