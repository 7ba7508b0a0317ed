"""`callrouter db upgrade|status`: the database schema."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

HELP = "database schema: upgrade, status"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True)
    add_database_arguments(sub.add_parser("upgrade", help="create or migrate the schema to this version's"))
    add_database_arguments(sub.add_parser("status", help="the schema version in the database and the one this version needs (exit 1 if behind)"))


def run(args: argparse.Namespace) -> int:
    return run_on_database(args, upgrade if args.db_command == "upgrade" else status, needs_schema=False)


async def upgrade(engine: AsyncEngine, _: RoutingConfig) -> int:
    from callrouter.store.db import schema_status, shown
    from callrouter.store.db import upgrade as migrate

    before = await schema_status(engine)
    after = await migrate(engine)
    if before.current == after.current:
        print(f"{shown(engine.url)}: schema {after.current} is current; nothing to do")
    else:
        print(f"{shown(engine.url)}: schema {before.current or '(none)'} -> {after.current}")
    return EXIT_OK


async def status(engine: AsyncEngine, _: RoutingConfig) -> int:
    from callrouter.store.db import schema_status, shown

    found = await schema_status(engine)
    print(f"{shown(engine.url)}: schema {found.current or '(none)'}, this version needs {found.head}")
    return EXIT_OK if found.up_to_date else EXIT_FAILED
