"""What `callrouter tenants`, `users` and `tokens` share: the CLI's audit identity, passwords, tenant look-up."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping, TextIO

from callrouter.cli.common import EXIT_BAD_INPUT, CommandExit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callrouter.store.tenants import Tenant


def now() -> datetime:
    return datetime.now(timezone.utc)


def os_user() -> str:
    """The OS user running the command (its uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def operator() -> str:
    """Who ran the command, for the audit log: the OS user."""
    return f"cli:{os_user()}"[:80]


async def audit(engine: AsyncEngine, action: str, target: str, tenant_id: int | None,
                before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None) -> None:
    from callrouter.store.audit import AuditEvent, record

    await record(engine, AuditEvent(action, target, tenant_id, None, operator(), "cli", before, after), now=now())


def fail(message: str, err: TextIO | None = None) -> CommandExit:
    print(f"callrouter: {message}", file=err or sys.stderr)
    return CommandExit(EXIT_BAD_INPUT)


async def tenant_named(engine: AsyncEngine, name: str) -> Tenant:
    from callrouter.store.tenants import find_tenant

    tenant = await find_tenant(engine, name)
    if tenant is None:
        raise fail(f"no tenant named {name!r} (callrouter tenants list)")
    return tenant


def add_password_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (never give it as an argument)")


def read_password(args: argparse.Namespace) -> str:
    """From stdin (--password-stdin) or typed twice at a prompt; refused when too weak."""
    from callrouter.console.passwords import password_problem

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise fail("no terminal to ask for the password: use --password-stdin")
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise fail("the two passwords differ")
    problem = password_problem(password)
    if problem:
        raise fail(problem)
    return password


def user_json(user: Any) -> dict[str, Any]:
    """What the audit log records of a user (never a password hash): the same as the console records."""
    facts: dict[str, Any] = user.audit_json()
    return facts
