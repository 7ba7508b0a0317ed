"""The audit log: who did what, when, from where, with the value before and after. Append-only.

This module inserts rows and reads them; it has no update or delete, and nothing else writes the table.
A tenant reads only its own rows; the provider reads all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import audit_log
from callrouter.store.tenants import Scope, utc

# The actions written today (page builders add theirs here, so the audit page can name them).
ACTIONS = (
    "login", "login_failed", "logout",
    "tenant_add", "tenant_number_add", "tenant_number_remove",
    "user_add", "user_password", "user_disable", "user_enable", "user_role", "user_revoke_sessions",
    "token_add", "token_revoke",
    "blacklist_add", "blacklist_remove",
    "calls_export", "recording_download", "recording_listen",
    "plan_save", "plan_restore", "plan_apply",  # issue 14: a new plan version (console/API), a restore, `plans apply`
    "prompt_upload", "prompt_generate", "test_call",  # issue 14: a prompt made from the browser (held until applied), a test call
)


@dataclass(frozen=True)
class AuditEvent:
    """One thing to record. `by()` fills who and where from a scope."""

    action: str
    target: str
    tenant_id: int | None
    user_id: int | None
    username: str
    address: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None

    @classmethod
    def by(cls, scope: Scope, address: str, action: str, target: str,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None) -> "AuditEvent":
        return cls(action, target, scope.tenant_id, scope.user_id, scope.username, address, before, after)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    tenant_id: int | None
    user_id: int | None
    username: str
    address: str
    action: str
    target: str
    before: Any  # the JSON value recorded, or None
    after: Any


def _dump(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


async def record(engine: AsyncEngine, event: AuditEvent, *, now: datetime) -> None:
    row = {
        "at": now, "tenant_id": event.tenant_id, "user_id": event.user_id, "username": event.username[:80],
        "address": event.address[:64], "action": event.action[:40], "target": event.target[:200],
        "before_json": _dump(event.before), "after_json": _dump(event.after),
    }
    async with engine.begin() as conn:
        await conn.execute(audit_log.insert().values(**row))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def audit_entries(
    engine: AsyncEngine, *, tenant_id: int | None, limit: int, before_id: int | None = None, action: str | None = None,
    username: str | None = None, since: datetime | None = None, until: datetime | None = None,
) -> list[AuditEntry]:
    """Newest first; tenant_id None: every row (the provider), else only that tenant's.

    `before_id` pages back (the last id of the previous page); `username` matches whole names, any case;
    `since` is inclusive and `until` exclusive."""
    q = select(audit_log)
    if tenant_id is not None:
        q = q.where(audit_log.c.tenant_id == tenant_id)
    if before_id is not None:
        q = q.where(audit_log.c.id < before_id)
    if action is not None:
        q = q.where(audit_log.c.action == action)
    if username is not None:
        q = q.where(func.lower(audit_log.c.username) == username.strip().lower())
    if since is not None:
        q = q.where(audit_log.c.at >= since)
    if until is not None:
        q = q.where(audit_log.c.at < until)
    async with engine.connect() as conn:
        rows = (await conn.execute(q.order_by(audit_log.c.id.desc()).limit(limit))).mappings().all()
    return [
        AuditEntry(
            id=int(r["id"]), at=utc(r["at"]), tenant_id=r["tenant_id"], user_id=r["user_id"], username=str(r["username"]),
            address=str(r["address"]), action=str(r["action"]), target=str(r["target"]),
            before=_load(r["before_json"]), after=_load(r["after_json"]),
        )
        for r in rows
    ]


async def has_entry_since(engine: AsyncEngine, *, tenant_id: int | None, user_id: int | None, action: str, target: str,
                          since: datetime) -> bool:
    """Whether this user already has an `action` row for `target` at or after `since` (the console audits a
    recording's first ranged request of a session as one listen, not each seek)."""
    q = select(audit_log.c.id).where(audit_log.c.action == action, audit_log.c.target == target[:200], audit_log.c.at >= since)
    q = q.where(audit_log.c.tenant_id.is_(None) if tenant_id is None else audit_log.c.tenant_id == tenant_id)
    q = q.where(audit_log.c.user_id.is_(None) if user_id is None else audit_log.c.user_id == user_id)
    async with engine.connect() as conn:
        return (await conn.execute(q.limit(1))).first() is not None
