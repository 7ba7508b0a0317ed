"""What every command shares, written once: loading the configuration, the database, logging, exit statuses."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, TextIO, TypeAlias

from callrouter.config.loader import RoutingConfig
from callrouter.config.loader import load_config as load_routing_config
from callrouter.config.yamlsource import ConfigError
from callrouter.fastagi.calllog import CallFilter

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and the answer is no: a prompt without a file, unhealthy, a schema behind, ...
EXIT_BAD_INPUT = 2  # refused before doing the work: a configuration that does not load, bad input, an unusable database

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(call_prefix)s%(message)s"  # call_prefix: `[uniqueid] ` inside a call
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
URL_HELP = "database URL (default: store.url in the config, or CALLROUTER_DATABASE_URL)"


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandExit(Exception):
    """Stop the command with `status`: what went wrong has been printed already. `main` turns it into the exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def add_command(
    sub: Subparsers, name: str, help: str, configure: Callable[[argparse.ArgumentParser], None], run: Callable[[argparse.Namespace], int]
) -> None:
    """Register one command: its flags (and subcommands) from `configure`, `run` to call with the parsed arguments."""
    parser = sub.add_parser(name, help=help)
    configure(parser)
    parser.set_defaults(func=run)


def run_command(args: argparse.Namespace) -> int:
    """Call the parsed command; its exit status (a CommandExit's, when it stopped early)."""
    try:
        return int(args.func(args))
    except CommandExit as stop:
        return stop.status


def load_config(path: str, err: TextIO | None = None) -> RoutingConfig:
    """The configuration; else every issue printed as `file:line: message` and CommandExit(EXIT_BAD_INPUT).

    The one way every command loads it, so a broken file reads and exits the same whichever command met it."""
    try:
        return load_routing_config(path)
    except ConfigError as exc:
        out = err or sys.stderr
        for issue in exc.issues:
            print(issue, file=out)
        print(f"{len(exc.issues)} error(s); nothing was loaded", file=out)
        raise CommandExit(EXIT_BAD_INPUT) from None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message; inside a call its uniqueid, number and
    caller hash (set by fastagi.calllog.CallFilter); a traceback as `exc`, inside the same line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("uniqueid", "number", "caller_hash"):
            value = getattr(record, name, "")
            if value:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def log_handler(fmt: str, stream: TextIO) -> logging.Handler:
    """A handler writing `text` or `json` lines to `stream`, each record marked with its call, if any."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT))
    handler.addFilter(CallFilter())  # on the handler: records of every logger pass through it
    return handler


def setup_logging(level: str, fmt: str = "text") -> None:
    """Logging for the long-running commands (serve, exporter), once; the schema check at start is not news.
    Python's warnings go through it too, so a JSON log stays JSON on every line."""
    logging.basicConfig(level=level, handlers=[log_handler(fmt, sys.stderr)])
    logging.captureWarnings(True)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@asynccontextmanager
async def open_database(config: RoutingConfig, url: str | None = None, *, needs_schema: bool = True) -> AsyncIterator[AsyncEngine]:
    """The engine of the configured database, disposed on leaving.

    The URL is CALLROUTER_DATABASE_URL, else `url` (--url), else store.url, else the SQLite file beside the
    config (`store.db.resolve_url`). `needs_schema`: refuse a database whose schema is missing or behind.
    Raises StoreError with a message for the operator."""
    from callrouter.store.db import open_engine, require_current_schema, resolve_url

    resolved = resolve_url(url or config.service.store.url, config.base_dir)
    engine = open_engine(resolved)
    try:
        if needs_schema:
            await require_current_schema(engine, resolved)
        yield engine
    finally:
        await engine.dispose()


def run_on_database(
    args: argparse.Namespace, body: Callable[[AsyncEngine, RoutingConfig], Awaitable[int]], *, needs_schema: bool = True
) -> int:
    """Load --config, open the database (--url), run `body`; a StoreError or ValueError becomes one line and exit 2."""
    from callrouter.store.db import StoreError

    config = load_config(args.config)

    async def run() -> int:
        async with open_database(config, args.url, needs_schema=needs_schema) as engine:
            return await body(engine, config)

    try:
        return asyncio.run(run())
    except (StoreError, ValueError) as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def add_config_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--config`, config.yaml by default."""
    if help is None:
        parser.add_argument("--config", default="config.yaml")
    else:
        parser.add_argument("--config", default="config.yaml", help=help)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config` and `--url`, for the commands that work on the database."""
    add_config_argument(parser)
    parser.add_argument("--url", help=URL_HELP)


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """`--log-level`, overriding the config's log_level; `--log-format`, overriding logging.format."""
    parser.add_argument("--log-level", choices=list(LOG_LEVELS))
    parser.add_argument("--log-format", choices=list(LOG_FORMATS), help="text (the default) or json: one object per line (overrides logging.format)")
