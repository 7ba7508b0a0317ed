"""`callrouter recordings purge`: the retention purge by hand (`--dry-run` to see what it would delete)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callrouter.retention.purge import Seen

HELP = "recording retention"


def _days(text: str) -> int:
    days = int(text)
    if days < 1:
        raise argparse.ArgumentTypeError("at least 1 day")
    return days


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="recordings_command", required=True)
    p = sub.add_parser("purge", help="delete recordings older than retention.recordings_days, inside recordings_dir only")
    add_database_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    p.add_argument("--days", type=_days, help="override retention.recordings_days")


def run(args: argparse.Namespace) -> int:
    """Each file as it goes, then the totals; exit 1 if a file could not be deleted, 2 if the folder is not here."""
    from callrouter.retention.purge import purge

    async def body(engine: AsyncEngine, config: RoutingConfig) -> int:
        settings = config.service.retention
        now = datetime.now(timezone.utc)
        cutoff = now - timedelta(days=args.days or settings.recordings_days)
        verb = "would delete" if args.dry_run else "deleted"

        def show(event: Seen) -> None:
            if event.action in ("deleted", "orphan"):
                print(f"{verb} {event.name}" + (" (no CDR)" if event.action == "orphan" else ""))
            elif event.action in ("refused", "failed"):
                print(f"{event.action} {event.name}: {event.why}", file=sys.stderr)

        report = await purge(engine, config.service.recordings_dir, cutoff, now, dry_run=args.dry_run, orphans=settings.orphans, seen=show)
        print(
            f"{verb} {report.deleted} recordings older than {cutoff:%Y-%m-%d} ({report.bytes:,} bytes, {report.orphans} without a CDR); "
            f"{report.already_gone} already gone; {report.refused} refused; {report.failed} failed"
            + ("; nothing was changed" if args.dry_run else f"; {report.marked} CDRs marked; {report.folders} folders removed")
        )
        return EXIT_FAILED if report.failed else EXIT_OK

    return run_on_database(args, body)
