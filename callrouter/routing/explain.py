"""One dry-run call through a plan from plain answers: what `callrouter explain` and the console's "who rings
if this caller calls at this time" form both do, so neither builds the engine's inputs by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from callrouter.config.plan import Blacklist, NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.model.record import RouteResult
from callrouter.routing.caller import caller_from
from callrouter.routing.dryrun import DryRunInputs, LineOutcome, dry_run
from callrouter.routing.engine import CallInfo, route
from callrouter.routing.health import LineRecord


@dataclass(frozen=True)
class Question:
    """Who calls, when, what they press, and how the lines behave (a line not named: `default_line`)."""

    caller: str
    at: datetime  # aware
    digits: tuple[str, ...] = ()  # one entry per menu prompt: '' is silence, 'HANGUP' a caller who hangs up
    caller_name: str = ""
    lines: dict[str, LineOutcome] = field(default_factory=dict)
    default_line: LineOutcome = field(default_factory=lambda: LineOutcome.parse("NOANSWER"))
    rotation: dict[str, int] = field(default_factory=dict)  # group name -> round-robin turns taken before
    health: dict[str, LineRecord] = field(default_factory=dict)  # line health by dial target
    runtime_blacklist: Blacklist = Blacklist()  # the database's entries for this number
    seed: int = 0
    leave_message: bool = True


def plan_zone(plan: NumberPlan, service: ServiceConfig) -> ZoneInfo:
    return ZoneInfo(plan.timezone or service.timezone)


def local_time(text: str, zone: ZoneInfo) -> datetime:
    """ISO date-time; without an offset it is the plan's local time. ValueError when it is not a time."""
    when = datetime.fromisoformat(text.strip())
    return when.replace(tzinfo=zone) if when.tzinfo is None else when


def split_digits(parts: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """"2,1" (and repeated options) as one entry per menu prompt."""
    return tuple(d.strip() for part in parts for d in part.split(","))


def explain(plan: NumberPlan, service: ServiceConfig, question: Question) -> RouteResult:
    """The call's route, with its trace, as the live session would take it given these answers."""
    call = CallInfo(number=plan.number, caller=caller_from(question.caller, question.caller_name), uniqueid="explain",
                    runtime_blacklist=question.runtime_blacklist)
    inputs = DryRunInputs(
        digits=list(question.digits), lines=dict(question.lines), default_line=question.default_line,
        rotation={f"{plan.number}/{group}": turn for group, turn in question.rotation.items()},
        leave_message=question.leave_message, health=dict(question.health), at=question.at,
    )
    return dry_run(route(call, plan, service, question.at, random.Random(question.seed)), inputs).result
