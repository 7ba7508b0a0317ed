"""Readiness: does the database answer a trivial query? (The caller bounds how long it may take.)"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def ping(engine: AsyncEngine) -> None:
    """Returns once the database answered; raises whatever reaching it raised."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
