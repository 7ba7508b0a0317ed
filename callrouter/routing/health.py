"""Per-line health, pure: what a line's recent outcomes say about it, and what a hunt does with that.

The store keeps one `LineRecord` per line, keyed like line limits by the dial target (a phone that is
off is off for every group and number that dials it), shared by every router. `apply_outcome` is the
one rule that changes a record; `line_state` reads it against a plan's thresholds at a given moment:

- healthy: fewer counted failures since the line last answered than the plan's thresholds;
- suspended: past a threshold, until `cooldown` after its last failure: skipped or tried last;
- half_open: the cool-down is over: tried again in its place; one failure suspends it for another
  cool-down, one answered call clears it.

Counted: CHANUNAVAIL and CONGESTION (unreachable), NOANSWER (rang out); ANSWER clears the record.
BUSY, CANCEL (the caller hung up while it rang) and FULL (not rung) say nothing about the line.
Times are epoch seconds; nothing here reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Mapping, Sequence
from zoneinfo import ZoneInfo

from callrouter.config.line_health import LineHealth
from callrouter.config.plan import Line, NumberPlan

UNAVAILABLE = frozenset({"CHANUNAVAIL", "CONGESTION"})
COUNTED = UNAVAILABLE | {"NOANSWER", "ANSWER"}
State = Literal["healthy", "suspended", "half_open"]
Kind = Literal["unavailable", "noanswer"]
_LONG_DIGITS = re.compile(r"\d{7,}")


@dataclass(frozen=True, slots=True)
class LineRecord:
    """What the store remembers about one line: counted failures since it last answered."""

    key: str  # the dial target
    unavailable: int = 0  # CHANUNAVAIL / CONGESTION since the line last answered
    noanswer: int = 0  # NOANSWER since the line last answered
    since: float | None = None  # the first of those failures: when this episode began
    last_failure: float | None = None  # the cool-down runs from here
    last_status: str = ""
    updated_at: float = 0.0

    @property
    def clean(self) -> bool:
        return self.unavailable == 0 and self.noanswer == 0


@dataclass(frozen=True, slots=True)
class LineChange:
    """One reported outcome as the store applied it (what the manager's messages are decided from)."""

    before: LineRecord
    after: LineRecord
    at: float


def counts(status: str) -> bool:
    """Whether a Dial status is reported to the store at all."""
    return status in COUNTED


def apply_outcome(record: LineRecord, status: str, at: float) -> LineRecord:
    """The record after one Dial outcome; a status that counts for nothing leaves it as it was."""
    if status == "ANSWER":
        return record if record.clean else LineRecord(record.key, last_status="ANSWER", updated_at=at)
    if status in UNAVAILABLE:
        record = replace(record, unavailable=record.unavailable + 1)
    elif status == "NOANSWER":
        record = replace(record, noanswer=record.noanswer + 1)
    else:
        return record
    since = record.since if record.since is not None else at
    return replace(record, since=since, last_failure=at, last_status=status, updated_at=at)


@dataclass(frozen=True, slots=True)
class LineState:
    state: State
    kind: Kind | None = None  # which threshold it is past (None while healthy)
    count: int = 0  # failures of that kind since it last answered
    since: float | None = None
    retry_at: float | None = None  # when the cool-down ends (suspended) or ended (half_open)

    @property
    def working(self) -> bool:
        """Rung in its place: healthy, or half-open (being tried again)."""
        return self.state != "suspended"


HEALTHY = LineState("healthy")


def tripped(record: LineRecord, settings: LineHealth) -> Kind | None:
    """The threshold a record is past, if any; unreachable wins over unanswered."""
    if record.unavailable >= settings.unavailable_after:
        return "unavailable"
    if record.noanswer >= settings.noanswer_after:
        return "noanswer"
    return None


def line_state(record: LineRecord | None, settings: LineHealth, now: float) -> LineState:
    if record is None or not settings.enabled:
        return HEALTHY
    kind = tripped(record, settings)
    if kind is None:
        return LineState("healthy", since=record.since)
    count = record.unavailable if kind == "unavailable" else record.noanswer
    retry_at = (record.last_failure or record.since or 0.0) + settings.cooldown
    return LineState("suspended" if now < retry_at else "half_open", kind, count, record.since, retry_at)


# -- words ----------------------------------------------------------------------------------------


def clock(when: float, tz: ZoneInfo, now: float) -> str:
    """`10:02` on the day of `now` (local), else `11-23 10:02`."""
    local = datetime.fromtimestamp(when, tz)
    today = datetime.fromtimestamp(now, tz).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local:%m-%d %H:%M}"


def failures(state: LineState) -> str:
    """`4 calls unanswered in a row`, `2 calls unreachable in a row`."""
    what = "unreachable" if state.kind == "unavailable" else "unanswered"
    return f"{state.count} call{'s' if state.count != 1 else ''} {what} in a row"


def problem(state: LineState) -> str:
    """For the manager: `unreachable`, `not answering (4 calls in a row)`."""
    if state.kind == "unavailable":
        return "unreachable"
    return f"not answering ({state.count} calls in a row)"


def why(state: LineState, tz: ZoneInfo, now: float) -> str:
    """`4 calls unanswered in a row since 10:02`."""
    since = f" since {clock(state.since, tz, now)}" if state.since is not None else ""
    return failures(state) + since


def label(line: Line) -> str:
    return f"{line.id} ({line.name})" if line.name else line.id


def masked(text: str) -> str:
    """A phone number as the manager may see it in a message or a status: `138****8001`."""
    return _LONG_DIGITS.sub(lambda m: m.group(0)[:3] + "*" * (len(m.group(0)) - 7) + m.group(0)[-4:], text)


def shown_number(number: str) -> str:
    """`4008001234` as people write it: `400-800-1234`."""
    if len(number) == 10 and number.startswith(("400", "800")):
        return f"{number[:3]}-{number[3:6]}-{number[6:]}"
    return number


# -- the hunt ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arranged:
    lines: list[Line]
    notes: list[str]


def arrange(
    lines: Sequence[Line], keys: Sequence[str], records: Mapping[str, LineRecord], settings: LineHealth, now: float, tz: ZoneInfo,
    *, ring_all: bool = False,
) -> Arranged:
    """The hunt's lines with suspended ones skipped or moved last (the plan's `mode`), and why.

    A group is never left with nothing to ring: when every line is suspended they all ring as configured."""
    if not settings.enabled or not lines:
        return Arranged(list(lines), [])
    states = [line_state(records.get(key), settings, now) for key in keys]
    notes = [
        f"line {label(line)}: cool-down over ({why(s, tz, now)}), tried again"
        for line, s in zip(lines, states) if s.state == "half_open"
    ]
    down = [i for i, s in enumerate(states) if not s.working]
    if not down:
        return Arranged(list(lines), notes)
    if len(down) == len(lines):
        notes.append(f"every line is suspended ({', '.join(label(line) for line in lines)}): ringing them all as configured")
        return Arranged(list(lines), notes)
    for i in down:
        s = states[i]
        retry = clock(s.retry_at, tz, now) if s.retry_at is not None else "?"
        if settings.mode == "skip":
            notes.append(f"line {label(lines[i])} skipped: {why(s, tz, now)}, retried after {retry}")
        elif ring_all:
            notes.append(f"line {label(lines[i])} suspended ({why(s, tz, now)}, until {retry}): rings with the others")
        else:
            notes.append(f"line {label(lines[i])} tried last: {why(s, tz, now)}, retried after {retry}")
    if settings.mode == "skip":
        kept = [line for i, line in enumerate(lines) if i not in down]
    else:
        kept = [line for i, line in enumerate(lines) if i not in down] + [lines[i] for i in down]
    return Arranged(kept, notes)


def change_note(line: Line, before: LineRecord | None, after: LineRecord, settings: LineHealth, now: float, tz: ZoneInfo) -> str | None:
    """What one reported outcome did to a line, for the trace; None when it changed nothing worth saying."""
    old, new = line_state(before, settings, now), line_state(after, settings, now)
    retry = clock(new.retry_at, tz, now) if new.retry_at is not None else "?"
    if old.state == "healthy" and new.state != "healthy":
        return f"line {label(line)} suspended: {why(new, tz, now)}, until {retry}"
    if old.state != "healthy" and new.state == "healthy":
        return f"line {label(line)} works again: answered"
    if old.state != "healthy" and before != after:
        return f"line {label(line)} failed again: suspended until {retry}"
    return None


# -- status views -----------------------------------------------------------------------------------


def line_key(line: Line, template: str) -> str:
    """The dial target of a line: its own, or its number through the service's template."""
    if line.target is not None:
        return line.target
    assert line.number is not None  # guaranteed by Line's validator
    return template.replace("{number}", line.number)


@dataclass(frozen=True, slots=True)
class PlanLine:
    """One line of a plan as people look at it (admin API, `callrouter lines status`, messages, metrics)."""

    number: str
    line: Line
    key: str
    groups: tuple[str, ...]  # the hunt groups it is in
    record: LineRecord | None
    state: LineState

    @property
    def phone(self) -> str:
        return masked(self.line.number or self.key)


def plan_keys(plan: NumberPlan, template: str) -> tuple[str, ...]:
    """Every enabled line's key in a plan, once."""
    return tuple(dict.fromkeys(line_key(line, template) for group in plan.hunt_groups.values() for line in group.lines if line.enabled))


def plan_lines(plan: NumberPlan, template: str, records: Mapping[str, LineRecord], now: float) -> list[PlanLine]:
    """Each enabled line of a plan once (by id and dial target), with the groups it is in and its state."""
    seen: dict[tuple[str, str], tuple[Line, list[str]]] = {}
    for name, group in plan.hunt_groups.items():
        for line in group.lines:
            if line.enabled:
                seen.setdefault((line.id, line_key(line, template)), (line, []))[1].append(name)
    out = []
    for (_, key), (line, groups) in seen.items():
        record = records.get(key)
        out.append(PlanLine(plan.number, line, key, tuple(groups), record, line_state(record, plan.line_health, now)))
    return out


def _iso(when: float | None, tz: ZoneInfo) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, tz).isoformat(timespec="seconds")


def status_view(pl: PlanLine, tz: ZoneInfo, now: float) -> dict[str, object]:
    """One line as the admin API and `callrouter lines status` show it (the phone number masked)."""
    record, state = pl.record or LineRecord(pl.key), pl.state
    if state.state == "suspended":
        reason = f"{why(state, tz, now)}, retried after {clock(state.retry_at or now, tz, now)}"
    elif state.state == "half_open":
        reason = f"{why(state, tz, now)}; cool-down over: tried again on the next call"
    elif not record.clean:
        reason = f"{record.unavailable} unreachable, {record.noanswer} unanswered since it last answered"
    else:
        reason = ""
    return {
        "number": pl.number,
        "line": pl.line.id,
        "name": pl.line.name,
        "phone": pl.phone,
        "groups": list(pl.groups),
        "state": state.state,
        "working": state.working,
        "unavailable": record.unavailable,
        "noanswer": record.noanswer,
        "last_status": record.last_status or None,
        "since": _iso(record.since, tz),
        "last_failure": _iso(record.last_failure, tz),
        "retry_at": _iso(state.retry_at, tz),
        "reason": reason,
    }


def number_view(plan: NumberPlan, lines: Sequence[PlanLine], tz: ZoneInfo, now: float) -> dict[str, object]:
    """A number's lines, with how many of them work ("2 of 5 lines working")."""
    views = [status_view(pl, tz, now) for pl in lines]
    return {"number": plan.number, "name": plan.name, "working": sum(bool(v["working"]) for v in views), "total": len(views), "lines": views}


def plans_keys(plans: Sequence[NumberPlan], template: str) -> tuple[str, ...]:
    """Every enabled line's key across several plans, once: what to read from the store for `number_views`."""
    return tuple(dict.fromkeys(k for plan in plans for k in plan_keys(plan, template)))


def number_views(
    plans: Sequence[NumberPlan], template: str, records: Mapping[str, LineRecord], now: float, default_tz: str
) -> list[dict[str, object]]:
    """`number_view` of each plan in its own time zone: what the admin API, `lines status` and the console show."""
    return [
        number_view(plan, plan_lines(plan, template, records, now), ZoneInfo(plan.timezone or default_tz), now)
        for plan in plans
    ]
