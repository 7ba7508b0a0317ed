"""`callrouter db`, `stats` and `blacklist`: the commands that work on the database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date, datetime, timezone
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.config.yamlsource import ConfigError
from callrouter.model.phone import normalize_number
from callrouter.routing.blacklist import GLOBAL_SCOPE
from callrouter.store.blacklist import BlacklistInputError, BlacklistStore
from callrouter.store.db import StoreError, open_engine, require_current_schema, resolve_url, schema_status, shown, upgrade
from callrouter.store.stats import format_csv, format_json, format_text, number_report


def _config(path: str) -> RoutingConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise StoreError("\n".join(str(i) for i in exc.issues) + f"\n{len(exc.issues)} error(s) in the configuration") from None


def _run(args: argparse.Namespace, body: Callable[[AsyncEngine, RoutingConfig], Awaitable[int]], *, needs_schema: bool = True) -> int:
    """Open the configured database, run `body`, report StoreError as a one-line message."""

    async def main() -> int:
        config = _config(args.config)
        url = resolve_url(args.url or config.service.store.url, config.base_dir)
        engine = open_engine(url)
        try:
            if needs_schema:
                await require_current_schema(engine, url)
            return await body(engine, config)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (StoreError, BlacklistInputError, ValueError) as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return 2


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        before = await schema_status(engine)
        after = await upgrade(engine)
        if before.current == after.current:
            print(f"{shown(engine.url)}: schema {after.current} is current; nothing to do")
        else:
            print(f"{shown(engine.url)}: schema {before.current or '(none)'} -> {after.current}")
        return 0

    return _run(args, body, needs_schema=False)


def cmd_db_status(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        status = await schema_status(engine)
        print(f"{shown(engine.url)}: schema {status.current or '(none)'}, this version needs {status.head}")
        return 0 if status.up_to_date else 1

    return _run(args, body, needs_schema=False)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_stats(args: argparse.Namespace) -> int:
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
        return 0

    return _run(args, body)


def cmd_blacklist(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)

    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        store = BlacklistStore(engine)
        if args.action == "list":
            for e in await store.entries(now, args.scope):
                until = e.expires_at.isoformat(timespec="seconds") if e.expires_at else "-"
                print(f"{e.scope}\t{e.caller}\t{e.created_at.isoformat(timespec='seconds')}\t{until}\t{e.created_by}\t{e.reason}")
            return 0
        scope = args.scope or GLOBAL_SCOPE
        if args.action == "add":
            try:
                expires = datetime.fromisoformat(args.expires) if args.expires else None
            except ValueError:
                raise BlacklistInputError(f"--expires {args.expires[:40]!r} is not an ISO time (e.g. 2026-12-31T18:00+08:00)") from None
            if expires is not None and expires.tzinfo is None:
                expires = expires.astimezone()  # a time without zone is the operator's local time
            entry = await store.add(scope, args.caller, args.reason, args.by, expires, now=now)
            print(f"blocked {entry.caller} on {'every number' if entry.scope == GLOBAL_SCOPE else entry.scope}")
            return 0
        if await store.remove(scope, args.caller):
            print(f"unblocked {normalize_number(args.caller)} on {'every number' if scope == GLOBAL_SCOPE else scope}")
            return 0
        print(f"{normalize_number(args.caller)} was not blocked on {scope}", file=sys.stderr)
        return 1

    return _run(args, body)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--url", help="database URL (default: store.url in the config, or CALLROUTER_DATABASE_URL)")


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema: upgrade, status")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    q = dbsub.add_parser("upgrade", help="create or migrate the schema to this version's")
    _common(q)
    q.set_defaults(func=cmd_db_upgrade)
    q = dbsub.add_parser("status", help="the schema version in the database and the one this version needs (exit 1 if behind)")
    _common(q)
    q.set_defaults(func=cmd_db_status)

    p = sub.add_parser("stats", help="call statistics of one 400 number, per local day and hour, and per line")
    _common(p)
    p.add_argument("--number", required=True)
    p.add_argument("--from", dest="from_day", type=_day, required=True, help="first day, YYYY-MM-DD (the plan's local time)")
    p.add_argument("--to", dest="to_day", type=_day, required=True, help="last day, inclusive")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--timezone", help="report in this time zone instead of the plan's")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("blacklist", help="runtime blacklist entries in the database (every router sees them)")
    bsub = p.add_subparsers(dest="action", required=True)
    q = bsub.add_parser("add", help="block a caller")
    _common(q)
    q.add_argument("caller")
    q.add_argument("--scope", help="a 400 number; default: every number")
    q.add_argument("--reason", default="")
    q.add_argument("--by", default="cli", help="who blocked it, for the record")
    q.add_argument("--expires", help="ISO time when the entry lapses")
    q.set_defaults(func=cmd_blacklist)
    q = bsub.add_parser("remove", help="unblock a caller")
    _common(q)
    q.add_argument("caller")
    q.add_argument("--scope")
    q.set_defaults(func=cmd_blacklist)
    q = bsub.add_parser("list", help="live entries: scope, caller, added, expires, by, reason")
    _common(q)
    q.add_argument("--scope")
    q.set_defaults(func=cmd_blacklist)
