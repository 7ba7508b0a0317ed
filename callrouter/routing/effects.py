"""What the routing engine asks its driver to do, and the answers it expects.

The engine never touches a socket or a store: it yields one of these effects and is sent the result.
The FastAGI session turns them into AGI commands, `callrouter explain` answers them from the command
line, and tests answer them from literal tables. Any effect may be answered with HUNG_UP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, assert_never


class _HungUp(enum.Enum):
    HUNG_UP = "hung up"


HUNG_UP = _HungUp.HUNG_UP  # the caller hung up while (or before) the effect ran


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the channel (billing starts for the caller)."""


@dataclass(frozen=True, slots=True)
class Play:
    """Play a prompt to the end; answered with None."""

    prompt: str


@dataclass(frozen=True, slots=True)
class Collect:
    """Play a prompt and collect DTMF; answered with Digits."""

    prompt: str
    timeout_ms: int
    max_digits: int


@dataclass(frozen=True, slots=True)
class Digits:
    digits: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start recording the call into `path` (without extension); answered with True if it started."""

    path: str
    format: str
    bridged_only: bool


@dataclass(frozen=True, slots=True)
class DialLeg:
    """One bound line to ring. `key` identifies the phone for occupancy limits across groups."""

    line_id: str
    target: str
    key: str
    max_calls: int


@dataclass(frozen=True, slots=True)
class Dial:
    """Ring one leg (or all legs at once for ring-all) for `timeout` seconds; answered with DialOutcome.

    The driver reserves each leg against its concurrent-call limit first; legs that are full are not
    rung and are reported in `DialOutcome.full`.
    """

    legs: tuple[DialLeg, ...]
    timeout: int
    options: str
    remember_answer: bool = False  # least-recent groups: record when the answering line finished


@dataclass(frozen=True, slots=True)
class DialOutcome:
    status: str  # DIALSTATUS, or "FULL" when no leg could be reserved
    answered_leg: int | None  # index into Dial.legs
    ring_seconds: int
    talk_seconds: int
    full: tuple[int, ...] = ()  # indexes of legs skipped at their limit
    timed_by: str = "asterisk"  # whose clock the ring and talk seconds come from (agi/dialtiming.py)


@dataclass(frozen=True, slots=True)
class RotationNext:
    """Take this call's turn in a round-robin group: answered with how many hunts of the group came
    before it (0, 1, 2, ...). The store counts atomically, so routers sharing it take turns fairly.

    `legs` (the group's lines in their order, before the turn rotates them) and `health` (a LineHealthRead
    follows) let the driver ask the store for the turn, the health and the first line's lease at once."""

    key: str
    legs: tuple[DialLeg, ...] = field(default=(), compare=False)
    health: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class HuntAhead:
    """The hunt about to start will ask the store this (after Asterisk has started the recording): a driver
    may ask now and answer the RotationNext or LineHealthRead that follows from it, so the store's round
    trip runs while Asterisk works instead of after. Answered with nothing; a driver may ignore it.

    `key`: the round-robin group's (None: no turn); `legs`: the lines in their order before any turn;
    `health`: a LineHealthRead of those lines follows."""

    key: str | None
    legs: tuple[DialLeg, ...]
    health: bool


@dataclass(frozen=True, slots=True)
class LineHistoryRead:
    """When each line (by occupancy key) last finished an answered call; answered with {key: epoch seconds}."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LineHealthRead:
    """Each line's health record (by occupancy key), shared by every router; answered with
    {key: routing.health.LineRecord}, lines with no record left out. `legs`: the same lines as DialLegs,
    so the driver may lease the first one in the same round trip."""

    keys: tuple[str, ...]
    legs: tuple[DialLeg, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class LineOutcomeReport:
    """How a line did on a Dial (a status that counts: routing.health.COUNTED); answered with the line's
    LineRecord after the store applied it. The driver also tells the manager when this suspends or
    restores the line."""

    key: str
    status: str


@dataclass(frozen=True, slots=True)
class RecordVoicemail:
    """Play `prompt`, then record a message; answered with True if something was recorded."""

    prompt: str
    path: str
    format: str
    max_seconds: int
    silence_seconds: int | None
    beep: bool


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call from our side."""


Effect = (
    Answer | Play | Collect | StartRecording | Dial | HuntAhead | RotationNext | LineHistoryRead | LineHealthRead
    | LineOutcomeReport | RecordVoicemail | Hangup
)
STORE_EFFECTS = (RotationNext, LineHistoryRead, LineHealthRead, LineOutcomeReport)  # still answered once the caller is gone

T = TypeVar("T", covariant=True)


class EffectHandler(Protocol[T]):
    """An interpreter of effects: one method per effect. The live call answers with coroutines (T is an
    awaitable), `callrouter explain` and the scenario tests with plain values. A new effect added to
    `Effect` without a method here, or an interpreter without the method, is a type error."""

    def answer(self, effect: Answer) -> T: ...
    def play(self, effect: Play) -> T: ...
    def collect(self, effect: Collect) -> T: ...
    def start_recording(self, effect: StartRecording) -> T: ...
    def dial(self, effect: Dial) -> T: ...
    def hunt_ahead(self, effect: HuntAhead) -> T: ...
    def rotation_next(self, effect: RotationNext) -> T: ...
    def line_history_read(self, effect: LineHistoryRead) -> T: ...
    def line_health_read(self, effect: LineHealthRead) -> T: ...
    def line_outcome_report(self, effect: LineOutcomeReport) -> T: ...
    def record_voicemail(self, effect: RecordVoicemail) -> T: ...
    def hangup(self, effect: Hangup) -> T: ...


def dispatch(effect: Effect, handler: EffectHandler[T]) -> T:
    """The one place an effect is matched to its handler method (mypy checks the match is exhaustive)."""
    match effect:
        case Answer():
            return handler.answer(effect)
        case Play():
            return handler.play(effect)
        case Collect():
            return handler.collect(effect)
        case StartRecording():
            return handler.start_recording(effect)
        case Dial():
            return handler.dial(effect)
        case HuntAhead():
            return handler.hunt_ahead(effect)
        case RotationNext():
            return handler.rotation_next(effect)
        case LineHistoryRead():
            return handler.line_history_read(effect)
        case LineHealthRead():
            return handler.line_health_read(effect)
        case LineOutcomeReport():
            return handler.line_outcome_report(effect)
        case RecordVoicemail():
            return handler.record_voicemail(effect)
        case Hangup():
            return handler.hangup(effect)
        case _:
            assert_never(effect)
