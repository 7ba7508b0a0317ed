"""CDRs as database rows, and the statistics sums they add to. Pure: no IO.

A spooled record is JSON written by this version or an older one, and may have been damaged on disk;
`rows_from_spooled` checks every field and raises `BadRecord` (the writer sets such a record aside,
never drops it silently). Text is cut to its column's width and cleared of NUL, which Postgres refuses,
so one odd caller name cannot block the queue.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from sqlalchemy import String, Table

from callrouter.model.record import DISPOSITIONS, CallRecord
from callrouter.store.schema import call_attempts, calls

SPOOL_VERSION = 1
BUCKET_SECONDS = 15 * 60
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class BadRecord(ValueError):
    """A spooled record that cannot become a CDR as it stands."""


def spool_entry(record: CallRecord) -> tuple[dict[str, Any], bytes]:
    """A record as spooled: its JSON object, and that object as one line (JSON output has no raw newline).

    ASCII escapes keep any text encodable, even a lone surrogate from a hostile caller-ID."""
    data = record.to_json()
    data["v"] = SPOOL_VERSION
    return data, _encode(data).encode("ascii") + b"\n"


_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options builds an encoder per call


def _widths(table: Table) -> Mapping[str, int]:
    return MappingProxyType({c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length})


_CALL_WIDTHS = _widths(calls)
_ATTEMPT_WIDTHS = _widths(call_attempts)


def _text(value: Any, field: str, widths: Mapping[str, int], *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{field}: expected text, got {type(value).__name__}")
    # No NUL (Postgres refuses it) and no lone surrogates (they cannot be encoded as UTF-8).
    text = _utf8(value.replace("\x00", ""))
    width = widths.get(field)
    return text[:width] if width else text


def _utf8(text: str) -> str:
    """Lone surrogates replaced; ASCII (the usual case) passes untouched."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRecord(f"{field}: expected a number, got {value!r:.40}")
    if not 0 <= value < 2**31:
        raise BadRecord(f"{field}: {value} is out of range")
    return int(round(value))


def _time(value: Any, field: str, *, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{field}: expected an ISO time, got {value!r:.40}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRecord(f"{field}: {value!r:.40} is not an ISO time") from None
    if parsed.tzinfo is None:
        raise BadRecord(f"{field}: {value!r:.40} has no time zone")
    return parsed.astimezone(timezone.utc)


@dataclass(frozen=True)
class CdrRows:
    call: dict[str, Any]
    attempts: tuple[dict[str, Any], ...]


def rows_from_spooled(data: Any) -> CdrRows:
    """The calls row and attempt rows of one spooled record; BadRecord if it is not a valid record."""
    if not isinstance(data, dict):
        raise BadRecord("not a JSON object")
    if data.get("v") != SPOOL_VERSION:
        raise BadRecord(f"unknown spool record version {data.get('v')!r:.20}")
    try:
        uniqueid = _text(data["uniqueid"], "uniqueid", _CALL_WIDTHS)
        if not uniqueid:
            raise BadRecord("uniqueid is empty")
        source = _text(data.get("source", ""), "source", _CALL_WIDTHS)  # absent in records spooled before 0003
        disposition = data["disposition"]
        if disposition not in DISPOSITIONS:
            raise BadRecord(f"unknown disposition {disposition!r:.20}")
        started = _time(data["started_at"], "started_at")
        ended = _time(data["ended_at"], "ended_at")
        assert started is not None and ended is not None
        path = data["ivr_path"]
        trace = data.get("trace", [])
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise BadRecord("ivr_path: expected a list of text")
        if not isinstance(trace, list) or not all(isinstance(t, str) for t in trace):
            raise BadRecord("trace: expected a list of text")
        router_ms = data.get("router_ms", 0.0)
        if isinstance(router_ms, bool) or not isinstance(router_ms, (int, float)) or not math.isfinite(router_ms):
            raise BadRecord("router_ms: expected a number")
        call = {
            "uniqueid": uniqueid,
            "source": source,
            "number": _text(data["number"], "number", _CALL_WIDTHS),
            "caller": _text(data["caller"], "caller", _CALL_WIDTHS),
            "caller_raw": _text(data["caller_raw"], "caller_raw", _CALL_WIDTHS),
            "caller_name": _text(data["caller_name"], "caller_name", _CALL_WIDTHS),
            "channel": _text(data["channel"], "channel", _CALL_WIDTHS),
            "instance": _text(data.get("instance", ""), "instance", _CALL_WIDTHS),
            "started_at": started,
            "answered_at": _time(data["answered_at"], "answered_at", optional=True),
            "ended_at": ended,
            "duration_seconds": max(0, round((ended - started).total_seconds())),
            "billable_seconds": _int(data["talk_seconds"], "talk_seconds"),
            "ring_seconds": _int(data["ring_seconds"], "ring_seconds"),
            "disposition": disposition,
            "reason": _text(data["reason"], "reason", _CALL_WIDTHS),
            "ivr_path": _text(">".join(path), "ivr_path", _CALL_WIDTHS),
            "hunt_group": _text(data["group"], "hunt_group", _CALL_WIDTHS, optional=True),
            "strategy": _text(data["strategy"], "strategy", _CALL_WIDTHS, optional=True),
            "answered_line": _text(data["answered_line"], "answered_line", _CALL_WIDTHS, optional=True),
            "recording_file": _text(data["recording_file"], "recording_file", _CALL_WIDTHS, optional=True),
            "voicemail_file": _text(data["voicemail_file"], "voicemail_file", _CALL_WIDTHS, optional=True),
            "router_ms": float(router_ms),
            "trace": _utf8("\n".join(trace).replace("\x00", "")),
        }
        attempts_in = data["attempts"]
        if not isinstance(attempts_in, list) or len(attempts_in) > 1000:
            raise BadRecord("attempts: expected a list of at most 1000")
        attempts = []
        for seq, a in enumerate(attempts_in, start=1):
            if not isinstance(a, dict):
                raise BadRecord(f"attempt {seq}: not an object")
            attempts.append(
                {
                    "call_uniqueid": uniqueid,
                    "call_source": source,
                    "seq": seq,
                    "line_id": _text(a["line_id"], "line_id", _ATTEMPT_WIDTHS),
                    "target": _text(a["target"], "target", _ATTEMPT_WIDTHS),
                    "status": _text(a["status"], "status", _ATTEMPT_WIDTHS),
                    "ring_seconds": _int(a["ring_seconds"], "attempt ring_seconds"),
                    "talk_seconds": _int(a.get("talk_seconds", 0), "attempt talk_seconds"),
                }
            )
    except KeyError as exc:
        raise BadRecord(f"missing field {exc.args[0]!r}") from None
    return CdrRows(call=call, attempts=tuple(attempts))


def bucket_of(when: datetime) -> int:
    """The start of the quarter hour holding `when`, in epoch seconds."""
    seconds = int((when - _EPOCH).total_seconds())
    return seconds - seconds % BUCKET_SECONDS


def stats_deltas(batch: Iterable[CdrRows]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a batch of new calls adds to `call_stats` and `line_stats`, in key order (a fixed lock order
    keeps concurrent writers from deadlocking)."""
    call_sums: dict[tuple[str, int, str], list[int]] = {}
    line_sums: dict[tuple[str, int, str, str], list[int]] = {}
    for rows in batch:
        c = rows.call
        bucket = bucket_of(c["started_at"])
        rung = any(a["status"] != "FULL" for a in rows.attempts)
        s = call_sums.setdefault((c["number"], bucket, c["disposition"]), [0, 0, 0, 0])
        s[0] += 1
        s[1] += c["billable_seconds"]
        s[2] += 1 if rung else 0
        s[3] += c["ring_seconds"] if rung else 0
        for a in rows.attempts:
            t = line_sums.setdefault((c["number"], bucket, a["line_id"], a["status"]), [0, 0, 0])
            t[0] += 1
            t[1] += a["ring_seconds"]
            t[2] += a["talk_seconds"]
    call_rows = [
        {"number": k[0], "bucket": k[1], "disposition": k[2], "calls": v[0], "billable_seconds": v[1], "rung_calls": v[2], "ring_seconds": v[3]}
        for k, v in sorted(call_sums.items())
    ]
    line_rows = [
        {"number": k[0], "bucket": k[1], "line_id": k[2], "status": k[3], "attempts": v[0], "ring_seconds": v[1], "talk_seconds": v[2]}
        for k, v in sorted(line_sums.items())
    ]
    return call_rows, line_rows
