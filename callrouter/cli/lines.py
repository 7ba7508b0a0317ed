"""`callrouter lines status`: which lines work, which are suspended and why, for every plan or one number.

Line health lives where the routing state does: with `routing_state` shared (Postgres) it is read from
the database; with local state (the SQLite default) only the running router knows it, so its admin API
is asked (`GET /api/lines`). Exit 1 when a line is suspended, for scripts and monitoring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from callrouter.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_database_arguments, load_config, open_database
from callrouter.config.loader import RoutingConfig

HELP = "line health: which lines work, which are suspended, and why"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lines_command", required=True)
    status = sub.add_parser("status", help="every line's health (exit 1 when a line is suspended)")
    add_database_arguments(status)
    status.add_argument("--number", help="one 400 number (default: every plan)")
    status.add_argument("--format", choices=["table", "json"], default="table")
    status.add_argument(
        "--api", metavar="URL",
        help="ask the running router's admin API (e.g. http://127.0.0.1:8080) instead of the database; "
        "the default when the routing state is local (admin.host:admin.port)",
    )


def run(args: argparse.Namespace) -> int:
    from callrouter.store.db import StoreError, resolve_url

    config = load_config(args.config)
    number = "".join(ch for ch in args.number if ch.isdigit()) if args.number else None
    if number is not None and number not in config.plans:
        print(f"no plan routes {args.number}; known: {', '.join(sorted(config.plans))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        mode = config.service.store.routing_state
        if mode == "auto":
            url = resolve_url(args.url or config.service.store.url, config.base_dir)
            mode = "shared" if url.get_backend_name() == "postgresql" else "local"
        if args.api or mode == "local":
            api = args.api or f"http://{config.service.admin.host}:{config.service.admin.port}"
            numbers = asyncio.run(_from_api(api, config, number))
        else:
            numbers = asyncio.run(_from_database(args.url, config, number))
    except (StoreError, ValueError) as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"callrouter: the router's admin API does not answer ({exc}); is `callrouter serve` running? (--api URL)", file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        print(json.dumps({"numbers": numbers}, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(table(numbers))
    suspended = any(line["state"] == "suspended" for n in numbers for line in n["lines"])
    return EXIT_FAILED if suspended else EXIT_OK


async def _from_database(url: str | None, config: RoutingConfig, number: str | None) -> list[dict[str, Any]]:
    from callrouter.routing.health import number_view, plan_keys, plan_lines
    from callrouter.store.line_health import read_lines

    plans = [p for n, p in sorted(config.plans.items()) if number is None or n == number]
    template = config.service.dialing.template
    async with open_database(config, url) as engine:
        records = await read_lines(engine, tuple(dict.fromkeys(k for p in plans for k in plan_keys(p, template))))
    now = datetime.now(timezone.utc).timestamp()
    return [number_view(p, plan_lines(p, template, records, now), ZoneInfo(p.timezone or config.service.timezone), now) for p in plans]


async def _from_api(base: str, config: RoutingConfig, number: str | None) -> list[dict[str, Any]]:
    import aiohttp

    from callrouter.api.auth import admin_token

    token = admin_token(config.service.admin, os.environ)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"number": number} if number else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            async with http.get(base.rstrip("/") + "/api/lines", params=params, headers=headers) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise ValueError(f"{base}: {response.status}: {body.get('error', body) if isinstance(body, dict) else body}")
        except aiohttp.ClientConnectionError as exc:
            raise OSError(str(exc)) from None
    numbers: list[dict[str, Any]] = body["numbers"]
    return numbers


def table(numbers: list[dict[str, Any]]) -> str:
    """Per number: how many lines work, then one row per line with its state and why."""
    from callrouter.routing.health import shown_number

    out = []
    for n in numbers:
        out.append(f"{shown_number(n['number'])} {n['name']}: {n['working']} of {n['total']} lines working")
        for line in n["lines"]:
            name = line["name"] or ""
            out.append(f"  {line['line']:<16} {name:<8} {line['phone']:<36} {line['state']:<10} {line['reason']}".rstrip())
    return "\n".join(out) + "\n"
