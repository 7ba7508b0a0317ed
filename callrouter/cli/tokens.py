"""`callrouter tokens add|list|revoke`: a tenant's API tokens for machines (read: GET; write: also the blacklist)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from callrouter.cli.accounts import audit, now, tenant_named
from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

HELP = "tenants' API tokens: add (shown once), list, revoke"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="a new token; printed once, only its hash is stored")
    add_database_arguments(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--scope", choices=("read", "write"), default="read")
    p.add_argument("name", help="what the token is for, e.g. crm-sync")
    p = sub.add_parser("list", help="tokens: tenant, name, scope, made, last used, revoked")
    add_database_arguments(p)
    p.add_argument("--tenant")
    p = sub.add_parser("revoke", help="the token stops working at once")
    add_database_arguments(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("name")


def run(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, _: RoutingConfig) -> int:
        from callrouter.store.api_tokens import add_token, list_tokens, revoke_token

        if args.action == "list":
            tenant_id = (await tenant_named(engine, args.tenant)).id if args.tenant else None
            for k in await list_tokens(engine, tenant_id=tenant_id):
                used = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
                revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
                print(f"{k.tenant_name}\t{k.name}\t{k.scope}\t{k.created_at.isoformat(timespec='seconds')}\t{used}\t{revoked}")
            return EXIT_OK
        tenant = await tenant_named(engine, args.tenant)
        if args.action == "add":
            secret, token = await add_token(engine, tenant.id, args.name, args.scope, now=now())
            await audit(engine, "token_add", token.name, tenant.id, after={"tenant": tenant.name, "name": token.name, "scope": token.scope})
            print(secret)
            print(f"# {token.scope} token {token.name!r} of {tenant.name!r}: shown this once; send it as Authorization: Bearer <token>")
            return EXIT_OK
        gone = await revoke_token(engine, tenant.id, args.name, now=now())
        if gone is None:
            print(f"{tenant.name!r} has no live token named {args.name!r}")
            return EXIT_FAILED
        await audit(engine, "token_revoke", gone.name, tenant.id, before={"tenant": tenant.name, "name": gone.name, "scope": gone.scope})
        print(f"token {gone.name!r} of {tenant.name!r} revoked")
        return EXIT_OK

    return run_on_database(args, body)
