"""`callrouter blacklist add|remove|list`: runtime entries in the database, seen by every router."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig
from callrouter.model.phone import normalize_number
from callrouter.routing.blacklist import GLOBAL_SCOPE

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

HELP = "runtime blacklist entries in the database (every router sees them)"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="block a caller")
    add_database_arguments(p)
    p.add_argument("caller")
    p.add_argument("--scope", help="a 400 number; default: every number")
    p.add_argument("--reason", default="")
    p.add_argument("--by", default="cli", help="who blocked it, for the record")
    p.add_argument("--expires", help="ISO time when the entry lapses")
    p = sub.add_parser("remove", help="unblock a caller")
    add_database_arguments(p)
    p.add_argument("caller")
    p.add_argument("--scope")
    p = sub.add_parser("list", help="live entries: scope, caller, added, expires, by, reason")
    add_database_arguments(p)
    p.add_argument("--scope")


def run(args: argparse.Namespace) -> int:
    from callrouter.store.blacklist import BlacklistInputError, BlacklistStore

    now = datetime.now(timezone.utc)

    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        store = BlacklistStore(engine)
        if args.action == "list":
            for e in await store.entries(now, args.scope, numbers=None):
                until = e.expires_at.isoformat(timespec="seconds") if e.expires_at else "-"
                print(f"{e.scope}\t{e.caller}\t{e.created_at.isoformat(timespec='seconds')}\t{until}\t{e.created_by}\t{e.reason}")
            return EXIT_OK
        scope = args.scope or GLOBAL_SCOPE
        if args.action == "add":
            try:
                expires = datetime.fromisoformat(args.expires) if args.expires else None
            except ValueError:
                raise BlacklistInputError(f"--expires {args.expires[:40]!r} is not an ISO time (e.g. 2026-12-31T18:00+08:00)") from None
            if expires is not None and expires.tzinfo is None:
                expires = expires.astimezone()  # a time without zone is the operator's local time
            entry = await store.add(scope, args.caller, args.reason, args.by, expires, now=now, numbers=None)
            print(f"blocked {entry.caller} on {'every number' if entry.scope == GLOBAL_SCOPE else entry.scope}")
            return EXIT_OK
        if await store.remove(scope, args.caller, numbers=None):
            print(f"unblocked {normalize_number(args.caller)} on {'every number' if scope == GLOBAL_SCOPE else scope}")
            return EXIT_OK
        print(f"{normalize_number(args.caller)} was not blocked on {scope}", file=sys.stderr)
        return EXIT_FAILED

    return run_on_database(args, body)
