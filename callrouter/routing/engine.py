"""The call flow: blacklist, business hours, greeting, IVR menus, the hunt, and what follows a failure.

`route()` returns a generator. It yields effects (callrouter.routing.effects), is sent each effect's
result, and returns a RouteResult. It reads no clock, no socket and no store: `now` and `rng` are
parameters, and state such as the round-robin position arrives as effect results. So the same flow
drives a live call, a dry run (`callrouter explain`) and a table-driven test, deterministically.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generator
from zoneinfo import ZoneInfo

from callrouter.config.plan import Action, Blacklist, HuntGroup, Line, NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.routing.blacklist import blacklist_match
from callrouter.routing.caller import Caller
from callrouter.routing.effects import (
    HUNG_UP,
    Answer,
    LineHealthRead,
    LineHistoryRead,
    LineOutcomeReport,
    Collect,
    Dial,
    DialLeg,
    DialOutcome,
    Digits,
    Effect,
    Hangup,
    Play,
    RecordVoicemail,
    HuntAhead,
    RotationNext,
    StartRecording,
)
from callrouter.routing.health import LineRecord, arrange, change_note, counts, line_key
from callrouter.routing.hours import check_hours
from callrouter.routing.order import least_recent_order, random_order, rotate_for_turn, weighted_order
from callrouter.model.record import Attempt, RouteResult

MAX_STEPS = 40  # menus entered, menu rounds and actions taken; a caller cannot loop us forever
MIN_RING_SECONDS = 3  # a remaining ring budget below this is not worth a dial attempt
_BROKEN = frozenset({"INVALIDARGS", "DONTCALL", "TORTURE", "OTHER", ""})  # treated like CHANUNAVAIL for failover
HANGUP_ACTION = Action(kind="hangup")
_NO_BLACKLIST = Blacklist()

Flow = Generator[Effect, Any, RouteResult]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The call as routing sees it."""

    number: str  # the 400 number dialled
    caller: Caller
    uniqueid: str
    runtime_blacklist: Blacklist = _NO_BLACKLIST  # entries ops added while running (database), for this number


_UNSAFE_IN_NAME = re.compile(r"[^0-9A-Za-z._-]")


def safe_component(text: str, fallback: str) -> str:
    """A file-name component from untrusted text: no separators, no dots at the start, bounded."""
    cleaned = _UNSAFE_IN_NAME.sub("_", text)[:64].lstrip(".")
    return cleaned or fallback


def dial_target(line: Line, template: str) -> str:
    return line_key(line, template)


def classify_failure(attempts: tuple[Attempt, ...] | list[Attempt]) -> str:
    """The disposition of a hunt in which nobody answered."""
    rung = [a.status for a in attempts if a.status != "FULL"]
    if not rung or all(s == "BUSY" for s in rung):
        return "busy"
    if any(s == "NOANSWER" for s in rung):
        return "no_answer"
    return "failed"


def route(call: CallInfo, plan: NumberPlan, service: ServiceConfig, now: datetime, rng: random.Random) -> Flow:
    """The whole flow of one call; see the module docstring for how it is driven."""
    return CallFlow(call, plan, service, now, rng).run()


class CallFlow:
    """State of one call's flow. Lives as long as the generator; never shared between calls."""

    def __init__(self, call: CallInfo, plan: NumberPlan, service: ServiceConfig, now: datetime, rng: random.Random) -> None:
        self.call, self.plan, self.service, self.rng = call, plan, service, rng
        self.local_now = now.astimezone(ZoneInfo(plan.timezone or service.timezone))
        self.now = now
        self.trace: list[str] = []
        self.ivr_path: list[str] = []
        self.attempts: list[Attempt] = []
        self.answered = False
        self.recording_file: str | None = None
        self.voicemail_file: str | None = None
        self.group: str | None = None
        self.strategy: str | None = None
        self.context: str | None = None  # "blacklisted" / "after_hours": what the final action is for
        self.hunt_failure: str | None = None
        self.steps = 0
        self.health: dict[str, LineRecord] = {}  # line health as read at each hunt, updated by each report
        self._legs: dict[int, DialLeg] = {}  # by id() of the plan's Line

    # -- results -------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self.trace.append(message)

    def finish(self, disposition: str, reason: str, **extra: Any) -> RouteResult:
        self.note(f"result: {disposition} ({reason})")
        return RouteResult(
            disposition=disposition,
            reason=reason,
            ivr_path=tuple(self.ivr_path),
            group=self.group,
            strategy=self.strategy,
            attempts=tuple(self.attempts),
            recording_file=self.recording_file,
            voicemail_file=self.voicemail_file,
            answered_by_us=self.answered,
            trace=tuple(self.trace),
            **extra,
        )

    def partial(self, disposition: str, reason: str) -> RouteResult:
        """What was decided and seen so far, for a call that ended abnormally (IVR path, attempts...)."""
        return self.finish(disposition, reason)

    def abandoned(self, where: str) -> RouteResult:
        return self.finish(self.context or "abandoned", f"caller hung up {where}")

    def ended_disposition(self) -> str:
        return self.context or self.hunt_failure or "played"

    # -- the flow ------------------------------------------------------------------------------

    def run(self) -> Flow:
        caller = self.call.caller
        self.note(f"call to {self.plan.number} ({self.plan.name}) from {caller.number or 'withheld caller ID'}")
        hit = blacklist_match(
            caller, ("number", self.plan.blacklist), ("global", self.service.blacklist), ("runtime", self.call.runtime_blacklist)
        )
        if hit is not None:
            label, reason = hit
            self.note(f"blacklisted: {reason}")
            self.context = "blacklisted"
            source = self.service.blacklist if label == "global" else self.plan.blacklist  # runtime entries act like the plan's
            return (yield from self.actions(source.action or HANGUP_ACTION))
        self.note("blacklist: not listed")
        hours = check_hours(self.plan.schedule, self.local_now.tzinfo.key, self.now)  # type: ignore[union-attr]
        self.note(f"hours: {hours.reason}")
        if not hours.open:
            self.context = "after_hours"
            return (yield from self.actions(self.plan.after_hours or HANGUP_ACTION))
        if not (yield from self.answer()):
            return self.abandoned("before the call was answered")
        for prompt in (self.plan.greeting, self.plan.recording.announcement if self.plan.recording.enabled else None):
            if prompt is not None:
                self.note(f"play {prompt}")
                if (yield Play(prompt)) is HUNG_UP:
                    return self.abandoned(f"during {prompt}")
        return (yield from self.actions(self.plan.entry))

    def answer(self) -> Generator[Effect, Any, bool]:
        if self.answered:
            return True
        self.note("answer")
        if (yield Answer()) is HUNG_UP:
            return False
        self.answered = True
        return True

    def actions(self, action: Action) -> Flow:
        """Run actions until one ends the call; menus and failed hunts lead to further actions."""
        stack: list[str] = []
        current_menu: str | None = None
        while True:
            self.steps += 1
            if self.steps > MAX_STEPS:
                self.note(f"more than {MAX_STEPS} steps: ending the call")
                action = HANGUP_ACTION
            self.note(f"action: {action.describe()}")
            if action.kind == "menu":
                assert action.target is not None
                if current_menu is not None:
                    stack.append(current_menu)
                current_menu = action.target
                nxt = yield from self.menu(current_menu)
                if isinstance(nxt, RouteResult):
                    return nxt
                if nxt.kind == "back":
                    parent = stack.pop() if stack else current_menu
                    current_menu = None
                    nxt = Action(kind="menu", target=parent)
                elif nxt.kind != "menu":
                    current_menu = None
                action = nxt
            elif action.kind == "hunt":
                assert action.target is not None
                hunted = yield from self.hunt(action.target, self.plan.hunt_groups[action.target])
                if isinstance(hunted, RouteResult):
                    return hunted
                action = hunted
            elif action.kind == "play":
                assert action.target is not None
                return (yield from self.play_and_hang_up(action.target))
            elif action.kind == "voicemail":
                assert action.target is not None
                return (yield from self.voicemail(action.target))
            else:  # hangup (repeat/back outside a menu are refused when the plan is loaded)
                yield Hangup()
                return self.finish(self.ended_disposition(), "hung up by the plan")

    def menu(self, name: str) -> Generator[Effect, Any, Action | RouteResult]:
        menu = self.plan.menus[name]
        failures = 0
        while True:
            self.steps += 1
            if self.steps > MAX_STEPS:
                return HANGUP_ACTION
            if not (yield from self.answer()):
                return self.abandoned(f"before menu {name}")
            got = yield Collect(menu.prompt, int(menu.timeout * 1000), menu.max_digits)
            if got is HUNG_UP:
                return self.abandoned(f"in menu {name}")
            assert isinstance(got, Digits)
            if got.digits == "":
                failures += 1
                self.ivr_path.append(f"{name}:-")
                self.note(f"menu {name}: no input (try {failures} of {menu.retries + 1})")
                if failures > menu.retries:
                    return menu.on_timeout or HANGUP_ACTION
                retry_prompt = menu.timeout_prompt
            else:
                self.ivr_path.append(f"{name}:{got.digits}")
                chosen = menu.options.get(got.digits)
                if chosen is not None:
                    self.note(f"menu {name}: pressed {got.digits} -> {chosen.describe()}")
                    if chosen.kind != "repeat":
                        return chosen
                    continue
                failures += 1
                self.note(f"menu {name}: pressed {got.digits}, not an option (try {failures} of {menu.retries + 1})")
                if failures > menu.retries:
                    return menu.on_invalid or menu.on_timeout or HANGUP_ACTION
                retry_prompt = menu.invalid_prompt
            if retry_prompt is not None and (yield Play(retry_prompt)) is HUNG_UP:
                return self.abandoned(f"in menu {name}")

    def order(self, name: str, group: HuntGroup, lines: list[Line]) -> Generator[Effect, Any, list[Line]]:
        if group.strategy == "round_robin":
            legs = tuple(self.leg(line) for line in lines)
            turn = yield RotationNext(self.rotation_key(name), legs, self.plan.line_health.enabled)
            ordered = rotate_for_turn(lines, turn if isinstance(turn, int) else 0)
            if ordered:
                self.note(f"round robin: turn {turn}, starting at {ordered[0].id}")
            return ordered
        if group.strategy == "random":
            return random_order(lines, self.rng)
        if group.strategy == "weighted":
            return weighted_order(lines, self.rng)
        if group.strategy == "least_recent":
            keys = tuple(self.leg(line).key for line in lines)
            history = yield LineHistoryRead(keys)
            ordered = least_recent_order(lines, keys, history if isinstance(history, dict) else {})
            self.note(f"least recent: {', '.join(line.id for line in ordered)}")
            return ordered
        return lines

    def ahead_question(self, name: str, group: HuntGroup, lines: list[Line]) -> HuntAhead | None:
        """What `order` and `healthy_first` will ask the store, when Asterisk has a recording to start
        first (the driver may ask meanwhile). Only where the order before the store is known now: round
        robin (its turn) and sequential (the health read); random draws come after."""
        rec = self.plan.recording
        if not rec.enabled or self.recording_file is not None or not lines:
            return None
        health = self.plan.line_health.enabled
        legs = tuple(self.leg(line) for line in lines)
        if group.strategy == "round_robin":
            return HuntAhead(self.rotation_key(name), legs, health)
        if group.strategy == "sequential" and health:
            return HuntAhead(None, legs, True)
        return None

    def rotation_key(self, group_name: str) -> str:
        return f"{self.plan.number}/{group_name}"

    def leg(self, line: Line) -> DialLeg:
        """The line as dialled; asked for up to four times per line and hunt, so built once per call."""
        leg = self._legs.get(id(line))  # the plan's lines live as long as the call: their ids are theirs
        if leg is None:
            target = dial_target(line, self.service.dialing.template)
            leg = self._legs[id(line)] = DialLeg(line_id=line.id, target=target, key=target, max_calls=line.max_calls)
        return leg

    def start_recording(self) -> Generator[Effect, Any, bool]:
        rec = self.plan.recording
        if not rec.enabled or self.recording_file is not None:
            return True
        name = rec.file_template.format(
            number=self.plan.number,
            date=self.local_now.date().isoformat(),  # not strftime: a third of its cost, on every recorded call
            time=f"{self.local_now.hour:02d}{self.local_now.minute:02d}{self.local_now.second:02d}",
            uniqueid=safe_component(self.call.uniqueid, "call"),
            caller=safe_component(self.call.caller.number, "anonymous"),
        )
        path = f"{self.service.recordings_dir.rstrip('/')}/{name}"
        started = yield StartRecording(path=path, format=rec.format, bridged_only=rec.bridged_only)
        if started is HUNG_UP:
            return False
        if started:
            self.recording_file = f"{path}.{rec.format}"
            self.note(f"recording to {self.recording_file}")
        else:
            self.note("recording could not be started; the call goes on unrecorded")
        return True

    def hunt(self, name: str, group: HuntGroup) -> Generator[Effect, Any, Action | RouteResult]:
        self.group, self.strategy = name, group.strategy
        lines = [line for line in group.lines if line.enabled]
        skipped = [line.id for line in group.lines if not line.enabled]
        self.note(f"hunt group {name}: {group.strategy}, {len(lines)} lines" + (f" (disabled: {', '.join(skipped)})" if skipped else ""))
        ahead = self.ahead_question(name, group, lines)
        if ahead is not None:
            yield ahead
        if not (yield from self.start_recording()):
            return self.abandoned("before the hunt")
        ordered = yield from self.order(name, group, lines)
        ordered = yield from self.healthy_first(ordered, ring_all=group.strategy == "ring_all")
        if group.strategy == "ring_all":
            return (yield from self.ring_all(group, ordered))
        budget = group.ring_budget
        for line in ordered:
            if budget < MIN_RING_SECONDS:
                self.note(f"ring budget of {group.ring_budget}s spent")
                break
            leg = self.leg(line)
            timeout = min(line.ring_timeout, budget)
            out = yield Dial((leg,), timeout, group.dial_options, remember_answer=group.strategy == "least_recent")
            if out is HUNG_UP:
                return self.abandoned(f"before dialling {line.id}")
            assert isinstance(out, DialOutcome)
            if out.status == "FULL":
                self.attempts.append(Attempt(line.id, leg.target, "FULL", 0))
                self.note(f"line {line.id}: at its limit of {line.max_calls} calls, skipped")
                continue
            budget -= out.ring_seconds
            self.attempts.append(Attempt(line.id, leg.target, out.status, out.ring_seconds, out.talk_seconds))
            clock = "" if out.timed_by == "asterisk" else " (router's clock: the dialplan's timing hooks are missing)"
            talked = f", talked {out.talk_seconds}s" if out.status == "ANSWER" else ""
            self.note(f"line {line.id} ({leg.target}, {timeout}s): {out.status} after {out.ring_seconds}s ringing{talked}{clock}")
            yield from self.report(line, leg.key, out.status)
            if out.status == "ANSWER":
                return self.finish("answered", f"answered by {line.id}", answered_line=line.id, talk_seconds=out.talk_seconds)
            if out.status == "CANCEL":
                return self.abandoned(f"while {line.id} was ringing")
            if out.status in group.failover_on or (out.status in _BROKEN and "CHANUNAVAIL" in group.failover_on):
                continue
            self.note(f"{out.status} does not fail over in this group")
            break
        self.hunt_failure = classify_failure(self.attempts)
        self.note(f"no line answered: {self.hunt_failure}")
        return group.on_failure or HANGUP_ACTION

    def ring_all(self, group: HuntGroup, lines: list[Line]) -> Generator[Effect, Any, Action | RouteResult]:
        legs = tuple(self.leg(line) for line in lines)
        timeout = min(max(line.ring_timeout for line in lines), group.ring_budget)
        out = yield Dial(legs, timeout, group.dial_options)
        if out is HUNG_UP:
            return self.abandoned("before ringing")
        assert isinstance(out, DialOutcome)
        for i, leg in enumerate(legs):
            if i in out.full:
                status = "FULL"
            elif out.answered_leg is not None:
                status = "ANSWER" if i == out.answered_leg else "NOANSWER"
            else:
                status = out.status
            talk = out.talk_seconds if i == out.answered_leg else 0
            self.attempts.append(Attempt(leg.line_id, leg.target, status, 0 if status == "FULL" else out.ring_seconds, talk))
        self.note(f"ring all {len(legs)} lines ({timeout}s): {out.status} after {out.ring_seconds}s")
        for i, (line, leg) in enumerate(zip(lines, legs)):
            if i in out.full or (out.answered_leg is not None and i != out.answered_leg):
                continue  # not rung, or cancelled by Asterisk when another line answered: says nothing about it
            yield from self.report(line, leg.key, out.status)
        if out.status == "ANSWER":
            line_id = legs[out.answered_leg].line_id if out.answered_leg is not None else None
            return self.finish("answered", f"answered by {line_id or 'a line'}", answered_line=line_id, talk_seconds=out.talk_seconds)
        if out.status == "CANCEL":
            return self.abandoned("while the lines were ringing")
        self.hunt_failure = classify_failure(self.attempts)
        self.note(f"no line answered: {self.hunt_failure}")
        return group.on_failure or HANGUP_ACTION

    def healthy_first(self, lines: list[Line], *, ring_all: bool) -> Generator[Effect, Any, list[Line]]:
        """The hunt's lines with suspended ones skipped or put last, as the plan's `line_health` says."""
        settings = self.plan.line_health
        if not settings.enabled or not lines:
            return lines
        legs = tuple(self.leg(line) for line in lines)
        keys = tuple(leg.key for leg in legs)
        got = yield LineHealthRead(keys, legs)
        records = got if isinstance(got, dict) else {}
        self.health.update(records)
        arranged = arrange(lines, keys, records, settings, self.now.timestamp(), self.tz, ring_all=ring_all)
        for note in arranged.notes:
            self.note(note)
        return arranged.lines

    def report(self, line: Line, key: str, status: str) -> Generator[Effect, Any, None]:
        """Tell the store how a line did; the trace says when that suspends or restores it."""
        settings = self.plan.line_health
        if not settings.enabled or not counts(status):
            return
        before = self.health.get(key)
        after = yield LineOutcomeReport(key, status)
        if isinstance(after, LineRecord):
            self.health[key] = after
            note = change_note(line, before, after, settings, self.now.timestamp(), self.tz)
            if note is not None:
                self.note(note)

    @property
    def tz(self) -> ZoneInfo:
        zone = self.local_now.tzinfo
        assert isinstance(zone, ZoneInfo)
        return zone

    def play_and_hang_up(self, prompt: str) -> Flow:
        if not (yield from self.answer()):
            return self.abandoned("before the message")
        self.note(f"play {prompt}, then hang up")
        if (yield Play(prompt)) is HUNG_UP:
            return self.abandoned(f"during {prompt}")
        yield Hangup()
        return self.finish(self.ended_disposition(), f"played {prompt}")

    def voicemail(self, name: str) -> Flow:
        box = self.plan.voicemail[name]
        if not (yield from self.answer()):
            return self.abandoned("before voicemail")
        # Flat in voicemail_dir: RECORD FILE does not create folders (Asterisk 22 answers "(writefile)").
        path = (
            f"{self.service.voicemail_dir.rstrip('/')}/{self.plan.number}-{self.local_now:%Y%m%d}-"
            f"{safe_component(self.call.uniqueid, 'call')}"
        )
        self.note(f"voicemail {name}: play {box.prompt}, record up to {box.max_seconds}s")
        got = yield RecordVoicemail(box.prompt, path, box.format, box.max_seconds, box.silence_seconds, box.beep)
        if got is HUNG_UP:
            return self.abandoned(f"during the voicemail prompt {box.prompt}")
        if not got:
            self.note("no message recorded")
            yield Hangup()
            return self.finish(self.ended_disposition(), f"voicemail {name}: nothing recorded")
        self.voicemail_file = f"{path}.{box.format}"
        if box.thanks_prompt is not None and (yield Play(box.thanks_prompt)) is HUNG_UP:
            return self.finish(self.context or "voicemail", f"message left in {name}")
        yield Hangup()
        return self.finish(self.context or "voicemail", f"message left in {name}")

