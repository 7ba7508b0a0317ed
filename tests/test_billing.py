"""The billing rule is one rule: the Python function and the SQL the database sums with agree."""

from __future__ import annotations

from sqlalchemy import literal, select
from sqlalchemy.engine import make_url

from callrouter.model.billing import billed_minutes
from callrouter.store.billing import billed_minutes_sql
from callrouter.store.db import open_engine
from tests.harness import arun

SECONDS = [-5, 0, 1, 59, 60, 61, 119, 120, 121, 3599, 3600, 3601, 86_399]


def test_python_and_sql_bill_the_same_minutes(db_url: str) -> None:
    async def body() -> list[int]:
        engine = open_engine(make_url(db_url))
        try:
            async with engine.connect() as conn:
                return [int((await conn.execute(select(billed_minutes_sql(literal(s))))).scalar_one()) for s in SECONDS]
        finally:
            await engine.dispose()

    assert arun(body()) == [billed_minutes(s) for s in SECONDS]
    assert [billed_minutes(s) for s in (0, 1, 60, 61)] == [0, 1, 1, 2]
