"""Migrations: an empty database is brought to the head schema, which is exactly what schema.py says;
an outdated or missing schema stops `serve` with a message that says what to run."""

from __future__ import annotations

from typing import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.db import _alembic_config as alembic_config
from callrouter.store.db import StoreError, StoreUnreachable, head_revision, open_engine, require_current_schema, resolve_url, schema_status, upgrade
from callrouter.store.schema import metadata
from tests.databases import empty_postgres
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


def test_upgrade_from_0002_keeps_existing_calls_and_their_attempts_and_lets_two_asterisks_share_a_uniqueid(empty_db_url: str) -> None:
    """0003: calls get a `source` ('' for the rows already there), the unique key becomes (uniqueid, source)
    and attempts point at their call by both."""
    t = "'2026-11-24 01:00:00+00:00'"
    call_columns = (
        "uniqueid, number, caller, caller_raw, caller_name, channel, instance, started_at, ended_at, duration_seconds,"
        " billable_seconds, ring_seconds, disposition, reason, ivr_path, router_ms, trace"
    )

    def call_values(uniqueid: str) -> str:
        return f"'{uniqueid}', '4008001234', '139', '139', '', 'PJSIP/x', 'r1', {t}, {t}, 50, 40, 8, 'answered', '', '', 1.0, ''"

    async def body() -> None:
        engine = open_engine(make_url(empty_db_url))
        try:
            assert (await upgrade(engine, "0002")).current == "0002"
            async with engine.begin() as conn:
                for uid in ("u.1", "u.2"):
                    await conn.execute(text(f"INSERT INTO calls ({call_columns}) VALUES ({call_values(uid)})"))
                    for seq in (1, 2):
                        await conn.execute(
                            text(
                                "INSERT INTO call_attempts (call_uniqueid, seq, line_id, target, status, ring_seconds, talk_seconds)"
                                f" VALUES ('{uid}', {seq}, 'l{seq}', 't', 'BUSY', 2, 0)"
                            )
                        )
            assert (await upgrade(engine)).current == head_revision()
            async with engine.begin() as conn:
                rows = (await conn.execute(text("SELECT source, uniqueid FROM calls ORDER BY uniqueid"))).all()
                assert [tuple(r) for r in rows] == [("", "u.1"), ("", "u.2")]
                attempts = (await conn.execute(text("SELECT call_source, call_uniqueid, seq FROM call_attempts ORDER BY 2, 3"))).all()
                assert [tuple(a) for a in attempts] == [("", "u.1", 1), ("", "u.1", 2), ("", "u.2", 1), ("", "u.2", 2)]
                # The same uniqueid from another Asterisk is another call, with attempts of its own.
                await conn.execute(text(f"INSERT INTO calls (source, {call_columns}) VALUES ('b', {call_values('u.1')})"))
                await conn.execute(
                    text(
                        "INSERT INTO call_attempts (call_source, call_uniqueid, seq, line_id, target, status, ring_seconds, talk_seconds)"
                        " VALUES ('b', 'u.1', 1, 'l9', 't', 'BUSY', 2, 0)"
                    )
                )
            with pytest.raises(Exception, match="(?i)unique"):  # the same source twice is still refused
                async with engine.begin() as conn:
                    await conn.execute(text(f"INSERT INTO calls (source, {call_columns}) VALUES ('b', {call_values('u.1')})"))
            async with engine.begin() as conn:  # deleting a call deletes its attempts, and only its own
                await conn.execute(text("DELETE FROM calls WHERE source = '' AND uniqueid = 'u.1'"))
                left = (await conn.execute(text("SELECT call_source, call_uniqueid FROM call_attempts ORDER BY 1, 2"))).all()
                assert [tuple(a) for a in left] == [("", "u.2"), ("", "u.2"), ("b", "u.1")]
        finally:
            await engine.dispose()

    arun(body())


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    yield from empty_postgres()


def test_0009_keeps_each_groups_rotation_going_and_its_downgrade_goes_back_to_the_rows(empty_pg_url: str) -> None:
    """0009 moves Postgres round-robin turns from rr_turns rows to a sequence per group: an upgrade continues
    where the row was, a downgrade brings back 0008's function and removes the sequences."""
    take = text("SELECT r_turn FROM callrouter_take('4008001234/sales', ARRAY['a', 'b'], ARRAY[1, 1], false, 'r', NULL, now()) WHERE r_line_key IS NULL")

    async def turn(engine: AsyncEngine) -> int:
        async with engine.begin() as conn:
            return int((await conn.execute(take)).scalar_one())

    async def sequences(engine: AsyncEngine) -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relname LIKE 'callrouter_turn_%'"))).scalar_one())

    async def body() -> None:
        engine = open_engine(make_url(empty_pg_url))
        try:
            assert (await upgrade(engine, "0008")).current == "0008"
            assert [await turn(engine), await turn(engine)] == [1, 2]  # rr_turns at 2
            await upgrade(engine)
            assert [await turn(engine), await turn(engine)] == [3, 4] and await sequences(engine) == 1
            async with engine.begin() as conn:
                assert (await conn.execute(text("SELECT turn FROM rr_turns"))).scalar_one() == 2  # no longer written
                await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0008"))
            assert (await schema_status(engine)).current == "0008" and await sequences(engine) == 0
            assert await turn(engine) == 3  # 0008's function again, on the row as the upgrade left it
        finally:
            await engine.dispose()

    arun(body())
