"""Billed minutes per 400 number over a time range: what the minutes packages and `callrouter usage` count."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.billing import billed_minutes_sql
from callrouter.store.schema import calls


async def billed_minutes_between(engine: AsyncEngine, number: str, start: datetime, end: datetime) -> int:
    """Answered calls that started in [start, end), billed by the started minute; one indexed range
    query on calls(number, started_at)."""
    q = select(func.coalesce(func.sum(billed_minutes_sql(calls.c.billable_seconds)), 0)).where(
        calls.c.number == number, calls.c.started_at >= start, calls.c.started_at < end, calls.c.disposition == "answered"
    )
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())
