"""`callrouter tenants|users|tokens` through callrouter's own parser, on SQLite and Postgres; every change audited."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from callrouter.cli.main import main
from callrouter.console.passwords import Passwords
from callrouter.store.api_tokens import scope_of_token
from callrouter.store.audit import AuditEntry, audit_entries
from callrouter.store.db import open_engine
from callrouter.store.tenants import find_user, list_tenants
from tests.cdrs import T0
from tests.test_admin_api import workspace


def run(db_url: str, coro_factory: object) -> object:
    async def body() -> object:
        engine = open_engine(make_url(db_url))
        try:
            return await coro_factory(engine)  # type: ignore[operator]
        finally:
            await engine.dispose()

    return asyncio.run(body())


def audit(db_url: str) -> list[AuditEntry]:
    return run(db_url, lambda e: audit_entries(e, tenant_id=None, limit=100))  # type: ignore[return-value]


def test_tenants_users_and_tokens_are_made_from_the_command_line_and_audited(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = str(workspace(tmp_path, db_url))

    def call(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main(list(args) + ["--config", cfg])
        out = capsys.readouterr()
        return status, out.out, out.err

    assert call("users", "add", "boss", "--provider", "--password-stdin", stdin="first password\n")[0] == 0
    status, _, err = call("users", "add", "short", "--provider", "--password-stdin", stdin="short\n")
    assert status == 2 and "at least 10" in err
    status, _, err = call("users", "add", "boss2", "--provider")  # no terminal and no --password-stdin
    assert status == 2 and "--password-stdin" in err

    assert call("tenants", "add", "甲公司")[0] == 0
    assert call("tenants", "add", "乙公司")[0] == 0
    status, _, err = call("tenants", "add", "甲公司")
    assert status == 2 and "exists" in err
    assert call("tenants", "numbers", "add", "甲公司", "4008001234", "4008001235")[0] == 0
    status, _, err = call("tenants", "numbers", "add", "乙公司", "4008001234")
    assert status == 2 and "another tenant" in err  # a number has one tenant
    assert call("tenants", "numbers", "remove", "甲公司", "4008001235")[0] == 0
    assert call("tenants", "numbers", "remove", "甲公司", "4008001235")[0] == 1
    status, out, _ = call("tenants", "list")
    assert "甲公司\t4008001234" in out and "乙公司\t-" in out

    assert call("users", "add", "Zhang", "--tenant", "甲公司", "--role", "owner", "--password-stdin", stdin="zhang password 1\n")[0] == 0
    assert call("users", "add", "li", "--tenant", "甲公司", "--password-stdin", stdin="li password 12\n")[0] == 0
    status, _, err = call("users", "add", "zhang", "--tenant", "乙公司", "--password-stdin", stdin="zhang password 1\n")
    assert status == 2 and "taken" in err  # usernames are case-insensitive
    status, out, _ = call("users", "list")
    lines = out.splitlines()
    assert lines[0].startswith("boss\tprovider\t(provider)") and "li\tviewer\t甲公司\tlisten\tactive\tnever" in lines
    assert call("users", "role", "li", "admin", "--download")[0] == 0
    status, _, err = call("users", "role", "li", "provider")
    assert status == 2 and "provider" in err
    assert call("users", "passwd", "li", "--password-stdin", stdin="a new password\n")[0] == 0
    assert call("users", "disable", "li")[0] == 0
    assert call("users", "revoke-sessions", "zhang")[0] == 0
    assert call("users", "disable", "nobody")[0] == 2

    async def check_users(engine: object) -> None:
        li = await find_user(engine, "li")  # type: ignore[arg-type]
        assert li is not None and li.user.role == "admin" and li.user.can_download and li.user.disabled_at is not None
        assert await Passwords().verify(li.password_hash, "a new password")
        assert "a new password" not in li.password_hash and li.password_hash.startswith("$argon2id$")

    run(db_url, check_users)

    status, out, _ = call("tokens", "add", "--tenant", "甲公司", "--scope", "write", "crm")
    secret = out.splitlines()[0]
    assert status == 0 and secret.startswith("crt_")
    scope = run(db_url, lambda e: scope_of_token(e, secret, now=T0))
    assert scope is not None and scope.numbers == frozenset({"4008001234"}) and scope.tenant_name == "甲公司"  # type: ignore[attr-defined]
    status, out, _ = call("tokens", "list")
    assert "甲公司\tcrm\twrite" in out and secret not in out
    assert call("tokens", "revoke", "--tenant", "甲公司", "crm")[0] == 0
    assert call("tokens", "revoke", "--tenant", "甲公司", "crm")[0] == 1
    assert run(db_url, lambda e: scope_of_token(e, secret, now=T0)) is None

    actions = [e.action for e in reversed(audit(db_url))]
    assert actions == ["user_add", "tenant_add", "tenant_add", "tenant_number_add", "tenant_number_add", "tenant_number_remove",
                       "user_add", "user_add", "user_role", "user_password", "user_disable", "user_revoke_sessions",
                       "token_add", "token_revoke"]
    entries = audit(db_url)
    assert all(e.address == "cli" and e.username.startswith("cli:") for e in entries)
    role_change = next(e for e in entries if e.action == "user_role")
    assert (role_change.before["role"], role_change.after["role"]) == ("viewer", "admin")
    assert not any("password" in str(e.after) and "$argon2" in str(e.after) for e in entries)
    tenants = {t.name: t.id for t in run(db_url, list_tenants)}  # type: ignore[attr-defined]
    assert {e.tenant_id for e in entries if e.action.startswith("token_")} == {tenants["甲公司"]}
    assert next(e for e in entries if e.action == "user_add").tenant_id == tenants["甲公司"]  # the newest: li
