"""`callrouter plans apply|export|history|show|restore`: plan versions in the database and the files in dialplans/.

The rule (docs/plans.md): a number runs its newest version in the database; a number with no version
there runs from its file. `apply` makes edited files live (all or nothing); `export` writes the newest
versions back into the files byte for byte, so a console edit reaches git with its comments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from callrouter.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import DATABASE_SOURCE, RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callrouter.plans.service import Drift, PlanDeps

HELP = "routing plan versions: apply the files, export the database's, history, show, restore"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("apply", help="store each plan file that differs from its number's newest version (all or nothing)")
    add_database_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="say what would be stored; store nothing")
    p.add_argument("--number", action="append", metavar="N",
                   help="only this number's file (repeatable); also applies a file that is an older version")
    p = sub.add_parser("export", help="write the newest database versions into dialplans/ byte for byte")
    add_database_arguments(p)
    p.add_argument("--number", action="append", metavar="N", help="only this number (repeatable)")
    p = sub.add_parser("history", help="the versions of a number, newest first")
    add_database_arguments(p)
    p.add_argument("number")
    p = sub.add_parser("show", help="the text of a version (default: the one the number runs)")
    add_database_arguments(p)
    p.add_argument("number")
    p.add_argument("--version", type=int)
    p = sub.add_parser("restore", help="store an older version again as the newest: every router runs it")
    add_database_arguments(p)
    p.add_argument("number")
    p.add_argument("version", type=int)


def operator() -> str:
    """Who ran the command, as plan versions record it: ops:<os user>@<host>."""
    from callrouter.cli.accounts import os_user

    return f"ops:{os_user()}@{socket.gethostname()}"[:120]


def _deps(engine: AsyncEngine, config: RoutingConfig) -> PlanDeps:
    from callrouter.cli.accounts import audit
    from callrouter.config.holder import ConfigHolder
    from callrouter.metrics import RouterMetrics
    from callrouter.plans.service import PlanDeps

    async def audited(action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        await audit(engine, action, target, None, before, after)

    return PlanDeps(engine, ConfigHolder(config, RouterMetrics()), lambda: datetime.now(timezone.utc), audited)


def run(args: argparse.Namespace) -> int:
    actions = {"apply": _apply, "export": _export, "history": _history, "show": _show, "restore": _restore}
    body = actions[args.action]

    async def on_database(engine: AsyncEngine, config: RoutingConfig) -> int:
        return await body(args, engine, config)

    return run_on_database(args, on_database)


async def _apply(args: argparse.Namespace, engine: AsyncEngine, config: RoutingConfig) -> int:
    from callrouter.plans.service import PlanRejected, StaleVersion, apply_files

    wanted = set(args.number) if args.number else None
    if wanted is not None and (unknown := sorted(wanted - set(config.plans))):
        print(f"callrouter: no plan file for {', '.join(unknown)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        changes = await apply_files(_deps(engine, config), author=operator(), dry_run=args.dry_run, numbers=wanted)
    except (PlanRejected, StaleVersion) as exc:
        print(f"callrouter: {exc}; nothing was stored", file=sys.stderr)
        return EXIT_BAD_INPUT
    behind = 0
    for c in changes:
        if c.behind is not None:
            behind += 1
            print(f"{c.file}: {c.number} is version {c.behind}, older than the newest ({c.before}): not applied; "
                  f"`callrouter plans export --number {c.number}` brings the file up to date "
                  f"(or `callrouter plans apply --number {c.number}` makes this older text live)", file=sys.stderr)
        elif not c.differs:
            print(f"{c.file}: {c.number} unchanged (version {c.before})")
        elif c.stored is None:
            print(f"{c.file}: {c.number} would be stored as version {(c.before or 0) + 1}")
        else:
            print(f"{c.file}: {c.number} stored as version {c.stored.version}")
    stored = sum(1 for c in changes if c.stored is not None)
    if args.dry_run:
        print("dry run: nothing was stored")
    elif stored:
        print(f"{stored} plan(s) stored; every router runs them at once (Postgres) or within a few seconds")
    return EXIT_FAILED if behind else EXIT_OK


async def _export(args: argparse.Namespace, engine: AsyncEngine, config: RoutingConfig) -> int:
    from callrouter.plans.service import file_text
    from callrouter.store import plan_versions

    async with engine.connect() as conn:
        newest = await plan_versions.newest_of_each(conn)
    wanted = set(args.number) if args.number else set(newest)
    if unknown := sorted(wanted - set(newest)):
        print(f"callrouter: no version in the database for {', '.join(unknown)} (it runs from its file)", file=sys.stderr)
        return EXIT_BAD_INPUT
    plans_dir = config.path(config.service.dialplans_dir)
    for number in sorted(wanted):
        version = newest[number]
        source = config.sources.get(number)
        path = source if source and source != DATABASE_SOURCE else os.path.join(plans_dir, f"{number}.yaml")
        if file_text(number, config) == version.text:
            print(f"{path}: {number} already version {version.version}")
            continue
        write_exactly(path, version.text)
        print(f"{path}: {number} version {version.version} written")
    return EXIT_OK


def write_exactly(path: str, text: str) -> None:
    """The text byte for byte (UTF-8, no newline translation), replacing the file at once: a reader sees
    the old file or the new one, never half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


async def _history(args: argparse.Namespace, engine: AsyncEngine, config: RoutingConfig) -> int:
    from callrouter.store import plan_versions

    async with engine.connect() as conn:
        versions = await plan_versions.history(conn, args.number)
    if not versions:
        where = config.sources.get(args.number)
        print(f"{args.number}: no version in the database" + (f"; it runs from {where}" if where else ""), file=sys.stderr)
        return EXIT_FAILED
    for i, v in enumerate(versions):
        runs = "  (runs)" if i == 0 else ""
        restored = f" [restored from {v.restored_from}]" if v.restored_from is not None else ""
        print(f"v{v.version}\t{v.created_at:%Y-%m-%d %H:%M:%S}Z\t{v.origin}\t{v.author}\t{v.summary}{restored}{runs}")
    return EXIT_OK


async def _show(args: argparse.Namespace, engine: AsyncEngine, config: RoutingConfig) -> int:
    from callrouter.plans.service import file_text
    from callrouter.store import plan_versions

    async with engine.connect() as conn:
        v = await (plan_versions.get(conn, args.number, args.version) if args.version is not None else plan_versions.newest(conn, args.number))
    if v is not None:
        sys.stdout.write(v.text)
        return EXIT_OK
    if args.version is None and (text := file_text(args.number, config)) is not None:
        print(f"{args.number}: no version in the database; this is its file {config.sources[args.number]}", file=sys.stderr)
        sys.stdout.write(text)
        return EXIT_OK
    print(f"callrouter: {args.number} has no " + (f"version {args.version}" if args.version is not None else "plan"), file=sys.stderr)
    return EXIT_FAILED


async def _restore(args: argparse.Namespace, engine: AsyncEngine, config: RoutingConfig) -> int:
    from callrouter.plans.service import PlanRejected, StaleVersion, restore_plan
    from callrouter.store import plan_versions

    async with engine.connect() as conn:
        newest = await plan_versions.newest(conn, args.number)
    try:
        v = await restore_plan(_deps(engine, config), args.number, args.version, author=operator(),
                               expected_version=newest.version if newest else None)
    except LookupError as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (PlanRejected, StaleVersion) as exc:
        print(f"callrouter: version {args.version} cannot be restored: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{args.number}: version {args.version} restored as version {v.version}; every router runs it at once (Postgres) "
          "or within a few seconds")
    return EXIT_OK


def drift_warnings(config: RoutingConfig, timeout: float = 5.0) -> list[str]:
    """For `callrouter check`: each plan file that differs from its number's newest database version, with
    the command to run. A database that cannot be read is one line saying so; a missing SQLite file, none."""
    from sqlalchemy.exc import SQLAlchemyError

    from callrouter.store.db import DEFAULT_SQLITE, URL_ENV, StoreError, resolve_url

    if not (os.environ.get(URL_ENV) or config.service.store.url) and not os.path.exists(os.path.join(config.base_dir, DEFAULT_SQLITE)):
        return []  # no database yet (and `check` creates none): every number runs from its file
    try:
        url = resolve_url(config.service.store.url, config.base_dir)
    except StoreError as exc:
        return [f"plan versions not compared with the database: {exc}"]
    if url.get_backend_name() == "sqlite" and (not url.database or not os.path.exists(url.database)):
        return []  # no database yet: every number runs from its file
    try:
        return [d.advice() for d in asyncio.run(asyncio.wait_for(_drift(config), timeout))]
    except (StoreError, SQLAlchemyError, OSError, TimeoutError) as exc:  # a warning only: the files' check has its answer
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return [f"plan versions not compared with the database: {first}"]


async def _drift(config: RoutingConfig) -> list[Drift]:
    from callrouter.cli.common import open_database
    from callrouter.plans.service import file_drift

    async with open_database(config) as engine, engine.connect() as conn:
        return await file_drift(conn, config)
