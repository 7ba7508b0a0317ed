"""Server-side console sessions and failed logins.

The cookie carries a random token; the table keeps only its SHA-256 (`web_sessions.id`), so reading the
table does not let anyone log in. A session is valid while it is not revoked, not past its absolute
expiry (fixed when it was made) and was seen within the idle timeout; a user's session also ends when the
user is disabled. A session without a user is the pre-login one that carries the login form's CSRF token;
logging in deletes it and makes a new one (a new id: a planted cookie never becomes a logged-in session).

Failed logins are rows, counted over a window per username and per address, so that every router behind
a load balancer applies the same limit.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import login_failures, web_sessions
from callrouter.store.tenants import Scope, scope_of_user, user_in, utc, utc_or_none


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class WebSession:
    id: str
    user_id: int | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    csrf_token: str
    address: str
    user_agent: str


@dataclass(frozen=True)
class LiveSession:
    """A valid session and, once logged in, the scope of its user."""

    session: WebSession
    scope: Scope | None


def _session(row: Mapping[Any, Any]) -> WebSession:
    return WebSession(
        id=str(row["id"]),
        user_id=None if row["user_id"] is None else int(row["user_id"]),
        created_at=utc(row["created_at"]),
        last_seen_at=utc(row["last_seen_at"]),
        expires_at=utc(row["expires_at"]),
        revoked_at=utc_or_none(row["revoked_at"]),
        csrf_token=str(row["csrf_token"]),
        address=str(row["address"]),
        user_agent=str(row["user_agent"]),
    )


async def create_session(
    engine: AsyncEngine, *, user_id: int | None, now: datetime, lifetime: timedelta, address: str, user_agent: str
) -> tuple[str, WebSession]:
    """A new session: (the cookie's token, the row). Expired sessions are swept on the way."""
    token = secrets.token_urlsafe(32)
    row = {
        "id": session_id(token), "user_id": user_id, "created_at": now, "last_seen_at": now, "expires_at": now + lifetime,
        "revoked_at": None, "csrf_token": secrets.token_urlsafe(32), "address": address[:64], "user_agent": user_agent[:200],
    }
    async with engine.begin() as conn:
        await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
        await conn.execute(web_sessions.insert().values(**row))
    return token, _session(row)


async def load_session(engine: AsyncEngine, token: str, *, now: datetime, idle: timedelta) -> LiveSession | None:
    """The session the cookie's token names, if it is still valid; with the user's scope once logged in."""
    if not token or len(token) > 200:
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(select(web_sessions).where(web_sessions.c.id == session_id(token)))).mappings().first()
        if row is None:
            return None
        session = _session(row)
        if session.revoked_at is not None or session.expires_at <= now or session.last_seen_at <= now - idle:
            return None
        if session.user_id is None:
            return LiveSession(session, None)
        user = await user_in(conn, session.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return LiveSession(session, await scope_of_user(conn, user))


async def touch(engine: AsyncEngine, sid: str, now: datetime) -> None:
    """Push the idle timeout forward (the absolute expiry stays)."""
    async with engine.begin() as conn:
        await conn.execute(update(web_sessions).where(web_sessions.c.id == sid).values(last_seen_at=now))


async def revoke_session(engine: AsyncEngine, sid: str, now: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(web_sessions).where(web_sessions.c.id == sid, web_sessions.c.revoked_at.is_(None)).values(revoked_at=now))


async def delete_session(engine: AsyncEngine, sid: str) -> None:
    """Drop a pre-login session once it has served (at login)."""
    async with engine.begin() as conn:
        await conn.execute(delete(web_sessions).where(web_sessions.c.id == sid))


async def revoke_user_sessions(engine: AsyncEngine, user_id: int, now: datetime) -> int:
    """End every live session of the user (password change, disabling, `users revoke-sessions`)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(web_sessions)
            .where(web_sessions.c.user_id == user_id, web_sessions.c.revoked_at.is_(None), web_sessions.c.expires_at > now)
            .values(revoked_at=now)
        )
    return int(result.rowcount or 0)


# -- failed logins ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailureCounts:
    """Failures within the window, per username and per address, and when the oldest of each was."""

    by_user: int
    by_address: int
    oldest_by_user: datetime | None
    oldest_by_address: datetime | None


async def count_failures(engine: AsyncEngine, username: str, address: str, since: datetime) -> FailureCounts:
    t = login_failures
    q = select(
        func.count().filter(t.c.username == username),
        func.min(t.c.at).filter(t.c.username == username),
        func.count().filter(t.c.address == address),
        func.min(t.c.at).filter(t.c.address == address),
    ).where(t.c.at > since, or_(t.c.username == username, t.c.address == address))
    async with engine.connect() as conn:
        by_user, oldest_user, by_address, oldest_address = (await conn.execute(q)).one()
    return FailureCounts(int(by_user or 0), int(by_address or 0), utc_or_none(oldest_user), utc_or_none(oldest_address))


async def add_failure(engine: AsyncEngine, username: str, address: str, now: datetime, *, keep: timedelta) -> None:
    """One failed login; failures older than `keep` are swept on the way."""
    async with engine.begin() as conn:
        await conn.execute(delete(login_failures).where(login_failures.c.at < now - keep))
        await conn.execute(login_failures.insert().values(at=now, username=username[:80], address=address[:64]))


async def clear_failures(engine: AsyncEngine, username: str) -> None:
    """After a successful login the user's count starts again (the address's does not)."""
    async with engine.begin() as conn:
        await conn.execute(delete(login_failures).where(login_failures.c.username == username))
