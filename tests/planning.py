"""Test helpers: plans from YAML text, a fixed clock, and the flow driven from a table."""

from __future__ import annotations

import random
import textwrap
from datetime import datetime, timezone

from callrouter.config.loader import plan_from_document
from callrouter.config.plan import NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.config.yamlsource import parse_yaml
from callrouter.routing.caller import caller_from
from callrouter.routing.dryrun import DryRun, DryRunInputs, LineOutcome, dry_run
from callrouter.routing.engine import CallInfo, route
from callrouter.routing.health import LineRecord

# Tuesday 2026-11-24 10:30 in Shanghai.
NOW = datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc)
SERVICE = ServiceConfig()


def plan_from(text: str, file: str = "plan.yaml") -> NumberPlan:
    return plan_from_document(parse_yaml(textwrap.dedent(text), file), SERVICE)


def lines_yaml(n: int, indent: int = 6, **extra: object) -> str:
    """n lines named l01..lNN dialling 1380000NNNN."""
    pad = " " * indent
    opts = "".join(f", {k}: {v}" for k, v in extra.items())
    return "\n".join(f"{pad}- {{id: l{i:02d}, number: '138{i:08d}', ring_timeout: 20{opts}}}" for i in range(1, n + 1))


def outcomes(**by_line: str) -> dict[str, LineOutcome]:
    return {line: LineOutcome.parse(spec) for line, spec in by_line.items()}


def run_call(
    plan: NumberPlan,
    *,
    caller: str = "13912345678",
    now: datetime = NOW,
    digits: list[str] | None = None,
    lines: dict[str, LineOutcome] | None = None,
    default: str = "NOANSWER",
    rotation: dict[str, int] | None = None,
    seed: int = 7,
    service: ServiceConfig = SERVICE,
    leave_message: bool = True,
    last_used: dict[str, float] | None = None,
    health: dict[str, LineRecord] | None = None,
) -> DryRun:
    call = CallInfo(number=plan.number, caller=caller_from(caller), uniqueid="1700000000.42")
    inputs = DryRunInputs(
        digits=list(digits or []),
        lines=lines or {},
        default_line=LineOutcome.parse(default),
        rotation=rotation if rotation is not None else {},
        leave_message=leave_message,
        last_used=last_used if last_used is not None else {},
        clock=max((last_used or {}).values(), default=0.0),
        health=health if health is not None else {},
        at=now,
    )
    return dry_run(route(call, plan, service, now, random.Random(seed)), inputs)


def tried(run: DryRun) -> list[tuple[str, str]]:
    return [(a.line_id, a.status) for a in run.result.attempts]
