"""Driving the routing flow without Asterisk: inputs from a table or the command line.

Used by `callrouter explain` ("why did my call go there?") and by the scenario tests. Line outcomes are
written `STATUS[:ring_seconds[:talk_seconds]]`, e.g. `BUSY`, `ANSWER:8:120`, `NOANSWER`, and `CANCEL` for
a caller who hangs up while that line rings; `FULL` plays a line at its concurrent-call limit. A digits
entry of `HANGUP` is a caller who hangs up at that menu. Line health is a table of records (`health`),
updated by the run as the store would be, so a scenario can run call after call with its own clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from callrouter.routing.effects import (
    HUNG_UP,
    Answer,
    Collect,
    Dial,
    DialOutcome,
    Digits,
    Effect,
    Hangup,
    LineHealthRead,
    LineHistoryRead,
    LineOutcomeReport,
    Play,
    RecordVoicemail,
    HuntAhead,
    RotationNext,
    StartRecording,
    STORE_EFFECTS,
    dispatch,
)
from callrouter.routing.engine import Flow
from callrouter.routing.health import UNAVAILABLE, LineRecord, apply_outcome
from callrouter.model.record import RouteResult

STATUSES = ("ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL", "FULL")
_DEFAULT_RING = {"ANSWER": 5, "BUSY": 1, "CHANUNAVAIL": 0, "CONGESTION": 1, "CANCEL": 4, "FULL": 0}


@dataclass(frozen=True)
class LineOutcome:
    status: str
    ring_seconds: int | None = None  # None: the status's usual time (NOANSWER: the whole timeout)
    talk_seconds: int = 60

    @classmethod
    def parse(cls, text: str) -> "LineOutcome":
        parts = text.strip().split(":")
        status = parts[0].upper()
        if status not in STATUSES or len(parts) > 3:
            raise ValueError(f"{text!r}: write STATUS[:ring[:talk]] with STATUS one of {', '.join(STATUSES)}")
        try:
            ring = int(parts[1]) if len(parts) > 1 and parts[1] != "" else None
            talk = int(parts[2]) if len(parts) > 2 else 60
        except ValueError:
            raise ValueError(f"{text!r}: ring and talk seconds must be whole numbers") from None
        if (ring is not None and ring < 0) or talk < 0:
            raise ValueError(f"{text!r}: seconds cannot be negative")
        return cls(status, ring, talk)


@dataclass
class DryRunInputs:
    """What the caller and the lines do. Lines are keyed by line id (or by dial target)."""

    digits: list[str] = field(default_factory=list)
    lines: Mapping[str, LineOutcome] = field(default_factory=dict)
    default_line: LineOutcome = LineOutcome("NOANSWER")
    rotation: dict[str, int] = field(default_factory=dict)  # round-robin turns taken per group key, updated by the run
    last_used: dict[str, float] = field(default_factory=dict)  # least-recent memory: key -> when, updated by the run
    clock: float = 0.0  # "now" for last_used updates; advanced one second per answered call
    health: dict[str, LineRecord] = field(default_factory=dict)  # line health by dial target, updated by the run
    at: datetime | None = None  # when line outcomes are reported (the call's time); None: epoch 0
    leave_message: bool = True
    recording_works: bool = True


@dataclass
class DryRun:
    result: RouteResult
    effects: list[Effect]


class _Responder:
    def __init__(self, inputs: DryRunInputs) -> None:
        self.inputs = inputs
        self.digits = list(inputs.digits)
        self.hung_up = False

    def outcome_for(self, line_id: str, target: str) -> LineOutcome:
        lines = self.inputs.lines
        return lines.get(line_id) or lines.get(target) or self.inputs.default_line

    def respond(self, effect: Effect) -> Any:
        """The answer to one effect; once the caller is gone, HUNG_UP for everything but the store's."""
        if self.hung_up and not isinstance(effect, STORE_EFFECTS):
            return HUNG_UP
        return dispatch(effect, self)

    def hunt_ahead(self, effect: HuntAhead) -> None:
        return None  # the inputs are at hand: nothing to ask ahead

    def rotation_next(self, effect: RotationNext) -> int:
        turn = self.inputs.rotation.get(effect.key, 0)
        self.inputs.rotation[effect.key] = turn + 1
        return turn

    def line_history_read(self, effect: LineHistoryRead) -> dict[str, float]:
        return {k: self.inputs.last_used[k] for k in effect.keys if k in self.inputs.last_used}

    def line_health_read(self, effect: LineHealthRead) -> dict[str, LineRecord]:
        return {k: self.inputs.health[k] for k in effect.keys if k in self.inputs.health}

    def line_outcome_report(self, effect: LineOutcomeReport) -> LineRecord:
        at = self.inputs.at.timestamp() if self.inputs.at is not None else 0.0
        after = apply_outcome(self.inputs.health.get(effect.key) or LineRecord(effect.key), effect.status, at)
        self.inputs.health[effect.key] = after
        return after

    def collect(self, effect: Collect) -> Any:
        entry = self.digits.pop(0) if self.digits else ""
        if entry.upper() == "HANGUP":
            self.hung_up = True
            return HUNG_UP
        return Digits(entry[: effect.max_digits], timed_out=len(entry) < effect.max_digits)

    def start_recording(self, effect: StartRecording) -> bool:
        return self.inputs.recording_works

    def record_voicemail(self, effect: RecordVoicemail) -> bool:
        return self.inputs.leave_message

    def hangup(self, effect: Hangup) -> None:
        self.hung_up = True

    def answer(self, effect: Answer) -> bool:
        return True

    def play(self, effect: Play) -> None:
        return None

    def dial(self, effect: Dial) -> DialOutcome:
        outcomes = [self.outcome_for(leg.line_id, leg.target) for leg in effect.legs]
        full = tuple(i for i, o in enumerate(outcomes) if o.status == "FULL")
        live = [(i, o) for i, o in enumerate(outcomes) if o.status != "FULL"]
        if not live:
            return DialOutcome("FULL", None, 0, 0, full)

        def ring(o: LineOutcome) -> int:
            if o.status == "NOANSWER":
                return effect.timeout if o.ring_seconds is None else min(o.ring_seconds, effect.timeout)
            return _DEFAULT_RING[o.status] if o.ring_seconds is None else o.ring_seconds

        answering = [(ring(o), i, o) for i, o in live if o.status == "ANSWER" and ring(o) <= effect.timeout]
        cancels = [(ring(o), i, o) for i, o in live if o.status == "CANCEL"]
        if cancels and (not answering or min(cancels)[0] < min(answering)[0]):
            self.hung_up = True
            return DialOutcome("CANCEL", None, min(cancels)[0], 0, full)
        if answering:
            secs, i, o = min(answering)
            self.hung_up = True  # the bridged call ended: the caller's channel is gone
            self.inputs.clock += 1
            self.inputs.last_used[effect.legs[i].key] = self.inputs.clock
            return DialOutcome("ANSWER", i, secs, o.talk_seconds, full)
        statuses = [o.status if o.status != "ANSWER" else "NOANSWER" for _, o in live]
        status = "NOANSWER" if "NOANSWER" in statuses else statuses[0]
        return DialOutcome(status, None, max(ring(o) if o.status != "ANSWER" else effect.timeout for _, o in live), 0, full)


def dry_run(flow: Flow, inputs: DryRunInputs) -> DryRun:
    """Run a flow to its end, answering every effect from `inputs`."""
    responder = _Responder(inputs)
    effects: list[Effect] = []
    try:
        effect = next(flow)
        while True:
            effects.append(effect)
            effect = flow.send(responder.respond(effect))
    except StopIteration as stop:
        return DryRun(result=stop.value, effects=effects)


_HEALTH = re.compile(r"(CHANUNAVAIL|CONGESTION|NOANSWER):([0-9]{1,3})(?:@([0-9]{1,2}):([0-9]{2}))?\Z")


def health_record(key: str, spec: str, now: datetime) -> LineRecord:
    """`NOANSWER:4@10:02` (4 unanswered in a row, the first and the last at 10:02 on the day of `now`, in
    its time zone; without the time: at `now`) as the store would hold it, for `callrouter explain`."""
    m = _HEALTH.match(spec.strip().upper())
    if m is None:
        raise ValueError(f"{spec!r}: write STATUS:COUNT[@HH:MM] with STATUS one of CHANUNAVAIL, CONGESTION, NOANSWER")
    status, count = m.group(1), int(m.group(2))
    when = now
    if m.group(3) is not None:
        when = now.replace(hour=int(m.group(3)), minute=int(m.group(4)), second=0, microsecond=0)
        if when > now:
            when -= timedelta(days=1)
    at = when.timestamp()
    unavailable, noanswer = (count, 0) if status in UNAVAILABLE else (0, count)
    return LineRecord(key, unavailable, noanswer, since=at, last_failure=at, last_status=status, updated_at=at)
