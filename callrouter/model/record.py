"""The call record: everything that happened to one call, as plain data for the CDR sink."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

DISPOSITIONS = (
    "answered",
    "no_answer",
    "busy",
    "failed",
    "blacklisted",
    "after_hours",
    "abandoned",
    "voicemail",
    "played",  # a message was played and the call ended by design (e.g. a menu's "play and hang up")
    "error",
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One line rung during the hunt (skipped lines too, with status FULL)."""

    line_id: str
    target: str
    status: str
    ring_seconds: int
    talk_seconds: int = 0


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What the engine decided and observed; the session adds clock times and identity."""

    disposition: str
    reason: str
    ivr_path: tuple[str, ...] = ()
    group: str | None = None
    strategy: str | None = None
    attempts: tuple[Attempt, ...] = ()
    answered_line: str | None = None
    talk_seconds: int = 0
    recording_file: str | None = None
    voicemail_file: str | None = None
    answered_by_us: bool = False  # we answered the channel (IVR/voicemail); billing started
    trace: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, ready to be written as a CDR."""

    uniqueid: str
    number: str
    caller: str
    caller_raw: str
    caller_name: str
    channel: str
    started_at: datetime
    ended_at: datetime
    answered_at: datetime | None
    disposition: str
    reason: str
    ivr_path: tuple[str, ...]
    group: str | None
    strategy: str | None
    attempts: tuple[Attempt, ...]
    answered_line: str | None
    talk_seconds: int
    ring_seconds: int
    recording_file: str | None
    voicemail_file: str | None
    instance: str = ""
    source: str = ""  # which Asterisk the call came from (entity id, else peer address): uniqueids are unique per Asterisk only
    router_ms: float = 0.0  # time the router itself spent on the call (not waiting for Asterisk)
    trace: tuple[str, ...] = field(default=(), compare=False)

    @property
    def duration_seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, built field by field (dataclasses.asdict deep-copies: too slow per call)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _RECORD_FIELDS}
        for key in ("started_at", "ended_at", "answered_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["ivr_path"] = list(self.ivr_path)
        data["trace"] = list(self.trace)
        data["attempts"] = [
            {"line_id": a.line_id, "target": a.target, "status": a.status, "ring_seconds": a.ring_seconds, "talk_seconds": a.talk_seconds}
            for a in self.attempts
        ]
        data["duration_seconds"] = round(self.duration_seconds, 3)
        return data


_RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))  # fields() per call costs more than the copy itself
