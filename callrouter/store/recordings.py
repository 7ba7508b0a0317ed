"""Recordings the retention purge may delete, by keyset pages over the CDRs, and the mark once they are gone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import calls


@dataclass(frozen=True)
class DueRecording:
    call_id: int
    recording_file: str  # as the router stored it (checked against the folder before anything is deleted)


async def recordings_due(engine: AsyncEngine, cutoff: datetime, after: int, limit: int) -> list[DueRecording]:
    """Up to `limit` calls above id `after`, started before `cutoff`, with a recording not yet purged; by id."""
    q = (
        select(calls.c.id, calls.c.recording_file)
        .where(calls.c.recording_file.is_not(None), calls.c.recording_purged_at.is_(None), calls.c.started_at < cutoff, calls.c.id > after)
        .order_by(calls.c.id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [DueRecording(int(r[0]), str(r[1])) for r in (await conn.execute(q)).all()]


async def mark_purged(engine: AsyncEngine, call_ids: Sequence[int], now: datetime) -> None:
    """The recordings of these calls are gone (deleted now, or already missing): never looked at again."""
    async with engine.begin() as conn:
        await conn.execute(update(calls).where(calls.c.id.in_(list(call_ids))).values(recording_purged_at=now))
