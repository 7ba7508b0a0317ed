"""`callrouter tenants add|list|numbers add|numbers remove`: the companies and their 400 numbers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from callrouter.cli.accounts import audit, fail, now, tenant_named
from callrouter.cli.common import EXIT_FAILED, EXIT_OK, add_database_arguments, run_on_database
from callrouter.config.loader import RoutingConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

HELP = "tenants (companies) of the console and their 400 numbers"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("add", help="a new tenant")
    add_database_arguments(p)
    p.add_argument("name", help="the company's name as its users see it")
    add_database_arguments(sub.add_parser("list", help="every tenant with its numbers"))
    numbers = sub.add_parser("numbers", help="give or take 400 numbers").add_subparsers(dest="numbers_action", required=True)
    for verb, text in (("add", "give the numbers to the tenant (a number has one tenant)"), ("remove", "take the numbers from the tenant")):
        p = numbers.add_parser(verb, help=text)
        add_database_arguments(p)
        p.add_argument("tenant")
        p.add_argument("numbers", nargs="+", metavar="number")


def run(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, config: RoutingConfig) -> int:
        from callrouter.store.tenants import AccountError, add_number, add_tenant, list_tenants, remove_number

        try:
            if args.action == "add":
                tenant = await add_tenant(engine, args.name, now=now())
                await audit(engine, "tenant_add", tenant.name, tenant.id, after={"name": tenant.name})
                print(f"tenant {tenant.name!r} added (id {tenant.id}); give it numbers with: callrouter tenants numbers add {tenant.name!r} <number>")
                return EXIT_OK
            if args.action == "list":
                for t in await list_tenants(engine):
                    print(f"{t.id}\t{t.name}\t{' '.join(sorted(t.numbers)) or '-'}")
                return EXIT_OK
            tenant = await tenant_named(engine, args.tenant)
            status = EXIT_OK
            for number in args.numbers:
                if args.numbers_action == "add":
                    await add_number(engine, tenant.id, number, now=now())
                    await audit(engine, "tenant_number_add", number, tenant.id, after={"tenant": tenant.name, "number": number})
                    planned = "" if number in config.plans else " (no plan for it is loaded yet)"
                    print(f"{number} belongs to {tenant.name!r}{planned}")
                elif await remove_number(engine, tenant.id, number):
                    await audit(engine, "tenant_number_remove", number, tenant.id, before={"tenant": tenant.name, "number": number})
                    print(f"{number} no longer belongs to {tenant.name!r}")
                else:
                    print(f"{number} did not belong to {tenant.name!r}")
                    status = EXIT_FAILED
            return status
        except AccountError as exc:
            raise fail(str(exc)) from None

    return run_on_database(args, body)
