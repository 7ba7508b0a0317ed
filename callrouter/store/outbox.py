"""The outbox table: messages are queued in the transaction that causes them and claimed by a lease.

A sender claims due messages by pushing their `next_attempt_at` forward (the lease) in one statement;
Postgres skips rows another sender has locked, so several routers never send one message at once. If a
sender dies mid-send, the lease runs out and another sends it again: at-least-once, with the outbox id as
the gateway's idempotency key. What to queue and when to send are `callrouter.notify`'s pure rules; this
module only stores, so the CDR transaction (`cdr_store.py`) can queue messages without importing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.store.dialect import insert_ignore
from callrouter.store.schema import outbox


@dataclass(frozen=True)
class OutboxMessage:
    """A message to queue; shared by the missed-call rules and the package alerts."""

    kind: str  # missed_call | package_alert
    dedupe_key: str  # unique forever: the same event never becomes two messages
    channel: str  # sms | webhook
    recipient: str  # a phone number for sms; "" for the webhook (its URL is config)
    number: str  # the 400 number it is about
    caller: str  # the caller it is about ("" if none): the per-caller limit, never a metric label
    payload: Mapping[str, str]  # "text" plus the template fields


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    channel: str
    recipient: str
    number: str
    caller: str
    payload: dict[str, str]
    attempts: int  # including this one


@dataclass(frozen=True)
class Queued:
    """A message already in the outbox, by its once-only key (what `callrouter usage` lists)."""

    dedupe_key: str
    status: str  # pending | sent | failed | suppressed


def _rows_for(messages: Sequence[OutboxMessage], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "dedupe_key": m.dedupe_key[:200],
            "kind": m.kind,
            "channel": m.channel,
            "recipient": m.recipient[:64],
            "number": m.number[:20],
            "caller": m.caller[:32],
            "payload": json.dumps(dict(m.payload), ensure_ascii=False),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "sent_at": None,
            "last_error": "",
        }
        for m in messages
    ]


async def enqueue(target: AsyncEngine | AsyncConnection, messages: Sequence[OutboxMessage], now: datetime) -> int:
    """Queue messages; one whose dedupe key exists is skipped. Returns how many were new.

    Given a connection, inside its transaction (the CDR batch that caused them); given the engine, in its own."""
    if not messages:
        return 0
    dialect = target.dialect.name
    stmt = insert_ignore(outbox, dialect, ["dedupe_key"]).returning(outbox.c.id)
    rows = _rows_for(messages, now.astimezone(timezone.utc))
    if isinstance(target, AsyncConnection):
        return len((await target.execute(stmt, rows)).all())
    async with target.begin() as conn:
        return len((await conn.execute(stmt, rows)).all())


async def claim(engine: AsyncEngine, now: datetime, limit: int, lease: float) -> list[Claimed]:
    """Take up to `limit` due messages for this sender, for `lease` seconds."""
    due = select(outbox.c.id).where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now).order_by(outbox.c.next_attempt_at).limit(limit)
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + timedelta(seconds=lease), attempts=outbox.c.attempts + 1)
        .returning(outbox.c.id, outbox.c.kind, outbox.c.channel, outbox.c.recipient, outbox.c.number, outbox.c.caller, outbox.c.payload, outbox.c.attempts)
    )
    async with engine.begin() as conn:
        rows = (await conn.execute(stmt)).all()
    return [Claimed(r.id, r.kind, r.channel, r.recipient, r.number, r.caller, json.loads(r.payload), r.attempts) for r in rows]


async def finish(engine: AsyncEngine, message_id: int, status: str, now: datetime, error: str = "") -> None:
    values: dict[str, Any] = {"status": status, "last_error": error[:300]}
    if status == "sent":
        values["sent_at"] = now
    async with engine.begin() as conn:
        await conn.execute(update(outbox).where(outbox.c.id == message_id).values(**values))


async def retry_at(engine: AsyncEngine, message_id: int, when: datetime, error: str, *, count_attempt: bool = True) -> None:
    """Due again at `when`; a hold (quiet hours) gives the attempt back."""
    values: dict[str, Any] = {"next_attempt_at": when, "last_error": error[:300]}
    if not count_attempt:
        values["attempts"] = outbox.c.attempts - 1
    async with engine.begin() as conn:
        await conn.execute(update(outbox).where(outbox.c.id == message_id).values(**values))


async def sent_recently(engine: AsyncEngine, recipient: str, caller: str, kind: str, since: datetime) -> int:
    """Messages about this caller that reached this recipient since `since` (the per-caller limit)."""
    q = select(func.count()).where(
        and_(outbox.c.recipient == recipient, outbox.c.caller == caller, outbox.c.kind == kind, outbox.c.status == "sent", outbox.c.sent_at >= since)
    )
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox).where(outbox.c.status == "pending"))).scalar_one())


async def queued_since(engine: AsyncEngine, kind: str, number: str, since: datetime) -> list[Queued]:
    """Messages of one kind about one 400 number queued since `since`, whatever became of them."""
    q = select(outbox.c.dedupe_key, outbox.c.status).where(outbox.c.kind == kind, outbox.c.number == number, outbox.c.created_at >= since)
    async with engine.connect() as conn:
        return [Queued(key, status) for key, status in (await conn.execute(q)).all()]
