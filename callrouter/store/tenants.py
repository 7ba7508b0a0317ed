"""Tenants (the companies), their 400 numbers, the users who log in, and `Scope`: what one request may see.

A `Scope` is made only from a verified web session (`web_sessions.load_session`) or a verified API token
(`api_tokens.scope_of_token`, `api_tokens.admin_token_scope`); nothing builds one from a request parameter.
Every query that reads calls, recordings or blacklist entries takes `numbers` (the scope's, or None for the
provider: every number) as a required argument, so a handler cannot forget the tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.store.schema import USER_ROLES, tenant_numbers, tenants, users

TENANT_ROLES = ("owner", "admin", "viewer")
PROVIDER_ROLE = "provider"

# Permissions: what a scope may do beyond seeing its numbers' data.
READ = "read"  # calls, statistics, plans, the audit log of its tenant; CSV exports
LISTEN = "listen"  # play a recording in the browser
DOWNLOAD = "download"  # download a recording (the API's recording routes)
BLACKLIST = "blacklist"  # add and remove blacklist entries
PLANS = "plans"  # change routing plans (the next issue)
USERS = "users"  # manage the users of its own tenant
PROVIDER = "provider"  # tenants, every user, every number: the provider's staff and the admin token

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "provider": frozenset({READ, BLACKLIST, PLANS, USERS, PROVIDER}),
    "owner": frozenset({READ, BLACKLIST, PLANS, USERS}),
    "admin": frozenset({READ, BLACKLIST, PLANS}),
    "viewer": frozenset({READ}),
}

_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.@\-]{0,79}\Z")
_NUMBER = re.compile(r"[0-9]{3,20}\Z")


class AccountError(ValueError):
    """A tenant, number, user or token change that cannot be made as asked; the message says why."""


def utc(value: datetime) -> datetime:
    """SQLite hands back naive times; everything stored is UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


@dataclass(frozen=True)
class Scope:
    """Who is asking and what they may see: the tenant (None for the provider) and its numbers (None: all)."""

    tenant_id: int | None
    tenant_name: str | None
    numbers: frozenset[str] | None  # None: every number (the provider)
    role: str
    permissions: frozenset[str]
    user_id: int | None  # None for API tokens
    username: str  # for the audit log: the user, "token:<name>", or "admin-token"

    @property
    def is_provider(self) -> bool:
        return self.tenant_id is None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def allows(self, number: str) -> bool:
        """Whether this scope may see the 400 number (unknown numbers are simply not its own)."""
        return self.numbers is None or number in self.numbers


def permissions_for(role: str, can_listen: bool, can_download: bool) -> frozenset[str]:
    extra = ({LISTEN} if can_listen else set()) | ({DOWNLOAD} if can_download else set())
    return ROLE_PERMISSIONS[role] | extra


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    created_at: datetime
    numbers: frozenset[str]


@dataclass(frozen=True)
class User:
    """A `users` row without its password hash (that is only in `Credentials`)."""

    id: int
    tenant_id: int | None
    tenant_name: str | None
    username: str
    role: str
    can_listen: bool
    can_download: bool
    disabled_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_for(self.role, self.can_listen, self.can_download)

    def audit_json(self) -> dict[str, Any]:
        """What the audit log records of a user (never a password hash)."""
        return {"username": self.username, "role": self.role, "tenant": self.tenant_name, "can_listen": self.can_listen,
                "can_download": self.can_download, "disabled": self.disabled_at is not None}


@dataclass(frozen=True)
class Credentials:
    user: User
    password_hash: str


def normalize_username(raw: str) -> str:
    """Usernames are compared case-insensitively, without surrounding spaces."""
    return raw.strip().lower()


def check_username(raw: str) -> str:
    name = normalize_username(raw)
    if not _USERNAME.match(name):
        raise AccountError("username: 1 to 80 of a-z 0-9 _ . @ -, starting with a letter or digit")
    return name


def check_number(number: str) -> str:
    if not _NUMBER.match(number):
        raise AccountError(f"number: a 400 number is 3 to 20 digits, not {number[:40]!r}")
    return number


# -- tenants and their numbers ---------------------------------------------------------------------

async def _numbers_of(conn: AsyncConnection, tenant_id: int) -> frozenset[str]:
    rows = await conn.execute(select(tenant_numbers.c.number).where(tenant_numbers.c.tenant_id == tenant_id))
    return frozenset(str(r[0]) for r in rows)


async def add_tenant(engine: AsyncEngine, name: str, *, now: datetime) -> Tenant:
    name = name.strip()
    if not 1 <= len(name) <= 120 or not name.isprintable():
        raise AccountError("tenant name: 1 to 120 printable characters")
    try:
        async with engine.begin() as conn:
            new_id = (await conn.execute(tenants.insert().values(name=name, created_at=now).returning(tenants.c.id))).scalar_one()
    except IntegrityError:
        raise AccountError(f"a tenant named {name!r} exists already") from None
    return Tenant(int(new_id), name, utc(now), frozenset())


async def find_tenant(engine: AsyncEngine, name: str) -> Tenant | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(tenants).where(tenants.c.name == name.strip()))).mappings().first()
        if row is None:
            return None
        return Tenant(int(row["id"]), str(row["name"]), utc(row["created_at"]), await _numbers_of(conn, int(row["id"])))


async def get_tenant(engine: AsyncEngine, tenant_id: int) -> Tenant | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).mappings().first()
        if row is None:
            return None
        return Tenant(int(row["id"]), str(row["name"]), utc(row["created_at"]), await _numbers_of(conn, tenant_id))


async def list_tenants(engine: AsyncEngine) -> list[Tenant]:
    """Every tenant with its numbers, by name (for provider staff and the CLI)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(tenants).order_by(tenants.c.name))).mappings().all()
        owned: dict[int, set[str]] = {}
        for number, tenant_id in await conn.execute(select(tenant_numbers.c.number, tenant_numbers.c.tenant_id)):
            owned.setdefault(int(tenant_id), set()).add(str(number))
    return [Tenant(int(r["id"]), str(r["name"]), utc(r["created_at"]), frozenset(owned.get(int(r["id"]), ()))) for r in rows]


async def number_owner(engine: AsyncEngine, number: str) -> int | None:
    async with engine.connect() as conn:
        owner = (await conn.execute(select(tenant_numbers.c.tenant_id).where(tenant_numbers.c.number == number))).scalar()
    return None if owner is None else int(owner)


async def add_number(engine: AsyncEngine, tenant_id: int, number: str, *, now: datetime) -> None:
    """Give the 400 number to the tenant; refused when another tenant has it (a number has one owner)."""
    number = check_number(number)
    owner = await number_owner(engine, number)
    if owner == tenant_id:
        return
    if owner is not None:
        raise AccountError(f"{number} belongs to another tenant: remove it there first")
    try:
        async with engine.begin() as conn:
            await conn.execute(tenant_numbers.insert().values(number=number, tenant_id=tenant_id, added_at=now))
    except IntegrityError:  # taken between the check and the insert
        raise AccountError(f"{number} belongs to another tenant: remove it there first") from None


async def remove_number(engine: AsyncEngine, tenant_id: int, number: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(tenant_numbers).where(tenant_numbers.c.tenant_id == tenant_id, tenant_numbers.c.number == number)
        )
    return bool(result.rowcount)


# -- users -----------------------------------------------------------------------------------------

_USER_COLUMNS = [users.c[name] for name in ("id", "tenant_id", "username", "role", "can_listen", "can_download",
                                            "disabled_at", "created_at", "last_login_at")]


def _user(row: Mapping[Any, Any]) -> User:
    return User(
        id=int(row["id"]),
        tenant_id=None if row["tenant_id"] is None else int(row["tenant_id"]),
        tenant_name=row.get("tenant_name"),
        username=str(row["username"]),
        role=str(row["role"]),
        can_listen=bool(row["can_listen"]),
        can_download=bool(row["can_download"]),
        disabled_at=utc_or_none(row["disabled_at"]),
        created_at=utc(row["created_at"]),
        last_login_at=utc_or_none(row["last_login_at"]),
    )


def _user_query() -> Any:
    return select(*_USER_COLUMNS, tenants.c.name.label("tenant_name")).select_from(
        users.outerjoin(tenants, users.c.tenant_id == tenants.c.id)
    )


async def add_user(
    engine: AsyncEngine, username: str, password_hash: str, role: str, tenant_id: int | None,
    *, can_listen: bool, can_download: bool, now: datetime,
) -> User:
    name = check_username(username)
    if role not in USER_ROLES:
        raise AccountError(f"role: one of {', '.join(USER_ROLES)}")
    if (role == PROVIDER_ROLE) != (tenant_id is None):
        raise AccountError("provider staff have no tenant; every other role belongs to one tenant")
    row = {"tenant_id": tenant_id, "username": name, "password_hash": password_hash, "role": role,
           "can_listen": can_listen, "can_download": can_download, "created_at": now}
    try:
        async with engine.begin() as conn:
            await conn.execute(users.insert().values(**row))
    except IntegrityError:
        raise AccountError(f"the username {name!r} is taken") from None
    found = await find_user(engine, name)
    assert found is not None
    return found.user


async def find_user(engine: AsyncEngine, username: str) -> Credentials | None:
    """The user and password hash for a login (None when there is no such user; disabled ones are returned)."""
    q = _user_query().add_columns(users.c.password_hash).where(users.c.username == normalize_username(username))
    async with engine.connect() as conn:
        row = (await conn.execute(q)).mappings().first()
    return None if row is None else Credentials(_user(row), str(row["password_hash"]))


async def get_user(engine: AsyncEngine, user_id: int) -> User | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_user_query().where(users.c.id == user_id))).mappings().first()
    return None if row is None else _user(row)


async def list_users(engine: AsyncEngine, *, tenant_id: int | None) -> list[User]:
    """The tenant's users; tenant_id None: every user (provider staff first, then by tenant and name)."""
    q = _user_query()
    if tenant_id is not None:
        q = q.where(users.c.tenant_id == tenant_id)
    q = q.order_by(users.c.tenant_id.is_not(None), tenants.c.name, users.c.username)
    async with engine.connect() as conn:
        return [_user(r) for r in (await conn.execute(q)).mappings()]


async def _update_user(engine: AsyncEngine, user_id: int, **values: Any) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(update(users).where(users.c.id == user_id).values(**values))
    return bool(result.rowcount)


async def set_password_hash(engine: AsyncEngine, user_id: int, password_hash: str) -> bool:
    return await _update_user(engine, user_id, password_hash=password_hash)


async def set_disabled(engine: AsyncEngine, user_id: int, disabled_at: datetime | None) -> bool:
    return await _update_user(engine, user_id, disabled_at=disabled_at)


async def set_role(engine: AsyncEngine, user: User, role: str, *, can_listen: bool, can_download: bool) -> User:
    """A tenant's user keeps its tenant: a company role cannot become `provider`, nor the reverse."""
    if role not in USER_ROLES:
        raise AccountError(f"role: one of {', '.join(USER_ROLES)}")
    if (role == PROVIDER_ROLE) != (user.tenant_id is None):
        raise AccountError("provider staff stay provider staff and a tenant's user stays in a company role; make a new user instead")
    await _update_user(engine, user.id, role=role, can_listen=can_listen, can_download=can_download)
    changed = await get_user(engine, user.id)
    assert changed is not None
    return changed


async def record_login(engine: AsyncEngine, user_id: int, now: datetime) -> None:
    await _update_user(engine, user_id, last_login_at=now)


async def count_users(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())


async def scope_of_user(conn: AsyncConnection, user: User) -> Scope:
    """The scope of a verified user (called by the session and token modules, never by a handler)."""
    numbers = None if user.tenant_id is None else await _numbers_of(conn, user.tenant_id)
    return Scope(user.tenant_id, user.tenant_name, numbers, user.role, user.permissions, user.id, user.username)


async def user_in(conn: AsyncConnection, user_id: int) -> User | None:
    row = (await conn.execute(_user_query().where(users.c.id == user_id))).mappings().first()
    return None if row is None else _user(row)


async def tenant_scope_parts(conn: AsyncConnection, tenant_id: int) -> tuple[str, frozenset[str]] | None:
    """(name, numbers) of a tenant, for a token's scope."""
    name = (await conn.execute(select(tenants.c.name).where(tenants.c.id == tenant_id))).scalar()
    return None if name is None else (str(name), await _numbers_of(conn, tenant_id))
