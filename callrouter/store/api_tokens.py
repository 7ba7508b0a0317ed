"""Per-tenant API tokens for machines: `read` (GET only) or `write` (also the blacklist routes).

The token is shown once when made; the table keeps its SHA-256, looked up by equality (a hash of a
random 256-bit token needs no slow hash and leaks nothing by timing). The admin token of config.yaml
stays the provider's and is not stored here (`admin_token_scope`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.store.schema import api_tokens, tenants
from callrouter.store.tenants import (
    DOWNLOAD, LISTEN, PLANS, PROVIDER_ROLE, READ, BLACKLIST, ROLE_PERMISSIONS, AccountError, Scope, tenant_scope_parts, utc, utc_or_none,
)

TOKEN_SCOPES = ("read", "write")
TOKEN_PREFIX = "crt_"
SCOPE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "read": frozenset({READ, LISTEN, DOWNLOAD}),
    "write": frozenset({READ, LISTEN, DOWNLOAD, BLACKLIST, PLANS}),
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}\Z")
_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    id: int
    tenant_id: int
    tenant_name: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _token(row: Mapping[Any, Any]) -> ApiToken:
    return ApiToken(
        id=int(row["id"]), tenant_id=int(row["tenant_id"]), tenant_name=str(row["tenant_name"]), name=str(row["name"]),
        scope=str(row["scope"]), created_at=utc(row["created_at"]), revoked_at=utc_or_none(row["revoked_at"]),
        last_used_at=utc_or_none(row["last_used_at"]),
    )


def _query() -> Any:
    return select(api_tokens, tenants.c.name.label("tenant_name")).select_from(api_tokens.join(tenants, api_tokens.c.tenant_id == tenants.c.id))


async def add_token(engine: AsyncEngine, tenant_id: int, name: str, scope: str, *, now: datetime) -> tuple[str, ApiToken]:
    """A new token: (the secret, shown once; the stored row)."""
    if not _NAME.match(name):
        raise AccountError("token name: 1 to 80 of A-Z a-z 0-9 _ . -")
    if scope not in TOKEN_SCOPES:
        raise AccountError("token scope: read or write")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with engine.begin() as conn:
            await conn.execute(api_tokens.insert().values(
                tenant_id=tenant_id, name=name, token_hash=token_hash(secret), scope=scope, created_at=now))
            row = (await conn.execute(_query().where(api_tokens.c.token_hash == token_hash(secret)))).mappings().one()
    except IntegrityError:
        raise AccountError(f"the tenant has a token named {name!r} already (revoked ones keep their name)") from None
    return secret, _token(row)


async def list_tokens(engine: AsyncEngine, *, tenant_id: int | None) -> list[ApiToken]:
    """The tenant's tokens (tenant_id None: every tenant's), revoked ones included."""
    q = _query()
    if tenant_id is not None:
        q = q.where(api_tokens.c.tenant_id == tenant_id)
    async with engine.connect() as conn:
        return [_token(r) for r in (await conn.execute(q.order_by(tenants.c.name, api_tokens.c.name))).mappings()]


async def revoke_token(engine: AsyncEngine, tenant_id: int, name: str, *, now: datetime) -> ApiToken | None:
    """Revoke the named token of the tenant; None when it has none by that name that is live."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.tenant_id == tenant_id, api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if not result.rowcount:
            return None
        row = (await conn.execute(_query().where(api_tokens.c.tenant_id == tenant_id, api_tokens.c.name == name))).mappings().one()
    return _token(row)


async def scope_of_token(engine: AsyncEngine, secret: str, *, now: datetime) -> Scope | None:
    """The scope of a live tenant token, or None (unknown, revoked, or not a token of ours)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(_query().where(api_tokens.c.token_hash == token_hash(secret)))).mappings().first()
        if row is None or row["revoked_at"] is not None:
            return None
        token = _token(row)
        parts = await tenant_scope_parts(conn, token.tenant_id)
    if parts is None:
        return None
    if token.last_used_at is None or now - token.last_used_at >= _TOUCH_EVERY:
        async with engine.begin() as conn:
            await conn.execute(update(api_tokens).where(api_tokens.c.id == token.id).values(last_used_at=now))
    name, numbers = parts
    return Scope(token.tenant_id, name, numbers, f"token:{token.scope}", SCOPE_PERMISSIONS[token.scope], None, f"token:{token.name}")


def admin_token_scope() -> Scope:
    """The configured admin token (or a token-less loopback API): the provider's, every number."""
    permissions = ROLE_PERMISSIONS[PROVIDER_ROLE] | {LISTEN, DOWNLOAD}
    return Scope(None, None, None, PROVIDER_ROLE, permissions, None, "admin-token")
