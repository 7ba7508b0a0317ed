"""Opening the database, and what state its schema is in.

`callrouter db upgrade` applies the Alembic migrations shipped in `migrations/`; `serve` refuses to
start when the database is behind them, because writing CDRs into an old schema loses or corrupts them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
URL_ENV = "CALLROUTER_DATABASE_URL"
DEFAULT_SQLITE = "var/callrouter.db"
SQLITE_ROWS_PER_INSERT = 100  # rows per multi-row INSERT on SQLite (open_engine says why)


class StoreError(Exception):
    """The database cannot be used as configured; the message says what to do."""


class StoreUnreachable(StoreError):
    """The database did not answer (down, wrong host, network): may pass, unlike a wrong schema."""


def resolve_url(configured: str | None, base_dir: str) -> URL:
    """The database URL: the environment, else config.yaml, else an SQLite file beside the config."""
    raw = os.environ.get(URL_ENV) or configured
    if not raw:
        path = os.path.join(base_dir, DEFAULT_SQLITE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return make_url(f"sqlite+aiosqlite:///{path}")
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise StoreError(f"database URL is not a URL: {exc}") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        return url.set(drivername="postgresql+asyncpg")
    if url.drivername in ("sqlite", "sqlite+aiosqlite"):
        if url.database and url.database != ":memory:":
            folder = os.path.dirname(url.database)
            if folder:
                os.makedirs(folder, exist_ok=True)
        return url.set(drivername="sqlite+aiosqlite")
    raise StoreError(f"unsupported database {url.drivername!r}: use postgresql+asyncpg://... or sqlite+aiosqlite:///path")


def shown(url: URL) -> str:
    """The URL for logs and errors: never the password."""
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (stats, the exporter) run beside the writer; the busy timeout queues writers."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: URL, *, pool_size: int = 20, connect_timeout: float = 5.0) -> AsyncEngine:
    """The engine for the router's own use.

    Postgres: a fixed pool (no overflow: connections opened for a burst and closed after it cost more CPU
    than the queries), no pre-ping (a round trip per query; a connection that broke fails its query, is
    replaced, and the caller falls back or retries), no SSL on a loopback or socket connection unless the
    URL asks for it."""
    if url.get_backend_name() == "sqlite":
        # sqlite3 keeps 128 prepared statements per connection; the CDR writer's multi-row INSERTs (one SQL
        # text per batch size, each statement large) filled them: ~3.5 kB of SQLite memory per routed call.
        # And 100 rows per INSERT, not SQLAlchemy's 1000: a 1000-row INSERT ... RETURNING is a prepared
        # statement of megabytes, one per batch size; at 100 most pages share one text, SQLite's own heap
        # holds 4 instead of 18 MB per connection after a burst, for the same CPU (docs/benchmarks.md).
        engine = create_async_engine(url, connect_args={"cached_statements": 16}, insertmanyvalues_page_size=SQLITE_ROWS_PER_INSERT)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = postgres_connect_args(url, connect_timeout)
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=10, pool_recycle=1800, connect_args=connect_args)


def postgres_connect_args(url: URL, connect_timeout: float = 5.0) -> dict[str, Any]:
    """asyncpg's connection arguments for the router (the engine's, and the routing state's own pool)."""
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "command_timeout": 30,
        "server_settings": {"application_name": "callrouter"},
    }
    if "ssl" not in url.query and "sslmode" not in url.query and (url.host in (None, "", "localhost", "127.0.0.1", "::1")):
        connect_args["ssl"] = False
    return connect_args


def _alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def head_revision() -> str:
    heads = ScriptDirectory.from_config(_alembic_config()).get_heads()
    return ",".join(sorted(heads))


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no callrouter schema at all
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    def read(conn: Connection) -> str | None:
        heads = MigrationContext.configure(conn).get_current_heads()
        return ",".join(sorted(heads)) or None

    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(read)
    except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
        raise StoreUnreachable(f"cannot reach the database {shown(engine.url)}: {str(exc).splitlines()[0][:300]}") from None
    return SchemaStatus(current=current, head=head_revision())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> SchemaStatus:
    """Apply migrations up to `revision` in one transaction (Postgres and SQLite both have transactional DDL)."""

    def run(conn: Connection) -> None:
        command.upgrade(_alembic_config(conn), revision)

    status = await schema_status(engine)
    if status.current is not None and not set(status.current.split(",")) <= known_revisions():
        raise StoreError(_unknown(engine.url, status.current))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    except CommandError as exc:
        raise StoreError(f"migration failed: {exc}") from None
    return await schema_status(engine)


def _unknown(url: URL, current: str) -> str:
    return (
        f"the database {shown(url)} is at schema {current}, which this version of callrouter does not know "
        "(was it migrated by a newer release?): run that release, or restore a matching backup"
    )


async def require_current_schema(engine: AsyncEngine, url: URL) -> None:
    """For `serve`: stop with a clear message rather than write CDRs into a schema that does not fit."""
    status = await schema_status(engine)
    if status.current is None:
        raise StoreError(f"the database {shown(url)} has no callrouter schema: run `callrouter db upgrade` first")
    if not set(status.current.split(",")) <= known_revisions():
        raise StoreError(_unknown(url, status.current))
    if not status.up_to_date:
        raise StoreError(
            f"the database {shown(url)} is at schema {status.current}, this version needs {status.head}: "
            "run `callrouter db upgrade` first"
        )
