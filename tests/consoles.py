"""A real admin API with the console mounted, on a loopback port, over a real database, with a clock the
test moves; two tenants and their users seeded. Shared by the console and API tenancy tests."""

from __future__ import annotations

import dataclasses
import re
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api.app import AdminServer, build_admin_app
from callrouter.api.context import AdminDeps
from callrouter.config.holder import ConfigHolder
from callrouter.config.loader import load_config
from callrouter.config.service import Console
from callrouter.console.app import build_console_app
from callrouter.console.passwords import Passwords
from callrouter.metrics import RouterMetrics
from callrouter.store.audit import AuditEntry, audit_entries
from callrouter.store.blacklist import BlacklistStore
from callrouter.store.db import open_engine
from callrouter.store.tenants import add_number, add_tenant, add_user
from tests.cdrs import T0
from tests.test_admin_api import workspace

NUMBER_A, NUMBER_B = "4008001234", "4008005678"
PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)  # fast tests; the default is for production


class Clock:
    """The time the app sees; tests move it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclasses.dataclass
class Seeded:
    tenant_a: int
    tenant_b: int


@dataclasses.dataclass
class Site:
    base: str
    http: aiohttp.ClientSession
    engine: AsyncEngine
    clock: Clock
    seeded: Seeded
    rec: Path
    config_path: Path

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.base}

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, (await r.read()).decode("utf-8", "replace"), r

    async def post(self, path: str, data: dict[str, str] | None = None, *, origin: bool = True, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        headers = {**(self.origin if origin else {}), **kw.pop("headers", {})}
        async with self.http.post(self.base + path, data=data or {}, headers=headers, allow_redirects=False, **kw) as r:
            return r.status, (await r.read()).decode("utf-8", "replace"), r

    async def get_as(self, session_token: str, path: str = "/console/") -> int:
        """GET with only this session cookie (a copied or an old one), outside the test's own cookie jar."""
        headers = {"Cookie": f"callrouter_session={session_token}"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other, \
                other.get(self.base + path, headers=headers, allow_redirects=False) as r:
            return r.status

    def cookie(self) -> str | None:
        for c in self.http.cookie_jar:
            if c.key == "callrouter_session":
                return c.value
        return None

    async def csrf(self, path: str = "/console/login") -> str:
        status, html, _ = await self.get(path)
        assert status == 200, (status, html[:300])
        return csrf_in(html)

    async def login(self, username: str, password: str = PASSWORD, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        """From a browser with no cookies: the login form, then the post."""
        self.http.cookie_jar.clear()
        token = await self.csrf()
        return await self.post("/console/login", {"username": username, "password": password, "csrf": token}, **kw)

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        return await audit_entries(self.engine, tenant_id=None, limit=1000, action=action)


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def seed(engine: AsyncEngine, passwords: Passwords) -> Seeded:
    """甲公司 owns NUMBER_A, 乙公司 NUMBER_B; users: boss (provider), a-owner, a-viewer (no download), b-owner."""
    now = T0 - timedelta(days=1)
    a = await add_tenant(engine, "甲公司", now=now)
    b = await add_tenant(engine, "乙公司", now=now)
    await add_number(engine, a.id, NUMBER_A, now=now)
    await add_number(engine, b.id, NUMBER_B, now=now)
    hashed = await passwords.hash(PASSWORD)
    for name, role, tenant, download in (("boss", "provider", None, True), ("a-owner", "owner", a.id, True),
                                          ("a-viewer", "viewer", a.id, False), ("b-owner", "owner", b.id, True)):
        await add_user(engine, name, hashed, role, tenant, can_listen=True, can_download=download, now=now)
    return Seeded(a.id, b.id)


@asynccontextmanager
async def running_site(
    tmp_path: Path, db_url: str, *, token: str | None = None, console: dict[str, Any] | None = None, passwords: Passwords | None = None,
) -> AsyncIterator[Site]:
    cfg = workspace(tmp_path, db_url)
    config = load_config(str(cfg))
    holder = ConfigHolder(config, RouterMetrics())
    engine = open_engine(make_url(db_url))
    clock = Clock(T0 + timedelta(hours=2))
    blacklist = BlacklistStore(engine)

    async def no_refresh() -> None:
        return None

    deps = AdminDeps(holder, engine, blacklist, no_refresh, [], clock)
    passwords = passwords or Passwords(CHEAP)
    seeded = await seed(engine, passwords)
    settings = Console(**(console or {}))
    app = build_admin_app(deps, config.service.admin, token, {"/console/": build_console_app(deps, settings, passwords)})
    server = AdminServer(app)
    await server.start("127.0.0.1", 0, token)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Site(f"http://127.0.0.1:{server.port}", http, engine, clock, seeded, tmp_path / "rec", cfg)
    finally:
        await server.close()
        await engine.dispose()
