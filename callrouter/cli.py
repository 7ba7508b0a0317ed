"""The `callrouter` command: serve, check, explain, simulate, probe; db, stats, blacklist (cli_store); prompts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
from datetime import datetime, timezone
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.cli_store import add_subcommands
from callrouter.config.yamlsource import ConfigError
from callrouter.ami.cli import add_subcommand as add_test_call_subcommand
from callrouter.exporter.cli import add_subcommand as add_exporter_subcommand
from callrouter.packages.cli import add_subcommand as add_usage_subcommand
from callrouter.prompts.cli import add_subcommand as add_prompts_subcommand
from callrouter.prompts.inventory import check_prompts
from callrouter.retention.purge import add_subcommand as add_recordings_subcommand


def _load(path: str) -> RoutingConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} error(s); nothing was loaded", file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    from callrouter.app import serve

    config = _load(args.config)
    if config is None:
        return 2
    logging.basicConfig(
        level=args.log_level or config.service.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check at start is not news
    from callrouter.api.auth import AdminConfigError
    from callrouter.config.envsubst import MissingEnvironment
    from callrouter.store.db import StoreError

    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.event_loop)) as runner:
            return runner.run(serve(config, host=args.host, port=args.port, admin_port=args.admin_port))
    except (StoreError, AdminConfigError, MissingEnvironment) as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return 2


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when available (about 15% less CPU per call, see docs/benchmarks.md), else asyncio's own."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SystemExit("--event-loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    for number, plan in sorted(config.plans.items()):
        groups = ", ".join(f"{name} ({g.strategy}, {len(g.lines)} lines)" for name, g in plan.hunt_groups.items())
        print(f"{config.sources[number]}: {number} {plan.name}: OK - menus: {len(plan.menus)}; groups: {groups}")
    missing = check_prompts(config)
    for line in missing:
        print(line, file=sys.stderr)
    if missing:
        print(f"{len(missing)} prompt use(s) have no file in {config.service.prompts_dir}", file=sys.stderr)
    for warning in notify_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if missing else 0


def notify_warnings(config: RoutingConfig) -> list[str]:
    """Settings that are valid but will not do what they seem to: messages nobody can send."""
    out = []
    notify = config.service.notify
    for number, plan in sorted(config.plans.items()):
        wants_sms = bool(plan.notify.recipients) or (plan.package is not None and bool(plan.package.recipients))
        if wants_sms and notify.sms is None:
            out.append(f"{config.sources[number]}: SMS recipients are set but config.yaml has no notify.sms gateway: no SMS will be sent")
        if (plan.notify.webhook or (plan.package is not None and plan.package.webhook)) and notify.webhook is None:
            out.append(f"{config.sources[number]}: webhook messages are asked for but config.yaml has no notify.webhook")
    return out


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


def cmd_explain(args: argparse.Namespace) -> int:
    from callrouter.routing.caller import caller_from
    from callrouter.routing.dryrun import DryRunInputs, LineOutcome, dry_run
    from callrouter.routing.engine import CallInfo, route

    config = _load(args.config)
    if config is None:
        return 2
    number = "".join(ch for ch in args.number if ch.isdigit())
    plan = config.plans.get(number)
    if plan is None:
        print(f"no plan routes {args.number}; known: {', '.join(sorted(config.plans))}", file=sys.stderr)
        return 2
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
        return 2
    rotation = {}
    for spec in args.rotation:
        group, _, turn = spec.partition("=")
        if not turn.isdigit():
            print(f"--rotation {spec!r}: write GROUP=TURN, TURN a whole number", file=sys.stderr)
            return 2
        rotation[f"{plan.number}/{group}"] = int(turn)
    digits = [d.strip() for part in args.digits for d in part.split(",")]
    now = _parse_time(args.time, plan.timezone or config.service.timezone)
    call = CallInfo(number=plan.number, caller=caller_from(args.caller, args.caller_name), uniqueid="explain")
    inputs = DryRunInputs(digits=digits, lines=lines, default_line=default, rotation=rotation, leave_message=not args.no_message)
    run = dry_run(route(call, plan, config.service, now, random.Random(args.seed)), inputs)
    for i, step in enumerate(run.result.trace, 1):
        print(f"{i:2d}. {step}")
    result = run.result
    print()
    print(f"disposition: {result.disposition}   answered by: {result.answered_line or '-'}   IVR: {' '.join(result.ivr_path) or '-'}")
    for a in result.attempts:
        print(f"  attempt {a.line_id:<16} {a.target:<40} {a.status:<12} rang {a.ring_seconds}s")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from callrouter.emulator.simulate import simulate_main

    return simulate_main(args)


def cmd_probe(args: argparse.Namespace) -> int:
    """Liveness over the real protocol: connect as Asterisk would, run the `health` script."""
    from callrouter.emulator.asterisk import run_call
    from callrouter.emulator.script import CallScript

    try:
        t = asyncio.run(run_call(args.host, args.port, CallScript(script="health", callerid="", dnid=""), timeout=args.timeout))
    except OSError as exc:
        print(f"unhealthy: cannot connect to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    if t.variables.get("CALLROUTER_RESULT") != "HEALTHY":
        print(f"unhealthy: {t.error or 'no HEALTHY answer'}", file=sys.stderr)
        return 1
    if args.admin:
        problem = probe_http(args.admin.rstrip("/") + "/healthz", args.timeout)
        if problem:
            print(f"unhealthy: admin API: {problem}", file=sys.stderr)
            return 1
    print("healthy")
    return 0


def probe_http(url: str, timeout: float) -> str | None:
    """None when the URL answers 200, else why not. Plain urllib: a health check should not need the event loop."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach {url}: {getattr(exc, 'reason', exc)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callrouter", description="FastAGI call router for 400 numbers")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the FastAGI server")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--host", help="override listen.host")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--admin-port", type=int, help="override admin.port (0: any free port; the log says which)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate config.yaml and every plan; list every error")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="dry-run a call through a plan and print every decision")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--number", required=True, help="the 400 number dialled")
    p.add_argument("--caller", default="13912345678", help="caller ID ('unknown' for withheld)")
    p.add_argument("--caller-name", default="")
    p.add_argument("--time", help="when the call arrives, ISO (plan's local time unless an offset is given)")
    p.add_argument("--digits", action="append", default=[], help="digits per menu prompt, comma-separated; '' = silence, HANGUP = caller hangs up")
    p.add_argument("--line", action="append", default=[], help="LINE_ID=STATUS[:ring[:talk]], e.g. zhang=BUSY li=ANSWER:8")
    p.add_argument("--default-line", default="NOANSWER", help="outcome of lines not given with --line")
    p.add_argument("--rotation", action="append", default=[], help="GROUP=TURN: hunts of this round-robin group before this call (turn n starts at line n mod lines)")
    p.add_argument("--seed", type=int, default=0, help="random seed for random/weighted groups")
    p.add_argument("--no-message", action="store_true", help="caller leaves no voicemail")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("probe", help="health check: run the FastAGI 'health' script against a server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4573)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--admin", metavar="URL", help="also require GET URL/healthz of the admin API to answer 200, e.g. http://127.0.0.1:8080")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("simulate", help="place emulated Asterisk calls against a running server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4573)
    p.add_argument("--number", required=True)
    p.add_argument("--caller", default="13912345678")
    p.add_argument("--caller-name", default="unknown")
    p.add_argument("--digits", action="append", default=[], help="digits per prompt, comma-separated; '' = silence")
    p.add_argument("--target", action="append", default=[], help="DIAL_TARGET=STATUS[:ring[:talk]] as Asterisk sees the target")
    p.add_argument("--default", default="NOANSWER", help="outcome of targets not given with --target")
    p.add_argument("--hangup", help="COMMAND[:N[:during|notice_first|after]], e.g. 'GET DATA:1' or 'EXEC DIAL:2'")
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--quiet", action="store_true", help="summary only, no transcript")
    p.set_defaults(func=cmd_simulate)

    add_subcommands(sub)
    add_prompts_subcommand(sub)
    add_recordings_subcommand(sub)
    add_exporter_subcommand(sub)
    add_test_call_subcommand(sub)
    add_usage_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
