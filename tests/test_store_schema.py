"""Migrations: an empty database is brought to the head schema, which is exactly what schema.py says;
an outdated or missing schema stops `serve` with a message that says what to run."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from callrouter.store.db import StoreError, StoreUnreachable, head_revision, open_engine, require_current_schema, resolve_url, schema_status, upgrade
from callrouter.store.schema import metadata
from tests.harness import arun


def test_upgrade_creates_the_schema_that_schema_py_describes(empty_db_url: str) -> None:
    async def body() -> None:
        engine = open_engine(make_url(empty_db_url))
        try:
            assert (await schema_status(engine)).current is None
            with pytest.raises(StoreError, match="no callrouter schema: run `callrouter db upgrade` first"):
                await require_current_schema(engine, engine.url)
            status = await upgrade(engine)
            assert status.current == head_revision() and status.up_to_date
            assert (await upgrade(engine)).current == head_revision()  # a second run changes nothing

            def diff(conn: Connection) -> list[object]:
                return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))

            async with engine.connect() as conn:
                assert await conn.run_sync(diff) == []
            await require_current_schema(engine, engine.url)
        finally:
            await engine.dispose()

    arun(body())


def test_a_schema_this_version_does_not_know_is_refused_with_what_to_do(db_url: str) -> None:
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
            with pytest.raises(StoreError, match=r"is at schema 0000, which this version of callrouter does not know"):
                await require_current_schema(engine, engine.url)
            with pytest.raises(StoreError, match=r"does not know"):
                await upgrade(engine)
        finally:
            await engine.dispose()

    arun(body())


def test_an_unreachable_database_is_told_apart_and_the_password_is_never_shown() -> None:
    async def body() -> None:
        engine = open_engine(make_url("postgresql+asyncpg://router:s3cret@127.0.0.1:1/cdr"), connect_timeout=2)
        try:
            with pytest.raises(StoreUnreachable) as caught:
                await schema_status(engine)
            assert "s3cret" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)
        finally:
            await engine.dispose()

    arun(body())


@pytest.mark.parametrize(
    ("given", "driver"),
    [("postgresql://u@h/db", "postgresql+asyncpg"), ("postgres://u@h/db", "postgresql+asyncpg"), ("sqlite:///x.db", "sqlite+aiosqlite")],
)
def test_database_urls_are_normalised_to_the_async_drivers(given: str, driver: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLROUTER_DATABASE_URL", raising=False)
    monkeypatch.chdir(str(tmp_path))
    assert resolve_url(given, ".").drivername == driver


def test_bad_urls_are_clear_errors_and_the_environment_wins(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLROUTER_DATABASE_URL", raising=False)
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        resolve_url("mysql://u@h/db", ".")
    with pytest.raises(StoreError, match="not a URL"):
        resolve_url("::::", ".")
    assert resolve_url(None, str(tmp_path)).database == f"{tmp_path}/var/callrouter.db"
    monkeypatch.setenv("CALLROUTER_DATABASE_URL", "postgresql://u@envhost/db")
    assert resolve_url("postgresql://u@filehost/db", ".").host == "envhost"
