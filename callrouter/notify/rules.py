"""What to tell whom, and when: pure decisions about messages, the time and randomness passed in."""

from __future__ import annotations

import hashlib
import random
import re
from datetime import datetime, time, timedelta, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from callrouter import safejson
from callrouter.config.notify import MissedCallNotify, Notify
from callrouter.config.plan import NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.store.outbox import Claimed
from callrouter.store.outbox import OutboxMessage as OutboxMessage  # defined with the table; re-exported for callers

REASONS = {
    "no_answer": "无人接听",
    "busy": "坐席全忙",
    "failed": "线路故障",
    "after_hours": "非工作时间",
    "abandoned": "来电者在振铃时挂断",
    "voicemail": "已留言",
    "blacklisted": "黑名单",
    "played": "已播放通知",
    "error": "系统错误",
    "answered": "已接听",
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace {name} with values[name]; nothing else in the template is interpreted (no format-string tricks)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def shown_caller(caller: str) -> str:
    return caller or "未显示号码"


def is_missed(row: Mapping[str, Any], rules: MissedCallNotify) -> bool:
    """`abandoned` counts only when the caller hung up while a line rang, not while choosing in the menu."""
    disposition = row["disposition"]
    if disposition not in rules.on:
        return False
    return disposition != "abandoned" or int(row["ring_seconds"]) > 0


def call_key(row: Mapping[str, Any]) -> str:
    """The call in outbox keys: its uniqueid, and which Asterisk when known (two can share a uniqueid).
    A call with no source keeps the key it always had, so a replay of an old record sends nothing twice."""
    source = row.get("source") or ""
    if not source:
        return str(row["uniqueid"])
    if len(source) > 40:  # keys stay within outbox.dedupe_key's 200 characters
        source = hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()[:20]
    return f"{row['uniqueid']}@{source}"


def missed_call_messages(rows: Sequence[Mapping[str, Any]], plans: Mapping[str, NumberPlan], service: ServiceConfig) -> list[OutboxMessage]:
    """The messages a batch of newly stored calls causes; called inside the CDR transaction."""
    out: list[OutboxMessage] = []
    if not service.notify.enabled:
        return out
    for row in rows:
        plan = plans.get(row["number"])
        if plan is None:
            continue
        rules = plan.notify
        if not is_missed(row, rules):
            continue
        started: datetime = row["started_at"]
        local = started.astimezone(ZoneInfo(plan.timezone or service.timezone))
        fields = {
            "number": plan.number,
            "caller": shown_caller(row["caller"]),
            "time": f"{local:%m-%d %H:%M}",
            "reason": REASONS.get(row["disposition"], row["disposition"]),
            "company": rules.company or plan.name,
            "disposition": row["disposition"],
            "uniqueid": row["uniqueid"],
        }
        payload = {**fields, "text": fill(rules.template, fields)}
        uid = call_key(row)
        if service.notify.sms is not None:
            for recipient in rules.recipients:
                out.append(OutboxMessage("missed_call", f"missed:{uid}:sms:{recipient}", "sms", recipient, plan.number, row["caller"], payload))
        if rules.webhook and service.notify.webhook is not None:
            out.append(OutboxMessage("missed_call", f"missed:{uid}:webhook", "webhook", "", plan.number, row["caller"], payload))
    return out


def in_turns(claimed: Sequence[Claimed]) -> list[list[Claimed]]:
    """Messages that share a per-caller limit (kind, recipient, caller), oldest first, to be handled one
    after another: sent side by side, four about one caller would each see none sent yet."""
    turns: dict[tuple[str, str, str], list[Claimed]] = {}
    for m in sorted(claimed, key=lambda m: m.id):
        turns.setdefault((m.kind, m.recipient, m.caller or f"#{m.id}"), []).append(m)
    return list(turns.values())


def in_quiet_hours(quiet: tuple[time, time], local: datetime) -> bool:
    start, end = quiet
    at = local.time()
    return start <= at < end if start < end else (at >= start or at < end)


def quiet_hours_end(quiet: tuple[time, time], local: datetime) -> datetime:
    """The first moment after `local` (inside quiet hours) when they are over, in UTC."""
    _, end = quiet
    candidate = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    return candidate.astimezone(timezone.utc)


def retry_delay(attempts: int, settings: Notify, rng: random.Random) -> float:
    """Exponential backoff with jitter (50-100% of the step), so a recovered gateway is not hit all at once."""
    step = min(settings.retry_max, settings.retry_base * 2.0 ** max(attempts - 1, 0))
    return step * (0.5 + rng.random() / 2)


def accepted(settings_field: str | None, settings_value: str | None, body: bytes) -> str | None:
    """None when a 2xx response means success; else why not (for gateways that answer 200 with an error code)."""
    if settings_field is None:
        return None
    try:
        value: Any = safejson.loads(body)
    except safejson.JsonRefused as exc:  # deep nesting or a huge number must be a retry, not a crash
        return f"response is not usable JSON ({exc}): {body[:120]!r}"
    try:
        for part in settings_field.split("."):
            value = value[part]
    except (KeyError, TypeError, IndexError):
        return f"response has no {settings_field}: {body[:120]!r}"
    if str(value) != (settings_value or ""):
        return f"gateway refused: {settings_field}={str(value)[:60]!r}"
    return None
