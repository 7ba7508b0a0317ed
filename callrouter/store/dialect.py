"""The few statements that Postgres and SQLite spell differently, behind one function each."""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def _insert(table: Table, dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"unsupported database {dialect!r} (use postgresql+asyncpg or sqlite+aiosqlite)")


def insert_ignore(table: Table, dialect: str, index: Sequence[str]) -> Insert:
    """INSERT that silently skips rows whose `index` columns already exist (replays, retries)."""
    stmt: Insert = _insert(table, dialect).on_conflict_do_nothing(index_elements=list(index))
    return stmt


def upsert_add(table: Table, dialect: str, index: Sequence[str], add: Sequence[str]) -> Insert:
    """INSERT, or add the new row's `add` columns to the existing row: running sums written concurrently."""
    stmt = _insert(table, dialect)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(index),
        set_={name: table.c[name] + stmt.excluded[name] for name in add},
    )


def upsert_set(table: Table, dialect: str, index: Sequence[str], assign: Sequence[str]) -> Insert:
    """INSERT, or overwrite the existing row's `assign` columns with the new row's."""
    stmt = _insert(table, dialect)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(index),
        set_={name: stmt.excluded[name] for name in assign},
    )


def increment(table: Table, dialect: str, key: str, counter: str) -> Insert:
    """INSERT key with counter 1, or add 1 to it; returns the counter after the change, atomically."""
    stmt = _insert(table, dialect)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[key], set_={counter: table.c[counter] + 1}
    ).returning(table.c[counter])
