"""The /api routes with tenants' tokens, over real HTTP on SQLite and Postgres: a tenant sees its own
numbers only (another tenant's number, call, recording or entry answers 404 with none of its data),
read tokens only read, and exports and recording downloads are audited."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import timedelta
from pathlib import Path

from callrouter.store.api_tokens import add_token, revoke_token
from tests.cdrs import record
from tests.consoles import NUMBER_A, NUMBER_B, Site, running_site
from tests.harness import arun
from tests.test_exporter import write

ADMIN = "test-token-0123456789abcdef"


async def call_api(site: Site, method: str, path: str, token: str, body: object | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    kw = {"json": body} if body is not None else {}
    async with site.http.request(method, site.base + path, headers=headers, **kw) as r:
        return r.status, await r.read()


async def setup(site: Site, db_url: str) -> dict[str, str]:
    """A's call 1 and B's call 2, each with a recording; tokens for A (read, write) and B (read)."""
    rec_a = site.rec / NUMBER_A / "a.wav"
    rec_b = site.rec / NUMBER_B / "b.wav"
    for path, data in ((rec_a, b"AUDIO-OF-A" * 50), (rec_b, b"AUDIO-OF-B" * 50)):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    a = dataclasses.replace(record(1, number=NUMBER_A), recording_file=str(rec_a), caller_name="客户甲")
    b = dataclasses.replace(record(2, number=NUMBER_B), recording_file=str(rec_b), caller_name="SECRET-B")
    await write(db_url, [a, b])
    now = site.clock()
    tokens = {
        "a_read": (await add_token(site.engine, site.seeded.tenant_a, "reporting", "read", now=now))[0],
        "a_write": (await add_token(site.engine, site.seeded.tenant_a, "crm", "write", now=now))[0],
        "b_read": (await add_token(site.engine, site.seeded.tenant_b, "reporting", "read", now=now))[0],
    }
    for scope in (NUMBER_A, NUMBER_B, "*"):
        status, _ = await call_api(site, "POST", "/api/blacklist", ADMIN, {"caller": "13900000009", "scope": scope, "reason": f"by admin {scope}"})
        assert status == 201
    return tokens


def test_a_tenant_token_sees_only_its_numbers_and_another_tenants_answer_404(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            tokens = await setup(site, db_url)
            a = tokens["a_read"]
            status, data = await call_api(site, "GET", "/api/calls", a)
            assert status == 200 and [c["number"] for c in json.loads(data)["calls"]] == [NUMBER_A]
            status, data = await call_api(site, "GET", f"/api/calls?number={NUMBER_B}", a)
            assert status == 404 and b"SECRET-B" not in data
            for path in (f"/api/calls/{record(2).uniqueid}", f"/api/calls/{record(2).uniqueid}/recording",
                         f"/api/recordings/{NUMBER_B}/b.wav", f"/api/stats/{NUMBER_B}", f"/api/blacklist?scope={NUMBER_B}",
                         "/api/blacklist?scope=*"):
                status, data = await call_api(site, "GET", path, a)
                assert status == 404, (path, status)
                assert b"SECRET-B" not in data and b"AUDIO-OF-B" not in data and b"by admin" not in data, path
            status, data = await call_api(site, "GET", f"/api/calls/{record(1).uniqueid}", a)
            assert status == 200 and json.loads(data)["caller_name"] == "客户甲"
            status, data = await call_api(site, "GET", f"/api/calls/{record(1).uniqueid}/recording", a)
            assert status == 200 and data.startswith(b"AUDIO-OF-A")
            status, data = await call_api(site, "GET", f"/api/recordings/{NUMBER_A}/a.wav", a)
            assert status == 200 and data.startswith(b"AUDIO-OF-A")
            status, data = await call_api(site, "GET", "/api/blacklist", a)
            assert status == 200 and [e["scope"] for e in json.loads(data)["entries"]] == [NUMBER_A]  # not B's, not the global one
            status, data = await call_api(site, "GET", "/api/plans", a)
            assert status == 200 and {p["number"] for p in json.loads(data)["plans"]} <= {NUMBER_A}
            assert (await call_api(site, "GET", f"/api/stats/{NUMBER_A}", a))[0] == 200

            status, data = await call_api(site, "GET", "/api/calls.csv", a)
            rows = list(csv.DictReader(io.StringIO(data.decode())))
            assert status == 200 and [r["number"] for r in rows] == [NUMBER_A]
            [export] = await site.audit("calls_export")
            assert export.tenant_id == site.seeded.tenant_a and export.username == "token:reporting" and export.after["rows"] == 1
            downloads = await site.audit("recording_download")
            assert len(downloads) == 2 and {d.tenant_id for d in downloads} == {site.seeded.tenant_a}

            # the admin token is the provider's: everything
            status, data = await call_api(site, "GET", "/api/calls", ADMIN)
            assert {c["number"] for c in json.loads(data)["calls"]} == {NUMBER_A, NUMBER_B}
            assert (await call_api(site, "GET", f"/api/recordings/{NUMBER_B}/b.wav", ADMIN))[0] == 200
            # B's token is B's
            status, data = await call_api(site, "GET", "/api/calls", tokens["b_read"])
            assert [c["number"] for c in json.loads(data)["calls"]] == [NUMBER_B]

            await revoke_token(site.engine, site.seeded.tenant_a, "reporting", now=site.clock())
            assert (await call_api(site, "GET", "/api/calls", a))[0] == 401
            assert (await call_api(site, "GET", "/api/calls", "crt_made-up-token"))[0] == 401

    arun(body())


def test_read_tokens_cannot_change_the_blacklist_and_write_tokens_only_their_own(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            tokens = await setup(site, db_url)
            read, write_ = tokens["a_read"], tokens["a_write"]
            new = {"caller": "13911112222", "scope": NUMBER_A, "reason": "骚扰"}
            status, data = await call_api(site, "POST", "/api/blacklist", read, new)
            assert status == 403 and b"write" in data
            assert (await call_api(site, "DELETE", f"/api/blacklist/{NUMBER_A}/13900000009", read))[0] == 403
            assert (await call_api(site, "POST", "/api/reload", write_))[0] == 403  # the provider's alone

            status, data = await call_api(site, "POST", "/api/blacklist", write_, new)
            assert status == 201 and json.loads(data)["created_by"].startswith("token:crm@")
            status, _ = await call_api(site, "POST", "/api/blacklist", write_, {**new, "scope": NUMBER_B})
            assert status == 404
            status, data = await call_api(site, "POST", "/api/blacklist", write_, {**new, "scope": "*"})
            assert status == 422 and NUMBER_A.encode() in data
            assert (await call_api(site, "DELETE", f"/api/blacklist/{NUMBER_B}/13900000009", write_))[0] == 404
            assert (await call_api(site, "DELETE", "/api/blacklist/*/13900000009", write_))[0] == 404
            status, data = await call_api(site, "GET", f"/api/blacklist?scope={NUMBER_B}", ADMIN)
            assert len(json.loads(data)["entries"]) == 1  # B's entry is still there
            assert (await call_api(site, "DELETE", f"/api/blacklist/{NUMBER_A}/13911112222", write_))[0] == 204

            added = [e for e in await site.audit("blacklist_add") if e.tenant_id == site.seeded.tenant_a]
            assert [(e.target, e.after["reason"], e.before) for e in added] == [(f"{NUMBER_A}/13911112222", "骚扰", None)]
            [removed] = await site.audit("blacklist_remove")
            assert removed.before["caller"] == "13911112222" and removed.username == "token:crm"

    arun(body())


def test_tokens_last_use_is_recorded_without_a_write_per_request(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            secret, _ = await add_token(site.engine, site.seeded.tenant_a, "probe", "read", now=site.clock())
            from callrouter.store.api_tokens import list_tokens

            assert (await call_api(site, "GET", "/api/plans", secret))[0] == 200
            [token] = await list_tokens(site.engine, tenant_id=site.seeded.tenant_a)
            assert token.last_used_at == site.clock()
            site.clock.advance(seconds=10)
            assert (await call_api(site, "GET", "/api/plans", secret))[0] == 200
            [again] = await list_tokens(site.engine, tenant_id=site.seeded.tenant_a)
            assert again.last_used_at == token.last_used_at
            site.clock.advance(minutes=2)
            await call_api(site, "GET", "/api/plans", secret)
            [later] = await list_tokens(site.engine, tenant_id=site.seeded.tenant_a)
            assert later.last_used_at == token.last_used_at + timedelta(minutes=2, seconds=10)

    arun(body())
