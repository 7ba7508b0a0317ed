"""`callrouter usage`: each number's package this month; `callrouter usage size`: which package to buy."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from callrouter.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_config_argument, load_config, open_database

HELP = "minutes used this month against each number's package; `usage size` recommends a package"
DEFAULT_SIZES: tuple[int, ...] = (500, 1000, 2000, 3000, 5000, 10_000, 20_000, 50_000, 100_000)


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--number")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    inner = parser.add_subparsers(dest="usage_command")
    s = inner.add_parser("size", help="recommend a package and a number of agents from expected traffic")
    s.add_argument("--calls-per-day", type=float, required=True)
    s.add_argument("--minutes-per-call", type=float, required=True, help="average talk time")
    s.add_argument("--working-days", type=int, default=22, help="days a month the number is staffed")
    s.add_argument("--answer-rate", type=float, default=0.9)
    s.add_argument("--peak-share", type=float, default=0.15, help="share of a day's calls in its busiest hour (see `callrouter stats`)")
    s.add_argument("--answer-within", type=float, default=20.0, help="seconds: the service-level target ...")
    s.add_argument("--service-level", type=float, default=0.8, help="... met for this share of calls")
    s.add_argument("--config", default=None, help="take the package sizes from this config's packages.sizes")


def run(args: argparse.Namespace) -> int:
    from callrouter.store.db import StoreError

    if getattr(args, "usage_command", None) == "size":
        return size(args)
    try:
        return asyncio.run(_usage(args))
    except StoreError as exc:
        print(f"callrouter usage: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


async def _usage(args: argparse.Namespace) -> int:
    from callrouter.packages.rules import month_bounds
    from callrouter.packages.watcher import usage_of
    from callrouter.store.outbox import queued_since

    config = load_config(args.config)
    plans = [p for n, p in sorted(config.plans.items()) if p.package is not None and (args.number is None or n == args.number)]
    if not plans:
        print("no plan has a package" + (f" for {args.number}" if args.number else "") + " (add `package:` to the plan)", file=sys.stderr)
        return EXIT_FAILED
    rows: list[dict[str, Any]] = []
    async with open_database(config) as engine:
        now = datetime.now(timezone.utc)
        for plan in plans:
            usage = await usage_of(engine, plan, config.service.timezone, now)
            start, _ = month_bounds(usage.today, ZoneInfo(plan.timezone or config.service.timezone))
            sent = await queued_since(engine, "package_alert", plan.number, start)
            alerts = sorted({f"{q.dedupe_key.split(':')[3]} ({q.status})" for q in sent})
            rows.append({"number": plan.number, "month": usage.month, "allowance": usage.allowance, "used": usage.used,
                         "percent": usage.percent, "expires": usage.expires.isoformat(), "days_left": usage.days_left, "alerts": alerts})
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        print(f"{'number':<12} {'month':<8} {'used':>8} {'allowance':>9} {'%':>5}  {'expires':<10} {'days':>5}  alerts this month")
        for r in rows:
            print(f"{r['number']:<12} {r['month']:<8} {r['used']:>8} {r['allowance']:>9} {r['percent']:>4}%  {r['expires']:<10} {r['days_left']:>5}  "
                  + (", ".join(r["alerts"]) or "-"))
    return EXIT_OK


def size(args: argparse.Namespace) -> int:
    from callrouter.packages.rules import HEADROOM, billed_per_call, size_package

    sizes = DEFAULT_SIZES
    if args.config:
        sizes = load_config(args.config).service.packages.sizes
    try:
        s = size_package(args.calls_per_day, args.minutes_per_call, args.working_days, sizes, answer_rate=args.answer_rate,
                         peak_share=args.peak_share, target_seconds=args.answer_within, target_level=args.service_level)
    except ValueError as exc:
        print(f"callrouter usage size: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"expected billed minutes a month: {s.billed_minutes_per_month:,} "
          f"({args.calls_per_day:g} calls/day x {args.answer_rate:.0%} answered x ~{billed_per_call(args.minutes_per_call):g} billed min x {args.working_days} days)")
    print(f"with {HEADROOM - 1:.0%} headroom: {s.with_headroom:,}")
    print(f"recommended package: {s.package:,} minutes/month" if s.package else f"more than the largest package ({sizes[-1]:,}): ask the carrier for a custom one")
    print(f"busiest hour: {s.peak_hour_calls:.0f} calls = {s.traffic_erlangs:.1f} erlangs; "
          f"agents needed: {s.agents} (answers {s.service_level:.0%} within {args.answer_within:g} s, Erlang C)")
    return EXIT_OK
