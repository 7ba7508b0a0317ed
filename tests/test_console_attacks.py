"""The console and the tenant-scoped API as an attacker sees them, on SQLite and Postgres.

Each test is one family of attacks: another tenant's objects (404, none of their data), a user beyond
their role, CSRF and origin checks, sessions, redirects and headers, path traversal, and hostile text
that must stay text (HTML, SVG, JSON in a <script> block). A test that passes documents a boundary."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from callrouter.console import live
from callrouter.store.api_tokens import add_token
from callrouter.store.live_calls import SqlLiveCalls
from callrouter.store.schema import blacklist_entries
from callrouter.store.tenants import add_tenant, find_user, get_user, set_disabled
from tests.cdrs import record
from tests.consoles import NUMBER_A, NUMBER_B, PASSWORD, Site, csrf_in, running_site
from tests.harness import arun
from tests.test_exporter import write

ADMIN = "test-token-0123456789abcdef"
EVIL = '</script><img src=x onerror=alert(1)>"\'&'


async def api(site: Site, method: str, path: str, token: str, body: object | None = None) -> tuple[int, bytes]:
    kw: dict[str, Any] = {"json": body} if body is not None else {}
    async with site.http.request(method, site.base + path, headers={"Authorization": f"Bearer {token}"}, **kw) as r:
        return r.status, await r.read()


async def seed_calls(site: Site, db_url: str, *, name_a: str = "客户甲") -> None:
    """A's call 1 and B's call 2 (caller name SECRET-B), each with a recording; entries on both numbers and '*'."""
    rec_a, rec_b = site.rec / NUMBER_A / "a.wav", site.rec / NUMBER_B / "b.wav"
    for path, data in ((rec_a, b"AUDIO-OF-A" * 50), (rec_b, b"AUDIO-OF-B" * 50)):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    a = dataclasses.replace(record(1, number=NUMBER_A), recording_file=str(rec_a), caller_name=name_a)
    b = dataclasses.replace(record(2, number=NUMBER_B, caller="13977770000"), recording_file=str(rec_b), caller_name="SECRET-B")
    await write(db_url, [a, b])
    for scope in (NUMBER_A, NUMBER_B, "*"):
        status, _ = await api(site, "POST", "/api/blacklist", ADMIN, {"caller": "13900000009", "scope": scope, "reason": f"SECRET-{scope}"})
        assert status == 201


async def form_csrf(site: Site, path: str = "/console/") -> str:
    status, html, _ = await site.get(path)
    assert status == 200, (status, html[:300])
    return csrf_in(html)


async def entries(site: Site) -> set[tuple[str, str]]:
    async with site.engine.connect() as conn:
        return {(r.scope, r.caller) for r in await conn.execute(select(blacklist_entries.c.scope, blacklist_entries.c.caller))}


def test_another_tenants_calls_recordings_stats_numbers_and_entries_answer_404(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            await seed_calls(site, db_url)
            assert (await site.login("a-owner"))[0] == 303
            b_call = "/console/calls/1764000000.2"
            for path in (f"/console/calls?number={NUMBER_B}", f"/console/calls.csv?number={NUMBER_B}",
                         b_call, f"{b_call}?source=", f"{b_call}/recording", f"{b_call}/recording?source=",
                         f"{b_call}/recording/download", f"/console/stats?number={NUMBER_B}",
                         f"/console/stats?number={NUMBER_B[:3]}-{NUMBER_B[3:]}", f"/console/stats.csv?number={NUMBER_B}",
                         f"/console/numbers/{NUMBER_B}", f"/console/numbers/{NUMBER_B}?caller=13900000009&at=2026-11-24T10:00"):
                status, text, _ = await site.get(path)
                assert status == 404, (path, status)
                assert "SECRET" not in text and "AUDIO-OF-B" not in text and "13977770000" not in text, path
            # the unfiltered pages and exports hold A's data only, whatever ?tenant= or ?source= says
            status, text, _ = await site.get("/console/calls?caller=13977770000")  # B's caller, searched for by A
            assert status == 200 and "SECRET-B" not in text and "1764000000.2" not in text
            for path in ("/console/calls", "/console/calls.csv",
                         f"/console/blacklist?tenant={site.seeded.tenant_b}", "/console/numbers", "/console/",
                         f"/console/audit?tenant={site.seeded.tenant_b}", f"/console/users?tenant={site.seeded.tenant_b}",
                         f"/console/stats.csv?number={NUMBER_A}"):
                status, text, _ = await site.get(path)
                assert status == 200, (path, status)
                for secret in ("SECRET-B", f"SECRET-{NUMBER_B}", "SECRET-*", "13977770000", "b-owner", "乙公司", NUMBER_B):
                    assert secret not in text, (path, secret)
            status, text, _ = await site.get("/console/blacklist")
            assert f"SECRET-{NUMBER_A}" in text  # its own entry is there: the page is not simply empty
            # the live stream at /console/live/events is A's only (its own test below); the line health API:
            token = (await add_token(site.engine, site.seeded.tenant_a, "ops", "read", now=site.clock()))[0]
            status, data = await api(site, "GET", f"/api/lines?number={NUMBER_B}", token)
            assert status == 404
            status, data = await api(site, "GET", "/api/lines", token)
            assert status == 200 and {v["number"] for v in json.loads(data)["numbers"]} <= {NUMBER_A}
            for path in ("/api/calls/1764000000.2", "/api/calls/1764000000.2/recording", f"/api/stats/{NUMBER_B}",
                         f"/api/recordings/{NUMBER_B}/b.wav", f"/api/blacklist?scope={NUMBER_B}", "/api/blacklist?scope=*",
                         f"/api/calls.csv?number={NUMBER_B}"):
                status, data = await api(site, "GET", path, token)
                assert status == 404 and b"SECRET" not in data and b"AUDIO-OF-B" not in data, (path, status)
            status, data = await api(site, "GET", "/api/blacklist", token)
            assert status == 200 and b"SECRET-*" not in data and f"SECRET-{NUMBER_B}".encode() not in data

    arun(body(), 60)


def test_blacklist_forms_cannot_reach_another_tenants_number_or_every_number(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            await seed_calls(site, db_url)
            before = await entries(site)
            assert (await site.login("a-owner"))[0] == 303
            csrf = await form_csrf(site, "/console/blacklist")
            for scope in (NUMBER_B, "*", "all", f" {NUMBER_B}", f"{NUMBER_A},{NUMBER_B}"):
                for caller, kind in (("13911110000", "exact"), ("13*", "prefix"), ("07*", "prefix")):
                    status, text, _ = await site.post("/console/blacklist", {"csrf": csrf, "caller": caller, "kind": kind,
                                                                             "reason": "x", "expires": "never", "scope": scope})
                    assert status in (404, 422), (scope, caller, status)
            assert await entries(site) == before
            # a prefix on its own number stays on its own number
            status, _, _ = await site.post("/console/blacklist", {"csrf": csrf, "caller": "13*", "kind": "prefix", "reason": "x",
                                                                  "expires": "never", "scope": NUMBER_A})
            assert status == 303
            assert await entries(site) - before == {(NUMBER_A, "13*")}
            for scope in (NUMBER_B, "*"):
                status, _, _ = await site.post("/console/blacklist/remove", {"csrf": csrf, "scope": scope, "caller": "13900000009"})
                assert status == 404
            assert {(NUMBER_B, "13900000009"), ("*", "13900000009")} <= await entries(site)
            # the write token of A: the same refusals through the API
            token = (await add_token(site.engine, site.seeded.tenant_a, "crm", "write", now=site.clock()))[0]
            for scope in (NUMBER_B, "*"):
                status, _ = await api(site, "POST", "/api/blacklist", token, {"caller": "07*", "scope": scope})
                assert status in (404, 422)
                status, _ = await api(site, "DELETE", f"/api/blacklist/{scope}/13900000009", token)
                assert status == 404
            assert {(NUMBER_B, "13900000009"), ("*", "13900000009")} <= await entries(site)

    arun(body(), 60)


def test_roles_viewers_change_nothing_owners_only_their_company_and_nobody_becomes_provider(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            await seed_calls(site, db_url)
            ids = {}
            for name in ("boss", "a-owner", "a-viewer", "b-owner"):
                found = await find_user(site.engine, name)
                assert found is not None
                ids[name] = found.user.id
            before = await entries(site)

            assert (await site.login("a-viewer"))[0] == 303
            csrf = await form_csrf(site)
            for path, data in (("/console/blacklist", {"caller": "13911110000", "kind": "exact", "reason": "x", "expires": "never",
                                                       "scope": NUMBER_A}),
                               ("/console/blacklist/remove", {"scope": NUMBER_A, "caller": "13900000009"}),
                               ("/console/users", {"username": "evil", "password": "x" * 12, "role": "owner"}),
                               (f"/console/users/{ids['a-owner']}/disable", {}),
                               (f"/console/users/{ids['a-viewer']}/role", {"role": "owner", "listen": "on", "download": "on"}),
                               ("/console/tenants", {"name": "x"})):
                status, _, _ = await site.post(path, {"csrf": csrf, **data})
                assert status == 403, (path, status)
            for path in ("/console/users", "/console/tenants", "/console/calls/1764000000.1/recording/download"):
                assert (await site.get(path))[0] == 403, path
            assert await entries(site) == before
            viewer = await get_user(site.engine, ids["a-viewer"])
            assert viewer is not None and viewer.role == "viewer" and not viewer.can_download

            assert (await site.login("a-owner"))[0] == 303
            csrf = await form_csrf(site)
            assert (await site.get("/console/tenants"))[0] == 403
            for path, data in (("/console/tenants", {"name": "丙公司"}),
                               (f"/console/tenants/{site.seeded.tenant_a}/numbers", {"number": "4008009999"}),
                               (f"/console/tenants/{site.seeded.tenant_b}/numbers/remove", {"number": NUMBER_B})):
                assert (await site.post(path, {"csrf": csrf, **data}))[0] == 403, path
            for user in ("b-owner", "boss"):
                for action, data in (("disable", {}), ("enable", {}), ("revoke", {}), ("role", {"role": "viewer"})):
                    status, text, _ = await site.post(f"/console/users/{ids[user]}/{action}", {"csrf": csrf, **data})
                    assert status == 404 and "乙公司" not in text, (user, action, status)
            assert (await site.login("b-owner"))[0] == 303  # b-owner was neither disabled nor changed
            assert (await site.login("a-owner"))[0] == 303
            csrf = await form_csrf(site)
            for target in ("a-owner", "a-viewer"):
                status, _, _ = await site.post(f"/console/users/{ids[target]}/role", {"csrf": csrf, "role": "provider"})
                assert status == 422, target
            # a new user with role provider, or in another company, or with a tenant field: never outside A
            for data in ({"role": "provider"}, {"role": "owner", "tenant": str(site.seeded.tenant_b)}, {"role": "owner", "tenant": ""}):
                name = f"new{len(data)}{data['role'][:3]}"
                status, _, _ = await site.post("/console/users", {"csrf": csrf, "username": name, "password": PASSWORD, **data})
                made = await find_user(site.engine, name)
                if made is not None:
                    assert made.user.tenant_id == site.seeded.tenant_a and made.user.role != "provider", data
                else:
                    assert status == 422, data
            me = await get_user(site.engine, ids["a-owner"])
            assert me is not None and me.role == "owner" and me.tenant_id == site.seeded.tenant_a

    arun(body(), 90)


def test_unsafe_requests_need_the_sessions_csrf_token_and_the_consoles_own_origin(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            assert (await site.login("b-owner"))[0] == 303
            b_csrf = await form_csrf(site)
            assert (await site.login("a-owner"))[0] == 303
            csrf = await form_csrf(site)
            add = {"caller": "13911110000", "kind": "exact", "reason": "x", "expires": "never", "scope": NUMBER_A}
            refused: list[tuple[dict[str, str], dict[str, str], bool]] = [
                ({}, {}, True),  # no token
                ({"csrf": "forged"}, {}, True),
                ({"csrf": b_csrf}, {}, True),  # another session's token
                ({"csrf": csrf}, {"Origin": "null"}, False),
                ({"csrf": csrf}, {"Origin": "http://evil.example"}, False),
                ({"csrf": csrf}, {"Origin": site.base + ".evil.example"}, False),
                ({"csrf": csrf}, {"Origin": site.base.replace("http:", "https:")}, False),
                ({"csrf": csrf}, {"Referer": "http://evil.example/console/"}, False),
                ({"csrf": csrf}, {"Referer": f"http://evil.example/?{site.base}"}, False),
                ({"csrf": csrf}, {}, False),  # neither Origin nor Referer
            ]
            for fields, headers, with_origin in refused:
                status, text, _ = await site.post("/console/blacklist", {**add, **fields}, origin=with_origin, headers=headers)
                assert status == 403 and "页面已过期或来源不明" in text, (fields, headers)
            # the header form for scripts: a wrong one is refused too
            status, _, _ = await site.post("/console/blacklist/remove", {"scope": NUMBER_A, "caller": "13911110000"},
                                           headers={"X-CSRF-Token": b_csrf})
            assert status == 403
            assert (NUMBER_A, "13911110000") not in await entries(site)
            status, _, _ = await site.post("/console/blacklist", {**add, "csrf": csrf}, origin=False,
                                           headers={"Referer": site.base + "/console/blacklist"})
            assert status == 303 and (NUMBER_A, "13911110000") in await entries(site)
            # logout is CSRF-protected as well (a page elsewhere cannot log the user out)
            assert (await site.post("/console/logout", {"csrf": csrf}, origin=False, headers={"Origin": "null"}))[0] == 403
            assert (await site.get("/console/"))[0] == 200

    arun(body(), 60)


def test_sessions_fixation_disabled_users_and_their_live_stream(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)

    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            # the attacker gets a pre-login session and plants its cookie in the victim's browser
            site.http.cookie_jar.clear()
            await site.csrf()
            planted = site.cookie()
            assert planted
            token = await site.csrf()  # the victim's form, under the planted cookie
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token})
            assert status == 303 and site.cookie() != planted
            assert await site.get_as(planted) == 303  # the planted id never becomes the logged-in session
            # a made-up cookie is no session
            assert await site.get_as("x" * 43) == 303
            old = site.cookie()
            assert old and await site.get_as(old) == 200

            router = SqlLiveCalls(site.engine, instance="router-1", heartbeat=True, clock=site.clock, every=0.05)
            await router.start()
            try:
                router.call_started("1764000000.88", "eid:bb", NUMBER_B, "13933334444", site.clock())
                router.call_started("1764000000.77", "eid:aa", NUMBER_A, "13911112222", site.clock())
                headers = {"Cookie": f"callrouter_session={old}"}
                async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, \
                        http.get(site.base + "/console/live/events", headers=headers) as r:
                    assert r.status == 200
                    seen = ""
                    async for raw in r.content:
                        seen += raw.decode()
                        if "13911112222" in seen:
                            break
                    assert "13933334444" not in seen
            finally:
                await router.close()

            user = await find_user(site.engine, "a-owner")
            assert user is not None
            await set_disabled(site.engine, user.user.id, site.clock())  # disabled in the database, sessions not revoked
            assert await site.get_as(old) == 303
            assert await site.get_as(old, "/console/live/events") == 303
            assert await site.get_as(old, "/console/calls.csv") == 303
            status, _, _ = await site.login("a-owner")
            assert status == 401

    arun(body(), 60)


def test_no_open_redirect_or_header_injection_through_next_or_lang(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            hostile = ["//evil.example/", "https://evil.example/", "/\\evil.example", "/console/\\evil.example",
                       "\\\\evil.example", "/console/\r\nSet-Cookie: x=1", "/console/\tx", "javascript:alert(1)",
                       "/console@evil.example", "http:/console/", " //evil.example", "/console/%0d%0aSet-Cookie:x=1"]
            for value in hostile:
                site.http.cookie_jar.clear()
                token = await site.csrf()
                status, _, r = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token,
                                                                  "next": value})
                assert status == 303, (value, status)
                location = r.headers["Location"]
                assert location.startswith("/console/") and "\n" not in location and "\r" not in location, (value, location)
                assert "x" not in {c.key for c in site.http.cookie_jar}
                # already logged in: GET /console/login?next= redirects at once, just as safely
                async with site.http.get(site.base + "/console/login", params={"next": value}, allow_redirects=False) as r2:
                    assert r2.status == 303, (value, r2.status)
                    assert r2.headers["Location"].startswith("/console/") and "\n" not in r2.headers["Location"], value
            # lang: only zh or en is ever remembered, and nothing from it reaches a header
            for value in ("en\r\nSet-Cookie: x=1", "en; Path=/", "../en", "<script>"):
                async with site.http.get(site.base + "/console/", params={"lang": value}, allow_redirects=False) as r:
                    assert r.status == 200
                    assert all("x=1" not in v and "Path=/;" not in v for v in r.headers.getall("Set-Cookie", []))
                    assert "<script>" not in (await r.text()).split("</head>")[0] or value != "<script>"
            async with site.http.get(site.base + "/console/", headers={"Cookie": "callrouter_lang=<b>"}, allow_redirects=False) as r:
                assert r.status in (200, 303)
            status, html, _ = await site.get("/console/calls?lang=en&x=%22%3E%3Cscript%3E")
            assert status == 200 and '"><script>' not in html
            links = re.findall(r'class="lang" href="([^"]+)"', html)
            assert links and all(link.startswith("/console/") for link in links)

    arun(body(), 60)


def test_static_and_recordings_stay_inside_their_folders(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            await seed_calls(site, db_url)
            secret = site.rec.parent / "outside.wav"
            secret.write_bytes(b"OUTSIDE-SECRET")
            (site.rec / NUMBER_A / "link.wav").symlink_to(secret)
            evil = [dataclasses.replace(record(10 + i, number=NUMBER_A), recording_file=f) for i, f in enumerate(
                (str(secret), f"{site.rec}/../outside.wav", "../outside.wav", f"{site.rec}/{NUMBER_A}/link.wav", "/etc/passwd",
                 f"{site.rec}/{NUMBER_B}/b.wav/../../outside.wav"))]
            await write(db_url, evil)
            assert (await site.login("a-owner"))[0] == 303
            for path in ("/console/static/../app.py", "/console/static/%2e%2e/app.py", "/console/static/..%2fapp.py",
                         "/console/static/%2e%2e%2f%2e%2e%2fapi%2fapp.py", "/console/static/....//app.py",
                         "/console/static/%5c..%5capp.py", "/console/static/", "/console/static/vendor/",
                         "/console/static//etc/passwd"):
                async with site.http.get(site.base + path, allow_redirects=False) as r:
                    text = await r.text(errors="replace")
                    assert r.status != 200 or ("build_console_app" not in text and "root:" not in text), (path, r.status)
                    assert "build_console_app" not in text and "root:x" not in text, path
            for i in range(len(evil)):
                for tail in ("/recording", "/recording/download"):
                    status, text, _ = await site.get(f"/console/calls/1764000000.{10 + i}{tail}")
                    assert status == 404 and "OUTSIDE-SECRET" not in text and "root:" not in text, (i, tail, status)
            for path in ("/api/recordings/../outside.wav", "/api/recordings/%2e%2e/outside.wav", "/api/recordings/..%2foutside.wav",
                         f"/api/recordings/{NUMBER_A}/link.wav", "/api/recordings/%2fetc%2fpasswd", "/api/recordings/a%00.wav"):
                for token in (ADMIN, (await add_token(site.engine, site.seeded.tenant_a, f"t{len(path)}", "read", now=site.clock()))[0]):
                    status, data = await api(site, "GET", path, token)
                    assert status in (400, 403, 404) and b"OUTSIDE-SECRET" not in data and b"root:" not in data, (path, status)
                    for i in range(len(evil)):
                        status, data = await api(site, "GET", f"/api/calls/1764000000.{10 + i}/recording", token)
                        assert b"OUTSIDE-SECRET" not in data and b"root:" not in data, (i, status)

    arun(body(), 90)


def test_hostile_names_stay_text_in_html_svg_and_json(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            await seed_calls(site, db_url, name_a=EVIL)
            # a tenant name, a blacklist reason, a plan and line name, an audit target from a login attempt
            await add_tenant(site.engine, "<b>丙" + EVIL, now=site.clock())
            status, _ = await api(site, "POST", "/api/blacklist", ADMIN, {"caller": "0755*", "scope": NUMBER_A, "reason": EVIL})
            assert status == 201
            plan = tmp_path / "dialplans" / f"{NUMBER_A}.yaml"
            text = plan.read_text()
            hostile = EVIL.replace('"', "").replace("'", "")
            plan.write_text(text.replace('name: "示例科技 Example Tech"', f'name: "示例 {hostile}"')
                            .replace('name: "张伟"', f'name: "张伟{hostile}"'))
            status, data = await api(site, "POST", "/api/reload", ADMIN)
            assert status == 200, data
            site.http.cookie_jar.clear()
            token = await site.csrf()
            await site.post("/console/login", {"username": "<svg onload=alert(1)>", "password": "x", "csrf": token})

            pages = ["/console/", "/console/calls", "/console/calls/1764000000.1", "/console/blacklist", "/console/numbers",
                     f"/console/numbers/{NUMBER_A}", f"/console/numbers/{NUMBER_A}?caller=075512345678&at=2026-11-24T10:00",
                     f"/console/stats?number={NUMBER_A}&from=2026-11-20&to=2026-11-26", "/console/audit", "/console/users",
                     "/console/tenants"]
            for who in ("boss", "a-owner"):
                assert (await site.login(who))[0] == 303
                for path in pages:
                    status, html, _ = await site.get(path)
                    if who == "a-owner" and path in ("/console/tenants",):
                        assert status == 403
                        continue
                    assert status == 200, (who, path, status)
                    for raw in ("<img src=x", "</script><img", "<svg onload", "<b>丙"):
                        assert raw not in html, (who, path, raw)
                    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
                        json.loads(block)  # the whole block is JSON: nothing closed the element early
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}")
            assert "&lt;img src=x" in html  # the name is there, as text
            await write(db_url, [dataclasses.replace(record(3, number=NUMBER_A), caller_name="=HYPERLINK(\"http://evil.example\")")])
            for path in ("/console/calls.csv", f"/console/stats.csv?number={NUMBER_A}"):
                status, _, r = await site.get(path)
                assert status == 200 and "\n" not in r.headers["Content-Disposition"]
            csv_text = (await site.get("/console/calls.csv"))[1]
            assert "'=HYPERLINK" in csv_text and ',"=HYPERLINK' not in csv_text  # a formula is defused, never a cell

    arun(body(), 90)
