"""One call: identify it, run the routing flow, execute each effect over AGI, hand the record to the sink.

The routing flow is pure; this module is the edge where its effects become AGI commands and store calls.
A failure is contained to its call: the record is still written (disposition `error`) and the dialplan
is told through CALLROUTER_RESULT so it can fall back to a default line instead of dead air.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Literal, Mapping, get_args

from callrouter.agi import commands
from callrouter.agi.commands import Command
from callrouter.fastagi.calllog import identify, marking
from callrouter.fastagi.channel import AgiChannel, AgiCommandError, AgiTimeout, ChannelHungUp
from callrouter.agi.dialtiming import ANSWERED_CONTEXT, DIALING_CONTEXT, normal_status, whole_seconds
from callrouter.agi.errors import AgiError
from callrouter.agi.protocol import Environment
from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.crm.client import CrmClient, settled, within_budget
from callrouter.crm.parse import CrmResult, clean_text
from callrouter.metrics import RouterMetrics
from callrouter.fastagi.ports import RecordSink
from callrouter.routing.blacklist import RuntimeBlacklist
from callrouter.routing.caller import Caller, caller_from
from callrouter.routing.effects import (
    HUNG_UP,
    Answer,
    Collect,
    Dial,
    DialLeg,
    DialOutcome,
    Digits,
    Effect,
    Hangup,
    HuntAhead,
    LineHealthRead,
    LineHistoryRead,
    LineOutcomeReport,
    Play,
    RecordVoicemail,
    RotationNext,
    StartRecording,
    STORE_EFFECTS,
    dispatch,
)
from callrouter.routing.engine import CallFlow, CallInfo
from callrouter.routing.health import LineChange, LineRecord, masked
from callrouter.routing.hunt_start import HuntStart
from callrouter.model.phone import ascii_digits
from callrouter.model.record import CallRecord, RouteResult
from callrouter.fastagi.ports import LiveCalls, RoutingState

log = logging.getLogger(__name__)

ROUTE_SCRIPTS = frozenset({"route", ""})
HEALTH_SCRIPT = "health"
RESULT_VAR = "CALLROUTER_RESULT"  # read by the dialplan after AGI(): ROUTED, NO_PLAN, UNKNOWN_SCRIPT, BUSY, ERROR, HEALTHY
SessionResult = Literal["ROUTED", "NO_PLAN", "UNKNOWN_SCRIPT", "ERROR", "HEALTHY"]  # a session's (BUSY: the server's gate)
_RESULT_COMMANDS: Mapping[str, Command] = MappingProxyType(
    {value: commands.set_variable(RESULT_VAR, value) for value in get_args(SessionResult)}  # one per call: built once
)
MIN_VOICEMAIL_SAMPLES = 8000  # one second at 8 kHz: less is an empty message


def display_name(text: str) -> str:
    """Caller-ID name for a phone's display: control characters removed, bounded. Quoting does the rest."""
    return clean_text(text, 64)


_ENTITY_ID = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")


def call_source(env: Environment, peer: str) -> str:
    """Which Asterisk sent the call: uniqueids are only unique per Asterisk, so the CDR key includes this.

    The dialplan passes `${ENTITYID}` as the second AGI argument (asterisk/extensions.conf); without it
    (an older dialplan) the connection's address stands in.
    """
    eid = env.args[1].strip().lower() if len(env.args) > 1 else ""
    if _ENTITY_ID.match(eid):
        return f"eid:{eid}"
    return f"ip:{peer}"[:80] if peer else ""


def _lines(legs: tuple[DialLeg, ...]) -> tuple[tuple[str, int], ...]:
    """(key, limit) of each leg, as the store takes them."""
    return tuple((leg.key, leg.max_calls) for leg in legs)


def _return_lease(got: HuntStart, state: RoutingState) -> None:
    """The lease a hunt start took, given back: no Dial will use it."""
    if got.taken and got.lease_key is not None:
        state.release_soon(got.lease_key)


def _give_back(answer: asyncio.Future[HuntStart], state: RoutingState) -> None:
    """A hunt start asked ahead and not used: its lease goes back when (or as soon as) it comes."""

    def release(done: asyncio.Future[HuntStart]) -> None:
        if not done.cancelled() and done.exception() is None:
            _return_lease(done.result(), state)

    answer.add_done_callback(release)


def dialled_number(env: Environment) -> str:
    """The 400 number: the first AGI argument if the dialplan passes one, else DNID, else the extension."""
    for candidate in (env.args[0] if env.args else "", env.dnid, env.extension):
        digits = ascii_digits(candidate)
        if digits and candidate.strip().lower() != "unknown":
            return digits[:20]
    return ""


@dataclass
class SessionDeps:
    """What a call needs from the process; built once by the app and shared read-only."""

    state: RoutingState
    sink: RecordSink
    metrics: RouterMetrics
    clock: Callable[[], datetime]
    rng: random.Random
    instance: str
    runtime_blacklist: Callable[[], RuntimeBlacklist] = RuntimeBlacklist  # the current snapshot of database entries
    crm: CrmClient | None = None  # caller names from the company's CRM
    line_alerts: Callable[[LineChange], Awaitable[None]] | None = None  # told after each line-health report (the manager's messages)
    live: LiveCalls | None = None  # told what the call is doing now (the console's live view); never waited on
    pending: set[asyncio.Future[Any]] = field(default_factory=set)  # the manager's messages after reports not waited for


class CallSession:
    """Runs one call to its end. Created per connection; holds only that call's state."""

    def __init__(self, channel: AgiChannel, env: Environment, config: RoutingConfig, deps: SessionDeps) -> None:
        self.channel, self.env, self.config, self.deps = channel, env, config, deps
        self.started_at = deps.clock()
        self._t0 = time.perf_counter()
        self._waiting_before = channel.waiting_seconds  # reading the header is Asterisk's time, not ours
        self.answered_at: datetime | None = None
        self.plan: NumberPlan | None = None  # known once the number is looked up
        self.held: list[str] = []  # line keys reserved and not yet released
        self.caller_display_set = False
        self._crm_answer: asyncio.Future[CrmResult] | None = None  # owned by the CRM client, never by the call
        self._crm_asked = 0.0
        self._crm: CrmResult | None = None
        self._live_key: tuple[str, str] | None = None  # (uniqueid, source) once reported as in progress
        self.ahead: HuntStart | None = None  # the store's answer at the hunt's start, until its first Dial
        # asked at HuntAhead, while Asterisk starts the recording: (the question, its answer to come)
        self.asked: tuple[tuple[str | None, tuple[tuple[str, int], ...], bool], asyncio.Future[HuntStart]] | None = None

    def prompt_path(self, prompt: str) -> str:
        return f"{self.config.service.asterisk_prompts_dir.rstrip('/')}/{prompt}"

    async def run(self) -> str:
        """Route the call; returns the session outcome label. Every line logged meanwhile names the call."""
        with marking(self.env.uniqueid):
            try:
                return await self._run()
            finally:
                self.tell_live(lambda live, uid, src: live.call_ended(uid, src))

    async def _run(self) -> str:
        script = self.env.script.lstrip("/").split("?", 1)[0]
        if script == HEALTH_SCRIPT:
            await self.tell_dialplan("HEALTHY")  # a liveness probe: `callrouter probe`, or a monitoring dialplan
            return "health"
        if script not in ROUTE_SCRIPTS:
            log.warning("unknown AGI script %r on channel %r", script[:64], self.env.channel[:64])
            await self.tell_dialplan("UNKNOWN_SCRIPT")
            return "unknown_script"
        number = dialled_number(self.env)
        caller = caller_from(self.env.callerid, self.env.calleridname)
        identify(number, caller.number)
        plan = self.config.plan_for(number)
        if plan is None:
            log.warning("no routing plan for number %r (channel %r)", number, self.env.channel[:64])
            await self.tell_dialplan("NO_PLAN")
            return "no_plan"
        self.plan = plan
        if self.deps.live is not None and self.env.uniqueid:
            self._live_key = (self.env.uniqueid[:64], call_source(self.env, self.channel.peer))
            self.tell_live(lambda live, uid, src: live.call_started(uid, src, plan.number, caller.number, self.started_at))
        if self.deps.crm is not None and plan.crm_lookup and caller.number:
            self._crm_answer = self.deps.crm.lookup(caller.number, plan.number)  # runs while the caller hears the menu
            self._crm_asked = time.monotonic()
        blocked = self.deps.runtime_blacklist().for_number(plan.number)
        call = CallInfo(number=plan.number, caller=caller, uniqueid=self.env.uniqueid, runtime_blacklist=blocked)
        state = CallFlow(call, plan, self.config.service, self.started_at, self.deps.rng)
        flow = state.run()
        result: RouteResult | None = None
        outcome = "routed"
        try:
            effect = next(flow)
            while True:
                effect = flow.send(await self.perform(effect))
        except StopIteration as stop:
            result = stop.value
        except AgiError as exc:  # ChannelHungUp never gets here: perform() answers it as HUNG_UP
            kind = "timeout" if isinstance(exc, AgiTimeout) else "protocol_error"
            log.warning("call %s: %s: %s", self.env.uniqueid[:32], type(exc).__name__, exc)
            if isinstance(exc, AgiCommandError):
                self.deps.metrics.protocol_errors.labels(kind="command_refused").inc()
            outcome = kind
        except asyncio.CancelledError:
            # Shutdown cut the call off: still leave its record (lines are released below), then stop.
            await self.write_record(plan, caller, state.partial("error", "cut off by router shutdown"), wait_crm=False)
            raise
        except Exception:  # a bug must cost one call, never the server
            log.exception("call %s: routing failed", self.env.uniqueid[:32])
            outcome = "error"
        finally:
            flow.close()
            await self.release_all()
        if result is None:
            result = state.partial("error", f"session ended: {outcome}")
            await self.tell_dialplan("ERROR")
        else:
            await self.tell_dialplan("ROUTED")
        await self.write_record(plan, caller, result)
        return outcome

    async def tell_dialplan(self, value: SessionResult) -> None:
        """Leave the result for the dialplan; SET VARIABLE is dead-safe, so this works after a hangup too."""
        try:
            await self.channel.command(_RESULT_COMMANDS[value])
        except (AgiError, OSError) as exc:
            log.debug("could not set %s: %s", RESULT_VAR, exc)

    async def perform(self, effect: Effect) -> Any:
        """Execute one effect; channel effects answer HUNG_UP once the caller is gone."""
        if self.channel.dead and not isinstance(effect, (Hangup, *STORE_EFFECTS)):
            return HUNG_UP
        try:
            return await dispatch(effect, self)
        except ChannelHungUp:
            return HUNG_UP

    # -- the effects (routing.effects.EffectHandler) ----------------------------------------------

    # The store is waited for once per hunt (issue 15): the turn, the lines' health and the lease on the
    # line the hunt will most likely ring first come in one answer (`start_hunt`), kept in `self.ahead`
    # for the LineHealthRead and the Dial that follow. Releases and answered-call reports are sent
    # without waiting. A failure report is waited for: the next call, on any router, must see it.

    async def hunt_ahead(self, effect: HuntAhead) -> None:
        """Ask the store now; the RotationNext or LineHealthRead that follows takes the answer (`start_hunt`)."""
        self.drop_ahead()
        self.drop_asked()
        if not self.deps.state.remote:  # process memory answers at once: nothing to overlap, no task to pay for
            return
        question = (effect.key, _lines(effect.legs), effect.health)
        self.asked = (question, asyncio.ensure_future(self.deps.state.start_hunt(*question)))

    async def start_hunt(self, key: str | None, legs: tuple[DialLeg, ...], health: bool) -> HuntStart:
        """The store's answer at the hunt's start: the one asked ahead if it was this question, else asked now."""
        question = (key, _lines(legs), health)
        asked, self.asked = self.asked, None
        state = self.deps.state
        started = time.perf_counter() if state.remote else None  # process memory answers at once: not timed
        try:
            if asked is not None:
                if asked[0] == question:
                    return await asked[1]
                _give_back(asked[1], state)
            return await state.start_hunt(*question)
        finally:
            if started is not None:
                self.deps.metrics.state_wait.observe(time.perf_counter() - started)

    async def rotation_next(self, effect: RotationNext) -> int:
        if not effect.legs:
            return await self.deps.state.next_turn(effect.key)
        self.drop_ahead()
        self.ahead = await self.start_hunt(effect.key, effect.legs, effect.health)
        return self.ahead.turn or 0

    async def line_history_read(self, effect: LineHistoryRead) -> dict[str, float]:
        return await self.deps.state.last_used(effect.keys)

    async def line_health_read(self, effect: LineHealthRead) -> dict[str, LineRecord]:
        known = self.ahead.health_of(effect.keys) if self.ahead is not None else None
        if known is not None:
            return known
        if not effect.legs:
            return await self.deps.state.line_health(effect.keys)
        self.drop_ahead()
        self.ahead = await self.start_hunt(None, effect.legs, True)
        return self.ahead.health_of(effect.keys) or {}

    def drop_ahead(self) -> None:
        """Give back the lease taken at the hunt's start if no Dial used it."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            _return_lease(ahead, self.deps.state)

    def drop_asked(self) -> None:
        """The same for a hunt start asked ahead that no hunt took (the caller left during the recording's start)."""
        asked, self.asked = self.asked, None
        if asked is not None:
            _give_back(asked[1], self.deps.state)

    async def line_outcome_report(self, effect: LineOutcomeReport) -> LineRecord:
        """Report to the shared state; when that suspends or restores a line, the manager is told."""
        at = self.deps.clock().timestamp()
        if effect.status == "ANSWER":  # the record after an answer is clean whatever the store held: no need to wait
            reported = self.deps.state.report_soon(effect.key, effect.status, at)
            reported.add_done_callback(lambda done: self.tell_manager(effect.key, done.result(), at))
            return LineRecord(effect.key, last_status="ANSWER", updated_at=at)
        before, after = await self.deps.state.report_line(effect.key, effect.status, at)
        self.tell_manager(effect.key, (before, after), at)
        return after

    def tell_manager(self, key: str, change: tuple[LineRecord, LineRecord], at: float) -> None:
        """Queue the manager's message when a report suspended or restored a line (the call never waits)."""
        before, after = change
        if self.deps.line_alerts is None or before == after:
            return
        alerts = self.deps.line_alerts

        async def tell() -> None:
            try:
                await alerts(LineChange(before, after, at))
            except Exception as exc:  # the call goes on; the message is lost, and said so
                log.warning("line %s: the manager's message could not be queued: %s: %s", masked(key[:64]), type(exc).__name__, exc)
                self.deps.metrics.store_errors.labels(operation="line_alerts").inc()

        task = asyncio.ensure_future(tell())
        self.deps.pending.add(task)
        task.add_done_callback(self.deps.pending.discard)

    async def answer(self, effect: Answer) -> bool:
        await self.channel.answer()
        return True

    async def play(self, effect: Play) -> None:
        await self.channel.stream_file(self.prompt_path(effect.prompt))

    async def collect(self, effect: Collect) -> Digits:
        digits, timed_out = await self.channel.get_data(self.prompt_path(effect.prompt), effect.timeout_ms, effect.max_digits)
        return Digits(digits, timed_out)

    async def start_recording(self, effect: StartRecording) -> bool:
        flags = "b" if effect.bridged_only else ""
        return await self.channel.exec("MixMonitor", f"{effect.path}.{effect.format},{flags}") == 0

    async def record_voicemail(self, effect: RecordVoicemail) -> bool:
        ch = self.channel
        await ch.stream_file(self.prompt_path(effect.prompt))
        samples = await ch.record_file(effect.path, effect.format, effect.max_seconds, effect.silence_seconds, effect.beep)
        return samples >= MIN_VOICEMAIL_SAMPLES

    async def hangup(self, effect: Hangup) -> None:
        if not self.channel.dead:
            await self.channel.hangup()

    async def dial(self, effect: Dial) -> DialOutcome:
        """Reserve the legs against their limits, ring them, release them."""
        full: list[int] = []
        reserved: list[int] = []
        ahead, self.ahead = self.ahead, None
        for i, leg in enumerate(effect.legs):
            if ahead is not None and ahead.lease_key == leg.key:  # asked at the hunt's start
                got, ahead = ahead.taken, None
            else:
                got = await self.deps.state.acquire(leg.key, leg.max_calls)
            if got:
                self.held.append(leg.key)
                reserved.append(i)
            else:
                full.append(i)
        if ahead is not None:  # the hunt rings another line first: that lease goes back
            self.ahead = ahead
            self.drop_ahead()
        if not reserved:
            return DialOutcome("FULL", None, 0, 0, tuple(full))
        try:
            assert self.plan is not None  # a Dial comes only from a plan's flow
            await self.show_caller_name(self.plan)
            targets = [effect.legs[i].target for i in reserved]
            timeouts = self.config.service.timeouts
            before = self.deps.clock()
            lines = ",".join(effect.legs[i].line_id for i in reserved)
            answered_by = before + timedelta(seconds=effect.timeout + 1)  # a Dial still running then was answered
            self.tell_live(lambda live, uid, src: live.call_changed(uid, src, "ringing", lines, talking_after=answered_by))
            result = await self.channel.dial(
                targets, effect.timeout, effect.options, reply_timeout=timeouts.max_call,
                timing_hooks=self.config.service.dialing.timing_hooks,
            )
        finally:
            for i in reserved:
                await self.release(effect.legs[i].key)
            self.tell_live(lambda live, uid, src: live.call_changed(uid, src, "ivr"))
        status = normal_status(result.status)
        if status == "OTHER":
            log.warning("call %s: Dial returned an undocumented DIALSTATUS %r", self.env.uniqueid[:32], result.status[:32])
        timing = result.timing
        answered_leg = None
        if status == "ANSWER":
            answered_leg = next((i for i in reserved if effect.legs[i].target == result.answered_target), reserved[0])
            self.answered_at = before + timedelta(seconds=timing.ring_seconds)
            if timing.timed_by != "asterisk":
                log.warning(
                    "call %s: no answer stamp from the dialplan (contexts %s/%s missing?): talk time includes ringing",
                    self.env.uniqueid[:32], DIALING_CONTEXT, ANSWERED_CONTEXT,
                )
            if answered_leg is not None and effect.remember_answer:
                await self.deps.state.mark_used(effect.legs[answered_leg].key, self.deps.clock().timestamp())
        metrics = self.deps.metrics
        metrics.count(metrics.dial_attempts, status)
        metrics.count(metrics.dial_timing, timing.timed_by)
        return DialOutcome(
            status, answered_leg, whole_seconds(timing.ring_seconds), whole_seconds(timing.talk_seconds), tuple(full),
            timed_by=timing.timed_by,
        )

    def tell_live(self, tell: Callable[[LiveCalls, str, str], None]) -> None:
        """Tell the live view about this call (send, never wait); whatever goes wrong there is logged, and
        the call goes on."""
        if self.deps.live is None or self._live_key is None:
            return
        try:
            tell(self.deps.live, *self._live_key)
        except Exception as exc:
            log.warning("call %s: the live view was not told: %s: %s", self.env.uniqueid[:32], type(exc).__name__, exc)

    async def show_caller_name(self, plan: NumberPlan) -> None:
        """Show the caller's name on the answering phone, once, cleaned of control characters."""
        if self.caller_display_set:
            return
        self.caller_display_set = True
        crm = await self.crm_result()
        name = display_name(crm.name or self.env.calleridname)  # the CRM's name wins over the network's
        if name and name.lower() != "unknown":
            await self.channel.set_variable("CALLERID(name)", name)

    async def release(self, key: str) -> None:
        """Give the line back without waiting for the store (the lease's TTL covers a crash)."""
        if key in self.held:
            self.held.remove(key)
            try:
                self.deps.state.release_soon(key)
            except Exception:  # a store outage must not leave the call hanging; the store expires stale counts
                log.exception("could not release line %s", key)
                self.deps.metrics.store_errors.labels(operation="state").inc()

    async def release_all(self) -> None:
        self.drop_ahead()
        self.drop_asked()
        for key in list(self.held):
            await self.release(key)

    async def crm_result(self, wait: bool = True) -> CrmResult:
        """The CRM's answer, waiting at most what is left of the budget (once); then the call goes on."""
        if self._crm is not None:
            if self._crm.source == "timeout" and self._crm_answer is not None:
                self._crm = settled(self._crm_answer) or self._crm  # it came while the call went on: the CDR still gets it
            return self._crm
        if self._crm_answer is None or self.deps.crm is None:
            self._crm = CrmResult("skipped")
            return self._crm
        left = self.deps.crm.settings.timeout - (time.monotonic() - self._crm_asked) if wait else 0.0
        self._crm = await within_budget(self._crm_answer, left)
        if self._crm.source == "timeout" and not self._crm_answer.done():
            self.deps.metrics.crm_lookups.labels(result="over_budget").inc()
        return self._crm

    async def write_record(self, plan: NumberPlan, caller: Caller, result: RouteResult, *, wait_crm: bool = True) -> None:
        crm = await self.crm_result(wait_crm)
        trace = result.trace
        if crm.source in ("hit", "cached"):
            trace = (*trace, f"CRM: {crm.name}" + (f" (tags: {', '.join(crm.tags)})" if crm.tags else ""))
        elif crm.source != "skipped":
            trace = (*trace, f"CRM: no name ({crm.source})")
        ended = self.deps.clock()
        record = CallRecord(
            uniqueid=self.env.uniqueid[:64] or f"callrouter-{uuid.uuid4().hex}",  # the CDR key; never empty
            number=plan.number,
            caller=caller.number,
            caller_raw=caller.raw,
            caller_name=crm.name or caller.name,
            channel=self.env.channel[:128],
            source=call_source(self.env, self.channel.peer),
            started_at=self.started_at,
            ended_at=ended,
            answered_at=self.answered_at,
            disposition=result.disposition,
            reason=result.reason,
            ivr_path=result.ivr_path,
            group=result.group,
            strategy=result.strategy,
            attempts=result.attempts,
            answered_line=result.answered_line,
            talk_seconds=result.talk_seconds,
            ring_seconds=sum(a.ring_seconds for a in result.attempts),
            recording_file=result.recording_file,
            voicemail_file=result.voicemail_file,
            instance=self.deps.instance,
            router_ms=round((time.perf_counter() - self._t0 - (self.channel.waiting_seconds - self._waiting_before)) * 1000, 3),
            trace=trace,
        )
        self.deps.metrics.count(self.deps.metrics.calls, plan.number, result.disposition)
        try:
            await self.deps.sink.submit(record)
        except Exception:
            log.exception("call %s: the record sink failed", record.uniqueid)
            self.deps.metrics.sink_errors.inc()

