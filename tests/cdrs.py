"""Call records for store tests, and small helpers to count what a database holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from callrouter.model.record import Attempt, CallRecord
from callrouter.store.db import open_engine
from callrouter.store.schema import call_attempts, call_stats, calls

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai


def record(i: int, *, number: str = "4008001234", caller: str = "13912345678", start: datetime = T0, answered: bool = True) -> CallRecord:
    started = start + timedelta(seconds=i)
    attempts = (Attempt("zhang", "Local/13800138001@callrouter-lines", "BUSY", 2), Attempt("li", "Local/13800138002@callrouter-lines", "ANSWER" if answered else "NOANSWER", 6, 40 if answered else 0))
    return CallRecord(
        uniqueid=f"1764000000.{i}",
        number=number,
        caller=caller,
        caller_raw=caller,
        caller_name="",
        channel=f"PJSIP/trunk-{i:08x}",
        started_at=started,
        ended_at=started + timedelta(seconds=50),
        answered_at=started + timedelta(seconds=10) if answered else None,
        disposition="answered" if answered else "no_answer",
        reason="answered by li" if answered else "nobody answered",
        ivr_path=("main:1",),
        group="sales",
        strategy="round_robin",
        attempts=attempts,
        answered_line="li" if answered else None,
        talk_seconds=40 if answered else 0,
        ring_seconds=8,
        recording_file=None,
        voicemail_file=None,
        instance="test",
        trace=("call to 4008001234", "result"),
    )


async def counts(url: str) -> tuple[int, int, int]:
    """(calls rows, attempt rows, calls counted in the statistics sums)."""
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            n_calls = (await conn.execute(select(func.count()).select_from(calls))).scalar_one()
            n_attempts = (await conn.execute(select(func.count()).select_from(call_attempts))).scalar_one()
            n_stats = (await conn.execute(select(func.coalesce(func.sum(call_stats.c.calls), 0)))).scalar_one()
        return int(n_calls), int(n_attempts), int(n_stats)
    finally:
        await engine.dispose()
