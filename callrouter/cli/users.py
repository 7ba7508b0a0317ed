"""`callrouter users add|list|passwd|disable|enable|role|revoke-sessions`: who logs into the console.

The first account is the provider's: `callrouter users add --provider NAME` (the password from a prompt
or --password-stdin, never an argument). A company's users: `--tenant NAME --role owner|admin|viewer`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from callrouter.cli.accounts import add_password_argument, audit, fail, now, read_password, tenant_named, user_json
from callrouter.cli.common import EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callrouter.store.tenants import User

HELP = "console users: add, list, passwd, disable, enable, role, revoke-sessions"
ROLES = ("owner", "admin", "viewer")


def _permission_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", action=argparse.BooleanOptionalAction, default=None,
                   help="may play recordings (default: yes)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="may download recordings (default: yes, except for viewers)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="a new user (the first one: --provider)")
    add_database_arguments(p)
    p.add_argument("username")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--provider", action="store_true", help="the provider's staff: every tenant and number")
    who.add_argument("--tenant", help="the company the user belongs to")
    p.add_argument("--role", choices=ROLES, default="viewer", help="a company user's role (default viewer)")
    _permission_flags(p)
    add_password_argument(p)
    p = sub.add_parser("list", help="users: name, role, tenant, permissions, last login")
    add_database_arguments(p)
    p.add_argument("--tenant")
    p = sub.add_parser("passwd", help="set a new password (ends the user's sessions)")
    add_database_arguments(p)
    p.add_argument("username")
    add_password_argument(p)
    for verb, text in (("disable", "the user can no longer log in (ends their sessions)"), ("enable", "undo disable"),
                       ("revoke-sessions", "log the user out everywhere")):
        p = sub.add_parser(verb, help=text)
        add_database_arguments(p)
        p.add_argument("username")
    p = sub.add_parser("role", help="change a company user's role or recording permissions")
    add_database_arguments(p)
    p.add_argument("username")
    p.add_argument("role", choices=ROLES + ("provider",))
    _permission_flags(p)


async def _user(engine: AsyncEngine, username: str) -> User:
    from callrouter.store.tenants import find_user

    found = await find_user(engine, username)
    if found is None:
        raise fail(f"no user named {username!r} (callrouter users list)")
    return found.user


def run(args: argparse.Namespace) -> int:
    password = read_password(args) if args.action in ("add", "passwd") else None

    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        from callrouter.console.passwords import Passwords
        from callrouter.store import tenants as t
        from callrouter.store.web_sessions import revoke_user_sessions

        if args.action == "add":
            assert password is not None
            tenant = None if args.provider else await tenant_named(engine, args.tenant)
            role = "provider" if args.provider else args.role
            listen = True if args.listen is None else args.listen
            download = (role != "viewer") if args.download is None else args.download
            hashed = await Passwords().hash(password)
            user = await t.add_user(engine, args.username, hashed, role, tenant.id if tenant else None,
                                    can_listen=listen, can_download=download, now=now())
            await audit(engine, "user_add", user.username, user.tenant_id, after=user_json(user))
            print(f"user {user.username!r} added: {role}" + (f" of {tenant.name!r}" if tenant else " (provider staff)")
                  + "; log in at /console/ on the admin API's address")
            return EXIT_OK
        if args.action == "list":
            tenant_id = (await tenant_named(engine, args.tenant)).id if args.tenant else None
            for u in await t.list_users(engine, tenant_id=tenant_id):
                flags = ",".join(f for f, on in (("listen", u.can_listen), ("download", u.can_download)) if on) or "-"
                last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
                state = "disabled" if u.disabled_at else "active"
                print(f"{u.username}\t{u.role}\t{u.tenant_name or '(provider)'}\t{flags}\t{state}\t{last}")
            return EXIT_OK
        user = await _user(engine, args.username)
        if args.action == "passwd":
            assert password is not None
            await t.set_password_hash(engine, user.id, await Passwords().hash(password))
            ended = await revoke_user_sessions(engine, user.id, now())
            await audit(engine, "user_password", user.username, user.tenant_id, after={"sessions_ended": ended})
            print(f"password of {user.username!r} changed; {ended} session(s) ended")
        elif args.action in ("disable", "enable"):
            await t.set_disabled(engine, user.id, now() if args.action == "disable" else None)
            ended = await revoke_user_sessions(engine, user.id, now()) if args.action == "disable" else 0
            changed = await t.get_user(engine, user.id)
            await audit(engine, f"user_{args.action}", user.username, user.tenant_id, before=user_json(user),
                        after=user_json(changed))
            print(f"{user.username!r} {args.action}d" + (f"; {ended} session(s) ended" if ended else ""))
        elif args.action == "revoke-sessions":
            ended = await revoke_user_sessions(engine, user.id, now())
            await audit(engine, "user_revoke_sessions", user.username, user.tenant_id, after={"sessions_ended": ended})
            print(f"{ended} session(s) of {user.username!r} ended")
        else:
            listen = user.can_listen if args.listen is None else args.listen
            download = user.can_download if args.download is None else args.download
            changed = await t.set_role(engine, user, args.role, can_listen=listen, can_download=download)
            await audit(engine, "user_role", user.username, user.tenant_id, before=user_json(user), after=user_json(changed))
            print(f"{user.username!r} is now {changed.role} (listen: {changed.can_listen}, download: {changed.can_download})")
        return EXIT_OK

    return run_on_database(args, body)
