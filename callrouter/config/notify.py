"""Settings for messages to people: the SMS gateway and webhook (service), who is told what (plan)."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from callrouter.config.types import Frozen, PhoneNumber, _clock
from callrouter.model.record import DISPOSITIONS

MISSED_DEFAULT = ("no_answer", "busy", "failed", "after_hours", "abandoned", "voicemail")
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-]{1,64}\Z")
_FIELD = re.compile(r"[A-Za-z0-9_.]{1,64}\Z")


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s\x00-\x1f]{1,2000}", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _quiet(value: Any) -> tuple[time, time]:
    """`"22:00-08:00"`: may wrap past midnight (unlike business hours)."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError(f"{value!r} is not a time range like 22:00-08:00")
    start, end = (_clock(part.strip()) for part in value.split("-"))
    if start == end:
        raise ValueError(f"{value!r}: start and end are the same")
    return start, end


HttpUrl = Annotated[str, BeforeValidator(lambda v: _url(v) if isinstance(v, str) else v)]
QuietHours = Annotated[tuple[time, time], BeforeValidator(_quiet)]


def check_headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name[:40]!r}: letters, digits and '-' only")
        if any(ch in text for ch in "\r\n\x00") or len(text) > 2000:
            raise ValueError(f"header {name}: no line breaks, at most 2000 characters")
    return value


class SmsGateway(Frozen):
    """An SMS gateway spoken over HTTP. Values in `headers` may name environment variables as ${NAME}."""

    url: HttpUrl
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    # The request body: each value is a template with {to} {text} {id} {number}, filled in and then
    # encoded as JSON or a form (never pasted into a JSON string by hand).
    body: dict[str, str] = Field(default_factory=lambda: {"to": "{to}", "text": "{text}"})
    encoding: Literal["json", "form"] = "json"
    # Gateways that answer 200 with an error code: the JSON field (dotted path) that must equal success_value.
    success_field: str | None = None
    success_value: str | None = None
    timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_validator("success_field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD.match(value):
            raise ValueError("a JSON field name or dotted path, e.g. Code or result.status")
        return value


class Webhook(Frozen):
    """Every message also as JSON POSTed to a URL (a ticket system, WeCom/DingTalk bot relay, ...)."""

    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class Notify(Frozen):
    """The durable outbox and its sender (runs inside `serve`; several routers never send one message twice)."""

    enabled: bool = True
    sms: SmsGateway | None = None
    webhook: Webhook | None = None
    poll_interval: float = Field(default=1.0, ge=0.05, le=60)
    batch: int = Field(default=20, ge=1, le=500)
    max_attempts: int = Field(default=12, ge=1, le=100)
    retry_base: float = Field(default=5.0, ge=0.01, le=3600)  # seconds before the first retry, doubling after
    retry_max: float = Field(default=900.0, ge=0.01, le=86_400)
    lease: float = Field(default=120.0, ge=1, le=3600)  # a claimed message is due again after this if its sender died


class MissedCallNotify(Frozen):
    """Who hears about a call nobody answered (漏接短信提醒), and when not."""

    recipients: tuple[PhoneNumber, ...] = ()
    webhook: bool = False  # also post each missed call to the service's notify.webhook
    on: tuple[str, ...] = MISSED_DEFAULT  # dispositions that count as missed ("abandoned": only if a line rang)
    template: str = Field(default="【{company}】{time} 来电 {caller} 未接通（{reason}），请及时回电。400号码 {number}", max_length=500)
    company: str | None = Field(default=None, max_length=40)  # default: the plan's name
    quiet_hours: QuietHours | None = None  # e.g. "22:00-08:00" in the plan's time zone
    quiet_hours_action: Literal["hold", "drop"] = "hold"  # hold: send when quiet hours end
    per_caller_limit: int = Field(default=3, ge=1, le=1000)  # messages about one caller to one recipient ...
    per_caller_window: int = Field(default=3600, ge=60, le=7 * 86_400)  # ... per this many seconds

    @field_validator("on")
    @classmethod
    def _on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [d for d in value if d not in DISPOSITIONS]
        if unknown:
            raise ValueError(f"unknown disposition(s) {unknown}; known: {', '.join(DISPOSITIONS)}")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        unknown = set(re.findall(r"\{([^{}]*)\}", value)) - {"number", "caller", "time", "reason", "company"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{number}} {{caller}} {{time}} {{reason}} {{company}}")
        return value
