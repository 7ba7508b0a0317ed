"""`callrouter stats`: one 400 number's statistics, from the quarter-hour sums."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callrouter.cli.common import EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

HELP = "call statistics of one 400 number, per local day and hour, and per line"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def configure(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument("--number", required=True)
    parser.add_argument("--from", dest="from_day", type=_day, required=True, help="first day, YYYY-MM-DD (the plan's local time)")
    parser.add_argument("--to", dest="to_day", type=_day, required=True, help="last day, inclusive")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--timezone", help="report in this time zone instead of the plan's")


def run(args: argparse.Namespace) -> int:
    from callrouter.store.stats import format_csv, format_json, format_text, number_report

    async def body(engine: AsyncEngine, config: RoutingConfig) -> int:
        number = "".join(ch for ch in args.number if ch.isdigit())
        plan = config.plans.get(number)
        tz = args.timezone or (plan.timezone if plan is not None and plan.timezone else config.service.timezone)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"--timezone {tz[:60]!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
        report = await number_report(engine, number, args.from_day, args.to_day, tz)
        formats: dict[str, Callable[[Any], str]] = {"table": format_text, "csv": format_csv, "json": format_json}
        sys.stdout.write(formats[args.format](report))
        return EXIT_OK

    return run_on_database(args, body)
