"""`callrouter explain`: a dry run of one call through a plan, every decision printed."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from callrouter.cli.common import EXIT_BAD_INPUT, EXIT_OK, add_config_argument, load_config

HELP = "dry-run a call through a plan and print every decision"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--number", required=True, help="the 400 number dialled")
    parser.add_argument("--caller", default="13912345678", help="caller ID ('unknown' for withheld)")
    parser.add_argument("--caller-name", default="")
    parser.add_argument("--time", help="when the call arrives, ISO (plan's local time unless an offset is given)")
    parser.add_argument("--digits", action="append", default=[], help="digits per menu prompt, comma-separated; '' = silence, HANGUP = caller hangs up")
    parser.add_argument("--line", action="append", default=[], help="LINE_ID=STATUS[:ring[:talk]], e.g. zhang=BUSY li=ANSWER:8")
    parser.add_argument("--default-line", default="NOANSWER", help="outcome of lines not given with --line")
    parser.add_argument("--rotation", action="append", default=[], help="GROUP=TURN: hunts of this round-robin group before this call (turn n starts at line n mod lines)")
    parser.add_argument(
        "--health", action="append", default=[],
        help="LINE_ID=STATUS:COUNT[@HH:MM]: the line's failures since it last answered, e.g. zhang=NOANSWER:4@10:02 (STATUS: CHANUNAVAIL, CONGESTION, NOANSWER)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for random/weighted groups")
    parser.add_argument("--no-message", action="store_true", help="caller leaves no voicemail")


def _parse_time(text: str | None, tz: str) -> datetime:
    if not text:
        return datetime.now(timezone.utc)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"--time {text!r}: use ISO form, e.g. 2026-11-24T10:30 (plan's local time) or with +08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when


def run(args: argparse.Namespace) -> int:
    from callrouter.model.phone import ascii_digits
    from callrouter.routing.dryrun import LineOutcome, health_record
    from callrouter.routing.explain import Question, explain, split_digits
    from callrouter.routing.health import line_key

    config = load_config(args.config)
    number = ascii_digits(args.number)
    plan = config.plan_for(number)
    if plan is None:
        print(f"no plan routes {args.number}; known: {', '.join(sorted(config.plans))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        lines = {}
        for spec in args.line:
            key, sep, outcome = spec.partition("=")
            if not sep:
                raise ValueError(f"--line {spec!r}: write LINE_ID=STATUS[:ring[:talk]]")
            lines[key.strip()] = LineOutcome.parse(outcome)
        default = LineOutcome.parse(args.default_line)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    rotation = {}
    for spec in args.rotation:
        group, _, turn = spec.partition("=")
        if not turn.isdigit():
            print(f"--rotation {spec!r}: write GROUP=TURN, TURN a whole number", file=sys.stderr)
            return EXIT_BAD_INPUT
        rotation[group] = int(turn)
    digits = split_digits(args.digits)
    now = _parse_time(args.time, plan.timezone or config.service.timezone)
    keys = {line.id: line_key(line, config.service.dialing.template) for group in plan.hunt_groups.values() for line in group.lines}
    health = {}
    try:
        for spec in args.health:
            line_id, sep, state = spec.partition("=")
            if not sep or line_id.strip() not in keys:
                raise ValueError(f"--health {spec!r}: write LINE_ID=STATUS:COUNT[@HH:MM] with a line of this plan ({', '.join(sorted(keys))})")
            key = keys[line_id.strip()]
            health[key] = health_record(key, state, now.astimezone(ZoneInfo(plan.timezone or config.service.timezone)))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    result = explain(plan, config.service, Question(
        caller=args.caller, caller_name=args.caller_name, at=now, digits=digits, lines=lines, default_line=default,
        rotation=rotation, health=health, seed=args.seed, leave_message=not args.no_message,
    ))
    for i, step in enumerate(result.trace, 1):
        print(f"{i:2d}. {step}")
    print()
    print(f"disposition: {result.disposition}   answered by: {result.answered_line or '-'}   IVR: {' '.join(result.ivr_path) or '-'}")
    for a in result.attempts:
        print(f"  attempt {a.line_id:<16} {a.target:<40} {a.status:<12} rang {a.ring_seconds}s")
    return EXIT_OK
