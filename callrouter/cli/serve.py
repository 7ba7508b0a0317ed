"""`callrouter serve`: the FastAGI server and the admin API, until SIGTERM; `--workers N`: N of them on one port."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Callable

from callrouter.cli.common import EXIT_BAD_INPUT, add_config_argument, add_log_level_argument, load_config, setup_logging

HELP = "run the FastAGI server"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--host", help="override listen.host")
    parser.add_argument("--port", type=int, help="override listen.port")
    parser.add_argument("--admin-port", type=int, help="override admin.port (0: any free port; the log says which)")
    add_log_level_argument(parser)
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--workers", type=_positive, default=1, help="router processes sharing the FastAGI port (SO_REUSEPORT), "
                        "one per core; needs the routing state shared through Postgres (docs/operations.md)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the parent of --workers: this worker's index
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # where the worker tells the parent "ready", "reload"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    from callrouter.app import CannotListen, WorkerRole, serve

    config = load_config(args.config)
    setup_logging(args.log_level or config.service.log_level, args.log_format or config.service.logging.format)
    worker: WorkerRole | None = None
    if args.workers > 1 and args.worker is None:
        from callrouter.cli.workers import serve_workers

        return serve_workers(args, config)
    if args.worker is not None:
        worker = WorkerRole(args.worker, args.workers, _teller(args.ready_fd))
    from callrouter.api.auth import AdminConfigError
    from callrouter.config.envsubst import MissingEnvironment
    from callrouter.store.db import StoreError

    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.event_loop)) as runner:
            return runner.run(serve(config, host=args.host, port=args.port, admin_port=args.admin_port, worker=worker))
    except (StoreError, AdminConfigError, MissingEnvironment, CannotListen) as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _teller(fd: int | None) -> Callable[[str], None]:
    """A worker's line to its parent. The worker also stops (SIGTERM, a drain) if the parent dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def tell(word: str) -> None:
        if fd is None:
            return
        try:
            os.write(fd, word.encode() + b"\n")
        except OSError as exc:  # the parent is gone: PR_SET_PDEATHSIG stops this worker
            logging.getLogger(__name__).debug("could not tell the parent %r: %s", word, exc)

    return tell


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when available (about 15% less CPU per call, see docs/benchmarks.md), else asyncio's own."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SystemExit("--event-loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop
