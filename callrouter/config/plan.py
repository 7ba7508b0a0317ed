"""A routing plan: everything that decides what happens to calls to one 400 number."""

from __future__ import annotations

import re
import string
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from callrouter.config.line_health import LineHealth
from callrouter.config.notify import MissedCallNotify
from callrouter.config.package import Package
from callrouter.model.phone import normalize_number
from callrouter.config.types import (
    Frozen,
    DialTarget,
    DigitsKey,
    FailoverStatus,
    Name,
    PhoneNumber,
    PhoneText,
    PromptName,
    TimeRange,
    TimeZoneName,
)

ACTION_KINDS = ("hunt", "menu", "play", "voicemail", "hangup", "repeat", "back")
_TARGETLESS = ("hangup", "repeat", "back")
STRATEGIES = ("sequential", "round_robin", "random", "ring_all", "weighted", "least_recent")
DEFAULT_FAILOVER = frozenset({"BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION"})
FILE_FIELDS = frozenset({"number", "date", "time", "uniqueid", "caller"})
_FILE_LITERAL = re.compile(r"[A-Za-z0-9_\-./]*\Z")


def _parse_action(value: Any) -> Any:
    if isinstance(value, str):
        if value in _TARGETLESS:
            return {"kind": value}
        raise ValueError(f"{value!r} is not an action; write one of: {', '.join(_TARGETLESS)}, or a mapping like 'hunt: sales'")
    if isinstance(value, dict):
        if "kind" in value:
            return value
        keys = [k for k in value if k in ACTION_KINDS]
        if len(keys) != 1:
            raise ValueError(
                "an action is a mapping with exactly one of "
                f"{', '.join(ACTION_KINDS)} (e.g. 'hunt: sales', 'menu: main', 'play: closed', 'voicemail: sales')"
            )
        kind = keys[0]
        rest = {k: v for k, v in value.items() if k != kind}
        target = value[kind]
        if kind in _TARGETLESS:
            if target not in (None, True):
                raise ValueError(f"'{kind}' takes no value")
            return {"kind": kind, **rest}
        return {"kind": kind, "target": target, **rest}
    raise ValueError("an action must be a word (hangup, repeat, back) or a mapping like 'hunt: sales'")


class Action(Frozen):
    """What to do next: ring a hunt group, enter a menu, play and hang up, take a voicemail, hang up."""

    kind: Literal["hunt", "menu", "play", "voicemail", "hangup", "repeat", "back"]
    target: str | None = None

    @model_validator(mode="after")
    def _check_target(self) -> "Action":
        if self.kind in _TARGETLESS:
            if self.target is not None:
                raise ValueError(f"'{self.kind}' takes no value")
        elif not self.target:
            raise ValueError(f"'{self.kind}' needs a name")
        elif self.kind == "play":
            PromptCheck(prompt=self.target)
        else:
            NameCheck(name=self.target)
        return self

    def describe(self) -> str:
        return self.kind if self.target is None else f"{self.kind}: {self.target}"


class PromptCheck(Frozen):
    prompt: PromptName


class NameCheck(Frozen):
    name: Name


ActionField = Annotated[Action, BeforeValidator(_parse_action)]


class WeeklyHours(Frozen):
    """Open ranges per weekday; a day not listed is closed."""

    mon: tuple[TimeRange, ...] = ()
    tue: tuple[TimeRange, ...] = ()
    wed: tuple[TimeRange, ...] = ()
    thu: tuple[TimeRange, ...] = ()
    fri: tuple[TimeRange, ...] = ()
    sat: tuple[TimeRange, ...] = ()
    sun: tuple[TimeRange, ...] = ()

    def for_weekday(self, weekday: int) -> tuple[tuple[Any, Any], ...]:
        return getattr(self, ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[weekday])  # type: ignore[no-any-return]


class Schedule(Frozen):
    """Business hours in the plan's time zone. No `weekly` at all means open around the clock."""

    weekly: WeeklyHours | None = None
    holidays: tuple[date, ...] = ()
    # Dates with their own hours (e.g. 调休 working weekends, half days); an empty list closes the day.
    special_days: dict[date, tuple[TimeRange, ...]] = Field(default_factory=dict)


class Blacklist(Frozen):
    """Callers refused before anything else happens."""

    numbers: frozenset[PhoneText] = frozenset()
    prefixes: tuple[PhoneText, ...] = ()
    anonymous: bool = False  # refuse withheld / unknown caller IDs
    action: ActionField | None = None  # default: hang up

    @field_validator("numbers", "prefixes")
    @classmethod
    def _digits(cls, values: Any) -> Any:
        for v in values:
            if not re.fullmatch(r"\+?[0-9]{1,20}", v):
                raise ValueError(f"{v!r} is not a phone number or prefix (digits, optional leading +)")
        return values

    @field_validator("numbers")
    @classmethod
    def _normalised(cls, values: frozenset[str]) -> frozenset[str]:
        """Stored the way callers are normalised, so +86 139..., 139... and 0139... all match."""
        return frozenset(normalize_number(v) for v in values)


class Menu(Frozen):
    """An IVR menu: prompt, collect digits, map them to actions, with retries for silence and bad input."""

    prompt: PromptName
    text: str | None = None  # what the prompt says, for generated prompts and docs
    timeout: float = Field(default=5.0, ge=1, le=60)  # seconds to wait for the first digit
    max_digits: int = Field(default=1, ge=1, le=20)
    retries: int = Field(default=2, ge=0, le=10)  # re-prompts after silence or invalid input
    invalid_prompt: PromptName | None = None
    timeout_prompt: PromptName | None = None
    options: dict[DigitsKey, ActionField] = Field(min_length=1)
    on_timeout: ActionField | None = None  # after the last silent try; default hang up
    on_invalid: ActionField | None = None  # after the last invalid try; default: on_timeout

    @model_validator(mode="after")
    def _digits_fit(self) -> "Menu":
        for key in self.options:
            if len(key) > self.max_digits:
                raise ValueError(f"option {key!r} is longer than max_digits={self.max_digits}")
        return self


class Line(Frozen):
    """One bound phone in a hunt group."""

    id: Name
    name: str | None = Field(default=None, max_length=64)  # agent's display name
    number: PhoneNumber | None = None  # dialled through the service's dial template
    target: DialTarget | None = None  # or an explicit Asterisk dial target
    ring_timeout: int = Field(default=20, ge=3, le=180)
    enabled: bool = True
    max_calls: int = Field(default=1, ge=1, le=10_000)  # a phone carries 1; a PBX or trunk target many
    weight: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="after")
    def _one_destination(self) -> "Line":
        if (self.number is None) == (self.target is None):
            raise ValueError("give exactly one of 'number' or 'target'")
        return self


class HuntGroup(Frozen):
    """Lines rung in an answer order, failing over from busy, unanswered or broken lines."""

    strategy: Literal["sequential", "round_robin", "random", "ring_all", "weighted", "least_recent"] = "sequential"
    lines: tuple[Line, ...] = Field(min_length=1, max_length=20)
    ring_budget: int = Field(default=120, ge=5, le=900)  # seconds of ringing across all attempts
    failover_on: frozenset[FailoverStatus] = DEFAULT_FAILOVER
    dial_options: str = Field(default="", pattern=r"^[A-Za-z]{0,10}$")  # plain Dial flags, e.g. "t"
    on_failure: ActionField | None = None  # when no line answered; default hang up

    @model_validator(mode="after")
    def _unique_ids(self) -> "HuntGroup":
        seen: set[str] = set()
        for line in self.lines:
            if line.id in seen:
                raise ValueError(f"line id {line.id!r} is used twice in this group")
            seen.add(line.id)
        if not any(line.enabled for line in self.lines):
            raise ValueError("every line is disabled; enable at least one")
        return self


class Voicemail(Frozen):
    """A message box: play a prompt, then record after the beep."""

    prompt: PromptName
    max_seconds: int = Field(default=120, ge=5, le=600)
    silence_seconds: int | None = Field(default=5, ge=1, le=60)
    beep: bool = True
    format: Literal["wav", "gsm", "wav49"] = "wav"
    thanks_prompt: PromptName | None = None


class Recording(Frozen):
    """Call recording for quality checks and disputes (MixMonitor, started before the hunt)."""

    enabled: bool = False
    announcement: PromptName | None = None  # e.g. "本通话可能会被录音"
    file_template: str = "{number}/{date}/{uniqueid}"
    format: Literal["wav", "gsm", "wav49"] = "wav"
    bridged_only: bool = True  # record only while connected (MixMonitor 'b')

    @field_validator("file_template")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = set()
        for literal, name, spec, conv in string.Formatter().parse(value):
            if not _FILE_LITERAL.match(literal):
                raise ValueError(f"file_template may use letters, digits, _ - . / and placeholders only: {literal!r}")
            if name is not None:
                if name not in FILE_FIELDS or spec or conv:
                    raise ValueError(f"unknown placeholder {{{name}}}; use {sorted(FILE_FIELDS)}")
                fields.add(name)
        if value.startswith("/") or ".." in value:
            raise ValueError("file_template is relative to the recordings folder and may not contain '..'")
        if "uniqueid" not in fields:
            raise ValueError("file_template must contain {uniqueid} so two calls never share a file")
        return value


class NumberPlan(Frozen):
    """Everything about one 400 number."""

    number: PhoneNumber
    name: str = Field(max_length=128)
    timezone: TimeZoneName | None = None  # default: the service's timezone
    schedule: Schedule = Schedule()
    after_hours: ActionField | None = None  # default hang up
    greeting: PromptName | None = None  # played once before the menu / hunt
    blacklist: Blacklist = Blacklist()
    recording: Recording = Recording()
    entry: ActionField
    menus: dict[Name, Menu] = Field(default_factory=dict)
    hunt_groups: dict[Name, HuntGroup] = Field(default_factory=dict)
    voicemail: dict[Name, Voicemail] = Field(default_factory=dict)
    prompts: dict[PromptName, str] = Field(default_factory=dict)  # prompt -> spoken text, for generated prompts
    notify: MissedCallNotify = MissedCallNotify()  # who gets an SMS about a missed call
    crm_lookup: bool = True  # ask the service's CRM (if configured) for callers' names
    package: Package | None = None  # the monthly minutes package, for usage alerts
    line_health: LineHealth = LineHealth()  # failing lines set aside for a cool-down, and the manager told

    def group_of(self, name: str) -> HuntGroup:
        return self.hunt_groups[name]
