"""`callrouter exporter`: Prometheus metrics from the CDRs of every router."""

from __future__ import annotations

import argparse
import asyncio
import sys

from callrouter.cli.common import EXIT_BAD_INPUT, add_config_argument, add_log_level_argument, load_config, setup_logging

HELP = "serve Prometheus metrics derived from the CDRs in the database"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--host", help="override exporter.host")
    parser.add_argument("--port", type=int, help="override exporter.port (0: any free port; the log says which)")
    add_log_level_argument(parser)


def run(args: argparse.Namespace) -> int:
    from callrouter.exporter.http import run_exporter
    from callrouter.store.db import StoreError

    config = load_config(args.config)
    setup_logging(args.log_level or config.service.log_level, args.log_format or config.service.logging.format)
    try:
        return asyncio.run(run_exporter(config, args.host, args.port))
    except StoreError as exc:
        print(f"callrouter exporter: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"callrouter exporter: cannot listen: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
