"""Real databases for store tests: an SQLite file per test, and a fresh Postgres database per test.

Postgres is at 127.0.0.1:5432 (override with CALLROUTER_TEST_PG, a URL of a server where we may create
databases). Each test gets its own database cloned from a migrated template, so tests never see each
other's rows. When CI=true and Postgres is unreachable the tests fail loudly; elsewhere they skip with the reason.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Iterator

import asyncpg
from sqlalchemy.engine import make_url

from callrouter.store.db import open_engine, upgrade
from tests.ci import missing

PG_SERVER = os.environ.get("CALLROUTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")


def _admin_dsn() -> str:
    url = make_url(PG_SERVER).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _db_url(name: str) -> str:
    return make_url(PG_SERVER).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_or_skip() -> None:
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"Postgres at {make_url(PG_SERVER).render_as_string(hide_password=True)} is unreachable: {exc}"
        missing(message, "the Postgres tests")


async def _make_template(name: str) -> None:
    """A migrated database to clone: running the migrations for every test would be slow."""
    await _admin(f'CREATE DATABASE "{name}"')
    engine = open_engine(make_url(_db_url(name)))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def postgres_template() -> Iterator[str]:
    """For one test session: a migrated template database, dropped at the end."""
    postgres_or_skip()
    name = f"callrouter_tpl_{uuid.uuid4().hex[:12]}"
    asyncio.run(_make_template(name))
    try:
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _scratch_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A database of the test's own (a copy of `template`, or empty), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        yield _db_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fresh_postgres(template: str) -> Iterator[str]:
    yield from _scratch_database("callrouter_t", template)


def empty_postgres() -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    postgres_or_skip()
    yield from _scratch_database("callrouter_e")


def fresh_sqlite(path: str) -> str:
    url = f"sqlite+aiosqlite:///{path}"

    async def migrate() -> None:
        engine = open_engine(make_url(url))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return url
