"""`callrouter exporter`: Prometheus metrics from the CDRs of every router."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def cmd_exporter(args: argparse.Namespace) -> int:
    from callrouter.cli import _load
    from callrouter.exporter.http import run_exporter
    from callrouter.store.db import StoreError

    config = _load(args.config)
    if config is None:
        return 2
    logging.basicConfig(level=args.log_level or config.service.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return asyncio.run(run_exporter(config, args.host, args.port))
    except StoreError as exc:
        print(f"callrouter exporter: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"callrouter exporter: cannot listen: {exc}", file=sys.stderr)
        return 2


def add_subcommand(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser("exporter", help="serve Prometheus metrics derived from the CDRs in the database")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--host", help="override exporter.host")
    p.add_argument("--port", type=int, help="override exporter.port (0: any free port; the log says which)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_exporter)
