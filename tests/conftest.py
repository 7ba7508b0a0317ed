"""Fixtures: `db_url` is a migrated database, once on SQLite and once on Postgres, for every store test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.databases import BACKENDS, empty_postgres, fresh_postgres, fresh_sqlite, postgres_template


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    yield from postgres_template()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield fresh_sqlite(str(tmp_path / "store.db"))
    else:
        yield from fresh_postgres(request.getfixturevalue("pg_template"))


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    else:
        yield from empty_postgres()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Postgres only: for what needs a networked database (outages through a proxy, several routers)."""
    yield from fresh_postgres(request.getfixturevalue("pg_template"))
