"""The tenancy repositories on SQLite and Postgres: scopes from sessions and tokens, queries bounded by a
scope's numbers, the audit log per tenant, failed-login counts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from callrouter.store.api_tokens import add_token, admin_token_scope, scope_of_token
from callrouter.store.audit import AuditEvent, audit_entries, record
from callrouter.store.blacklist import BlacklistStore, OutOfScope
from callrouter.store.calls import CallFilter, call_with_recording, count_calls, find_call, search_calls
from callrouter.store.db import open_engine
from callrouter.store.tenants import (
    DOWNLOAD, LISTEN, PROVIDER, READ, AccountError, add_number, add_tenant, add_user, remove_number,
)
from callrouter.store.web_sessions import add_failure, clear_failures, count_failures, create_session, load_session
from tests.cdrs import T0, record as cdr
from tests.harness import arun
from tests.test_exporter import write

A, B = "4008001234", "4008005678"


def test_scopes_come_from_sessions_and_tokens_and_bound_every_query(db_url: str) -> None:
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            now = T0
            t = await add_tenant(engine, "甲公司", now=now)
            other = await add_tenant(engine, "乙公司", now=now)
            await add_number(engine, t.id, A, now=now)
            with pytest.raises(AccountError, match="another tenant"):
                await add_number(engine, other.id, A, now=now)
            await add_number(engine, t.id, A, now=now)  # again: nothing changes
            user = await add_user(engine, "viewer1", "x", "viewer", t.id, can_listen=True, can_download=False, now=now)
            with pytest.raises(AccountError, match="provider"):
                await add_user(engine, "p", "x", "provider", t.id, can_listen=True, can_download=True, now=now)

            token, _ = await create_session(engine, user_id=user.id, now=now, lifetime=timedelta(hours=12), address="1.2.3.4", user_agent="t")
            live = await load_session(engine, token, now=now, idle=timedelta(minutes=30))
            assert live is not None and live.scope is not None
            scope = live.scope
            assert (scope.tenant_name, scope.numbers, scope.role) == ("甲公司", frozenset({A}), "viewer")
            assert scope.can(READ) and scope.can(LISTEN) and not scope.can(DOWNLOAD) and not scope.can(PROVIDER)
            assert await load_session(engine, token + "x", now=now, idle=timedelta(minutes=30)) is None

            await write(db_url, [cdr(1, number=A), dataclasses.replace(cdr(2, number=B), recording_file="/r/b.wav")])
            assert [c.number for c in await search_calls(engine, CallFilter(), 10, numbers=scope.numbers)] == [A]
            assert await count_calls(engine, CallFilter(), numbers=frozenset()) == 0  # a tenant with no numbers sees nothing
            assert await count_calls(engine, CallFilter(), numbers=None) == 2
            assert await find_call(engine, cdr(2).uniqueid, numbers=scope.numbers) is None
            assert await find_call(engine, cdr(2).uniqueid, numbers=None) is not None
            assert await call_with_recording(engine, ["/r/b.wav"], numbers=scope.numbers) is None
            assert await call_with_recording(engine, ["/r/b.wav"], numbers=frozenset({B})) is not None

            bl = BlacklistStore(engine)
            await bl.add(B, "13900001111", now=now, numbers=None)
            with pytest.raises(OutOfScope):
                await bl.add(B, "13900002222", now=now, numbers=scope.numbers)
            with pytest.raises(OutOfScope):
                await bl.remove(B, "13900001111", numbers=scope.numbers)
            assert await bl.entries(now, numbers=scope.numbers) == []
            assert await bl.find(B, "13900001111", numbers=scope.numbers) is None

            await remove_number(engine, t.id, A)  # the scope is read afresh for every request
            live = await load_session(engine, token, now=now, idle=timedelta(minutes=30))
            assert live is not None and live.scope is not None and live.scope.numbers == frozenset()

            secret, _ = await add_token(engine, other.id, "sync", "write", now=now)
            token_scope = await scope_of_token(engine, secret, now=now)
            assert token_scope is not None and token_scope.tenant_id == other.id and token_scope.user_id is None
            assert admin_token_scope().numbers is None and admin_token_scope().is_provider
        finally:
            await engine.dispose()

    arun(body())


def test_audit_rows_are_read_per_tenant_and_failures_counted_per_user_and_address(db_url: str) -> None:
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            for i, tenant in enumerate((1, 2, None)):
                await record(engine, AuditEvent("login", f"u{i}", tenant, None, f"u{i}", "10.0.0.1", after={"名": "值"}), now=T0 + timedelta(seconds=i))
            mine = await audit_entries(engine, tenant_id=1, limit=10)
            assert [(e.username, e.after) for e in mine] == [("u0", {"名": "值"})]
            assert [e.username for e in await audit_entries(engine, tenant_id=None, limit=10)] == ["u2", "u1", "u0"]  # newest first

            for i in range(3):
                await add_failure(engine, "zhang", f"10.0.0.{i}", T0 + timedelta(minutes=i), keep=timedelta(days=1))
            await add_failure(engine, "li", "10.0.0.0", T0, keep=timedelta(days=1))
            counts = await count_failures(engine, "zhang", "10.0.0.0", T0 - timedelta(minutes=1))
            assert (counts.by_user, counts.by_address) == (3, 2) and counts.oldest_by_user == T0
            assert (await count_failures(engine, "zhang", "10.0.0.0", T0 + timedelta(seconds=30))).by_user == 2  # the window
            await clear_failures(engine, "zhang")
            counts = await count_failures(engine, "zhang", "10.0.0.0", T0 - timedelta(minutes=1))
            assert (counts.by_user, counts.by_address) == (0, 1)
        finally:
            await engine.dispose()

    arun(body())
